"""AdaMuon (`mj.adamuon`, forms code / megatron) against a NumPy float64 reference.

Reference from docs/optimizers.md#adamuon (layout-free: every statistic is
elementwise or per whole matrix): momentum -> sign -> Keller NS5 ->
``v <- beta v + (1 - beta) O^2`` (beta = the momentum beta) -> ``O / (sqrt(v) + 1e-8)``
-> ``* 0.2 sqrt(n_in n_out) / (||O||_F + 1e-8)`` -> decoupled decay -> ``-lr``.
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
from muonjax.transforms.normalize import SecondMomentState

import helpers
import references
from helpers import as_stack, assert_close, random_tree, states_of, to_jax
from references import fro

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

# --- NumPy float64 reference -----------------------------------------------


class AdaMuonReference:
  """One matrix stack ``(B, n_in, n_out)``; ``step(g, w)`` returns ``-lr * (D + wd * w)``."""

  def __init__(self, shape, form="code", lr=0.02, beta=0.95, weight_decay=None, eps=1e-8):
    self.form, self.lr, self.beta, self.eps = form, lr, beta, eps
    self.wd = (0.01 if form == "code" else 0.1) if weight_decay is None else weight_decay
    self.m = np.zeros(shape)
    self.v = np.zeros(shape)

  def direction(self, g):
    beta, eps = self.beta, self.eps
    if self.form == "code":  # EMA + Nesterov
      self.m = beta * self.m + (1 - beta) * g
      u = beta * self.m + (1 - beta) * g
    else:  # heavy ball + Nesterov
      self.m = beta * self.m + g
      u = g + beta * self.m
    o = references.newton_schulz(np.sign(u))
    self.v = beta * self.v + (1 - beta) * o * o
    o = o / (np.sqrt(self.v) + eps)
    n_in, n_out = o.shape[-2:]
    return o * 0.2 * np.sqrt(n_in * n_out) / (fro(o) + eps)

  def step(self, g, w):
    return -self.lr * (self.direction(g) + self.wd * w)


# --- helpers ---------------------------------------------------------------

SHAPES = helpers.REFERENCE_SHAPES

# assert_close: rtol 1e-4 plus an atol of 1e-5 x the largest entry (for near-zero
# entries). Calibrated over 4 seeds x 3 steps: fp32 vs float64 differ by at most
# 3e-6 x max|update| (relative errors above 1e-5 occur only on near-zero entries).


def rms_per_matrix(x):
  x = as_stack(np.asarray(x, np.float64))
  return np.sqrt(np.mean(x * x, axis=(-2, -1)))


# --- reference checks ------------------------------------------------------


class AdaMuonReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("code", "megatron")
  def test_first_three_updates(self, form):
    rng = np.random.default_rng(0)
    params = to_jax(random_tree(rng, SHAPES))
    grads = [random_tree(rng, SHAPES) for _ in range(3)]
    tx = mj.adamuon(form=form, compute_dtype=None)
    run = helpers.run_steps(tx, params, to_jax(grads), self.variant(tx.update))
    refs = {k: AdaMuonReference(as_stack(np.zeros(s)).shape, form) for k, s in SHAPES.items()}
    for t, (g, updates, w) in enumerate(zip(grads, run.updates, run.params)):
      for k, ref in refs.items():
        w_before = as_stack(np.asarray(w[k], np.float64))
        expected = ref.step(as_stack(g[k].astype(np.float64)), w_before)
        try:
          assert_close(updates[k], expected)
        except AssertionError as e:
          raise AssertionError(f"form={form} leaf={k} step={t + 1}: {e}") from None
    (nu_state,) = states_of(run.state, SecondMomentState)
    for k, ref in refs.items():
      assert nu_state.nu[k].shape == SHAPES[k] and nu_state.nu[k].dtype == jnp.float32
      assert_close(nu_state.nu[k], ref.v)


def test_second_moment_uses_momentum_beta():
  rng = np.random.default_rng(1)
  shapes = {"w": (5, 4)}
  params = {"w": jnp.zeros((5, 4))}
  tx = mj.adamuon(beta=0.8, weight_decay=0.0, compute_dtype=None)
  ref = AdaMuonReference((1, 5, 4), beta=0.8, weight_decay=0.0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(3):
    g = random_tree(rng, shapes)
    updates, state = update(to_jax(g), state, params)
    assert_close(updates["w"], ref.step(as_stack(g["w"].astype(np.float64)), 0.0))


@pytest.mark.parametrize("form", ["code", "megatron"])
def test_update_rms_is_exactly_0p2_alias(form):
  """docs/optimizers.md#test-oracles through the alias with lr 1 and no decay: RMS 0.2 per matrix (1e-6)."""
  rng = np.random.default_rng(2)
  params = to_jax(random_tree(rng, SHAPES))
  tx = mj.adamuon(1.0, weight_decay=0.0, form=form, compute_dtype=None)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(3):
    updates, state = update(to_jax(random_tree(rng, SHAPES)), state, params)
    for k in SHAPES:
      np.testing.assert_allclose(rms_per_matrix(updates[k]), 0.2, rtol=1e-6)


