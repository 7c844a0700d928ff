"""Newton-Muon (`mj.newton_muon`, stage `mj.precondition_input`) against a NumPy float64 reference.

The reference follows docs/optimizers.md#newton-muon in Flax layout: a leaf is a stack of
``(n_in, n_out)`` matrices and the input preconditioner multiplies from the
left, ``G̃ = (K + γI)^{-1} G`` with ``K`` the ``n_in × n_in`` EWMA of the
layer's input second moment (``G (K + γI)^{-1}`` in the paper's ``(out, in)``
layout). Then Keller Muon: EMA-Nesterov momentum, NS5, ``√max(1, n_out/n_in)``.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx
from optax.contrib import MuonDimensionNumbers

import muonjax as mj
from muonjax.transforms.precondition import PreconditionInputState

import helpers
import references

# --- NumPy float64 reference (docs/optimizers.md#momentum-forms, #newton-schulz-step, #muon, #newton-muon) -------------------


class NewtonMuonReference:
  """One stack ``(B, n_in, n_out)``; ``step`` returns the update ``-lr (s·O + λW)``."""

  def __init__(self, shape, *, lr=0.05, beta=0.95, beta2=0.8, ridge=0.2, ridge_eps=0.0,
               k0=1e-3, refresh_every=16, weight_decay=0.0):
    b, n_in, n_out = shape
    self.n_in, self.n_out = n_in, n_out
    self.lr, self.beta, self.beta2, self.wd = lr, beta, beta2, weight_decay
    self.ridge, self.ridge_eps, self.every = ridge, ridge_eps, refresh_every
    eye = np.broadcast_to(np.eye(n_in), (b, n_in, n_in))
    self.k, self.p = k0 * eye, eye.copy()
    self.m = np.zeros(shape)
    self.t = 0  # zero-based step

  def step(self, g, w, stats=None):
    if stats is not None and self.t % self.every == self.every - 1:
      self.k = self.beta2 * self.k + (1 - self.beta2) * stats
      gamma = self.ridge * np.trace(self.k, axis1=-2, axis2=-1) / self.n_in + self.ridge_eps
      self.p = np.linalg.inv(self.k + gamma[:, None, None] * np.eye(self.n_in))
    g = self.p @ g
    self.m = self.beta * self.m + (1 - self.beta) * g
    u = self.beta * self.m + (1 - self.beta) * g
    o = references.newton_schulz(u) * np.sqrt(max(1.0, self.n_out / self.n_in))
    self.t += 1
    return -self.lr * (o + self.wd * w)


def second_moment(rng, batch_shape, n_in, tokens=24, scale=1.0):
  """``(1/N) Z Zᵀ`` of correlated random inputs, shape ``(*batch_shape, n_in, n_in)``."""
  mix = rng.standard_normal(batch_shape + (n_in, n_in))
  z = scale * rng.standard_normal(batch_shape + (tokens, n_in)) @ mix
  return np.swapaxes(z, -1, -2) @ z / tokens


def assert_close(actual, expected):
  """rtol 1e-4, with an atol of 1e-6 × the largest entry for entries near zero."""
  helpers.assert_close(actual, expected, rtol=1e-4, floor=1e-2)


def stage_state(state):
  """The :class:`PreconditionInputState` inside an alias's state."""
  (s,) = helpers.states_of(state, PreconditionInputState)
  return s


# A wide 2-D kernel and a stacked (L, in, out) kernel of tall matrices.
CASES = {
    "matrix": ((6, 10), MuonDimensionNumbers(0, 1)),  # wide
    "stacked": ((3, 8, 5), MuonDimensionNumbers(1, 2)),  # tall: NS on the transpose
}


class NewtonMuonReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("matrix", "stacked")
  def test_first_three_updates(self, case):
    shape, dims = CASES[case]
    rng = np.random.default_rng(0)
    batch_shape, (n_in, _) = shape[:-2], shape[-2:]
    w0 = rng.standard_normal(shape)
    params = {"w": jnp.asarray(w0, jnp.float32)}
    tx = mj.newton_muon(refresh_every=1, weight_decay=0.01, compute_dtype=None,
                        dimension_numbers={"w": dims})
    update = self.variant(tx.update)
    state = tx.init(params)
    ref = NewtonMuonReference((int(np.prod(batch_shape)), n_in, shape[-1]), refresh_every=1,
                              weight_decay=0.01)
    w = w0.reshape(ref.m.shape)
    for t in range(3):
      g = rng.standard_normal(shape).astype(np.float32)
      s = second_moment(rng, batch_shape, n_in).astype(np.float32)
      updates, state = update({"w": jnp.asarray(g)}, state, params,
                              activation_stats={"w": jnp.asarray(s)})
      params = optax.apply_updates(params, updates)
      expected = ref.step(g.reshape(ref.m.shape).astype(np.float64), w,
                          s.reshape(ref.k.shape).astype(np.float64))
      w = w + expected
      assert updates["w"].dtype == jnp.float32
      try:
        assert_close(updates["w"], expected)
      except AssertionError as e:
        raise AssertionError(f"case={case} step={t + 1}: {e}") from None
    st = stage_state(state)
    assert int(st.count) == 3
    assert_close(st.k["w"], ref.k)
    assert_close(st.p["w"], ref.p)


def test_refresh_schedule_every_four():
  """Stats on every step; K and P move only on steps 3 and 7 (``step % 4 == 3``)."""
  rng = np.random.default_rng(1)
  shape, n_in = (5, 7), 5
  params = {"w": jnp.zeros(shape)}
  tx = mj.newton_muon(refresh_every=4, compute_dtype=None)
  state = tx.init(params)
  ref = NewtonMuonReference((1, *shape), refresh_every=4)
  update = jax.jit(tx.update)
  previous_k = np.asarray(stage_state(state).k["w"])
  for t in range(9):
    g = rng.standard_normal(shape).astype(np.float32)
    s = second_moment(rng, (), n_in).astype(np.float32)
    updates, state = update({"w": jnp.asarray(g)}, state, params, activation_stats={"w": s})
    expected = ref.step(g[None].astype(np.float64), np.zeros((1, *shape)), s[None])
    assert_close(updates["w"], expected)
    k = np.asarray(stage_state(state).k["w"])
    assert (not np.array_equal(k, previous_k)) == (t in (3, 7)), t
    previous_k = k
  assert_close(stage_state(state).p["w"], ref.p)


def test_refresh_rule_start():
  tx = mj.precondition_input(refresh_every=4, refresh_rule="start")
  params = {"w": jnp.zeros((3, 4))}
  state = tx.init(params)
  s = {"w": jnp.asarray(second_moment(np.random.default_rng(2), (), 3), jnp.float32)}
  refreshed = []
  update = jax.jit(tx.update)
  for _ in range(9):
    old = state.k["w"]
    _, state = update(params, state, activation_stats=s)
    refreshed.append(not np.array_equal(old, state.k["w"]))
  assert [t for t, r in enumerate(refreshed) if r] == [0, 4, 8]
  assert [t for t in range(9) if mj.refresh_due(t, 4, "start")] == [0, 4, 8]
  assert [t for t in range(9) if mj.refresh_due(t, 4)] == [3, 7]


# --- docs/optimizers.md#newton-muon / #test-oracles checks ----------------------------------------------------


KNOBS = dict(learning_rate=0.05, compute_dtype=None, weight_decay=0.01)
PAIR_SHAPE = (6, 10)


def pair_inputs():
  """Params and three gradients for a Muon leaf ``w`` and an AdamW leaf ``b``."""
  rng = np.random.default_rng(3)
  params = {"w": jnp.zeros(PAIR_SHAPE), "b": jnp.zeros(PAIR_SHAPE[-1:])}
  grads = [{"w": jnp.asarray(rng.standard_normal(PAIR_SHAPE), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(PAIR_SHAPE[-1:]), jnp.float32)}
           for _ in range(3)]
  return params, grads


def run(tx, stats=None):
  params, grads = pair_inputs()
  extra_args = None if stats is None else dict(activation_stats=stats)
  steps = helpers.run_steps(tx, params, grads, jax.jit(tx.update), extra_args)
  return steps.updates, steps.state


@functools.lru_cache(maxsize=None)
def muon_updates():
  return run(mj.muon(**KNOBS))[0]


