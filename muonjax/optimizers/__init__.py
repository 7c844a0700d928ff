"""Ready-made optimizers (aliases) built from muonjax stages, and their registry.

Modules: :mod:`~muonjax.optimizers.base` (presets, shared settings, AdamW
branch, partition), :mod:`~muonjax.optimizers.muon`,
:mod:`~muonjax.optimizers.variants` (Polar-Express Muon, NorMuon, AdaMuon,
Newton-Muon, Mano), :mod:`~muonjax.optimizers.scion`,
:mod:`~muonjax.optimizers.muon_adam` (MuonAdam, MuonMax, Momo),
:mod:`~muonjax.optimizers.adamw`, :mod:`~muonjax.optimizers.registry`.
"""

from muonjax.optimizers.adamw import adamw
from muonjax.optimizers.base import (
    PRESET,
    MuonSettings,
    Preset,
    adam_branch,
    build_stages,
    check_learning_rate,
    muon_settings,
    partition_matrices,
)
from muonjax.optimizers.muon import muon
from muonjax.optimizers.muon_adam import GowerState, gower_optimizer, momo, muon_adam, muon_max
from muonjax.optimizers.registry import (
    OPTIMIZERS,
    SPECS,
    OptimizerSpec,
    get_optimizer,
    get_spec,
    hyperparameters,
    register_optimizer,
)
from muonjax.optimizers.scion import scion, scion_default_lmos
from muonjax.optimizers.variants import adamuon, mano, newton_muon, normuon, polar_muon

__all__ = [
    "OPTIMIZERS", "SPECS", "OptimizerSpec", "adamuon", "adamw", "get_optimizer", "get_spec",
    "gower_optimizer", "hyperparameters", "mano", "momo", "muon", "muon_adam", "muon_max",
    "newton_muon", "normuon", "partition_matrices", "polar_muon", "register_optimizer",
    "scion", "scion_default_lmos",
]
