"""Analytic costs of Newton–Schulz and of the matmuls it is compared with.

One quintic step on a wide ``(m, n)`` matrix (``m <= n``) costs ``2m²n`` for
``A = XXᵀ``, ``2m³`` for ``A²`` and ``2m²n`` for ``BX``: ``4m²n + 2m³`` dense
FLOPs (``docs/performance.md#cost-model``; Jordan, Muon,
https://kellerjordan.github.io/posts/muon/).
"""

from __future__ import annotations

import math
from typing import Sequence

NS_STEPS = 5  # Keller's Muon: five quintic steps.


def wide_dims(shape: Sequence[int]) -> tuple[int, int, int]:
  """``(batch, m, n)`` with ``m <= n`` for an array ``(..., rows, cols)``."""
  batch = math.prod(shape[:-2])
  m, n = sorted(shape[-2:])
  return batch, m, n


def ns_flops(shape: Sequence[int], steps: int = NS_STEPS) -> float:
  """``T·(4m²n + 2m³)`` per matrix, times the batch (dense count)."""
  batch, m, n = wide_dims(shape)
  return float(batch * steps * (4 * m * m * n + 2 * m ** 3))


def dot_flops(shape: Sequence[int]) -> float:
  """``2m²n`` per matrix: an (m×n)·(n×m) product, or X Xᵀ."""
  batch, m, n = wide_dims(shape)
  return float(batch * 2 * m * m * n)


def r1_flop_ratio(shape: Sequence[int], steps: int = NS_STEPS) -> float:
  """FLOP ratio NS / X Xᵀ = ``T·(2 + 1/e)`` with ``e = n/m``."""
  _, m, n = wide_dims(shape)
  return steps * (2 + m / n)
