"""Hypersphere stage (nGPT): projection, lazy projection, geodesic steps.

docs/optimizers.md#hypersphere-and-geodesic-updates. A "constrained vector" is a slice of a leaf along its ``axis`` (the
axis the norm is taken over). In Flax layout nGPT's q/k/v/up kernels ``(d, n)``
use axis 0 (one unit vector per output neuron), output projections axis 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import demo
from muonjax.nnx import sphere_axes
from muonjax.transforms.hypersphere import HypersphereState, hypersphere

AXES = {"a": 0, "b": 1, "s": 1, "bias": None}
SHAPES = {"a": (6, 8), "b": (6, 8), "s": (3, 6, 8), "bias": (8,)}


def normalize(x, axis):
  return x / np.linalg.norm(x, axis=axis, keepdims=True)


def make_tree(seed, unit=True):
  rng = np.random.default_rng(seed)
  params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
  if unit:
    params = {k: v if AXES[k] is None else normalize(v, AXES[k]) for k, v in params.items()}
  updates = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
  f32 = lambda t: {k: v.astype(np.float32) for k, v in t.items()}
  return f32(params), f32(updates)


def norms(x, axis):
  return np.linalg.norm(np.asarray(x, np.float64), axis=axis)


def step(tx, params, updates, state=None):
  state = tx.init(params) if state is None else state
  out, state = jax.jit(tx.update)(updates, state, params)
  return optax.apply_updates(params, out), out, state


# --- project ---------------------------------------------------------------


@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("callable_axes", [False, True])
def test_project_unit_norm_and_reference(unit, callable_axes):
  params, d = make_tree(0, unit=unit)
  lr = 0.3
  axes = (lambda p: AXES) if callable_axes else AXES
  new, out, state = step(hypersphere(lr, axes=axes), params, d)
  for k, axis in AXES.items():
    w, u = params[k].astype(np.float64), d[k].astype(np.float64)
    if axis is None:  # unconstrained: plain -lr * u
      np.testing.assert_allclose(out[k], -lr * u, rtol=1e-6, atol=1e-6)
      continue  # (W - lr u) - W in fp32 cancels: atol ~ eps * |W|
    np.testing.assert_allclose(norms(new[k], axis), 1.0, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(new[k], normalize(w - lr * u, axis), rtol=1e-5, atol=1e-6)
  assert int(state.count) == 1


def test_project_parallel_update_does_not_move():
  params, _ = make_tree(1)
  d = {k: (0.5 if AXES[k] is not None else 0.0) * params[k] for k in params}
  d["a"] = -2.0 * params["a"]  # anti-parallel too
  new, _, _ = step(hypersphere(0.1, axes=AXES), params, d)
  for k in ("a", "b", "s"):
    np.testing.assert_allclose(new[k], params[k], atol=1e-6)


def test_lazy_projection_every_3():
  params, _ = make_tree(2)
  rng = np.random.default_rng(3)
  tx = hypersphere(0.2, axes=AXES, every=3)
  state = tx.init(params)
  assert isinstance(state, HypersphereState) and state.count.dtype == jnp.int32
  ref = {k: v.astype(np.float64) for k, v in params.items()}
  update = jax.jit(tx.update)
  for t in range(7):
    d = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    out, state = update(d, state, params)
    params = optax.apply_updates(params, out)
    assert int(state.count) == t + 1  # the counter lives in the optax state
    renormalized = (t + 1) % 3 == 0
    for k, axis in AXES.items():
      ref[k] = ref[k] - 0.2 * d[k]
      if axis is None:
        continue
      if renormalized:
        ref[k] = normalize(ref[k], axis)
        np.testing.assert_allclose(norms(params[k], axis), 1.0, atol=1e-5, err_msg=(t, k))
      else:
        assert np.all(np.abs(norms(params[k], axis) - 1.0) > 1e-3), (t, k)
      np.testing.assert_allclose(params[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=(t, k))


# --- geodesic --------------------------------------------------------------


@pytest.mark.parametrize("theta", ["lr", "norm", "tangent"])
def test_geodesic_angle_and_norm(theta):
  params, d = make_tree(4)
  lr = 0.25
  new, out, _ = step(hypersphere(lr, axes=AXES, mode="geodesic", theta=theta), params, d)
  for k, axis in AXES.items():
    w, u, w_new = (np.asarray(x[k], np.float64) for x in (params, d, new))
    if axis is None:
      np.testing.assert_allclose(out[k], -lr * u, rtol=1e-6, atol=1e-6)
      continue
    radial = np.sum(u * w, axis=axis, keepdims=True)
    u_perp = u - radial * w
    angle = {"lr": lr * np.ones_like(radial),
             "norm": lr * np.linalg.norm(u, axis=axis, keepdims=True),
             "tangent": lr * np.linalg.norm(u_perp, axis=axis, keepdims=True)}[theta]
    np.testing.assert_allclose(np.sum(w * w_new, axis=axis, keepdims=True), np.cos(angle),
                               atol=1e-5, err_msg=k)
    np.testing.assert_allclose(norms(w_new, axis), 1.0, atol=1e-5, err_msg=k)
    # Full reference: w' = w cos(theta) + u_hat sin(theta), u_hat = -u_perp / ||u_perp||.
    u_hat = -u_perp / np.linalg.norm(u_perp, axis=axis, keepdims=True)
    np.testing.assert_allclose(w_new, w * np.cos(angle) + u_hat * np.sin(angle), atol=1e-5)


@pytest.mark.parametrize("theta", ["lr", "norm", "tangent"])
def test_geodesic_parallel_update_does_not_move(theta):
  """docs/optimizers.md#hypersphere-and-geodesic-updates: with u parallel to w nothing moves (the unconstrained leaf still does)."""
  params, _ = make_tree(5)
  d = {k: 0.7 * v for k, v in params.items()}
  d["b"] = -3.0 * params["b"]
  new, out, _ = step(hypersphere(0.5, axes=AXES, mode="geodesic", theta=theta), params, d)
  np.testing.assert_allclose(out["bias"], -0.5 * d["bias"], rtol=1e-6, atol=1e-6)
  for k in ("a", "b", "s"):
    np.testing.assert_allclose(new[k], params[k], atol=1e-6, err_msg=k)


