"""Orthogonalization math on arrays of shape ``(..., m, n)``."""

from muonjax.orthogonalization.coefficients import (
    PRESETS,
    CoefficientSet,
    deflate,
    expand_table,
    get_coefficients,
)
from muonjax.orthogonalization.polar_express_coeffs import optimal_composition
from muonjax.orthogonalization.newton_schulz import (
    NORMALIZATIONS,
    composed_polynomial,
    newton_schulz,
    polar_express,
    polar_factor,
)

__all__ = [
    "PRESETS", "CoefficientSet", "deflate", "expand_table", "get_coefficients",
    "NORMALIZATIONS", "composed_polynomial", "newton_schulz", "polar_express",
    "polar_factor", "optimal_composition",
]
