"""Transformer models for muonjax experiments (Flax NNX): GPT baseline and looped transformer."""

from muonjax.models.blocks import MLP, Block, CausalSelfAttention, rope, run_stacked, stacked_blocks
from muonjax.models.gpt import GPT, GPTConfig
from muonjax.models.looped import LoopedConfig, LoopedCore, LoopedTransformer, scan_loops
from muonjax.models.loopformer import (
    LoopFormer,
    LoopFormerConfig,
    sample_short_trajectory,
    uniform_trajectory,
)
from muonjax.models.ngpt import (
    NGPT,
    NGPTConfig,
    normalize_weights,
    sphere_projection,
)
from muonjax.models.moe import (
    MoEConfig,
    MoETransformer,
    load_balance_loss,
    moe_param_count,
    moe_study_config,
)
from muonjax.models.mor import (
    MoRConfig,
    MoRTransformer,
    expert_capacities,
    mor_paper_config,
    mor_param_count,
    scan_shared,
)
from muonjax.models.hyperloop import (
    HyperloopConfig,
    HyperloopTransformer,
    hyperloop_paper_config,
    hyperloop_param_count,
)
from muonjax.models.registry import (
    CONFIGS,
    analytic_param_count,
    build,
    make_config,
    param_count,
)
from muonjax.models.losses import cross_entropy, eval_loss, eval_metrics, loss_and_metrics
from muonjax.models.stats import Dense, InputProbe, value_grad_and_stats
