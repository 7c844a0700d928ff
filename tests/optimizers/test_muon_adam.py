"""MuonAdam, MuonMax and Momo (`mj.muon_adam`, `mj.muon_max`, `mj.momo`) against NumPy.

The float64 reference is written from docs/optimizers.md#muonadam-muonmax-and-momo (with the "EMA
started at the first gradient" momentum of #momentum-forms and the GPT-opt polar variant of #coefficient-sets). Muon leaves
are stacks of Flax ``(n_in, n_out)`` matrices (a 2-D leaf is a stack of one);
the polar factor is taken per matrix. The test tree holds a Muon matrix, a
stacked ``(L, in, out)`` Muon leaf, an Adam bias and a 2-D Adam embedding, so
the cross-leaf sums of MuonMax (N) and Momo (Σ over Muon *and* Adam leaves)
are exercised.
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
from muonjax.orthogonalization import composed_polynomial
from muonjax.optimizers.muon_adam import GowerState
from muonjax.transforms import GlobalNuclearNormState, MomoState, scale_by_global_nuclear_norm

import helpers
import references
from helpers import as_stack, random_tree, states_of, to_jax

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

# --- NumPy float64 reference (docs/optimizers.md#momentum-forms, #coefficient-sets, #muonadam-muonmax-and-momo) --------------------------


def np_polar_gptopt(x, steps=5):
  """GPT-opt's polar: the uniformly ÷1.01 paper table, ``X / (||X||_F * 1.01)`` (no eps)."""
  return references.newton_schulz(x, references.PE_GPTOPT, steps, safety=1.01, eps=0.0)


NP_POLAR = {"svd": references.polar, "polar_express_gptopt": np_polar_gptopt,
            "keller": references.newton_schulz}


class GowerReference:
  """docs/optimizers.md#muonadam-muonmax-and-momo on dicts of float64 arrays; Muon leaves are ``(B, n_in, n_out)`` stacks."""

  def __init__(self, variant, params, muon_keys, *, polar="svd", lr=1e-3, s=10.0, wd=0.1,
               beta=0.95, b1=0.95, b2=0.95, eps=1e-8, momo=False, f_star=0.0, clamp=True,
               stale=True):
    self.variant, self.polar = variant, NP_POLAR[polar]
    self.lr, self.s, self.wd, self.eps = lr, s, wd, eps
    self.beta, self.b1, self.b2 = beta, b1, b2
    self.momo, self.f_star, self.clamp, self.stale = momo, f_star, clamp, stale
    self.w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    self.muon = [k for k in self.w if k in muon_keys]
    self.adam = [k for k in self.w if k not in muon_keys]
    self.t, self.mom, self.v, self.prev, self.fbar = 0, {}, {}, {}, None
    self.step_sizes = []

  def step(self, g, loss=None):
    g = {k: np.asarray(x, np.float64) for k, x in g.items()}
    self.t += 1
    first = self.t == 1
    for k in self.muon:  # M_1 = G_1, then EMA
      self.mom[k] = g[k] if first else self.beta * self.mom[k] + (1 - self.beta) * g[k]
    for k in self.adam:  # m_1 = g_1, v_1 = g_1^2, no bias correction
      self.mom[k] = g[k] if first else self.b1 * self.mom[k] + (1 - self.b1) * g[k]
      self.v[k] = g[k] ** 2 if first else self.b2 * self.v[k] + (1 - self.b2) * g[k] ** 2
    o = {k: self.polar(self.mom[k]) for k in self.muon}
    fresh = {k: np.sum(self.mom[k] * o[k]) for k in self.muon}
    n = sum(fresh.values()) if (first or not self.stale) else sum(self.prev.values())
    self.prev = fresh
    d = {k: self.mom[k] / (self.eps + np.sqrt(self.v[k])) for k in self.adam}
    eta = self.lr
    if self.momo:
      sample = loss - sum(np.sum(self.w[k] * g[k]) for k in self.w)
      self.fbar = sample if first else self.beta * self.fbar + (1 - self.beta) * sample
      num = self.fbar - self.f_star + sum(np.sum(self.w[k] * self.mom[k]) for k in self.w)
      if self.clamp:
        num = max(num, 0.0)
      adam_part = sum(np.sum(self.mom[k] ** 2 / (self.eps + np.sqrt(self.v[k])))
                      for k in self.adam)
      den = (self.s * n**2 if self.variant == "muon_max" else self.s * n) + adam_part
      eta = min(self.lr, num / den)
    self.step_sizes.append(eta)
    out = {}
    for k in self.muon:
      scale = self.s * (n if self.variant == "muon_max" else 1.0)
      out[k] = -self.lr * self.wd * self.w[k] - eta * scale * o[k]
    for k in self.adam:
      out[k] = -self.lr * self.wd * self.w[k] - eta * d[k]
    self.w = {k: self.w[k] + out[k] for k in self.w}
    return out