def test_identity_covariance_equals_muon():
  """K = c·I at every step: P = I/(1.2c) is a constant scalar, NS is scale invariant.

  (K must stay c·I: with K₀ ≠ c·I the scalar changes between steps and the
  momentum mixes differently scaled gradients, so the updates differ after step 1.)
  """
  c = 2.0
  outs, state = run(mj.newton_muon(refresh_every=1, k0=c, **KNOBS), stats={"w": c * jnp.eye(6)})
  for o, e in zip(outs, muon_updates()):  # atol: fp32 rounding of near-zero entries (|u| ~ 0.04)
    chex.assert_trees_all_close(o, e, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(stage_state(state).p["w"], np.eye(6)[None] / (1.2 * c), rtol=1e-6)


def test_equals_muon_before_first_refresh():
  stats = {"w": jnp.asarray(second_moment(np.random.default_rng(4), (), 6), jnp.float32)}
  for s in (stats, None):  # stats on non-refresh steps are ignored; none at all
    outs, state = run(mj.newton_muon(**KNOBS), stats=s)
    for o, e in zip(outs, muon_updates()):  # P = I exactly; fusion may round differently
      chex.assert_trees_all_close(o, e, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(stage_state(state).k["w"], np.float32(1e-3) * np.eye(6)[None])
    np.testing.assert_array_equal(stage_state(state).p["w"], np.eye(6)[None])


def test_singular_or_nonfinite_covariance_falls_back_to_identity():
  """Zero (with K₀ = 0 and no ridge left), indefinite, NaN and inf statistics under jit."""
  tx = mj.newton_muon(refresh_every=1, k0=0.0, **KNOBS)
  for bad in (np.zeros((6, 6)), -np.eye(6), np.full((6, 6), np.nan), np.full((6, 6), np.inf)):
    outs, state = run(tx, stats={"w": jnp.asarray(bad, jnp.float32)})
    for o, e in zip(outs, muon_updates()):
      assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(o))
      chex.assert_trees_all_close(o, e, rtol=1e-6, atol=1e-9)
    st = stage_state(state)
    np.testing.assert_array_equal(st.p["w"], np.eye(6)[None])
    k = np.asarray(st.k["w"])
    assert np.all(np.isfinite(k))  # a non-finite K is never stored
    if not np.all(np.isfinite(bad)):
      np.testing.assert_array_equal(k, np.zeros((1, 6, 6)))


def test_recovers_after_bad_statistics():
  tx = mj.precondition_input(refresh_every=1)
  g = {"w": jnp.ones((4, 3))}
  state = tx.init(g)
  update = jax.jit(tx.update)
  _, state = update(g, state, activation_stats={"w": jnp.full((4, 4), jnp.nan)})
  np.testing.assert_array_equal(state.p["w"], np.eye(4)[None])
  s = second_moment(np.random.default_rng(6), (), 4)
  _, state = update(g, state, activation_stats={"w": jnp.asarray(s, jnp.float32)})
  k = 0.8 * 1e-3 * np.eye(4) + 0.2 * s
  expected = np.linalg.inv(k + 0.2 * np.trace(k) / 4 * np.eye(4))
  np.testing.assert_allclose(state.p["w"][0], expected, rtol=1e-4)


def np_precondition(g, k):
  """P·G for one ``(n_in, n_out)`` matrix with a freshly refreshed ``K``."""
  n = k.shape[-1]
  return np.linalg.inv(k + 0.2 * np.trace(k) / n * np.eye(n)) @ g


def refresh_once(g, stats, **kwargs):
  """One jitted stage update with ``K = stats`` (β₂ = 0, K₀ = 0)."""
  tx = mj.precondition_input(refresh_every=1, k0=0.0, beta2=0.0, **kwargs)
  g = {"w": jnp.asarray(g, jnp.float32)}
  return jax.jit(tx.update)(g, tx.init(g), activation_stats={"w": jnp.asarray(stats, jnp.float32)})


def test_stacked_preconditions_per_layer():
  rng = np.random.default_rng(7)
  g = rng.standard_normal((3, 4, 5))
  s = second_moment(rng, (3,), 4)
  out, state = refresh_once(g, s)
  assert state.k["w"].shape == (3, 4, 4)
  for layer in range(3):
    assert_close(out["w"][layer], np_precondition(g[layer], s[layer]))
  out, _ = refresh_once(g, s[0])  # one (n_in, n_in) moment broadcasts over the layers
  for layer in range(3):
    assert_close(out["w"][layer], np_precondition(g[layer], s[0]))


def test_batch_axis_in_the_middle():
  """A MaxText-style (in, L, out) leaf: stats (L, n_in, n_in) follow the batch axis."""
  rng = np.random.default_rng(8)
  g = rng.standard_normal((4, 2, 5))
  s = second_moment(rng, (2,), 4)
  out, _ = refresh_once(g, s, dimension_numbers=MuonDimensionNumbers(0, 2))
  for layer in range(2):
    assert_close(out["w"][:, layer], np_precondition(g[:, layer], s[layer]))


def test_block_diagonal():
  rng = np.random.default_rng(9)
  n_in, n_out, b = 8, 3, 2
  d = n_in // b
  g = rng.standard_normal((n_in, n_out))
  s = second_moment(rng, (), n_in)
  blocks = np.stack([s[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in range(b)])
  expected = np.concatenate([np_precondition(g[i * d:(i + 1) * d], blocks[i]) for i in range(b)])
  for stats in (s, blocks):  # the full moment (its diagonal blocks are used) or the blocks
    out, state = refresh_once(g, stats, block_diagonal=b)
    assert state.k["w"].shape == (1, b, d, d) and state.p["w"].shape == (1, b, d, d)
    assert_close(out["w"], expected)
  # per-leaf blocks through the alias: a prefix tree, other leaves full K
  tx = mj.newton_muon(block_diagonal={"down": 2, "up": None})
  state = stage_state(tx.init({"down": jnp.zeros((8, 3)), "up": jnp.zeros((3, 8))}))
  assert state.k["down"].shape == (1, 2, 4, 4) and state.k["up"].shape == (1, 3, 3)
  with pytest.raises(ValueError, match="block_diagonal"):
    mj.precondition_input(block_diagonal=3).init({"w": jnp.zeros((8, 3))})


def test_input_second_moment():
  x = np.random.default_rng(10).standard_normal((2, 5, 4))
  z = x.reshape(-1, 4)
  out = mj.input_second_moment(jnp.asarray(x, jnp.float32))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, z.T @ z / 10, rtol=1e-5)
  out = mj.input_second_moment(jnp.asarray(x, jnp.bfloat16))  # accumulated in float32
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, z.T @ z / 10, rtol=3e-2, atol=3e-2)
  blocks = mj.input_second_moment(jnp.asarray(x, jnp.float32), blocks=2)
  assert blocks.shape == (2, 2, 2)
  np.testing.assert_allclose(blocks[1], z[:, 2:].T @ z[:, 2:] / 10, rtol=1e-5)


