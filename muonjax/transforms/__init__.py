"""Gradient-transformation stages that Muon-family optimizers are chained from.

sphere_axes and scion_init here work on parameter trees; :mod:`muonjax.nnx`
has the versions that also take an ``nnx.Module``.
"""

from __future__ import annotations


from muonjax.transforms.dimensions import MuonDimensionNumbers
from muonjax.transforms.hypersphere import HypersphereState, hypersphere, sphere_axes
from muonjax.transforms.momentum import MomentumState, momentum
from muonjax.transforms.orthogonalize import (
    make_orthogonalizer,
    orthogonalize,
    orthogonalize_tree,
)
from muonjax.transforms.normalize import (
    SecondMomentState,
    adamuon_normalize,
    normuon_normalize,
    scale_to_rms,
    sign,
)
from muonjax.transforms.precondition import (
    PreconditionInputState,
    input_second_moment,
    precondition_input,
    refresh_due,
)
from muonjax.transforms.dual_norm import scale_by_dual_norm
from muonjax.transforms.scale import scale_by_consistent_rms, scale_by_shape, shape_factor
from muonjax.transforms.weight_decay import (
    LRTiedDecayState,
    cautious_weight_decay,
    lr_tied_cautious_weight_decay,
    weight_decay,
)
from muonjax.transforms.lmo import (
    LMO,
    constrained_decay,
    scale_by_lmo,
    scion_init,
    scion_momentum,
)
from muonjax.transforms.manifold import ManoState, mano_normalize
from muonjax.transforms.global_nuclear_norm import (
    GlobalNuclearNormState,
    gptopt_orthogonalizer,
    scale_by_global_nuclear_norm,
)
from muonjax.transforms.momo import MomoInputs, MomoState, momo_step_size


__all__ = [
    "MuonDimensionNumbers", "MomentumState", "momentum", "make_orthogonalizer",
    "orthogonalize", "orthogonalize_tree", "scale_by_shape", "shape_factor",
    "SecondMomentState", "adamuon_normalize", "normuon_normalize", "scale_to_rms", "sign",
    "cautious_weight_decay", "weight_decay", "LRTiedDecayState", "lr_tied_cautious_weight_decay",
    "scale_by_consistent_rms", "scale_by_dual_norm", "HypersphereState", "hypersphere", "sphere_axes",
    "PreconditionInputState", "input_second_moment", "precondition_input", "refresh_due",
    "LMO", "constrained_decay", "scale_by_lmo", "scion_init",
    "scion_momentum",
    "ManoState", "mano_normalize",
    "GlobalNuclearNormState", "MomoInputs", "MomoState",
    "gptopt_orthogonalizer", "momo_step_size", "scale_by_global_nuclear_norm",
]
