"""Coefficient generator for the Polar Express matrix-sign iteration.

Polar Express approximates the polar factor of a matrix ``X`` by a composition
``p_T o ... o p_1`` of odd polynomials applied to its singular values. Each
``p_t`` is the minimax odd polynomial approximating the constant ``1`` on the
current singular-value interval ``[l_t, u_t]``; the image of that interval
under ``p_t`` gives the next one. The coefficients only depend on the lower
bound ``l`` and a few stability knobs, so they are computed once, in float64,
with NumPy.

References:
  Amsel, Persson, Musco, Gower, `The Polar Express: Optimal Matrix Sign
  Methods and Their Application to the Muon Algorithm
  <https://arxiv.org/abs/2505.16932>`_, 2025.
  Reference code: https://github.com/NoahAmsel/PolarExpress
"""

from __future__ import annotations

import math
import numbers

import numpy as np

# Cushion used for the coefficient list published in the paper. It is the
# lower end ``c`` at which the minimax quintic on ``[c, 1]`` has error 9/11,
# i.e. maps ``[c, 1]`` onto ``[2/11, 20/11]``, whose end points differ by a
# factor of 10.
PAPER_CUSHION: float = 0.02407327424182761

# Once ``l / u >= 1 - _LIMIT_RTOL`` the optimal error is below float64
# resolution, the Remez system cannot resolve it, and the ``l -> u`` limit is
# returned instead (same threshold as the reference code).
_LIMIT_RTOL = 5e-6
_REMEZ_TOL = 1e-15
_REMEZ_MAX_ITERS = 100

_QUINTIC_LIMIT = (15.0 / 8.0, -10.0 / 8.0, 3.0 / 8.0)


def _check_interval(l: float, u: float) -> tuple[float, float]:
  l, u = float(l), float(u)
  if not (math.isfinite(l) and math.isfinite(u) and 0.0 < l <= u):
    raise ValueError(f"l and u must satisfy 0 < l <= u (finite); got l={l}, u={u}.")
  return l, u


def _odd_poly(coeffs: tuple[float, ...], x: float) -> float:
  """Evaluates ``sum_k coeffs[k] * x**(2k+1)``."""
  x2 = x * x
  acc = 0.0
  for coef in reversed(coeffs):
    acc = acc * x2 + coef
  return acc * x


def optimal_cubic(l: float, u: float) -> tuple[float, float]:
  """Odd cubic ``p(x) = a x + b x^3`` minimizing ``max_{x in [l, u]} |1 - p(x)|``.

  Closed form: ``p(x) = beta * f(alpha * x)`` with ``f(y) = (3y - y^3) / 2``,
  where ``alpha`` makes ``p(l) = p(u)`` and ``beta`` centres ``p`` so that its
  interior maximum and ``p(l)`` straddle 1 symmetrically (3-point
  equioscillation).

  Args:
    l: Lower end of the interval, ``0 < l <= u``.
    u: Upper end of the interval.

  Returns:
    The coefficients ``(a, b)``.

  Raises:
    ValueError: If ``0 < l <= u`` does not hold.

  References:
    Amsel et al., The Polar Express, https://arxiv.org/abs/2505.16932;
    https://github.com/NoahAmsel/PolarExpress
  """
  l, u = _check_interval(l, u)
  alpha = math.sqrt(3.0 / (u * u + l * u + l * l))
  f_l = 1.5 * alpha * l - 0.5 * (alpha * l) ** 3
  # max_x f(alpha x) = f(1) = 1, so p(l) + p_max = beta (f_l + 1) = 2.
  beta = 2.0 / (1.0 + f_l)
  return 1.5 * alpha * beta, -0.5 * alpha**3 * beta


class _RemezBreakdown(ArithmeticError):
  pass