# --- helpers ----------------------------------------------------------------

# Muon: a (3, 7) matrix and a stacked (2, 6, 4) leaf. Adam: a bias and a 2-D
# embedding (routed to Adam by name).
SHAPES = {"w": (3, 7), "s": (2, 6, 4), "b": (7,), "embed": (5, 3)}
MUON_KEYS = ("w", "s")
LOSSES = (2.0, 1.7, 1.5)


def assert_close(actual, expected):
  """rtol 1e-4 plus an atol of 1e-5 x the largest entry (for near-zero entries)."""
  helpers.assert_close(actual, expected, rtol=1e-4, floor=1e-1)


def stacked(tree):
  """Muon leaves as stacks of ``(n_in, n_out)`` matrices (the reference's layout)."""
  return {k: as_stack(x) if k in MUON_KEYS else x for k, x in tree.items()}


def run_three_steps(test, tx, ref, losses=LOSSES, seed=0):
  rng = np.random.default_rng(seed)
  params = to_jax(ref_params(seed))
  grads = [random_tree(rng, SHAPES) for _ in range(3)]
  run = helpers.run_steps(tx, params, to_jax(grads), test.variant(tx.update),
                          [dict(value=jnp.float32(loss)) for loss in losses])
  for t, (g, updates) in enumerate(zip(grads, run.updates)):
    expected = ref.step(stacked(g), losses[t])
    for k in SHAPES:
      assert updates[k].dtype == jnp.float32
      try:
        assert_close(updates[k], expected[k])
      except AssertionError as e:
        raise AssertionError(f"leaf={k} step={t + 1}: {e}") from None
  return run.state


def ref_params(seed):
  return random_tree(np.random.default_rng(seed + 100), SHAPES, scale=0.5)


def make_ref(variant, seed=0, **kwargs):
  return GowerReference(variant, stacked(ref_params(seed)), MUON_KEYS, **kwargs)


# --- reference checks -------------------------------------------------------


class GowerReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("svd", "polar_express_gptopt")
  def test_muon_adam(self, polar):
    tx = mj.muon_adam(polar_method=polar, compute_dtype=None)
    run_three_steps(self, tx, make_ref("muon_adam", polar=polar))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(("svd", True), ("svd", False))
  def test_muon_max(self, polar, stale):
    tx = mj.muon_max(polar_method=polar, stale_nuc=stale, compute_dtype=None)
    state = run_three_steps(self, tx, make_ref("muon_max", polar=polar, stale=stale))
    (nuc,) = states_of(state, GlobalNuclearNormState)
    assert int(nuc.count) == 3

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ("muon_max", "svd", True), ("muon_max", "svd", False), ("muon_adam", "svd", True))
  def test_momo(self, base, polar, stale):
    # lr 0.1 is large enough that the truncation is active.
    tx = mj.momo(0.1, base=base, polar_method=polar, stale_nuc=stale, compute_dtype=None)
    ref = make_ref(base, polar=polar, stale=stale, lr=0.1, momo=True)
    state = run_three_steps(self, tx, ref)
    (momo,) = states_of(state, MomoState)
    assert min(ref.step_sizes) < 0.1  # truncation exercised
    assert float(momo.step_size) == pytest.approx(ref.step_sizes[-1], rel=1e-4)
    assert int(momo.count) == 3

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(("muon_max", True), ("muon_adam", False))
  def test_momo_negative_numerator(self, base, clamp):
    """A loss far below Σ<W, G> makes the numerator negative (f* = 0)."""
    losses = (-50.0, -50.0, -50.0)
    tx = mj.momo(0.1, base=base, polar_method="svd", compute_dtype=None,
                 clamp_nonnegative=clamp)
    ref = make_ref(base, lr=0.1, momo=True, clamp=clamp)
    run_three_steps(self, tx, ref, losses=losses)
    if clamp:
      assert ref.step_sizes == [0.0, 0.0, 0.0]  # only the weight decay moves W
    else:
      assert max(ref.step_sizes) < 0.0  # GPT-opt parity: the step is reversed

  @chex.variants(with_jit=True, without_jit=True)
  def test_truncation_variants_through_flags(self):
    """``muon_max(truncate=True)`` is ``momo(base="muon_max")``, with f* = 0.5."""
    tx = mj.muon_max(0.1, truncate=True, truncate_loss=0.5, polar_method="svd",
                     compute_dtype=None)
    run_three_steps(self, tx, make_ref("muon_max", lr=0.1, momo=True, f_star=0.5))


