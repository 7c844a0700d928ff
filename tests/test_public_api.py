"""Every name importable from ``muonjax`` before the core restructuring still imports."""

from __future__ import annotations

import pytest

import muonjax as mj

# The names of muonjax/__init__.py on main before the restructuring (plus the
# submodules reached as attributes).
NAMES = [
    "OPTIMIZERS", "adamuon", "adamw", "get_optimizer", "hyperparameters", "mano", "muon",
    "newton_muon", "normuon", "partition_matrices", "polar_muon", "register_optimizer", "scion",
    "COEFFICIENT_PRESETS", "composed_polynomial", "get_coefficients", "newton_schulz",
    "polar_express_coefficients", "polar_express", "polar_factor", "label_params",
    "muon_dimension_numbers", "optax_dimension_numbers", "MomentumState",
    "MuonDimensionNumbers", "PreconditionInputState", "SecondMomentState", "adamuon_normalize",
    "cautious_weight_decay", "hypersphere", "input_second_moment", "sphere_axes",
    "make_orthogonalizer", "momentum", "normuon_normalize", "orthogonalize",
    "orthogonalize_tree", "precondition_input", "refresh_due", "scale_by_shape", "scale_to_rms",
    "shape_factor", "sign", "weight_decay", "LMO", "constrained_decay", "scale_by_lmo",
    "scion_default_lmos", "scion_init", "scion_momentum", "ManoState", "mano_normalize", "momo",
    "muon_adam", "muon_max", "GlobalNuclearNormState", "GowerState", "MomoInputs", "MomoState",
    "gower_optimizer", "gptopt_orthogonalizer", "momo_step_size",
    "scale_by_global_nuclear_norm", "__version__", "models", "routing",
]


@pytest.mark.parametrize("name", NAMES)
def test_name_still_imports(name):
  assert getattr(mj, name) is not None
  namespace = {}
  exec(f"from muonjax import {name}", namespace)  # pylint: disable=exec-used
  assert namespace[name] is getattr(mj, name)


def test_all_names_exist():
  for name in mj.__all__:
    assert hasattr(mj, name), name