def _remez_quintic(l: float) -> tuple[float, float, float]:
  """Minimax odd quintic on ``[l, 1]``, ``0 < l < 1``."""
  # Equioscillation nodes l < q < r < 1 with 1 - p = E, -E, E, -E there;
  # q and r are re-placed at the critical points of p until E is stationary.
  q, r = (3.0 * l + 1.0) / 4.0, (l + 3.0) / 4.0
  signs = np.array([1.0, -1.0, 1.0, -1.0])
  prev_err = math.inf
  for _ in range(_REMEZ_MAX_ITERS):
    nodes = np.array([l, q, r, 1.0])
    system = np.stack([nodes, nodes**3, nodes**5, signs], axis=1)
    a, b, c, err = np.linalg.solve(system, np.ones(4))
    # p'(x) = a + 3b x^2 + 5c x^4 = 0 is a quadratic in x^2.
    disc = 9.0 * b * b - 20.0 * a * c
    if not (c > 0.0 and disc >= 0.0):
      raise _RemezBreakdown(l)
    root = math.sqrt(disc)
    q = math.sqrt((-3.0 * b - root) / (10.0 * c))
    r = math.sqrt((-3.0 * b + root) / (10.0 * c))
    if not l < q < r < 1.0:
      raise _RemezBreakdown(l)
    if abs(err - prev_err) <= _REMEZ_TOL:
      return float(a), float(b), float(c)
    prev_err = err
  raise _RemezBreakdown(l)


def optimal_quintic(l: float, u: float) -> tuple[float, float, float]:
  """Odd quintic ``p(x) = a x + b x^3 + c x^5`` minimizing ``max_{[l, u]} |1 - p|``.

  Solved with the Remez exchange algorithm: the optimum equioscillates at four
  points ``l < q < r < u`` (``1 - p = E, -E, E, -E``), where ``q`` and ``r``
  are the critical points of ``p``. As ``l / u -> 1`` the solution tends to
  ``(15/8, -10/8, 3/8) / (u, u^3, u^5)``, which is returned directly once
  ``l / u >= 1 - 5e-6`` (and if the exchange breaks down because the optimal
  error is at rounding level, which only happens for ``l / u > 1 - 1e-5``).

  Args:
    l: Lower end of the interval, ``0 < l <= u``.
    u: Upper end of the interval.

  Returns:
    The coefficients ``(a, b, c)``.

  Raises:
    ValueError: If ``0 < l <= u`` does not hold.

  References:
    Amsel et al., The Polar Express, https://arxiv.org/abs/2505.16932;
    https://github.com/NoahAmsel/PolarExpress
  """
  l, u = _check_interval(l, u)
  ratio = l / u
  # The problem is scale invariant: p(x) = p_1(x / u) with p_1 optimal on
  # [l / u, 1]; solving on [l / u, 1] keeps the Remez system well scaled.
  a, b, c = _QUINTIC_LIMIT
  if ratio < 1.0 - _LIMIT_RTOL:
    try:
      a, b, c = _remez_quintic(ratio)
    except _RemezBreakdown:
      # Only seen for l / u within ~1e-5 of 1, where the optimal error is
      # below float64 resolution and the limit is optimal up to rounding.
      pass
  return a / u, b / u**3, c / u**5


def _optimal_odd(l: float, u: float, degree: int) -> tuple[float, ...]:
  if degree == 3:
    return optimal_cubic(l, u)
  return optimal_quintic(l, u)


def _is_real(x: object) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _validate_composition_args(
    l: float, num_iters: int, safety_factor_eps: float, cushion: float, degree: int
) -> None:
  if not (_is_real(l) and 0.0 < l < 1.0):
    raise ValueError(f"l must satisfy 0 < l < 1; got {l!r}.")
  if not (isinstance(num_iters, numbers.Integral) and not isinstance(num_iters, bool)
          and num_iters >= 1):
    raise ValueError(f"num_iters must be an integer >= 1; got {num_iters!r}.")
  if not (_is_real(safety_factor_eps) and 0.0 <= safety_factor_eps < math.inf):
    raise ValueError(
        f"safety_factor_eps must be finite and >= 0; got {safety_factor_eps!r}.")
  if not (_is_real(cushion) and 0.0 <= cushion < 1.0):
    raise ValueError(f"cushion must satisfy 0 <= cushion < 1; got {cushion!r}.")
  if degree not in (3, 5):
    raise ValueError(f"degree must be one of {{3, 5}}; got {degree!r}.")


def _max_on(coeffs: tuple[float, ...], lo: float, hi: float) -> float:
  """Maximum of the odd cubic/quintic ``coeffs`` over ``[lo, hi]``."""
  a, b, c = (tuple(coeffs) + (0.0,))[:3]
  # Critical points: a + 3b y + 5c y^2 = 0 with y = x^2.
  ys = np.roots(np.trim_zeros([5.0 * c, 3.0 * b, a], "f"))
  xs = [lo, hi] + [
      math.sqrt(y.real) for y in ys if y.imag == 0.0 and lo * lo < y.real < hi * hi
  ]
  return max(_odd_poly(coeffs, x) for x in xs)


