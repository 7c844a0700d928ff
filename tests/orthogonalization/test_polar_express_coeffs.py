"""Tests for the Polar Express coefficient generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muonjax.orthogonalization import polar_express_coeffs as pec

import references
from references import PE_DEFLATED_10DP, PE_LIMIT, PE_MODDED, PE_RAW

# Reference tables (references.py): PE_RAW is the list printed in the paper
# (arXiv 2505.16932) and the reference repo, before the 1.01 safety factor, its
# last row exactly the limit PE_LIMIT; PE_DEFLATED_10DP the same list with every
# row but the last deflated by 1.01; PE_MODDED modded-nanogpt's 5-step table
# (safety 1.02 folded into rows 1-4).
SAFETY = 1.01


def _odd(coeffs, x):
  a, b, c = (tuple(coeffs) + (0.0,))[:3]
  x2 = x * x
  return x * (a + x2 * (b + x2 * c))


def _step_errors(table: np.ndarray, x: np.ndarray) -> np.ndarray:
  """max |1 - x| before and after each polynomial of ``table``."""
  errors = [np.max(np.abs(1.0 - x))]
  for row in table:
    x = _odd(row, x)
    errors.append(np.max(np.abs(1.0 - x)))
  return np.array(errors)


# --- Reproduction of published tables -------------------------------------


def test_paper_table():
  out = pec.optimal_composition(
      1e-3, 8, safety_factor_eps=1e-2, cushion=pec.PAPER_CUSHION, degree=5)
  assert out.shape == (8, 3) and out.dtype == np.float64
  np.testing.assert_allclose(out, PE_DEFLATED_10DP, rtol=0, atol=1e-6)
  np.testing.assert_allclose(out[-1], PE_LIMIT, rtol=0, atol=1e-6)


def test_paper_table_undeflated():
  out = pec.optimal_composition(1e-3, 8, safety_factor_eps=0.0)
  np.testing.assert_allclose(out, PE_RAW, rtol=0, atol=1e-6)
  # Rows 1-7 come out of well-conditioned Remez solves: far tighter than 1e-6.
  np.testing.assert_allclose(out[:7], PE_RAW[:7], rtol=0, atol=1e-9)


def test_defaults_are_the_paper_settings():
  np.testing.assert_array_equal(
      pec.optimal_composition(num_iters=8),
      pec.optimal_composition(
          1e-3, 8, safety_factor_eps=1e-2, cushion=pec.PAPER_CUSHION))


def test_deflation_convention():
  raw = pec.optimal_composition(1e-3, 8, safety_factor_eps=0.0)
  out = pec.optimal_composition(1e-3, 8, safety_factor_eps=SAFETY - 1)
  # Deflation does not feed back into the bounds: rows are the raw rows / s^k.
  np.testing.assert_allclose(out, references.deflate_rows(raw, SAFETY), rtol=1e-13, atol=0)
  np.testing.assert_allclose(references.deflate_rows(PE_RAW, SAFETY), PE_DEFLATED_10DP,
                             atol=1e-10)
  # ... so each deflated row is p_t(x / 1.01) and the last row is p_8 itself.
  x = np.linspace(0.0, 1.2, 101)
  for t in range(7):
    np.testing.assert_allclose(_odd(out[t], x), _odd(raw[t], x / SAFETY), rtol=1e-12, atol=1e-14)
  np.testing.assert_array_equal(out[-1], raw[-1])


def test_modded_nanogpt_table():
  # Reproduced with the reference repo's in-loop deflation, cushion 0.02 and
  # safety 1.02: "cushion=2" there means 2% of u.
  out = pec.optimal_composition(
      1e-3, 5, safety_factor_eps=0.02, cushion=0.02, propagate_deflated=True)
  np.testing.assert_allclose(out, PE_MODDED, rtol=0, atol=1e-9)


def test_cushion_semantics():
  # cushion=0.02 optimizes the first quintic on [0.02, 1]; that is
  # modded-nanogpt's first row (times 1.02), not the paper's.
  first = pec.optimal_composition(1e-3, 1, cushion=0.02)[0]
  np.testing.assert_allclose(first, PE_MODDED[0] * [1.02, 1.02**3, 1.02**5], atol=1e-10)
  assert abs(first[0] - PE_RAW[0, 0]) > 1e-2
  # The paper's cushion is where the optimal quintic on [c, 1] has error 9/11,
  # i.e. p(1) / p(c) = 10.
  coeffs = pec.optimal_quintic(pec.PAPER_CUSHION, 1.0)
  np.testing.assert_allclose(1.0 - _odd(coeffs, pec.PAPER_CUSHION), 9 / 11, rtol=1e-12)
  np.testing.assert_allclose(_odd(coeffs, 1.0) / _odd(coeffs, pec.PAPER_CUSHION), 10.0, rtol=1e-11)


# --- Properties of the single-step minimax polynomials ----------------------

INTERVALS = [(1e-3, 1.0), (pec.PAPER_CUSHION, 1.0), (0.1, 1.0), (0.5, 2.0), (0.3, 0.9),
             (0.9, 1.1), (1e-6, 1.0)]


def _check_minimax(coeffs, l, u, interior):
  """Alternation at l, interior..., u plus optimality against perturbations."""
  nodes = np.array(sorted([l, u, *interior]))
  err = 1.0 - _odd(coeffs, nodes)
  max_err = np.max(np.abs(err))
  np.testing.assert_allclose(np.abs(err), max_err, rtol=1e-9)
  assert np.all(np.sign(err[1:]) == -np.sign(err[:-1])), err
  grid = np.linspace(l, u, 100_001)
  assert np.max(np.abs(1.0 - _odd(coeffs, grid))) <= max_err * (1 + 1e-12)
  points = np.concatenate([grid, nodes])
  rng = np.random.default_rng(0)
  for scale in (1e-3, 1e-6):
    for _ in range(4):
      perturbed = np.asarray(coeffs) * (1.0 + scale * rng.standard_normal(len(coeffs)))
      assert np.max(np.abs(1.0 - _odd(perturbed, points))) > max_err


@pytest.mark.parametrize("l,u", INTERVALS)
def test_optimal_quintic_equioscillates(l, u):
  a, b, c = pec.optimal_quintic(l, u)
  crit = np.roots([5 * c, 0.0, 3 * b, 0.0, a])
  interior = [z.real for z in crit if abs(z.imag) < 1e-12 and l < z.real < u]
  assert len(interior) == 2
  _check_minimax((a, b, c), l, u, interior)


@pytest.mark.parametrize("l,u", INTERVALS)
def test_optimal_cubic_equioscillates(l, u):
  a, b = pec.optimal_cubic(l, u)
  _check_minimax((a, b), l, u, [math.sqrt(-a / (3 * b))])


@pytest.mark.parametrize("u", [1.0, 0.5, 2.0, 1.7])
def test_quintic_limit(u):
  scale = np.array([u, u**3, u**5])
  assert pec.optimal_quintic(u, u) == tuple(PE_LIMIT / scale)
  assert pec.optimal_quintic(u * (1 - 1e-6), u) == tuple(PE_LIMIT / scale)
  np.testing.assert_allclose(pec.optimal_cubic(u, u), np.array([1.5, -0.5]) / scale[:2], rtol=1e-15)


def test_quintic_approaches_limit_without_breaking_down():
  # Includes l / u within 1e-5 of 1, where the optimal error is at rounding
  # level and the exchange may break down (the limit is returned then).
  for d in np.geomspace(1e-7, 1e-2, 400):
    for u in (1.0, 1.3):
      coeffs = np.array(pec.optimal_quintic(u * (1.0 - d), u))
      assert np.max(np.abs(coeffs * [u, u**3, u**5] - PE_LIMIT)) <= 3.0 * d


# --- The composition ---------------------------------------------------------

SIGMA = np.concatenate([np.geomspace(1e-3, 1.0, 100_001), np.linspace(1e-3, 1.0, 100_001)])


def test_composition_maps_into_band():
  table = pec.optimal_composition(1e-3, 8)
  # Deflated table on sigma, and on sigma / 1.01 (the X / (1.01 ||X||_F)
  # normalization it is paired with); the undeflated table on sigma.
  raw = pec.optimal_composition(1e-3, 8, safety_factor_eps=0.0)
  for out in (references.compose(SIGMA, table), references.compose(SIGMA / SAFETY, table),
              references.compose(SIGMA, raw)):
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out - 1.0)) <= 1e-3


def test_cubic_composition():
  table = pec.optimal_composition(1e-3, 14, degree=3)
  assert table.shape == (14, 3)
  np.testing.assert_array_equal(table[:, 2], 0.0)
  assert np.max(np.abs(references.compose(SIGMA, table) - 1.0)) <= 1e-3


@settings(max_examples=60, deadline=None)
@given(l=st.floats(1e-4, 0.5), num_iters=st.integers(1, 10), degree=st.sampled_from([3, 5]))
def test_random_schedules_improve_monotonically(l, num_iters, degree):
  x = np.linspace(l, 1.0, 2001)
  for eps in (1e-2, 0.0):
    table = pec.optimal_composition(l, num_iters, safety_factor_eps=eps, degree=degree)
    assert table.shape == (num_iters, 3) and table.dtype == np.float64
    assert np.all(np.isfinite(table))
    errors = _step_errors(table, x)
    assert np.all(np.diff(errors) <= 1e-12), errors


# --- Argument validation -----------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"l": 0.0}, {"l": 1.0}, {"l": -1e-3}, {"l": float("nan")}, {"l": "0.1"},
    {"num_iters": 0}, {"num_iters": -2}, {"num_iters": 2.5}, {"num_iters": True},
    {"safety_factor_eps": -0.1}, {"safety_factor_eps": float("inf")},
    {"safety_factor_eps": float("nan")},
    {"cushion": -0.01}, {"cushion": 1.0}, {"cushion": float("nan")},
    {"degree": 4}, {"degree": 7},
])
def test_bad_arguments(kwargs):
  (name,) = kwargs
  with pytest.raises(ValueError, match=rf"^{name} must"):
    pec.optimal_composition(**kwargs)


@pytest.mark.parametrize("l,u", [(0.0, 1.0), (-0.1, 1.0), (0.6, 0.5), (float("nan"), 1.0),
                                 (0.1, float("inf"))])
def test_bad_interval(l, u):
  for fn in (pec.optimal_quintic, pec.optimal_cubic):
    with pytest.raises(ValueError, match="l and u must satisfy 0 < l <= u"):
      fn(l, u)


def test_generator_reproduces_shipped_presets():
  """The tables muonjax ships are the generator's output (issue: to 1e-6)."""
  from muonjax.orthogonalization.coefficients import PRESETS

  paper = pec.optimal_composition(1e-3, 8)
  np.testing.assert_allclose(paper, PRESETS["polar_express"].table, rtol=0, atol=1e-6)
  modded = pec.optimal_composition(1e-3, 5, safety_factor_eps=0.02, cushion=0.02,
                                   propagate_deflated=True)
  np.testing.assert_allclose(modded, PRESETS["polar_express_modded"].table, rtol=0, atol=1e-6)