# --- state, routing, API ---------------------------------------------------------


def test_state_shapes_and_dtypes():
  params = {"w": jnp.zeros((3, 7), jnp.bfloat16), "s": jnp.zeros((2, 6, 4)),
            "b": jnp.zeros((7,))}
  st = stage_state(mj.newton_muon().init(params))
  assert st.count.shape == () and st.count.dtype == jnp.int32
  shapes = {k: (v.shape, v.dtype) for k, v in st.k.items() if hasattr(v, "shape")}
  assert shapes == {"w": ((1, 3, 3), jnp.float32), "s": ((2, 6, 6), jnp.float32)}
  assert isinstance(st.k["b"], optax.MaskedNode) and isinstance(st.p["b"], optax.MaskedNode)
  np.testing.assert_array_equal(st.k["s"], np.float32(1e-3) * np.broadcast_to(np.eye(6), (2, 6, 6)))
  np.testing.assert_array_equal(st.p["s"], np.broadcast_to(np.eye(6), (2, 6, 6)))


def test_is_extra_args_transformation_and_stage_before_momentum():
  tx = mj.newton_muon()
  assert isinstance(tx, optax.GradientTransformationExtraArgs)
  params = {"w": jnp.zeros((4, 6), jnp.bfloat16)}
  state = tx.init(params)
  leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, (PreconditionInputState,
                                                                   mj.MomentumState)))
  kinds = [type(x) for x in leaves if isinstance(x, (PreconditionInputState, mj.MomentumState))]
  assert kinds == [PreconditionInputState, mj.MomentumState]
  g = {"w": jnp.ones((4, 6), jnp.bfloat16)}
  u, _ = jax.jit(tx.update)(g, state, params, activation_stats={"w": jnp.eye(4)})
  assert u["w"].dtype == jnp.bfloat16


def test_stats_errors():
  tx = mj.newton_muon(refresh_every=1)
  params = {"w": jnp.zeros((4, 6)), "b": jnp.zeros((6,))}
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"\['w'\].*\(\*batch, 4, 4\)"):
    tx.update(params, state, params, activation_stats={"w": jnp.eye(6)})
  with pytest.raises(ValueError, match=r"\['v'\] matches no parameter"):
    tx.update(params, state, params, activation_stats={"v": jnp.eye(4)})
  # an entry for a leaf routed to AdamW is ignored
  jax.jit(tx.update)(params, state, params, activation_stats={"w": jnp.eye(4), "b": jnp.eye(6)})