@pytest.mark.parametrize("theta", ["lr", "norm", "tangent"])
def test_geodesic_nearly_parallel_update_stays_on_sphere(theta):
  """u = 0.7 w + 1e-4 noise: the tangent part is tiny but the step must stay on the sphere."""
  params, noise = make_tree(10)
  d = {k: (0.7 * params[k] + 1e-4 * noise[k]).astype(np.float32) for k in params}
  new, _, _ = step(hypersphere(0.5, axes=AXES, mode="geodesic", theta=theta), params, d)
  for k, axis in AXES.items():
    if axis is not None:
      np.testing.assert_allclose(norms(new[k], axis), 1.0, atol=1e-5, err_msg=k)


# --- matrix granularity, schedules -----------------------------------------


def test_matrix_granularity_keeps_frobenius_norm():
  rng = np.random.default_rng(6)
  params = {"w": (3.7 * rng.standard_normal((6, 8))).astype(np.float32),
            "bias": rng.standard_normal(8).astype(np.float32)}
  d = {"w": rng.standard_normal((6, 8)).astype(np.float32),
       "bias": rng.standard_normal(8).astype(np.float32)}
  lr = 0.1
  new, out, _ = step(hypersphere(lr, axes={"w": 0, "bias": None}, granularity="matrix"),
                     params, d)
  w, u = params["w"].astype(np.float64), d["w"].astype(np.float64)
  radius = np.linalg.norm(w)
  assert np.linalg.norm(np.asarray(new["w"], np.float64)) == pytest.approx(radius, rel=1e-5)
  moved = w - lr * u * radius / np.linalg.norm(u)  # Levanter muonh
  np.testing.assert_allclose(new["w"], moved * radius / np.linalg.norm(moved), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out["bias"], -lr * d["bias"], rtol=1e-6, atol=1e-6)


def test_matrix_granularity_stacked_leaf_is_per_layer():
  rng = np.random.default_rng(11)
  w = (rng.standard_normal((3, 6, 8)) * np.array([1.0, 2.0, 3.0])[:, None, None])
  params = {"s": w.astype(np.float32)}
  d = {"s": rng.standard_normal((3, 6, 8)).astype(np.float32)}
  new, _, _ = step(hypersphere(0.1, axes={"s": 1}, granularity="matrix"), params, d)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(new["s"], np.float64), axis=(1, 2)),
                             np.linalg.norm(w, axis=(1, 2)), rtol=1e-5)


def test_learning_rate_schedule_by_count():
  schedule = lambda count: 0.1 * (count + 1)
  params, _ = make_tree(7)
  tx = hypersphere(schedule, axes=AXES)
  state = tx.init(params)
  rng = np.random.default_rng(8)
  for t in range(3):
    d = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    out, state = jax.jit(tx.update)(d, state, params)
    lr = 0.1 * (t + 1)
    np.testing.assert_allclose(out["bias"], -lr * d["bias"], rtol=1e-6, atol=1e-6)
    new_a = np.asarray(params["a"], np.float64) - lr * d["a"]
    np.testing.assert_allclose(params["a"] + out["a"], normalize(new_a, 0), rtol=1e-5,
                               atol=1e-6)
    params = optax.apply_updates(params, out)


