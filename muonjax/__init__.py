"""muonjax: Muon-family optimizers as composable optax stages, for JAX and Flax NNX."""

from muonjax.optimizers import (
    OPTIMIZERS,
    adamuon,
    adamw,
    get_optimizer,
    hyperparameters,
    muon,
    normuon,
    partition_matrices,
    polar_muon,
    register_optimizer,
)
from muonjax.orthogonalize import (
    PRESETS as COEFFICIENT_PRESETS,
    composed_polynomial,
    get_coefficients,
    newton_schulz,
    polar_express,
    polar_factor,
)
from muonjax.routing import label_params, muon_dimension_numbers, optax_dimension_numbers
from muonjax.transforms import (
    MomentumState,
    MuonDimensionNumbers,
    SecondMomentState,
    adamuon_normalize,
    cautious_weight_decay,
    hypersphere,
    sphere_axes,
    make_orthogonalizer,
    momentum,
    normuon_normalize,
    orthogonalize,
    orthogonalize_tree,
    scale_by_shape,
    scale_to_rms,
    shape_factor,
    sign,
    weight_decay,
)

__version__ = "0.1.0"
