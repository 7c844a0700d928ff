"""Training engine: config, LR schedules, the jitted loop, checkpoints and metrics.

    from muonjax.train import TrainConfig, train
    result = train(TrainConfig(model_fields=dict(d_model=64), optimizer="muon", steps=200))
"""

from muonjax.train.checkpoint import (
    CheckpointFallbackWarning,
    Checkpointer,
    CorruptCheckpointError,
)
from muonjax.train.config import SCHEDULES, TrainConfig, first_mismatch
from muonjax.train.loop import (
    EXTRA_ARGS_FNS,
    ExtraArgsFn,
    NonFiniteLossError,
    TrainingInterrupted,
    build_eval,
    build_optimizer,
    build_train_step,
    lower_train_step,
    mesh_for,
    model_fields,
    param_labels,
    register_extra_args,
    train,
)
from muonjax.train.metrics import STEP_KEYS, JsonlLog, read_jsonl
from muonjax.train.schedules import make_schedule, schedule_for
