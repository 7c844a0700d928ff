"""`mj.polar_muon` (Muon with Polar Express coefficients) against a NumPy float64 reference.

Reference (optimizers spec §2.3, §2.4, §3.1): EMA momentum 0.95 with Nesterov,
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
from flax import nnx

import muonjax as mj
from muonjax import demo

# --- coefficient tables, written out from the spec -------------------------

# §2.4, Polar Express paper table, rows 1-7 deflated by s = 1.01 (a/s, b/s^3, c/s^5);
# row 8 is the limit polynomial (15/8, -10/8, 3/8). Normalize by ||X||_F * 1.01 + 1e-7.
PAPER_DEFLATED = np.array([
    [8.2051604140, -22.9019349871, 16.4607249102],
    [4.0663951599, -2.8611540868, 0.5183995227],
    [3.9095949044, -2.8233517350, 0.5250369769],
    [3.2855640172, -2.4153019596, 0.4852940655],
    [2.2778732871, -1.6198217653, 0.3984807870],
    [1.8725756513, -1.2307042575, 0.3585161621],
    [1.8564371098, -1.2132392819, 0.3567997894],
    [1.875, -1.25, 0.375],
])
PAPER_NORM = (1.01, 1e-7)

# §2.3, modded-nanogpt / Dion 5-step table (safety 1.02 folded in).
# Normalize by ||X||_F * 1.02 + 1e-6.
MODDED = np.array([
    [8.156554524902461, -22.48329292557795, 15.878769915207462],
    [4.042929935166739, -2.808917465908714, 0.5000178451051316],
    [3.8916678022926607, -2.772484153217685, 0.5060648178503393],
    [3.285753657755655, -2.3681294933425376, 0.46449024233003106],
    [2.3465413258596377, -1.7097828382687081, 0.42323551169305323],
])
MODDED_NORM = (1.02, 1e-6)

VARIANTS = {"paper": (PAPER_DEFLATED, PAPER_NORM), "modded": (MODDED, MODDED_NORM)}


def np_polar_express(x, table, steps, safety, eps):
  """First ``steps`` rows of ``table`` (last row repeated) on a stack ``(B, m, n)``."""
  rows = [table[min(t, len(table) - 1)] for t in range(steps)]
  tall = x.shape[-2] > x.shape[-1]
  if tall:
    x = np.swapaxes(x, -1, -2)
  x = x / (np.sqrt(np.sum(x * x, axis=(-2, -1), keepdims=True)) * safety + eps)
  for a, b, c in rows:
    gram = x @ np.swapaxes(x, -1, -2)
    x = a * x + (b * gram + c * gram @ gram) @ x
  return np.swapaxes(x, -1, -2) if tall else x


class PolarMuonReference:
  def __init__(self, shape, variant, steps=5, lr=0.02, beta=0.95):
    self.table, (self.safety, self.eps) = VARIANTS[variant]
    self.steps, self.lr, self.beta = steps, lr, beta
    self.m = np.zeros(shape)
    _, n_in, n_out = shape
    self.scale = np.sqrt(max(1.0, n_out / n_in))

  def step(self, g):
    self.m = self.beta * self.m + (1 - self.beta) * g
    u = self.beta * self.m + (1 - self.beta) * g
    o = np_polar_express(u, self.table, self.steps, self.safety, self.eps)
    return -self.lr * self.scale * o


@pytest.fixture(autouse=True)
def _true_fp32_matmuls():
  """GPUs default to TF32 matmuls; the float64 reference needs full fp32 products."""
  with jax.default_matmul_precision("highest"):
    yield


# --- helpers ---------------------------------------------------------------

SHAPES = {"wide": (3, 7), "tall": (7, 3), "stack": (2, 6, 4)}


def as_stack(x):
  return x.reshape((1,) + x.shape) if x.ndim == 2 else x


def random_tree(rng):
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def assert_close(actual, expected, rtol=1e-4):
  """rtol 1e-4 plus an atol of 1e-4 x the largest entry.

  Calibrated over 4 seeds x 3 steps: fp32 vs float64 differ by at most 1.3e-5 x
  max|update| for 5 Polar Express steps (the first row's a ~ 8, c ~ 16 amplify the
  rounding of the normalized input; 1e-6 x max with 8 rows, which converge), so
  near-zero entries need an absolute floor.
  """
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual, np.float64).reshape(expected.shape), expected,
                             rtol=rtol, atol=rtol * np.max(np.abs(expected)))


def run_against_reference(update, tx, variant, steps, seed=0):
  rng = np.random.default_rng(seed)
  params = jax.tree.map(jnp.asarray, random_tree(rng))
  state = tx.init(params)
  refs = {k: PolarMuonReference(as_stack(np.zeros(s)).shape, variant, steps)
          for k, s in SHAPES.items()}
  for t in range(3):
    g = random_tree(rng)
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
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
  """T = 8 uses every row; T = 10 repeats row 8 (never cycles; EO PR #91)."""
  tx = mj.polar_muon(variant="paper", steps=steps, compute_dtype=None)
  run_against_reference(jax.jit(tx.update), tx, "paper", steps=steps, seed=1)


def test_modded_repeats_last_row():
  tx = mj.polar_muon(variant="modded", steps=7, compute_dtype=None)
  run_against_reference(jax.jit(tx.update), tx, "modded", steps=7, seed=2)


def test_paper_eight_rows_are_nearly_orthogonal():
  """Spec §15.1: 8 deflated rows map sigma in [1e-3, 1] to 1; output ~ polar factor."""
  rng = np.random.default_rng(3)
  g = rng.standard_normal((6, 10)).astype(np.float32)
  params = {"w": jnp.zeros((6, 10))}
  tx = mj.polar_muon(1.0, steps=8, compute_dtype=None, shape_rule="none")
  updates, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
  u, _, vt = np.linalg.svd(g.astype(np.float64), full_matrices=False)
  np.testing.assert_allclose(-np.asarray(updates["w"]), u @ vt, atol=5e-3)


def test_state_is_plain_muon_momentum():
  params = {"w": jnp.zeros((3, 7)), "s": jnp.zeros((2, 6, 4)), "b": jnp.zeros((7,))}
  state = mj.polar_muon().init(params)
  (mom,) = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, mj.MomentumState))
            if isinstance(s, mj.MomentumState)]
  assert mom.count.dtype == jnp.int32 and mom.count.shape == ()
  assert mom.mu["w"].shape == (3, 7) and mom.mu["s"].shape == (2, 6, 4)
  assert mom.mu["w"].dtype == jnp.float32
  assert isinstance(mom.mu["b"], optax.MaskedNode)


