"""Training: config, LR schedules, the jitted step, the loop, checkpoints and metrics.

Modules: :mod:`~muonjax.train.config` (``TrainConfig``), :mod:`~muonjax.train.schedules`,
:mod:`~muonjax.train.optimizer` (the run's optimizer), :mod:`~muonjax.train.step` (the pure
step and evaluation), :mod:`~muonjax.train.engine` (model, optimizer, placement, batches),
:mod:`~muonjax.train.interrupt` (Ctrl-C), :mod:`~muonjax.train.loop` (``train``),
:mod:`~muonjax.train.checkpoint`, :mod:`~muonjax.train.metrics`.

    from muonjax.train import TrainConfig, train
    result = train(TrainConfig(model_fields=dict(d_model=64), optimizer="muon", steps=200))
"""

from muonjax.train.checkpoint import (
    CheckpointFallbackWarning,
    Checkpointer,
    CorruptCheckpointError,
)
from muonjax.train.config import SCHEDULES, TrainConfig, first_mismatch
from muonjax.train.engine import Engine, lower_train_step, mesh_for, model_fields
from muonjax.train.interrupt import TrainingInterrupted
from muonjax.train.loop import NonFiniteLossError, train
from muonjax.train.optimizer import build_optimizer, param_labels
from muonjax.train.step import (
    EXTRA_ARGS_FNS,
    ExtraArgsFn,
    build_eval,
    build_grad_step,
    build_train_step,
    register_extra_args,
)
from muonjax.train.metrics import STEP_KEYS, JsonlLog, read_jsonl
from muonjax.train.schedules import make_schedule, schedule_for
