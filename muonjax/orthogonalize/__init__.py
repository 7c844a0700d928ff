"""Orthogonalization math on arrays of shape ``(..., m, n)``."""

from muonjax.orthogonalize.coefficients import (
    PRESETS,
    CoefficientSet,
    deflate,
    expand_table,
    get_coefficients,
)
from muonjax.orthogonalize.newton_schulz import (
    NORMALIZATIONS,
    composed_polynomial,
    newton_schulz,
    polar_express,
    polar_factor,
)

__all__ = [
    "PRESETS", "CoefficientSet", "deflate", "expand_table", "get_coefficients",
    "NORMALIZATIONS", "composed_polynomial", "newton_schulz", "polar_express",
    "polar_factor",
]