@pytest.mark.training
def test_trains_mlp_at_default_lr():
  """demo.train passes no statistics: Newton-Muon runs as Muon (P = I)."""
  helpers.check_trains_mlp(mj.newton_muon(), factor=0.7)


class RecordingMLP(nnx.Module):
  """demo.MLP that sows each kernel's input second moment when asked."""

  def __init__(self, rngs):
    self.fc1 = nnx.Linear(8, 16, rngs=rngs)
    self.fc2 = nnx.Linear(16, 16, rngs=rngs)
    self.fc3 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x, record=False):
    for name in ("fc1", "fc2", "fc3"):
      if record:
        self.sow(nnx.Intermediate, f"{name}_moment", mj.input_second_moment(x))
      x = getattr(self, name)(x)
      x = jnp.tanh(x) if name != "fc3" else x
    return x


@pytest.mark.training
def test_trains_with_statistics_in_nnx_optimizer():
  """nnx.Optimizer under nnx.jit with stats recorded by nnx.sow on every step."""
  model = RecordingMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, mj.newton_muon(refresh_every=1), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (64, 8))
  y = jnp.sin(x[:, :4])

  @nnx.jit
  def step(model, optimizer):
    def loss_fn(m):
      out, moments = nnx.capture(m, nnx.Intermediate)(x, record=True)
      return jnp.mean((out - y) ** 2), moments
    (loss, moments), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    stats = {name: {"kernel": moments[f"{name}_moment"][0]} for name in ("fc1", "fc2", "fc3")}
    optimizer.update(model, grads, activation_stats=stats)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(8)]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  st = stage_state(nnx.as_pure(optimizer.opt_state))  # the statistics reached the stage
  assert int(st.count) == 8
  assert not np.allclose(st.p["fc2"]["kernel"], np.eye(16))


def test_inject_hyperparams():
  """learning_rate as a hyperparameter (through a factory: optax binds **muon_kwargs)."""
  factory = helpers.through_wrapper(mj.newton_muon, refresh_every=1, compute_dtype=None)
  rng = np.random.default_rng(11)
  params, g = helpers.matrix_and_bias(rng)
  stats = {"w": jnp.asarray(second_moment(rng, (), 4), jnp.float32)}
  tx = optax.inject_hyperparams(factory)(learning_rate=0.05)
  helpers.check_injected_lr(tx, factory(0.05), params, g, lr=0.05, scaled=["w"],
                            unscaled=["b"], check_initial=False, jit_plain=True,
                            plain_tol=dict(rtol=1e-5, atol=1e-8), activation_stats=stats)


def test_inject_hyperparams_on_the_alias():
  optax.inject_hyperparams(mj.newton_muon)(learning_rate=0.05).init({"w": jnp.zeros((4, 6))})


@pytest.mark.parametrize("kwargs, name", [
    (dict(beta2=1.0), "beta2"),
    (dict(beta2=-0.1), "beta2"),
    (dict(refresh_every=0), "refresh_every"),
    (dict(refresh_every=2.5), "refresh_every"),
    (dict(ridge=-0.1), "ridge"),
    (dict(ridge_eps=-1e-8), "ridge_eps"),
    (dict(k0=-1.0), "k0"),
    (dict(refresh_rule="middle"), "refresh_rule"),
    (dict(block_diagonal=0), "block_diagonal"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(beta=1.0), "beta"),
])
def test_bad_arguments(kwargs, name):
  helpers.check_bad_argument(mj.newton_muon, kwargs, name)


def test_registry():
  params = {"w": jnp.zeros((4, 6))}
  g = {"w": jnp.asarray(np.random.default_rng(12).standard_normal((4, 6)), jnp.float32)}
  stats = {"w": jnp.eye(4) + 0.5}
  helpers.check_registry("newton_muon", params, g, learning_rate=0.01, refresh_every=1,
                         compute_dtype=None, jit=True, hyperparameters=("refresh_every",),
                         update_kwargs=dict(activation_stats=stats))
  with pytest.raises(ValueError, match="refresh_rule"):
    mj.get_optimizer("newton_muon", refresh_rule="x")
