"""Coefficient sets for quintic Newton–Schulz / Polar Express iterations.

Each set maps a singular value through a composition of odd polynomials
``p_t(x) = a_t x + b_t x^3 + c_t x^5``. A set also fixes how its input is
pre-normalized, ``X / (||X||_F * safety + eps)``, because every published table
was derived for one particular safety divisor.

Tables shorter than the requested number of steps repeat their last row (the
Polar Express rule; never cycle a Polar Express table).

References:
  Jordan, Muon (https://github.com/KellerJordan/Muon).
  Amsel et al., The Polar Express, arXiv 2505.16932
  (https://github.com/NoahAmsel/PolarExpress).
  modded-nanogpt record 38 (https://github.com/KellerJordan/modded-nanogpt) and
  microsoft/dion (https://github.com/microsoft/dion).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class CoefficientSet:
  """A named table of quintic coefficients and its pre-normalization.

  Attributes:
    name: preset name.
    table: ``(rows, 3)`` float64 array of ``(a, b, c)``.
    steps: default number of iterations.
    safety: divisor ``s`` in ``X / (||X||_F * s + eps)``.
    eps: additive epsilon of the pre-normalization.
    source: where the numbers come from.
  """

  name: str
  table: np.ndarray
  steps: int
  safety: float
  eps: float
  source: str

  def rows(self, steps: int | None = None) -> np.ndarray:
    """The ``(steps, 3)`` table actually iterated: first rows, then repeat the last."""
    return expand_table(self.table, self.steps if steps is None else steps)


def expand_table(table: np.ndarray, steps: int) -> np.ndarray:
  """First ``steps`` rows of ``table``; the last row repeats when it is shorter."""
  table = np.asarray(table, dtype=np.float64).reshape(-1, 3)
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  if steps <= table.shape[0]:
    return table[:steps]
  extra = np.repeat(table[-1:], steps - table.shape[0], axis=0)
  return np.concatenate([table, extra], axis=0)


_KELLER = np.array([[3.4445, -4.7750, 2.0315]])

_DION = np.array([
    [4.0848, -6.8946, 2.9270],
    [3.9505, -6.3029, 2.6377],
    [3.7418, -5.5913, 2.3037],
    [2.8769, -3.1427, 1.2046],
    [2.8366, -3.0525, 1.2012],
])

# modded-nanogpt / Dion 5-step table; the 1.02 safety is folded into rows 1-4.
_POLAR_EXPRESS_MODDED = np.array([
    [8.156554524902461, -22.48329292557795, 15.878769915207462],
    [4.042929935166739, -2.808917465908714, 0.5000178451051316],
    [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
    [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
    [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
])

# Polar Express paper table, optimal_composition(l=1e-3, num_iters=8), before
# the safety deflation.
POLAR_EXPRESS_RAW = np.array([
    [8.28721201814563, -23.595886519098837, 17.300387312530933],
    [4.107059111542203, -2.9478499167379106, 0.5448431082926601],
    [3.9486908534822946, -2.908902115962949, 0.5518191394370137],
    [3.3184196573706015, -2.488488024314874, 0.51004894012372],
    [2.300652019954817, -1.6689039845747493, 0.4188073119525673],
    [1.891301407787398, -1.2679958271945868, 0.37680408948524835],
    [1.8750014808534479, -1.2500016453999487, 0.3750001645474248],
    [1.875, -1.25, 0.375],
])


def deflate(table: np.ndarray, safety: float, *, last: bool = False) -> np.ndarray:
  """Replace each ``p(x)`` by ``p(x / safety)``: ``(a, b, c) / (s, s^3, s^5)``.

  Args:
    table: ``(rows, 3)`` coefficients.
    safety: the divisor ``s``.
    last: also deflate the last row (the paper leaves the limit polynomial).

  Returns:
    The deflated table (float64).
  """
  table = np.array(table, dtype=np.float64)
  powers = np.array([safety, safety**3, safety**5])
  stop = table.shape[0] if last else table.shape[0] - 1
  table[:stop] = table[:stop] / powers
  return table


PRESETS: dict[str, CoefficientSet] = {
    s.name: s
    for s in [
        CoefficientSet("keller", _KELLER, 5, 1.0, 1e-7, "KellerJordan/Muon"),
        CoefficientSet("dion", _DION, 5, 1.0, 1e-7, "microsoft/dion, Emerging-Optimizers 'quintic'"),
        CoefficientSet(
            "polar_express", deflate(POLAR_EXPRESS_RAW, 1.01), 5, 1.01, 1e-7,
            "NoahAmsel/PolarExpress (arXiv 2505.16932), 8 rows, safety 1.01"),
        CoefficientSet(
            "polar_express_modded", _POLAR_EXPRESS_MODDED, 5, 1.02, 1e-6,
            "modded-nanogpt record 38 / microsoft/dion"),
        CoefficientSet(
            "exact_cubic", np.array([[2.0, -1.5, 0.5]]), 12, 1.0, 1e-7,
            "modded-nanogpt track 3 reference; converges to U V^T"),
        CoefficientSet(
            "polar_express_gptopt", POLAR_EXPRESS_RAW / 1.01, 5, 1.01, 0.0,
            "modichirag/GPT-opt polar.py: every coefficient / 1.01 (parity only)"),
    ]
}

CoeffsLike = Union[str, CoefficientSet, Sequence[float], Sequence[Sequence[float]], np.ndarray]


def get_coefficients(coeffs: CoeffsLike) -> CoefficientSet:
  """Resolve a preset name, a ``(3,)`` triple or a ``(rows, 3)`` table.

  A custom table gets safety 1 and eps 1e-7 and, as default step count, its
  number of rows (at least 5 for a single triple).

  Raises:
    ValueError: unknown preset name or a table whose last axis is not 3.
  """
  if isinstance(coeffs, CoefficientSet):
    return coeffs
  if isinstance(coeffs, str):
    if coeffs not in PRESETS:
      raise ValueError(
          f"unknown coefficient set {coeffs!r}; known: {sorted(PRESETS)}")
    return PRESETS[coeffs]
  table = np.asarray(coeffs, dtype=np.float64)
  if table.ndim not in (1, 2) or table.shape[-1] != 3 or table.size == 0:
    raise ValueError(
        f"coeffs must be a preset name {sorted(PRESETS)}, a (3,) triple or a "
        f"(rows, 3) table; got shape {table.shape}")
  if not np.all(np.isfinite(table)):
    raise ValueError("coeffs must be finite")
  table = table.reshape(-1, 3)
  steps = max(table.shape[0], 5) if table.shape[0] == 1 else table.shape[0]
  return CoefficientSet("custom", table, steps, 1.0, 1e-7, "user")