def _deflate(coeffs: tuple[float, ...], s: float) -> tuple[float, ...]:
  # p(x / s): the coefficient of x^(2k+1) is divided by s^(2k+1).
  return tuple(coef / s ** (2 * k + 1) for k, coef in enumerate(coeffs))


def optimal_composition(
    l: float = 1e-3,
    num_iters: int = 10,
    *,
    safety_factor_eps: float = 1e-2,
    cushion: float = PAPER_CUSHION,
    degree: int = 5,
    propagate_deflated: bool = False,
) -> np.ndarray:
  """Polar Express schedule of odd polynomials mapping ``[l, 1]`` towards 1.

  Starting from ``[l_1, u_1] = [l, 1]``, step ``t`` takes the minimax odd
  polynomial ``p_t`` for ``[max(l_t, cushion * u_t), u_t]``; if the cushion
  was active, ``p_t`` is rescaled so that ``p_t(l_t) + max_{[l_t, u_t]} p_t
  = 2`` (the maximum is ``p_t(u_t)`` for quintics). The next interval is
  ``l_{t+1} = p_t(l_t)``, ``u_{t+1} = 2 - l_{t+1}`` (then ``l_{t+1} =
  min(l_{t+1}, u_{t+1})``). Every polynomial except the last is deflated by
  ``s = 1 + safety_factor_eps``, i.e. replaced by ``x -> p_t(x / s)``:
  ``(a, b, c) -> (a / s, b / s^3, c / s^5)``.

  With the defaults and ``num_iters=8`` this reproduces the coefficient list
  published in the paper, deflated by its ``1.01`` safety factor, to ~4e-9.

  Args:
    l: Lower bound on the singular values after normalization, ``0 < l < 1``.
    num_iters: Number of polynomials, ``>= 1``.
    safety_factor_eps: ``s = 1 + safety_factor_eps``, ``>= 0``; guards against
      singular values slightly above the assumed upper bound in low precision.
    cushion: ``0 <= cushion < 1``. Polynomials are never optimized for an
      interval with ``l_t / u_t < cushion``, which keeps their slope bounded
      and their small-singular-value gain finite. ``PAPER_CUSHION`` is the
      value used for the paper's published coefficients.
    degree: Polynomial degree, 5 (quintic) or 3 (cubic; rows are
      ``(a, b, 0.0)``).
    propagate_deflated: If True, each polynomial is deflated *before* it is used
      to propagate ``l_t`` (as the current reference code does). With
      ``l=1e-3, num_iters=5, safety_factor_eps=0.02, cushion=0.02`` this
      reproduces the 5-step table used in modded-nanogpt. The default (False)
      propagates through the undeflated polynomials, matching the paper's
      published list.

  Returns:
    A ``(num_iters, 3)`` float64 array whose row ``t`` holds ``(a, b, c)`` of
    ``p_t(x) = a x + b x^3 + c x^5``, to be applied in order.

  Raises:
    ValueError: If an argument is outside the range given above.

  References:
    Amsel et al., The Polar Express, https://arxiv.org/abs/2505.16932;
    https://github.com/NoahAmsel/PolarExpress (``optimal_composition``)
  """
  _validate_composition_args(l, num_iters, safety_factor_eps, cushion, degree)
  s = 1.0 + float(safety_factor_eps)
  lo, hi = float(l), 1.0
  rows = []
  for t in range(num_iters):
    coeffs = _optimal_odd(max(lo, cushion * hi), hi, degree)
    if cushion * hi > lo:
      # Recentre the range [p(lo), max p] of p on [lo, hi] around 1.
      scale = 2.0 / (_odd_poly(coeffs, lo) + _max_on(coeffs, lo, hi))
      coeffs = tuple(scale * coef for coef in coeffs)
    if t < num_iters - 1:
      deflated = _deflate(coeffs, s)
      if propagate_deflated:
        coeffs = deflated
    else:
      deflated = coeffs
    rows.append(deflated)
    lo = _odd_poly(coeffs, lo)
    hi = 2.0 - lo
    lo = min(lo, hi)
  table = np.zeros((num_iters, 3), dtype=np.float64)
  for t, row in enumerate(rows):
    table[t, : len(row)] = row
  return table
