"""Independent NumPy float64 references shared by the tests.

Everything here is written from docs/optimizers.md (#newton-schulz-step,
#coefficient-sets, #singular-value-ranges) and the published tables, never imported from muonjax: this
module is the oracle the library is checked against, so it must not share code
or constants with it. (The library's own copy of the tables lives in
``muonjax/orthogonalization/coefficients.py``; ``test_newton_schulz`` checks
the two against each other.)

Matrices are stacks ``(..., m, n)``; a 2-D array is a stack of one.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

# --- coefficient tables (docs/optimizers.md#coefficient-sets) ------------------------------------

# Keller Jordan's quintic (docs/optimizers.md#coefficient-sets), one row used at every step.
KELLER = (3.4445, -4.7750, 2.0315)

# Dion's 5-row table (docs/optimizers.md#coefficient-sets).
DION = np.array([
    [4.0848, -6.8946, 2.9270],
    [3.9505, -6.3029, 2.6377],
    [3.7418, -5.5913, 2.3037],
    [2.8769, -3.1427, 1.2046],
    [2.8366, -3.0525, 1.2012],
])

# modded-nanogpt / Dion 5-step Polar Express table (docs/optimizers.md#coefficient-sets), safety 1.02 folded
# into rows 1-4. Normalize by ||X||_F * 1.02 + 1e-6.
PE_MODDED = np.array([
    [8.156554524902461, -22.48329292557795, 15.878769915207462],
    [4.042929935166739, -2.808917465908714, 0.5000178451051316],
    [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
    [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
    [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
])

# The Polar Express paper table (docs/optimizers.md#coefficient-sets; arXiv 2505.16932 and its reference
# repo), before the 1.01 safety factor; the last row is exactly the limit.
PE_RAW = np.array([
    [8.28721201814563, -23.595886519098837, 17.300387312530933],
    [4.107059111542203, -2.9478499167379106, 0.5448431082926601],
    [3.9486908534822946, -2.908902115962949, 0.5518191394370137],
    [3.3184196573706015, -2.488488024314874, 0.51004894012372],
    [2.300652019954817, -1.6689039845747493, 0.4188073119525673],
    [1.891301407787398, -1.2679958271945868, 0.37680408948524835],
    [1.8750014808534479, -1.2500016453999487, 0.3750001645474248],
    [1.875, -1.25, 0.375],
])

# The same table as muonjax.orthogonalization.coefficients.deflate computes it deflated (docs/optimizers.md#coefficient-sets): rows 1-7 divided by
# (s, s^3, s^5) with s = 1.01, to 10 decimals; row 8 is the limit polynomial.
# Normalize by ||X||_F * 1.01 + 1e-7.
PE_DEFLATED_10DP = np.array([
    [8.2051604140, -22.9019349871, 16.4607249102],
    [4.0663951599, -2.8611540868, 0.5183995227],
    [3.9095949044, -2.8233517350, 0.5250369769],
    [3.2855640172, -2.4153019596, 0.4852940655],
    [2.2778732871, -1.6198217653, 0.3984807870],
    [1.8725756513, -1.2307042575, 0.3585161621],
    [1.8564371098, -1.2132392819, 0.3567997894],
    [1.875, -1.25, 0.375],
])

# The limit quintic (15/8, -10/8, 3/8): the fixed point of the Polar Express steps.
PE_LIMIT = np.array([15 / 8, -10 / 8, 3 / 8])

EXACT_CUBIC = np.array([[2.0, -1.5, 0.5]])


def deflate_rows(table, s):
  """Every row but the last divided by ``(s, s^3, s^5)``, i.e. ``p_t(x / s)``."""
  out = np.array(table, dtype=np.float64)
  out[:-1] = out[:-1] / np.array([s, s**3, s**5])
  return out


# The paper table deflated at full precision (the library's "polar_express").
PE_PAPER = deflate_rows(PE_RAW, 1.01)

# GPT-opt `polar.py` divides a, b AND c of every row (row 8 included) by
# 1 + deflation_eps = 1.01 (docs/optimizers.md#coefficient-sets; modichirag/GPT-opt
# gptopt/optim/polar.py: `a = a / (1 + deflation_eps)` etc.), i.e. p(x) / 1.01,
# whose fixed point is 1/1.01 = 0.990 (docs/optimizers.md#singular-value-ranges: "GPT-opt ... x8 [0.990, 0.990]").
# (A p(x/s) deflation of every row, as an earlier version did, gives 1.000.)
# It normalizes by ||X||_F * 1.01 with no epsilon.
PE_GPTOPT = PE_RAW / 1.01

# name -> (table, safety s, eps, default T) from the coefficient-set table of docs/optimizers.md#coefficient-sets (Keller eps).
SPEC_SETS = {
    "keller": (np.array([KELLER]), 1.0, 1e-7, 5),
    "dion": (DION, 1.0, 1e-7, 5),
    "polar_express": (PE_PAPER, 1.01, 1e-7, 5),
    "polar_express_modded": (PE_MODDED, 1.02, 1e-6, 5),
    "exact_cubic": (EXACT_CUBIC, 1.0, 1e-7, 12),
}


# The tables are shared by every test file: make them read-only.
for _table in (DION, PE_MODDED, PE_RAW, PE_DEFLATED_10DP, PE_LIMIT, EXACT_CUBIC, PE_PAPER,
               PE_GPTOPT, SPEC_SETS["keller"][0]):
  _table.setflags(write=False)
del _table


# --- scalar maps --------------------------------------------------------------


def rows(table, steps):
  """First ``steps`` rows; the last one repeats beyond the table (never cycles)."""
  table = np.asarray(table, dtype=np.float64).reshape(-1, 3)
  return [tuple(table[min(t, len(table) - 1)]) for t in range(steps)]


def compose(sigma, table, steps=None, scale=1.0):
  """``p_T o ... o p_1 (sigma / scale)`` in float64 (``T`` defaults to every row)."""
  if steps is None:
    steps = len(np.asarray(table).reshape(-1, 3))
  s = np.asarray(sigma, dtype=np.float64) / scale
  for a, b, c in rows(table, steps):
    s = a * s + b * s**3 + c * s**5
  return s


# --- matrix functions -----------------------------------------------------------


def to_bf16(v):
  """Round float64 values to bfloat16 (and back to float64)."""
  return np.asarray(v, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)


def fro(x):
  """Frobenius norm of every matrix of a stack, keeping the two matrix axes."""
  return np.sqrt(np.sum(x * x, axis=(-2, -1), keepdims=True))


def newton_schulz(x, table=KELLER, steps=5, *, safety=1.0, eps=1e-7, bf16=False):
  """Quintic Newton-Schulz (docs/optimizers.md#newton-schulz-step, #orthogonalization) on a stack ``(..., m, n)`` in float64.

  ``X / (||X||_F * safety + eps)`` per matrix, then the first ``steps`` rows of
  ``table`` (the last row repeats); tall matrices are iterated transposed.
  ``bf16=True`` rounds every intermediate to bfloat16 as the PyTorch reference
  does (``G.bfloat16()`` after normalization). The coefficients are Python floats
  there, so products with them are formed in float32 and rounded once: they are
  not rounded to bfloat16 themselves.
  """
  r = to_bf16 if bf16 else (lambda v: v)
  x = np.asarray(x, np.float64)
  tall = x.shape[-2] > x.shape[-1]
  if tall:
    x = np.swapaxes(x, -1, -2)
  x = r(x / (fro(x) * safety + eps))
  for a, b, c in rows(table, steps):
    gram = r(x @ np.swapaxes(x, -1, -2))
    x = r(r(a * x) + r(r(r(b * gram) + r(c * r(gram @ gram))) @ x))
  return np.swapaxes(x, -1, -2) if tall else x


def polar(x):
  """Exact polar factor ``U V^T`` of every matrix of a stack (float64 SVD)."""
  u, _, vh = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
  return u @ vh


def muon_first_direction(g, beta=0.95, bf16=False):
  """Keller Muon's first direction from zero state (docs/optimizers.md#muon) on ``(..., n_in, n_out)``.

  EMA momentum ``M_1 = (1 - beta) G``, Nesterov input ``beta M_1 + (1 - beta) G``,
  Keller NS5, shape factor ``sqrt(max(1, n_out / n_in))``.
  """
  g = np.asarray(g, np.float64)
  m = (1 - beta) * g
  u = beta * m + (1 - beta) * g
  n_in, n_out = g.shape[-2:]
  return newton_schulz(u, bf16=bf16) * np.sqrt(max(1.0, n_out / n_in))
