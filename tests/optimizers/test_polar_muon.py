"""`mj.polar_muon` (Muon with Polar Express coefficients) against a NumPy float64 reference.

Reference (docs/optimizers.md#coefficient-sets and #muon): EMA momentum 0.95 with Nesterov,
pre-normalization ``X / (||X||_F * s + eps)``, the first T rows of the table
(the last row repeats beyond the table), Keller shape scale
``sqrt(max(1, n_out / n_in))`` (Flax ``(n_in, n_out)``), ``-lr``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import muonjax as mj

import helpers
import references
from helpers import as_stack, random_tree, to_jax

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

# --- NumPy float64 reference ------------------------------------------------

# variant -> (table, safety s, eps): normalize by ||X||_F * s + eps. "paper" is the
# docs/optimizers.md#coefficient-sets deflated by s = 1.01 as muonjax.orthogonalization.coefficients.deflate computes it (10 decimals; row 8 is the
# limit polynomial), "modded" the docs/optimizers.md#coefficient-sets modded-nanogpt / Dion 5-step table.
VARIANTS = {"paper": (references.PE_DEFLATED_10DP, 1.01, 1e-7),
            "modded": (references.PE_MODDED, 1.02, 1e-6)}


class PolarMuonReference:
  def __init__(self, shape, variant, steps=5, lr=0.02, beta=0.95):
    self.table, self.safety, self.eps = VARIANTS[variant]
    self.steps, self.lr, self.beta = steps, lr, beta
    self.m = np.zeros(shape)
    _, n_in, n_out = shape
    self.scale = np.sqrt(max(1.0, n_out / n_in))

  def step(self, g):
    self.m = self.beta * self.m + (1 - self.beta) * g
    u = self.beta * self.m + (1 - self.beta) * g
    o = references.newton_schulz(u, self.table, self.steps, safety=self.safety, eps=self.eps)
    return -self.lr * self.scale * o


# --- helpers ---------------------------------------------------------------

SHAPES = helpers.REFERENCE_SHAPES


def assert_close(actual, expected):
  """rtol 1e-4 plus an atol of 1e-4 x the largest entry.

  Calibrated over 4 seeds x 3 steps: fp32 vs float64 differ by at most 1.3e-5 x
  max|update| for 5 Polar Express steps (the first row's a ~ 8, c ~ 16 amplify the
  rounding of the normalized input; 1e-6 x max with 8 rows, which converge), so
  near-zero entries need an absolute floor.
  """
  helpers.assert_close(actual, expected, rtol=1e-4, floor=1.0)


def run_against_reference(update, tx, variant, steps, seed=0):
  rng = np.random.default_rng(seed)
  params = to_jax(random_tree(rng, SHAPES))
  grads = [random_tree(rng, SHAPES) for _ in range(3)]
  run = helpers.run_steps(tx, params, to_jax(grads), update)
  refs = {k: PolarMuonReference(as_stack(np.zeros(s)).shape, variant, steps)
          for k, s in SHAPES.items()}
  for t, (g, updates) in enumerate(zip(grads, run.updates)):
    for k, ref in refs.items():
      expected = ref.step(as_stack(g[k].astype(np.float64)))
      try:
        assert_close(updates[k], expected)
      except AssertionError as e:
        raise AssertionError(f"variant={variant} leaf={k} step={t + 1}: {e}") from None


# --- reference checks ------------------------------------------------------


class PolarMuonReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("paper", "modded")
  def test_first_three_updates(self, variant):
    tx = mj.polar_muon(variant=variant, compute_dtype=None)
    run_against_reference(self.variant(tx.update), tx, variant, steps=5)


@pytest.mark.parametrize("steps", [8, 10])
def test_paper_table_all_rows_and_repeat_last(steps):
  """T = 8 uses every row; T = 10 repeats row 8 (never cycles; Emerging-Optimizers PR #91, https://github.com/NVIDIA-NeMo/Emerging-Optimizers/pull/91)."""
  tx = mj.polar_muon(variant="paper", steps=steps, compute_dtype=None)
  run_against_reference(jax.jit(tx.update), tx, "paper", steps=steps, seed=1)


def test_modded_repeats_last_row():
  tx = mj.polar_muon(variant="modded", steps=7, compute_dtype=None)
  run_against_reference(jax.jit(tx.update), tx, "modded", steps=7, seed=2)


def test_paper_eight_rows_are_nearly_orthogonal():
  """docs/optimizers.md#singular-value-ranges: 8 deflated rows map sigma in [1e-3, 1] to 1; output ~ polar factor."""
  rng = np.random.default_rng(3)
  g = rng.standard_normal((6, 10)).astype(np.float32)
  params = {"w": jnp.zeros((6, 10))}
  tx = mj.polar_muon(1.0, steps=8, compute_dtype=None, shape_rule="none")
  updates, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
  np.testing.assert_allclose(-np.asarray(updates["w"]), references.polar(g), atol=5e-3)


def test_state_is_plain_muon_momentum():
  params = {"w": jnp.zeros((3, 7)), "s": jnp.zeros((2, 6, 4)), "b": jnp.zeros((7,))}
  state = mj.polar_muon().init(params)
  (mom,) = helpers.states_of(state, mj.MomentumState)
  assert mom.count.dtype == jnp.int32 and mom.count.shape == ()
  assert mom.mu["w"].shape == (3, 7) and mom.mu["s"].shape == (2, 6, 4)
  assert mom.mu["w"].dtype == jnp.float32
  assert isinstance(mom.mu["b"], optax.MaskedNode)


# --- common alias requirements ---------------------------------------------


@pytest.mark.training
@pytest.mark.parametrize("variant", ["paper", "modded"])
def test_trains_mlp_at_default_lr(variant):
  helpers.check_trains_mlp(mj.polar_muon(variant=variant), factor=0.8)


def _check_injected_lr(factory):
  params, g = helpers.matrix_and_bias(np.random.default_rng(5))
  # AdamW keeps its 3e-4: the bias update stays.
  helpers.check_injected_lr(optax.inject_hyperparams(factory)(learning_rate=0.02),
                            mj.polar_muon(0.02), params, g, lr=0.02, scaled=["w"], unscaled=["b"])


def test_inject_hyperparams():
  _check_injected_lr(mj.polar_muon)


def test_inject_hyperparams_through_wrapper():
  _check_injected_lr(helpers.through_wrapper(mj.polar_muon))


@pytest.mark.parametrize("kwargs, name", [
    (dict(variant="x"), "variant"),
    (dict(steps=0), "steps"),
    (dict(beta=1.0), "beta"),
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_bad_arguments(kwargs, name):
  helpers.check_bad_argument(mj.polar_muon, kwargs, name)


def test_registry():
  params = {"w": jnp.zeros((4, 6))}
  g = {"w": jnp.asarray(np.random.default_rng(6).standard_normal((4, 6)), jnp.float32)}
  helpers.check_registry("polar_muon", params, g, learning_rate=0.01, variant="modded",
                         compute_dtype=None, hyperparameters=("steps", "variant", "beta"))
  with pytest.raises(ValueError, match="variant"):
    mj.get_optimizer("polar_muon", variant="gptopt")
