"""Gradient-transformation stages that Muon-family optimizers are chained from."""

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
from muonjax.transforms.scale import scale_by_shape, shape_factor
from muonjax.transforms.weight_decay import cautious_weight_decay, weight_decay

__all__ = [
    "MuonDimensionNumbers", "MomentumState", "momentum", "make_orthogonalizer",
    "orthogonalize", "orthogonalize_tree", "scale_by_shape", "shape_factor",
    "SecondMomentState", "adamuon_normalize", "normuon_normalize", "scale_to_rms", "sign",
    "cautious_weight_decay", "weight_decay", "HypersphereState", "hypersphere", "sphere_axes",
]
