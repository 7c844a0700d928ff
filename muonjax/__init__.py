"""muonjax: Muon-family optimizers as composable optax stages, for JAX and Flax NNX.

Floors (each imports only the ones above it): orthogonalization → transforms
(stages) → optimizers + routing (the optimizer core: jax, optax and numpy
only) → :mod:`muonjax.nnx` (Flax NNX glue) → models → train → apps.

Importing ``muonjax`` loads the core only. The Flax parts load on first use
(PEP 562 ``__getattr__``): ``mj.models``, ``mj.nnx`` and the module-aware
helpers ``mj.muon_dimension_numbers``, ``mj.label_params``,
``mj.optax_dimension_numbers``, ``mj.sphere_axes``, ``mj.scion_default_lmos``
and ``mj.scion_init`` (the :mod:`muonjax.nnx` versions, which take an
``nnx.Module`` or a parameter tree).

``__all__`` lists the public API. Internals kept importable from ``muonjax``
for compatibility but not in ``__all__``: ``refresh_due``, ``shape_factor``,
``orthogonalize_tree``, ``partition_matrices``, ``hyperparameters``,
``make_orthogonalizer``, ``composed_polynomial``, ``gower_optimizer`` and
``GowerState`` (MuonAdam's full-tree transformation and its state, now in
:mod:`muonjax.optimizers.muon_adam`).
"""

from __future__ import annotations

import importlib
from typing import Any

# --- floor 0: orthogonalization ---------------------------------------------
from muonjax.orthogonalization import (
    PRESETS as COEFFICIENT_PRESETS,
    composed_polynomial,
    get_coefficients,
    newton_schulz,
    optimal_composition as polar_express_coefficients,
    polar_express,
    polar_factor,
)

# --- floor 1: stages ----------------------------------------------------------
from muonjax.transforms import (
    LMO,
    GlobalNuclearNormState,
    ManoState,
    MomentumState,
    MomoInputs,
    MomoState,
    MuonDimensionNumbers,
    PreconditionInputState,
    SecondMomentState,
    adamuon_normalize,
    cautious_weight_decay,
    lr_tied_cautious_weight_decay,
    scale_by_consistent_rms,
    scale_by_dual_norm,
    constrained_decay,
    gptopt_orthogonalizer,
    hypersphere,
    input_second_moment,
    make_orthogonalizer,
    mano_normalize,
    momentum,
    momo_step_size,
    normuon_normalize,
    orthogonalize,
    orthogonalize_tree,
    precondition_input,
    refresh_due,
    scale_by_global_nuclear_norm,
    scale_by_lmo,
    scale_by_shape,
    scale_to_rms,
    scion_momentum,
    shape_factor,
    sign,
    weight_decay,
)

# --- floor 2: aliases, registry, routing --------------------------------------
from muonjax import routing
from muonjax.optimizers import (
    OPTIMIZERS,
    GowerState,
    OptimizerSpec,
    adamuon,
    adamw,
    get_optimizer,
    get_spec,
    gower_optimizer,
    hyperparameters,
    mano,
    momo,
    muon,
    muon_adam,
    muon_max,
    newton_muon,
    normuon,
    partition_matrices,
    polar_muon,
    register_optimizer,
    scion,
)

__version__ = "0.1.0"

# Floor 2": installs the stack-sharded Newton–Schulz strategy that
# orthogonalize(strategy="auto") uses under a multi-device jax.set_mesh (the stage
# itself imports nothing above it; muonjax.distributed imports no flax at load).
from muonjax import distributed  # noqa: E402,F401

# --- floor 2': Flax NNX glue and models, loaded on first use --------------------
_LAZY_MODULES = ("models", "nnx")
_NNX_GLUE = ("label_params", "muon_dimension_numbers", "optax_dimension_numbers",
             "scion_default_lmos", "scion_init", "sphere_axes")


def __getattr__(name: str) -> Any:
  if name in _LAZY_MODULES:
    module = importlib.import_module(f"muonjax.{name}")
    globals()[name] = module
    return module
  if name in _NNX_GLUE:
    value = getattr(importlib.import_module("muonjax.nnx"), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'muonjax' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY_MODULES) | set(_NNX_GLUE))


__all__ = [
    # orthogonalization
    "COEFFICIENT_PRESETS", "get_coefficients", "newton_schulz", "polar_express",
    "polar_express_coefficients", "polar_factor",
    # stages
    "LMO", "GlobalNuclearNormState", "ManoState", "MomentumState", "MomoInputs", "MomoState",
    "MuonDimensionNumbers", "PreconditionInputState", "SecondMomentState",
    "adamuon_normalize", "cautious_weight_decay", "lr_tied_cautious_weight_decay",
    "scale_by_consistent_rms", "scale_by_dual_norm", "constrained_decay",
    "gptopt_orthogonalizer", "hypersphere", "input_second_moment", "mano_normalize",
    "momentum", "momo_step_size", "normuon_normalize", "orthogonalize", "precondition_input",
    "scale_by_global_nuclear_norm", "scale_by_lmo", "scale_by_shape", "scale_to_rms",
    "scion_momentum", "sign", "weight_decay",
    # aliases and registry
    "OPTIMIZERS", "OptimizerSpec", "adamuon", "adamw", "get_optimizer", "get_spec", "mano",
    "momo", "muon", "muon_adam", "muon_max", "newton_muon", "normuon", "polar_muon",
    "register_optimizer", "routing", "scion",
    # Flax NNX glue (lazy)
    "label_params", "models", "muon_dimension_numbers", "nnx", "optax_dimension_numbers",
    "scion_default_lmos", "scion_init", "sphere_axes",
]