# --- common alias requirements ---------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "modded"])
def test_trains_mlp_at_default_lr(variant):
  cfg = demo.DemoConfig(steps=100, batch=64, hidden=32)
  losses = np.asarray(demo.train(cfg, mj.polar_muon(variant=variant)))
  assert np.all(np.isfinite(losses))
  assert losses[-10:].mean() < 0.8 * losses[0]




def _check_injected_lr(factory):
  rng = np.random.default_rng(5)
  params = {"w": jnp.zeros((4, 6)), "b": jnp.zeros((6,))}
  g = {"w": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32), "b": jnp.ones((6,))}
  tx = factory(0.02)
  state = tx.init(params)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
  update = jax.jit(tx.update)
  u1, _ = update(g, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.04)
  u2, _ = update(g, state, params)
  plain = mj.polar_muon(0.02)
  u0, _ = plain.update(g, plain.init(params), params)
  chex.assert_trees_all_close(u1, u0, rtol=1e-6)
  chex.assert_trees_all_close(u2["w"], 2 * u1["w"], rtol=1e-6)
  chex.assert_trees_all_close(u2["b"], u1["b"], rtol=1e-6)  # AdamW keeps its 3e-4


def test_inject_hyperparams():
  _check_injected_lr(lambda lr: optax.inject_hyperparams(mj.polar_muon)(learning_rate=lr))


def test_inject_hyperparams_through_wrapper():
  def factory(learning_rate):
    return mj.polar_muon(learning_rate)
  _check_injected_lr(lambda lr: optax.inject_hyperparams(factory)(learning_rate=lr))


def test_nnx_optimizer():
  model = demo.MLP(8, 16, 4, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, mj.polar_muon(), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (32, 8))
  y = jax.random.normal(jax.random.key(2), (32, 4))

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(4)]
  assert losses[3] < losses[0]


@pytest.mark.parametrize("kwargs, name", [
    (dict(variant="x"), "variant"),
    (dict(steps=0), "steps"),
    (dict(beta=1.0), "beta"),
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    mj.polar_muon(**kwargs)


def test_registry():
  assert mj.OPTIMIZERS["polar_muon"] is mj.polar_muon
  params = {"w": jnp.zeros((4, 6))}
  g = {"w": jnp.asarray(np.random.default_rng(6).standard_normal((4, 6)), jnp.float32)}
  tx = mj.get_optimizer("polar_muon", learning_rate=0.01, variant="modded", compute_dtype=None)
  direct = mj.polar_muon(0.01, variant="modded", compute_dtype=None)
  u1, _ = tx.update(g, tx.init(params), params)
  u2, _ = direct.update(g, direct.init(params), params)
  chex.assert_trees_all_close(u1, u2)
  for hp in ("steps", "variant", "beta"):
    assert hp in mj.hyperparameters(mj.polar_muon)
  with pytest.raises(ValueError, match="variant"):
    mj.get_optimizer("polar_muon", variant="gptopt")
