"""Tier-0 performance checks (docs/performance.md#benchmark-tiers): properties of the compiled Newton–Schulz, not timings.

* XLA's cost analysis of one compiled NS call agrees with the FLOP formula
  T·(4m²n + 2m³) for the wide view (m ≤ n). XLA counts a while loop's body
  once, so the compiled count is compared with ONE iteration's formula (plus
  the elementwise terms and the normalization, a few percent).
* The scan keeps temporary memory independent of the number of steps (a
  Python-unrolled loop would grow it, and its compile time, with the steps).
"""

import jax
import jax.numpy as jnp
import pytest

import muonjax as mj


def compiled(shape, steps):
  x = jnp.ones(shape, jnp.float32)
  return jax.jit(lambda x: mj.newton_schulz(x, steps=steps, compute_dtype=None)).lower(x).compile()


def flops(executable) -> float:
  analysis = executable.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  return float(analysis["flops"])


@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (3, 64, 96)])
def test_flops_of_one_iteration_match_the_formula(shape):
  *batch, rows, cols = shape
  m, n = min(rows, cols), max(rows, cols)
  count = 1
  for b in batch:
    count *= b
  per_iteration = count * (4 * m * m * n + 2 * m ** 3)
  ratio = flops(compiled(shape, 5)) / per_iteration
  assert 1.0 <= ratio <= 1.1, ratio


@pytest.mark.parametrize("shape", [(64, 128), (3, 64, 96)])
def test_temporary_memory_does_not_grow_with_steps(shape):
  few = compiled(shape, 3).memory_analysis().temp_size_in_bytes
  many = compiled(shape, 24).memory_analysis().temp_size_in_bytes
  assert many == few
  assert flops(compiled(shape, 24)) == flops(compiled(shape, 3))  # one loop body, not 24 copies