def test_truncate_loss_none_disables_momo():
  rng = np.random.default_rng(3)
  params = to_jax(ref_params(3))
  g = to_jax(random_tree(rng, SHAPES))
  plain = mj.muon_max(polar_method="svd", compute_dtype=None)
  off = mj.momo(base="muon_max", truncate_loss=None, polar_method="svd", compute_dtype=None)
  u1, _ = plain.update(g, plain.init(params), params)
  u2, _ = off.update(g, off.init(params), params)  # no value= needed
  chex.assert_trees_all_close(u1, u2)


def test_momo_learning_rate_schedule():
  """A schedule drives both η_t's cap and the decay, at the same step count."""
  rng = np.random.default_rng(12)
  params = to_jax(ref_params(12))
  grads = [to_jax(random_tree(rng, SHAPES)) for _ in range(2)]
  sched = mj.momo(lambda count: 0.1 / (1.0 + count), polar_method="svd")
  ref = make_ref("muon_max", seed=12, lr=0.1, momo=True)
  state = sched.init(params)
  for t, g in enumerate(grads):
    ref.lr = 0.1 / (1.0 + t)
    updates, state = sched.update(g, state, params, value=jnp.float32(LOSSES[t]))
    params = optax.apply_updates(params, updates)
    expected = ref.step(stacked(jax.tree.map(np.asarray, g)), LOSSES[t])
    for k in SHAPES:
      assert_close(updates[k], expected[k])


def test_non_momo_ignores_value():
  rng = np.random.default_rng(4)
  params = to_jax(ref_params(4))
  g = to_jax(random_tree(rng, SHAPES))
  tx = mj.muon_max(polar_method="svd")
  state = tx.init(params)
  u1, _ = tx.update(g, state, params)
  u2, _ = tx.update(g, state, params, value=jnp.float32(3.0))
  chex.assert_trees_all_close(u1, u2)


@pytest.mark.parametrize("factory", [
    lambda: mj.momo(), lambda: mj.momo(base="muon_adam"), lambda: mj.muon_adam(truncate=True)])
def test_momo_without_value_raises(factory):
  params = to_jax(ref_params(5))
  g = jax.tree.map(jnp.zeros_like, params)
  tx = factory()
  with pytest.raises(ValueError, match="value=loss"):
    tx.update(g, tx.init(params), params)
  with pytest.raises(ValueError, match="value=loss"):
    jax.jit(tx.update)(g, tx.init(params), params)


@pytest.mark.parametrize("factory", [
    lambda **kw: mj.momo(**kw), lambda **kw: mj.muon_adam(truncate=True, **kw),
    lambda **kw: mj.muon_max(truncate=True, **kw)])
