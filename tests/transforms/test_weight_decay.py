"""Weight decay stage (docs/optimizers.md#weight-decay): decoupled (= optax.add_decayed_weights) and cautious.

Cautious decay (docs/optimizers.md#weight-decay; Dion ``cautious_wd``, arXiv 2510.12402):
``D <- D + lambda * 1[D * W >= 0] * W``, then ``-lr``. ``D`` is the descent direction
(the quantity subtracted); ties (``D = 0`` or ``W = 0``) count as decayed. The
rule is elementwise, so it has no layout convention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import muonjax as mj
from muonjax.transforms.weight_decay import cautious_weight_decay, weight_decay

import references


def np_cautious(d, w, lam):
  return d + lam * (d * w >= 0) * w


@pytest.fixture
def tree():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((4, 6))
  w[1, 2] = 0.0  # W = 0: a tie
  s = rng.standard_normal((2, 5, 3))
  b = rng.standard_normal((6,))
  gw = rng.standard_normal((4, 6))
  gw[:, 0] = 0.0  # a zero column stays zero through NS: D = 0 ties with W != 0
  gs = rng.standard_normal((2, 5, 3))
  gb = rng.standard_normal((6,))
  gb[[0, 3]] = 0.0  # Adam direction exactly 0 there: ties
  f32 = lambda x: x.astype(np.float32)
  return ({"w": f32(w), "s": f32(s), "b": f32(b)}, {"w": f32(gw), "s": f32(gs), "b": f32(gb)})


# --- cautious ----------------------------------------------------------------


def test_cautious_stage_mask_and_ties():
  d = jnp.array([1.0, -1.0, 1.0, -1.0, 0.0, 2.0, 0.0])
  w = jnp.array([2.0, -3.0, -2.0, 3.0, 5.0, 0.0, 0.0])
  out, _ = cautious_weight_decay(0.5).update(d, optax.EmptyState(), w)
  # same sign -> decayed; opposite -> not; D = 0 or W = 0 -> decayed (>=).
  np.testing.assert_allclose(out, [2.0, -2.5, 1.0, -1.0, 2.5, 2.0, 0.0])


def test_cautious_stage_matches_numpy():
  rng = np.random.default_rng(1)
  d = rng.standard_normal((3, 5, 4)).astype(np.float32)
  w = rng.standard_normal((3, 5, 4)).astype(np.float32)
  d[0, 0] = 0.0
  out, _ = jax.jit(weight_decay(0.1, mode="cautious").update)(
      {"a": jnp.asarray(d)}, optax.EmptyState(), {"a": jnp.asarray(w)})
  np.testing.assert_allclose(out["a"], np_cautious(d.astype(np.float64), w, 0.1), rtol=1e-6)


def test_cautious_through_muon_one_step(tree):
  """Muon leaves (w, stacked s) and the AdamW leaf (b) both use the cautious rule."""
  params, grads = tree
  lam, lam_adam = 0.1, 0.05
  tx = mj.muon(weight_decay=lam, weight_decay_mode="cautious", adam_weight_decay=lam_adam,
               compute_dtype=None)
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads), tx.init(params), params)
  for k in ("w", "s"):
    w = params[k].astype(np.float64)
    d = references.muon_first_direction(grads[k].astype(np.float64))
    if k == "w":
      assert np.all(d[:, 0] == 0.0)
    expected = -0.02 * np_cautious(d, w, lam)
    np.testing.assert_allclose(updates[k], expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max(), err_msg=k)
  # AdamW step 1 (b1 0.9, b2 0.95, eps 1e-10, bias-corrected): D = g / (|g| + 1e-10).
  g, w = grads["b"].astype(np.float64), params["b"].astype(np.float64)
  d = g / (np.abs(g) + 1e-10)
  expected = -3e-4 * np_cautious(d, w, lam_adam)
  np.testing.assert_allclose(updates["b"], expected, rtol=1e-5, atol=1e-12)
  # The tied coordinates (g = 0) are decayed: -lr * lam * w.
  np.testing.assert_allclose(np.asarray(updates["b"])[[0, 3]], -3e-4 * lam_adam * w[[0, 3]],
                             rtol=1e-5)
  # Decoupled for comparison decays every coordinate.
  tx_dec = mj.muon(weight_decay=lam, adam_weight_decay=lam_adam, compute_dtype=None)
  dec, _ = tx_dec.update(jax.tree.map(jnp.asarray, grads), tx_dec.init(params), params)
  assert not np.allclose(dec["w"], updates["w"])


@pytest.mark.parametrize("name", ["muon", "normuon", "adamuon", "polar_muon"])
def test_cautious_mode_works_with_every_alias(name, tree):
  """docs/optimizers.md#weight-decay (NorMuon issue #11): same direction as without decay, plus the cautious term."""
  params, grads = tree
  grads = jax.tree.map(jnp.asarray, grads)
  factory = mj.OPTIMIZERS[name]
  lr, lam = 0.02, 0.1
  plain = factory(lr, weight_decay=0.0, compute_dtype=None)
  u0, _ = plain.update(grads, plain.init(params), params)
  tx = factory(lr, weight_decay=lam, weight_decay_mode="cautious", compute_dtype=None)
  u1, _ = tx.update(grads, tx.init(params), params)
  for k in ("w", "s"):
    d = -np.asarray(u0[k], np.float64) / lr
    expected = -lr * np_cautious(d, params[k].astype(np.float64), lam)
    np.testing.assert_allclose(u1[k], expected, rtol=1e-5, atol=1e-7, err_msg=f"{name} {k}")
  np.testing.assert_allclose(u1["b"], u0["b"], rtol=1e-6)  # adam_weight_decay stays 0


