"""Gradient-transformation stages that Muon-family optimizers are chained from."""

from muonjax.transforms.dimensions import MuonDimensionNumbers
from muonjax.transforms.momentum import MomentumState, momentum
from muonjax.transforms.orthogonalize import (
    make_orthogonalizer,
    orthogonalize,
    orthogonalize_tree,
)
from muonjax.transforms.scale import scale_by_shape, shape_factor

__all__ = [
    "MuonDimensionNumbers", "MomentumState", "momentum", "make_orthogonalizer",
    "orthogonalize", "orthogonalize_tree", "scale_by_shape", "shape_factor",
]