def test_momo_requires_beta_equal_beta1(factory):
  with pytest.raises(ValueError, match="adam_betas"):
    factory(beta=0.9, adam_betas=(0.95, 0.95))
  factory(beta=0.9, adam_betas=(0.9, 0.95))  # equal: fine
  mj.muon_max(beta=0.9, adam_betas=(0.95, 0.95))  # no truncation: no constraint


@pytest.mark.parametrize("factory", [mj.muon_max, mj.momo])
def test_zero_gradients_give_finite_updates(factory):
  """docs/optimizers.md#pitfalls: zero momentum must not produce NaN (GPT-opt's eps-free NS would)."""
  params = to_jax(ref_params(6))
  g = jax.tree.map(jnp.zeros_like, params)
  tx = factory(1e-2, compute_dtype=None)
  updates, _ = jax.jit(tx.update)(g, tx.init(params), params, value=jnp.float32(1.0))
  expected = jax.tree.map(lambda w: -1e-2 * 0.1 * w, params)  # weight decay only
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_cautious_weight_decay_mode():
  """``gower_optimizer(weight_decay_mode="cautious")`` decays only where D·W >= 0."""
  rng = np.random.default_rng(13)
  params = to_jax(ref_params(13))
  g = to_jax(random_tree(rng, SHAPES))
  kwargs = dict(orthogonalizer="svd", dimension_numbers=mj.muon_dimension_numbers)
  plain = mj.gower_optimizer(0.01, weight_decay=0.0, **kwargs)
  u0, _ = plain.update(g, plain.init(params), params)
  tx = mj.gower_optimizer(0.01, weight_decay=0.1, weight_decay_mode="cautious", **kwargs)
  u1, _ = tx.update(g, tx.init(params), params)
  for k in SHAPES:
    d, w = -np.asarray(u0[k]) / 0.01, np.asarray(params[k])
    assert_close(u1[k], -0.01 * (d + 0.1 * (d * w >= 0) * w))


# --- the global-scale stage on its own ----------------------------------------------------


def test_global_nuclear_norm_stage():
  rng = np.random.default_rng(7)
  tree = {"a": jnp.asarray(rng.standard_normal((3, 5)), jnp.float32),
          "s": jnp.asarray(rng.standard_normal((2, 4, 3)), jnp.float32),
          "bias": jnp.asarray(rng.standard_normal((5,)), jnp.float32)}
  dims = {"a": mj.MuonDimensionNumbers(0, 1), "s": mj.MuonDimensionNumbers(1, 2), "bias": None}
  tx = scale_by_global_nuclear_norm("svd", stale=True, dimension_numbers=dims)
  update = jax.jit(tx.update)
  state = tx.init(tree)
  assert state.inner["bias"] == optax.MaskedNode()
  nuclear = lambda t: sum(np.linalg.svd(np.asarray(t[k], np.float64), compute_uv=False).sum()
                          for k in ("a", "s"))
  out, state = update(tree, state)
  n1 = nuclear(tree)
  assert float(state.norm) == pytest.approx(n1, rel=1e-5)
  assert_close(out["a"], n1 * references.polar(tree["a"]))
  assert_close(out["s"], n1 * references.polar(tree["s"]))
  np.testing.assert_array_equal(out["bias"], tree["bias"])
  # Stale: the second step multiplies by the first step's N.
  tree2 = jax.tree.map(lambda x: 3.0 * x, tree)
  out2, state = update(tree2, state)
  assert float(state.norm) == pytest.approx(n1, rel=1e-5)
  assert float(sum(state.inner[k] for k in ("a", "s"))) == pytest.approx(3 * n1, rel=1e-5)
  assert_close(out2["a"], n1 * references.polar(tree["a"]))
  # scale=False returns polar(M) and only records N.
  plain = scale_by_global_nuclear_norm("svd", stale=False, scale=False, dimension_numbers=dims)
  out3, st3 = plain.update(tree2, plain.init(tree2))
  assert float(st3.norm) == pytest.approx(3 * n1, rel=1e-5)
  assert_close(out3["a"], references.polar(tree["a"]))


