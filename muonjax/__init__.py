"""muonjax: Muon-family optimizers as composable optax stages, for JAX and Flax NNX."""

from muonjax.optimizers import (
    OPTIMIZERS,
    adamuon,
    adamw,
    get_optimizer,
    hyperparameters,
    mano,
    muon,
    newton_muon,
    normuon,
    partition_matrices,
    polar_muon,
    register_optimizer,
    scion,
)
from muonjax.orthogonalization import (
    PRESETS as COEFFICIENT_PRESETS,
    composed_polynomial,
    get_coefficients,
    newton_schulz,
    optimal_composition as polar_express_coefficients,
    polar_express,
    polar_factor,
)
from muonjax.routing import label_params, muon_dimension_numbers, optax_dimension_numbers
from muonjax.transforms import (
    MomentumState,
    MuonDimensionNumbers,
    PreconditionInputState,
    SecondMomentState,
    adamuon_normalize,
    cautious_weight_decay,
    hypersphere,
    input_second_moment,
    sphere_axes,
    make_orthogonalizer,
    momentum,
    normuon_normalize,
    orthogonalize,
    orthogonalize_tree,
    precondition_input,
    refresh_due,
    scale_by_shape,
    scale_to_rms,
    shape_factor,
    sign,
    weight_decay,
    LMO,
    constrained_decay,
    scale_by_lmo,
    scion_default_lmos,
    scion_init,
    scion_momentum,
    ManoState,
    mano_normalize,
)
from muonjax.optimizers import momo, muon_adam, muon_max
from muonjax.transforms import (
    GlobalNuclearNormState,
    GowerState,
    MomoInputs,
    MomoState,
    gower_optimizer,
    gptopt_orthogonalizer,
    momo_step_size,
    scale_by_global_nuclear_norm,
)

__version__ = "0.1.0"
from muonjax import models
# Installs the stack-sharded Newton–Schulz strategy that orthogonalize(strategy="auto")
# uses under a multi-device jax.set_mesh (the stage itself imports nothing above it).
from muonjax import distributed