# --- nnx metadata and an end-to-end chain ------------------------------------


class SphereMLP(nnx.Module):
  """tanh MLP whose kernels start with unit-norm columns (one per output neuron, axis 0)."""

  def __init__(self, sizes, *, rngs: nnx.Rngs):
    self.kernels = nnx.List()
    self.biases = nnx.List()
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
      w = jax.random.normal(rngs.params(), (n_in, n_out))
      self.kernels.append(nnx.Param(w / jnp.linalg.norm(w, axis=0, keepdims=True),
                                    sphere_axis=0))
      self.biases.append(nnx.Param(jnp.zeros((n_out,))))

  def __call__(self, x):
    n = len(self.kernels)
    for i, (w, b) in enumerate(zip(self.kernels, self.biases)):
      x = x @ w[...] + b[...]
      if i < n - 1:
        x = jnp.tanh(x)
    return x


def test_sphere_axes_reads_nnx_metadata():
  model = SphereMLP([4, 5, 3], rngs=nnx.Rngs(0))
  axes = sphere_axes(model)
  assert [axes["kernels"][i] for i in range(2)] == [0, 0]
  assert [axes["biases"][i] for i in range(2)] == [None, None]
  # Also from an nnx.State.
  axes2 = sphere_axes(nnx.state(model, nnx.Param))
  assert jax.tree.structure(axes2, is_leaf=lambda x: x is None) == jax.tree.structure(
      axes, is_leaf=lambda x: x is None)


@pytest.mark.training
def test_chain_trains_mlp_on_the_sphere():
  cfg = demo.DemoConfig(steps=100, batch=64)
  xs, ys = demo.teacher_batches(cfg)
  model = SphereMLP([cfg.d_in, 32, cfg.d_out], rngs=nnx.Rngs(0))
  dims = mj.muon_dimension_numbers(model)
  tx = optax.chain(
      mj.momentum(),
      mj.orthogonalize(dimension_numbers=dims),
      mj.scale_by_shape(dimension_numbers=dims),
      hypersphere(0.05, axes=sphere_axes(model)),
  )
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  for w in model.kernels:
    np.testing.assert_allclose(norms(w[...], 0), 1.0, atol=1e-5)
  losses = np.array([float(train_step(model, optimizer, xs[t], ys[t]))
                     for t in range(cfg.steps)])
  assert np.all(np.isfinite(losses))
  assert losses[-10:].mean() < 0.8 * losses[0]
  for w in model.kernels:
    np.testing.assert_allclose(norms(w[...], 0), 1.0, atol=1e-5)


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    (dict(mode="x"), "mode"),
    (dict(theta="x", mode="geodesic"), "theta"),
    (dict(granularity="row"), "granularity"),
    (dict(every=0), "every"),
    (dict(every=1.5), "every"),
    (dict(every=3, mode="geodesic"), "every"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-0.1), "learning_rate"),
])
def test_bad_arguments(kwargs, name):
  kwargs = {"learning_rate": 0.1, "axes": AXES, **kwargs}
  with pytest.raises(ValueError, match=name):
    hypersphere(**kwargs)


def test_missing_params():
  params, d = make_tree(9)
  tx = hypersphere(0.1, axes=AXES)
  with pytest.raises(ValueError, match="params"):
    tx.update(d, tx.init(params))


def test_exported():
  assert mj.hypersphere is hypersphere and mj.sphere_axes is sphere_axes


def test_angle_separates_the_geodesic_angle_from_the_step_size():
  w = jnp.eye(3)[:2]  # two unit rows
  d = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  free = jnp.array([2.0])
  stage = mj.hypersphere(1.0, axes={"w": 1, "b": None}, mode="geodesic", theta="lr", angle=0.2)
  u, _ = stage.update({"w": -d, "b": free}, stage.init({"w": w, "b": free}), {"w": w, "b": free})
  np.testing.assert_allclose(np.sum(np.asarray(w * (w + u["w"])), axis=1), np.cos(0.2),
                             rtol=1e-6)
  np.testing.assert_allclose(u["b"], -free)  # the step size (1), not the angle
  with pytest.raises(ValueError, match="angle"):
    mj.hypersphere(1.0, axes={"w": 1}, mode="geodesic", angle=-0.1)