def test_global_nuclear_norm_inside_partition():
  """The global-scale stage inside optax.partition sums over the Muon branch only (MaskedNode-safe)."""
  rng = np.random.default_rng(8)
  params = {"w": jnp.zeros((4, 6)), "v": jnp.zeros((6, 4)), "b": jnp.zeros((6,))}
  g = {k: jnp.asarray(rng.standard_normal(p.shape), jnp.float32) for k, p in params.items()}
  tx = mj.muon(1.0, method=None, shape_rule="none", nesterov=False, beta=0.0,
               before_orthogonalize=[lambda dims: scale_by_global_nuclear_norm(
                   "svd", stale=False, dimension_numbers=dims)])
  updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
  n = sum(np.linalg.svd(np.asarray(g[k], np.float64), compute_uv=False).sum() for k in "wv")
  assert_close(updates["w"], -n * references.polar(g["w"]))


def test_gptopt_coefficients_match_spec_ranges():
  """docs/optimizers.md#singular-value-ranges: GPT-opt's uniform ÷1.01 table, 5 and 8 steps, sigma in [1e-3, 1]."""
  table = mj.get_coefficients("polar_express_gptopt").table
  np.testing.assert_allclose(table, references.PE_GPTOPT, rtol=1e-15)
  sigma = np.linspace(1e-3, 1, 20001)
  five = composed_polynomial(sigma, "polar_express_gptopt", 5)
  eight = composed_polynomial(sigma, "polar_express_gptopt", 8)
  assert (round(five.min(), 3), round(five.max(), 3)) == (0.838, 1.112)
  assert (round(eight.min(), 3), round(eight.max(), 3)) == (0.990, 0.990)


# --- state ------------------------------------------------------------------


def test_state_shapes_and_dtypes():
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  state = mj.momo(base="muon_max").init(params)
  # The routing decided at init wraps the optimizer's own state (muonjax.routing.RoutedState).
  assert isinstance(state.inner, GowerState)
  shapes = lambda t: {k: (v.shape, v.dtype) for k, v in t.items()
                      if not isinstance(v, optax.MaskedNode)}
  f32 = jnp.float32
  assert shapes(state.muon_momentum.inner_state.mu) == {"w": ((3, 7), f32), "s": ((2, 6, 4), f32)}
  assert shapes(state.adam_momentum.inner_state.mu) == {"b": ((7,), f32), "embed": ((5, 3), f32)}
  assert shapes(state.adam_second_moment.inner_state.mu) == {"b": ((7,), f32),
                                                             "embed": ((5, 3), f32)}
  # One float32 scalar <M, polar(M)> per Muon leaf (a stack sums its slices).
  assert shapes(state.orthogonalize.inner) == {"w": ((), f32), "s": ((), f32)}
  assert state.orthogonalize.norm.shape == () and state.orthogonalize.norm.dtype == f32
  assert isinstance(state.momo, MomoState)
  assert (state.momo.count.dtype, state.momo.loss_model.dtype) == (jnp.int32, f32)
  assert state.momo.loss_model.shape == state.momo.step_size.shape == ()
  # Plain MuonAdam keeps no nuclear-norm or Momo state.
  plain = mj.muon_adam().init(params)
  assert plain.orthogonalize == optax.EmptyState() and plain.momo == optax.EmptyState()
  bf16 = mj.muon_adam(mu_dtype=jnp.bfloat16).init(params)
  assert bf16.muon_momentum.inner_state.mu["w"].dtype == jnp.bfloat16
  assert bf16.adam_second_moment.inner_state.mu["b"].dtype == jnp.bfloat16


# --- common alias requirements ----------------------------------------------


def train_with_value(cfg, tx):
  """``demo.train`` with the loss passed as ``value=`` (Momo needs it)."""
  model = demo.MLP(cfg.d_in, cfg.hidden, cfg.d_out, rngs=nnx.Rngs(cfg.seed))
  graphdef, params = nnx.split(model, nnx.Param)
  xs, ys = demo.teacher_batches(cfg)

  def loss_fn(params, x, y):
    return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    return (optax.apply_updates(params, updates), opt_state), loss

  carry = (params, tx.init(params))
  _, losses = jax.jit(lambda c, b: jax.lax.scan(step, c, b))(carry, (xs, ys))
  return np.asarray(losses)


