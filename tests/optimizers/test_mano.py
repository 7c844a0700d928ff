"""Mano (arXiv 2601.23000): the mano_normalize stage and the mj.mano alias.

The NumPy reference below is written from docs/optimizers.md#mano in Flax
(n_in, n_out) layout: at even t the slices are rows (norms over axis -1), at
odd t columns (norms over axis -2).
"""

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
from muonjax.transforms.manifold import ManoState

import helpers


# ---------------------------------------------------------------- reference

def _ref_tangent_normalize(u, w, axis, version, eps):
  if version == 1:
    w = w / np.maximum(np.linalg.norm(w, axis=axis, keepdims=True), eps)
  t = u - np.sum(u * w, axis=axis, keepdims=True) * w
  n = np.linalg.norm(t, axis=axis, keepdims=True)
  return t / (n + eps) if version == 2 else t / np.maximum(n, eps)


def _ref_mano_direction(u, w, t, version, both_axes, eps=1e-8, scale=0.2):
  axes = [-1, -2] if both_axes else [-1 if t % 2 == 0 else -2]
  d = u
  for axis in axes:
    d = _ref_tangent_normalize(d, w, axis, version, eps)
  return scale * np.sqrt(w.shape[axes[-1]]) * d


def reference_mano(params, grads, *, lr, wd, version, both_axes=False, mu=0.95,
                   eps=1e-8, b1=0.9, b2=0.95, adam_eps=1e-8):
  """Updates of Mano on "kernel" and (torch-style) AdamW on "bias", float64."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  nesterov = version == 2
  buf = np.zeros_like(p["kernel"])
  m = v = np.zeros_like(p["bias"]) if "bias" in p else None
  out = []
  for t, g in enumerate(grads):
    g = {k: np.asarray(x, np.float64) for k, x in g.items()}
    upd = {}
    buf = mu * buf + g["kernel"]
    u = g["kernel"] + mu * buf if nesterov else buf
    d = _ref_mano_direction(u, p["kernel"], t, version, both_axes, eps)
    upd["kernel"] = -lr * (d + wd * p["kernel"])
    if "bias" in p:
      step = t + 1
      m = b1 * m + (1 - b1) * g["bias"]
      v = b2 * v + (1 - b2) * g["bias"] ** 2
      step_scale = (1 - b1 ** step) / np.sqrt(1 - b2 ** step)
      upd["bias"] = -lr * wd * p["bias"] - lr / step_scale * m / (adam_eps + np.sqrt(v))
    out.append(upd)
    p = {k: p[k] + upd[k] for k in p}
  return out


def _random_problem(kernel_shape, steps=3, seed=0, bias=True):
  keys = jax.random.split(jax.random.key(seed), 2 + 2 * steps)
  params = {"kernel": 0.7 * jax.random.normal(keys[0], kernel_shape, jnp.float32)}
  if bias:
    params["bias"] = 0.1 * jax.random.normal(keys[1], kernel_shape[-1:], jnp.float32)
  grads = []
  for i in range(steps):
    g = {"kernel": jax.random.normal(keys[2 + 2 * i], kernel_shape, jnp.float32)}
    if bias:
      g["bias"] = jax.random.normal(keys[3 + 2 * i], kernel_shape[-1:], jnp.float32)
    grads.append(g)
  return params, grads


# ------------------------------------------------- alias vs reference (3 steps)

class ManoReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
      shape=[(6, 4), (3, 5, 4)],
      config=[dict(version=2, both_axes=False), dict(version=1, both_axes=False),
              dict(version=2, both_axes=True)],
  )
  def test_first_three_updates(self, shape, config):
    lr, wd = 0.05, 0.1
    params, grads = _random_problem(shape, bias=len(shape) == 2)
    tx = mj.mano(lr, weight_decay=wd, compute_dtype=None, **config)
    update = self.variant(tx.update)
    state = tx.init(params)
    expected = reference_mano(params, grads, lr=lr, wd=wd, **config)
    for t, (g, ref) in enumerate(zip(grads, expected)):
      upd, state = update(g, state, params)
      for k in ref:
        np.testing.assert_allclose(np.asarray(upd[k]), ref[k], rtol=1e-4, atol=1e-6,
                                   err_msg=f"step {t}, leaf {k}")
      params = optax.apply_updates(params, upd)


# ------------------------------------------------------------- the stage

def _stage_update(u, w, t, **kwargs):
  tx = mj.mano_normalize(**kwargs)
  state = ManoState(count=jnp.asarray(t, jnp.int32))
  out, new_state = tx.update({"k": u}, state, {"k": w})
  assert int(new_state.count) == t + 1
  return np.asarray(out["k"], np.float64)


def _uw(shape=(6, 4), seed=1):
  ku, kw = jax.random.split(jax.random.key(seed))
  return jax.random.normal(ku, shape), 0.7 * jax.random.normal(kw, shape)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("t", [0, 1])
def test_unit_slices_and_rms(version, t):
  u, w = _uw()
  n_in, n_out = u.shape
  out = _stage_update(u, w, t, version=version)
  axis, length = (-1, n_out) if t % 2 == 0 else (-2, n_in)
  d = out / (0.2 * np.sqrt(length))
  np.testing.assert_allclose(np.linalg.norm(d, axis=axis), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), 0.2, rtol=1e-5)
  # The other axis is not normalized (non-square matrix): the test discriminates.
  other = -2 if axis == -1 else -1
  assert np.max(np.abs(np.linalg.norm(d, axis=other) - 1)) > 1e-2


def test_axis_alternates_rows_then_columns():
  u, w = _uw()
  n_in, n_out = u.shape
  u64, w64 = np.asarray(u, np.float64), np.asarray(w, np.float64)
  rows = 0.2 * np.sqrt(n_out) * _ref_tangent_normalize(u64, w64, -1, 2, 1e-8)
  cols = 0.2 * np.sqrt(n_in) * _ref_tangent_normalize(u64, w64, -2, 2, 1e-8)
  for t, expected in [(0, rows), (1, cols), (2, rows), (3, cols)]:
    np.testing.assert_allclose(_stage_update(u, w, t), expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(rows, cols, atol=1e-3)


def test_both_axes_columns_unit_and_rms():
  u, w = _uw()
  for t in (0, 1):
    out = _stage_update(u, w, t, both_axes=True)
    d = out / (0.2 * np.sqrt(u.shape[0]))
    np.testing.assert_allclose(np.linalg.norm(d, axis=-2), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), 0.2, rtol=1e-5)
  # The counter does not change the both-axes result.
  np.testing.assert_allclose(_stage_update(u, w, 0, both_axes=True),
                             _stage_update(u, w, 1, both_axes=True), rtol=1e-6)


def test_v1_and_v2_differ_as_specified():
  u, w = _uw()
  v1, v2 = (_stage_update(u, w, 0, version=v) for v in (1, 2))
  assert not np.allclose(v1, v2, atol=1e-3)  # ‖W_row‖ != 1: raw vs normalized projection
  w64 = np.asarray(w, np.float64)
  # v1 is tangent to W's rows; v2 is not (it projects against the raw W).
  np.testing.assert_allclose(np.sum(v1 * w64, axis=-1), 0.0, atol=1e-5)
  assert np.max(np.abs(np.sum(v2 * w64, axis=-1))) > 1e-2
  # With unit-norm rows the two projections coincide.
  w_unit = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
  np.testing.assert_allclose(_stage_update(u, w_unit, 0, version=1),
                             _stage_update(u, w_unit, 0, version=2), rtol=1e-5, atol=1e-6)
  # eps: v1 clamps (max), v2 adds. A zero weight row and a tiny update show both.
  tiny = 1e-9 * jnp.ones((2, 3))
  zero = jnp.zeros((2, 3))
  np.testing.assert_allclose(_stage_update(tiny, zero, 0, version=1, scale=1.0),
                             np.sqrt(3) * 1e-9 / 1e-8, rtol=1e-4)
  np.testing.assert_allclose(_stage_update(tiny, zero, 0, version=2, scale=1.0),
                             np.sqrt(3) * 1e-9 / (np.sqrt(3) * 1e-9 + 1e-8), rtol=1e-4)


def test_stacked_and_custom_dimension_numbers_are_per_matrix():
  u, w = _uw((3, 5, 4))
  out = _stage_update(u, w, 1)
  for i in range(3):
    np.testing.assert_allclose(out[i], _stage_update(u[i], w[i], 1), rtol=1e-5, atol=1e-7)
  # Layer axis in the middle: (in, L, out) with reduction 0, output 2.
  dims = mj.MuonDimensionNumbers(reduction_axis=0, output_axis=2)
  mid = _stage_update(u.transpose(1, 0, 2), w.transpose(1, 0, 2), 1, dimension_numbers=dims)
  np.testing.assert_allclose(mid.transpose(1, 0, 2), out, rtol=1e-5, atol=1e-7)


def test_extreme_inputs_are_finite_and_dtype_kept():
  _, w = _uw()
  for factor in (0.0, 1e-30, 1e30):
    out = _stage_update(factor * jnp.ones((6, 4)).at[0, 0].set(2.0), w, 0)
    assert np.all(np.isfinite(out)), factor
  out = _stage_update(jnp.ones((6, 4)).at[0, 0].set(2.0) * 1e30, w, 0)
  np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), 0.2, rtol=1e-4)
  tx = mj.mano_normalize()
  u, w = _uw()
  res, _ = tx.update({"k": u.astype(jnp.bfloat16)}, tx.init({"k": w}), {"k": w})
  assert res["k"].dtype == jnp.bfloat16


# ------------------------------------------------------------- state

def test_state_shapes_and_dtypes():
  params, grads = _random_problem((6, 4))
  tx = mj.mano()
  state = tx.init(params)
  (mano_state,) = helpers.states_of(state, ManoState)
  assert mano_state.count.shape == () and mano_state.count.dtype == jnp.int32
  assert int(mano_state.count) == 0
  mom = [m for m in helpers.states_of(state, mj.MomentumState) if jax.tree.leaves(m.mu)]
  (mom,) = mom
  (mu,) = jax.tree.leaves(mom.mu)
  assert mu.shape == (6, 4) and mu.dtype == jnp.float32
  for _ in range(3):
    _, state = jax.jit(tx.update)(grads[0], state, params)
  (mano_state,) = helpers.states_of(state, ManoState)
  assert int(mano_state.count) == 3


@pytest.mark.parametrize("version", [1, 2])
def test_counter_survives_state_round_trip(version):
  params, grads = _random_problem((6, 4), steps=3)
  tx = mj.mano(0.05, version=version)
  update = jax.jit(tx.update)

  def run(state, p, gs, round_trip_after=None):
    outs = []
    for i, g in enumerate(gs):
      u, state = update(g, state, p)
      p = optax.apply_updates(p, u)
      outs.append(u)
      if i == round_trip_after:
        state = jax.tree.map(np.asarray, state)
        state = jax.tree.map(jnp.asarray, state)
    return outs, state

  straight, _ = run(tx.init(params), params, grads)
  resumed, _ = run(tx.init(params), params, grads, round_trip_after=0)
  for a, b in zip(straight, resumed):
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)

  # Losing the counter (restarting at t = 0) changes step 1: the test is sensitive.
  u0, state = update(grads[0], tx.init(params), params)
  p1 = optax.apply_updates(params, u0)
  reset = jax.tree.map(
      lambda s: ManoState(jnp.zeros([], jnp.int32)) if isinstance(s, ManoState) else s,
      state, is_leaf=lambda x: isinstance(x, ManoState))
  wrong, _ = update(grads[1], reset, p1)
  assert not np.allclose(np.asarray(wrong["kernel"]), np.asarray(straight[1]["kernel"]),
                         atol=1e-4)


# ------------------------------------------------------------- errors

def test_update_without_params_raises():
  params, grads = _random_problem((6, 4))
  stage = mj.mano_normalize()
  with pytest.raises(ValueError, match="params"):
    stage.update({"k": grads[0]["kernel"]}, stage.init({"k": params["kernel"]}))
  tx = mj.mano()
  with pytest.raises(ValueError, match="params"):
    tx.update(grads[0], tx.init(params))


@pytest.mark.parametrize("make, name", [
    (lambda: mj.mano(version=3), "version"),
    (lambda: mj.mano(version=True), "version"),
    (lambda: mj.mano(version="2"), "version"),
    (lambda: mj.mano(eps=0.0), "eps"),
    (lambda: mj.mano(learning_rate=-1e-3), "learning_rate"),
    (lambda: mj.mano(weight_decay=-0.1), "weight_decay"),
    (lambda: mj.mano(beta=1.5), "beta"),
    (lambda: mj.mano_normalize(scale=-1.0), "scale"),
    (lambda: mj.mano_normalize(both_axes="yes"), "both_axes"),
    (lambda: mj.get_optimizer("mano", bogus=1), "bogus"),
])
def test_bad_hyperparameters(make, name):
  helpers.check_bad_argument(make, {}, name)


def test_rank_one_leaf_without_dimension_numbers_raises():
  stage = mj.mano_normalize()
  with pytest.raises(ValueError, match="bias"):
    stage.init({"bias": jnp.zeros(4)})


def test_registry():
  params, grads = _random_problem((6, 4))
  helpers.check_registry("mano", params, grads[0], learning_rate=0.05, version=1, both_axes=True)
  assert {"version", "both_axes", "eps", "weight_decay"} <= set(mj.hyperparameters(mj.mano))


# ------------------------------------------------------------- integration

@pytest.mark.training
def test_trains_demo_mlp_at_default_learning_rate():
  helpers.check_trains_mlp(mj.mano())


def test_inject_hyperparams():
  params, grads = _random_problem((6, 4))
  tx = optax.inject_hyperparams(mj.mano, static_args=("version",))(learning_rate=0.05)
  state = tx.init(params)
  update = jax.jit(tx.update)
  ref = mj.mano(0.05)
  ref_state = ref.init(params)
  for g in grads:
    u, state = update(g, state, params)
    r, ref_state = ref.update(g, ref_state, params)
    chex.assert_trees_all_close(u, r, rtol=1e-5, atol=1e-7)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  u, _ = update(grads[0], state, params)
  chex.assert_trees_all_close(u, jax.tree.map(jnp.zeros_like, u))
  # Without static_args the version is traced: a clear error says what to do.
  tx = optax.inject_hyperparams(mj.mano)(learning_rate=0.05)
  with pytest.raises(ValueError, match="static_args"):
    jax.jit(tx.update)(grads[0], tx.init(params), params)


def test_nnx_optimizer_under_nnx_jit():
  cfg = demo.DemoConfig(hidden=16)
  model = demo.MLP(cfg.d_in, cfg.hidden, cfg.d_out, rngs=nnx.Rngs(0))
  xs, ys = demo.teacher_batches(demo.DemoConfig(steps=1, batch=64))
  helpers.check_nnx_optimizer(mj.mano(1e-2), model=model, x=xs[0], y=ys[0])