def test_update_rms_is_exactly_0p2_stage_chain():
  """The stage chain without lr / decay: RMS exactly 0.2 (1e-6), even with bf16 NS."""
  rng = np.random.default_rng(3)
  dims = {"wide": mj.MuonDimensionNumbers(0, 1), "tall": mj.MuonDimensionNumbers(0, 1),
          "stack": mj.MuonDimensionNumbers(1, 2)}
  for compute_dtype in (None, jnp.bfloat16):
    tx = optax.chain(
        mj.momentum(0.95),
        mj.sign(dimension_numbers=dims),
        mj.orthogonalize(compute_dtype=compute_dtype, dimension_numbers=dims),
        mj.adamuon_normalize(0.95, dimension_numbers=dims),
        mj.scale_to_rms(0.2, dimension_numbers=dims),
    )
    g0 = to_jax(random_tree(rng, SHAPES))
    state = tx.init(g0)
    update = jax.jit(tx.update)
    for _ in range(3):
      out, state = update(to_jax(random_tree(rng, SHAPES)), state)
      for k in SHAPES:
        np.testing.assert_allclose(rms_per_matrix(out[k]), 0.2, rtol=1e-6)


def test_state_full_size_float32_and_bf16_option():
  params = {"w": jnp.zeros((3, 7)), "s": jnp.zeros((2, 6, 4)), "b": jnp.zeros((7,))}
  for nu_dtype, expected in ((jnp.float32, jnp.float32), (jnp.bfloat16, jnp.bfloat16)):
    tx = mj.adamuon(nu_dtype=nu_dtype)
    state = tx.init(params)
    (nu_state,) = states_of(state, SecondMomentState)
    assert nu_state.nu["w"].shape == (3, 7) and nu_state.nu["w"].dtype == expected
    assert nu_state.nu["s"].shape == (2, 6, 4) and nu_state.nu["s"].dtype == expected
    assert isinstance(nu_state.nu["b"], optax.MaskedNode)
    g = jax.tree.map(lambda x: jnp.ones_like(x) + jnp.arange(x.size).reshape(x.shape) % 3, params)
    updates, state = jax.jit(tx.update)(g, state, params)
    (nu_state,) = states_of(state, SecondMomentState)
    assert nu_state.nu["w"].dtype == expected
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


def test_default_weight_decays():
  """code: wd 0.01 by default; megatron: 0.1 (docs/optimizers.md#adamuon)."""
  params = {"w": jnp.asarray(np.random.default_rng(4).standard_normal((4, 6)), jnp.float32)}
  zero = {"w": jnp.zeros((4, 6))}
  for form, wd in (("code", 0.01), ("megatron", 0.1)):
    tx = mj.adamuon(form=form)
    updates, _ = tx.update(zero, tx.init(params), params)  # zero gradient: decay only
    np.testing.assert_allclose(updates["w"], -0.02 * wd * params["w"], rtol=1e-6)


def test_megatron_explicit_weight_decay_is_kept():
  params = {"w": jnp.ones((4, 6))}
  tx = mj.adamuon(form="megatron", weight_decay=0.01)
  updates, _ = tx.update({"w": jnp.zeros((4, 6))}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.02 * 0.01, rtol=1e-6)


# --- common alias requirements ---------------------------------------------


@pytest.mark.training
@pytest.mark.parametrize("form", ["code", "megatron"])
def test_trains_mlp_at_default_lr(form):
  helpers.check_trains_mlp(mj.adamuon(form=form), factor=0.8)


def _check_injected_lr(factory):
  params, g = helpers.matrix_and_bias(np.random.default_rng(5), random_w=True)
  # The decay uses the base lr too (w doubles); AdamW keeps its 3e-4 (b stays).
  helpers.check_injected_lr(optax.inject_hyperparams(factory)(learning_rate=0.02),
                            mj.adamuon(0.02), params, g, lr=0.02, scaled=["w"], unscaled=["b"])


def test_inject_hyperparams():
  _check_injected_lr(mj.adamuon)


def test_inject_hyperparams_through_wrapper():
  _check_injected_lr(helpers.through_wrapper(mj.adamuon))


@pytest.mark.parametrize("kwargs, name", [
    (dict(beta=1.0), "beta"),
    (dict(beta=-0.5), "beta"),
    (dict(form="x"), "form"),
    (dict(eps=-1.0), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(weight_decay_mode="x"), "weight_decay_mode"),
])
def test_bad_arguments(kwargs, name):
  helpers.check_bad_argument(mj.adamuon, kwargs, name)


def test_registry():
  params = {"w": jnp.ones((4, 6))}
  g = {"w": jnp.asarray(np.random.default_rng(6).standard_normal((4, 6)), jnp.float32)}
  helpers.check_registry("adamuon", params, g, learning_rate=0.01, form="megatron",
                         compute_dtype=None,
                         hyperparameters=("weight_decay", "eps", "form", "nu_dtype", "beta"))
  with pytest.raises(ValueError, match="form"):
    mj.get_optimizer("adamuon", form="adam")
