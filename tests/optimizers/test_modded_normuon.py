"""modded-nanogpt's NorMuon parts: Polar Express 5-row table by default for
``normuon(form="modded")`` and cautious weight decay tied to the learning rate
(``weight_decay_mode="cautious_lr"``).

NumPy reference from the rule in modded-nanogpt ``train_gpt.py``
(``NorMuonAndAdam._cautious_wd_and_update_inplace`` / ``_adam_update``):
``W ← W − η_t D − η_t² λ · 1[D ⊙ W ≥ 0] ⊙ W`` (strict ``> 0`` on the Adam branch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import muonjax as mj
from muonjax import MuonDimensionNumbers as DN
from muonjax.transforms.weight_decay import lr_tied_cautious_weight_decay, weight_decay

import helpers

LAM = 0.7


def schedule(count):
  return 0.1 / (1.0 + count)


def np_lr(t):
  return 0.1 / (1.0 + t)


def directions(seed, shape, steps):
  rng = np.random.default_rng(seed)
  ds = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
  ds[0][0, :] = 0.0  # ties: D = 0
  return ds


@pytest.mark.parametrize("strict", [False, True])
def test_stage_matches_numpy_over_a_schedule(strict):
  w0 = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
  ds = directions(2, (4, 5), 4)
  tx = optax.chain(weight_decay(LAM, mode="cautious_lr", learning_rate=schedule, strict=strict),
                   optax.scale_by_learning_rate(schedule))
  w, state = jnp.asarray(w0), tx.init(jnp.asarray(w0))
  ref = w0.astype(np.float64)
  update = jax.jit(tx.update)
  for t, d in enumerate(ds):
    u, state = update(jnp.asarray(d), state, w)
    w = optax.apply_updates(w, u)
    prod = d * ref
    mask = (prod > 0) if strict else (prod >= 0)
    eta = np_lr(t)
    ref = ref - eta * d - eta * eta * LAM * mask * ref
    np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5, atol=1e-6)


def test_ties_decay_only_when_not_strict():
  w = jnp.ones((2, 3))
  d = jnp.zeros((2, 3))
  for strict, expected in ((False, LAM * 0.1), (True, 0.0)):
    tx = lr_tied_cautious_weight_decay(LAM, 0.1, strict=strict)
    out, _ = tx.update(d, tx.init(w), w)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


def test_needs_learning_rate():
  with pytest.raises(ValueError, match="learning_rate"):
    weight_decay(0.1, mode="cautious_lr")


def test_normuon_modded_with_cautious_lr_matches_numpy_decay():
  # The decay adds -η² λ mask ⊙ W to the update without it (Muon and AdamW leaves).
  params = {"w": helpers.random_tree(5, {"w": (6, 10)})["w"], "b": np.linspace(-1, 1, 10,
                                                                            dtype=np.float32)}
  params = jax.tree.map(jnp.asarray, params)
  grads = jax.tree.map(jnp.asarray, helpers.random_tree(6, {"w": (6, 10), "b": (10,)}))
  dims = {"w": DN(), "b": None}
  lr = 0.05
  plain = mj.normuon(lr, form="modded", dimension_numbers=dims, adam_learning_rate=lr)
  tied = mj.normuon(lr, form="modded", dimension_numbers=dims, adam_learning_rate=lr,
                    weight_decay=LAM, adam_weight_decay=LAM, weight_decay_mode="cautious_lr")
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = tied.update(grads, tied.init(params), params)
  for k, strict in (("w", False), ("b", True)):
    d = -np.asarray(u0[k], np.float64) / lr  # descent direction
    w = np.asarray(params[k], np.float64)
    mask = (d * w > 0) if strict else (d * w >= 0)
    expected = np.asarray(u0[k], np.float64) - lr * lr * LAM * mask * w
    np.testing.assert_allclose(np.asarray(u1[k]), expected, rtol=1e-5, atol=1e-7)


def _first_update(tx, params, grads):
  return helpers.run_steps(tx, params, [grads], jax.jit(tx.update)).updates[0]["w"]


def test_normuon_modded_defaults_to_polar_express_modded():
  params = {"w": jnp.asarray(helpers.random_tree(7, {"w": (8, 12)})["w"])}
  grads = {"w": jnp.asarray(helpers.random_tree(8, {"w": (8, 12)})["w"])}
  dims = {"w": DN()}
  default = _first_update(mj.normuon(form="modded", dimension_numbers=dims), params, grads)
  explicit = _first_update(mj.normuon(form="modded", coeffs="polar_express_modded",
                                      dimension_numbers=dims), params, grads)
  keller = _first_update(mj.normuon(form="modded", coeffs="keller", dimension_numbers=dims),
                         params, grads)
  np.testing.assert_array_equal(np.asarray(default), np.asarray(explicit))
  assert not np.allclose(np.asarray(default), np.asarray(keller), rtol=1e-3)
  # the other forms keep Keller's coefficients
  code = _first_update(mj.normuon(form="code", dimension_numbers=dims), params, grads)
  code_keller = _first_update(mj.normuon(form="code", coeffs="keller", dimension_numbers=dims),
                              params, grads)
  np.testing.assert_array_equal(np.asarray(code), np.asarray(code_keller))