@pytest.mark.training
@pytest.mark.parametrize("name", ["muon_adam", "muon_max"])
def test_trains_mlp_at_default_lr(name):
  helpers.check_trains_mlp(getattr(mj, name)(), factor=0.7)


@pytest.mark.training
def test_momo_trains_mlp_at_default_lr():
  helpers.check_trains_mlp(mj.momo(), factor=0.7, train=train_with_value)


def _check_injected_lr(tx, plain, momo=False):
  params = to_jax(ref_params(9))
  g = to_jax(random_tree(np.random.default_rng(9), SHAPES))
  # Not Momo: one lr for both branches and the decay, so the whole update doubles.
  u1, u2 = helpers.check_injected_lr(tx, plain, params, g, lr=1e-3,
                                     scaled=() if momo else params,
                                     plain_tol=dict(rtol=1e-5, atol=1e-9),
                                     tol=dict(rtol=1e-5), value=jnp.float32(2.0))
  if momo:
    assert not np.allclose(u2["w"], u1["w"])


@pytest.mark.parametrize("name", ["muon_adam", "muon_max", "momo"])
def test_inject_hyperparams(name):
  """The loss ``value=`` is forwarded; ``steps`` is static where it is a parameter."""
  factory = getattr(mj, name)
  # Newton–Schulz (static steps) for MuonMax, the exact polar factor for Momo.
  kwargs = dict(compute_dtype=None) if name == "muon_max" else dict(polar_method="svd")
  # steps is in every alias's signature (the iteration count is static): pass it
  # as a static argument, as the aliases' docstrings say.
  static = ("steps",)
  tx = optax.inject_hyperparams(factory, static_args=static)(learning_rate=1e-3, **kwargs)
  _check_injected_lr(tx, factory(1e-3, **kwargs), momo=name == "momo")


def test_inject_hyperparams_traced_steps_error():
  params = to_jax(ref_params(10))
  tx = optax.inject_hyperparams(mj.muon_adam)(learning_rate=1e-3)
  with pytest.raises(ValueError, match="static_args"):
    jax.jit(tx.update)(params, tx.init(params), params)


@pytest.mark.parametrize("name", ["muon_adam", "muon_max", "momo"])
def test_nnx_optimizer(name):
  helpers.check_nnx_optimizer(getattr(mj, name)(), strictly_decreasing=True, pass_value=True)


@pytest.mark.parametrize("kwargs, name", [
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(beta=1.0), "beta"),
    (dict(adam_betas=(1.0, 0.9)), "adam_betas"),
    (dict(adam_betas=(0.9, -0.1)), "adam_betas"),
    (dict(adam_betas=(0.9,)), "adam_betas"),
    (dict(eps=-1.0), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(muon_lr_scale=-1.0), "muon_lr_scale"),
    (dict(steps=0), "steps"),
    (dict(polar_method="jordan"), "polar_method"),
])
@pytest.mark.parametrize("name_", ["muon_adam", "muon_max", "momo"])
def test_bad_arguments(kwargs, name, name_):
  helpers.check_bad_argument(getattr(mj, name_), kwargs, name)


def test_bad_momo_base():
  with pytest.raises(ValueError, match="base"):
    mj.momo(base="muon")


def test_registry():
  params = to_jax(ref_params(11))
  g = to_jax(random_tree(np.random.default_rng(11), SHAPES))
  for name in ("muon_adam", "muon_max", "momo"):
    helpers.check_registry(name, params, g, learning_rate=0.01, polar_method="svd",
                           update_kwargs=dict(value=jnp.float32(1.0)),
                           hyperparameters=("muon_lr_scale", "adam_betas", "polar_method",
                                            "truncate_loss", "clamp_nonnegative", "stale_nuc"))
  assert "base" in mj.hyperparameters(mj.momo)
  with pytest.raises(ValueError, match="beta"):
    mj.get_optimizer("momo", beta=1.5)
  with pytest.raises(ValueError, match="no hyperparameter"):
    mj.get_optimizer("muon_max", bogus=1)