# --- decoupled -----------------------------------------------------------------


@pytest.mark.parametrize("mask", [None, {"w": True, "s": False, "b": True},
                                  lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)])
def test_decoupled_equals_optax_add_decayed_weights(tree, mask):
  params, grads = tree
  ours = weight_decay(0.1, mask=mask)
  ref = optax.add_decayed_weights(0.1, mask)
  u1, _ = ours.update(grads, ours.init(params), params)
  u2, _ = ref.update(grads, ref.init(params), params)
  for k in params:
    np.testing.assert_array_equal(u1[k], u2[k])


def test_decoupled_through_muon(tree):
  """``W <- W - lr (D + lambda W)`` with the base lr on Muon leaves; AdamW leaves untouched."""
  params, grads = tree
  grads = jax.tree.map(jnp.asarray, grads)
  plain = mj.muon(compute_dtype=None)
  u0, _ = plain.update(grads, plain.init(params), params)
  tx = mj.muon(weight_decay=0.1, compute_dtype=None)
  u1, _ = tx.update(grads, tx.init(params), params)
  for k in ("w", "s"):
    np.testing.assert_allclose(u1[k], u0[k] - 0.02 * 0.1 * params[k], rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(u1["b"], u0["b"], rtol=1e-6)


# --- masks -----------------------------------------------------------------------


@pytest.mark.parametrize("mask", [{"w": True, "s": False, "b": False},
                                  lambda p: {"w": True, "s": False, "b": False}])
def test_cautious_mask(tree, mask):
  params, grads = tree
  tx = weight_decay(0.1, mode="cautious", mask=mask)
  out, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(out["w"], np_cautious(grads["w"].astype(np.float64),
                                                   params["w"], 0.1), rtol=1e-6)
  np.testing.assert_array_equal(out["s"], grads["s"])
  np.testing.assert_array_equal(out["b"], grads["b"])


@pytest.mark.parametrize("mode", ["decoupled", "cautious"])
def test_muon_weight_decay_mask(tree, mode):
  params, grads = tree
  grads = jax.tree.map(jnp.asarray, grads)
  plain = mj.muon(compute_dtype=None)
  u0, _ = plain.update(grads, plain.init(params), params)
  tx = mj.muon(weight_decay=0.1, weight_decay_mode=mode, compute_dtype=None,
               weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p))
  u1, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(u1["s"], u0["s"], rtol=1e-6)  # masked out
  assert not np.allclose(u1["w"], u0["w"])


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["decoupled", "cautious"])
def test_missing_params(mode):
  tx = weight_decay(0.1, mode=mode)
  with pytest.raises(ValueError, match="params"):
    tx.update({"a": jnp.ones(3)}, tx.init({"a": jnp.ones(3)}), None)


def test_missing_params_omitted_cautious():
  tx = weight_decay(0.1, mode="cautious")
  with pytest.raises(ValueError, match="params"):
    tx.update({"a": jnp.ones(3)}, tx.init({"a": jnp.ones(3)}))


def test_missing_params_omitted_decoupled():
  tx = weight_decay(0.1, mode="decoupled")
  with pytest.raises(ValueError, match="params"):
    tx.update({"a": jnp.ones(3)}, tx.init({"a": jnp.ones(3)}))


def test_missing_params_through_muon():
  params = {"w": jnp.ones((4, 6))}
  tx = mj.muon(weight_decay=0.1, weight_decay_mode="cautious")
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones((4, 6))}, tx.init(params))


@pytest.mark.parametrize("build", [
    lambda: weight_decay(0.1, mode="l2"),
    lambda: mj.muon(weight_decay_mode="l2"),
    lambda: mj.normuon(weight_decay=0.1, weight_decay_mode="independent"),
])
def test_bad_mode_lists_modes(build):
  with pytest.raises(ValueError, match="weight_decay_mode") as info:
    build()
  assert "decoupled" in str(info.value) and "cautious" in str(info.value)


@pytest.mark.parametrize("build", [
    lambda: weight_decay(-0.1),
    lambda: weight_decay(-0.1, mode="cautious"),
    lambda: cautious_weight_decay(-1.0),
    lambda: mj.muon(weight_decay=-0.1, weight_decay_mode="cautious"),
])
def test_negative_rate(build):
  with pytest.raises(ValueError, match="weight_decay"):
    build()
