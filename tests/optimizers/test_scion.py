"""Scion (`mj.scion`, `scale_by_lmo` and the LMOs) against a NumPy float64 reference.

The reference is written from docs/optimizers.md#scion in Flax layout: a kernel is
``(n_in, n_out)``. ColNorm has one statistic per input feature (a row: norm
over axis -1), RowNorm one per output neuron (a column: norm over axis -2);
an embedding ``(vocab, d)`` is input-major too, so ColNorm on it is per token.
Averaging is ``d <- (1 - alpha) d + alpha G`` (zero init); the constrained step is
``W <- (1 - eta) W - eta u``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import demo
from muonjax.transforms import lmo as lmo_lib

import helpers
import references
from helpers import random_tree

# --- NumPy float64 reference (docs/optimizers.md#momentum-forms, #newton-schulz-step, #scion) -------------------------

EPS = 1e-8


def np_spectral(d, normalized=True, use_max=False):
  n_in, n_out = d.shape[-2:]
  factor = np.sqrt(n_out / n_in) if normalized else np.sqrt(n_out)
  if use_max:
    factor = max(1.0, factor)
  return references.newton_schulz(d) * factor


def np_sign(d, normalized=True):
  return np.sign(d) / d.shape[-2] if normalized else np.sign(d)


def np_colnorm(d, normalized=False):
  n_in, n_out = d.shape[-2:]
  rms = np.linalg.norm(d, axis=-1, keepdims=True) / np.sqrt(n_out)
  return d / (rms * (n_in if normalized else 1) + EPS)


def np_rownorm(d, normalized=True):
  n_in = d.shape[-2]
  norm = np.linalg.norm(d, axis=-2, keepdims=True)
  return d / (norm * (np.sqrt(n_in) if normalized else 1) + EPS)


def np_bias_rms(g):
  return g / (np.sqrt(np.mean(g * g)) + EPS)


# Leaves of the reference tree and the shallow-nanogpt "Mixed" LMO of each.
SHAPES = {"wide": (3, 7), "tall": (7, 3), "stack": (2, 6, 4), "lm_head": (5, 9),
          "embed": (11, 4), "bias": (7,)}
MIXED = {"wide": lambda d: 3 * np_spectral(d), "tall": lambda d: 3 * np_spectral(d),
         "stack": lambda d: 3 * np_spectral(d), "lm_head": lambda d: 10 * np_sign(d),
         "embed": np_colnorm, "bias": np_bias_rms}


class ScionReference:
  """Returns the update ``W_new - W`` of one leaf."""

  def __init__(self, name, w, lr, alpha, constrained):
    self.lmo, self.w, self.lr, self.alpha, self.constrained = MIXED[name], w, lr, alpha, constrained
    self.d = np.zeros_like(w)

  def step(self, g):
    self.d = (1 - self.alpha) * self.d + self.alpha * g
    u = self.lmo(self.d)
    new = ((1 - self.lr) * self.w if self.constrained else self.w) - self.lr * u
    update, self.w = new - self.w, new
    return update


def assert_close(actual, expected):
  """rtol 1e-4, plus atol 1e-6 x the largest entry for entries near zero."""
  helpers.assert_close(actual, expected, rtol=1e-4, floor=1e-2)


# --- alias against the reference -------------------------------------------


class ScionReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_three_steps_match_reference(self):
    rng = np.random.default_rng(0)
    # (alpha = 1 and constrained=False are covered by the momentum and decay tests.)
    for alpha, constrained in [(0.5, True)]:
      lr = 0.1
      params = random_tree(rng, SHAPES)
      tx = mj.scion(lr, alpha=alpha, constrained=constrained, compute_dtype=None)
      refs = {k: ScionReference(k, params[k].astype(np.float64), lr, alpha, constrained)
              for k in SHAPES}
      state = tx.init(params)
      update = self.variant(tx.update)
      for _ in range(3):
        grads = random_tree(rng, SHAPES)
        updates, state = update(grads, state, params)
        for k in SHAPES:
          assert_close(updates[k], refs[k].step(grads[k].astype(np.float64)))
        params = jax.tree.map(lambda p, u: p + np.asarray(u), params, updates)

  def test_state_shapes_and_dtypes(self):
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          random_tree(np.random.default_rng(1), SHAPES))
    state = jax.eval_shape(mj.scion(alpha=0.1).init, params)
    moms = helpers.states_of(state, mj.MomentumState)
    assert len(moms) == 1
    assert moms[0].count.shape == () and moms[0].count.dtype == jnp.int32
    chex.assert_trees_all_equal_shapes_and_dtypes(moms[0].mu, params)
    # alpha = 1: no buffer, no arrays in the state at all.
    assert jax.tree.leaves(jax.eval_shape(mj.scion(alpha=1.0).init, params)) == []
    bf16 = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), params)
    mu = jax.eval_shape(mj.scion(alpha=0.1, mu_dtype=jnp.float32).init, bf16)[0].mu
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mu))


# --- the LMOs ----------------------------------------------------------------


def test_spectral_equals_ns_times_factor():
  rng = np.random.default_rng(9)
  for shape in [(6, 10), (10, 6)]:
    d = rng.standard_normal(shape).astype(np.float32)
    factor = np.sqrt(shape[1] / shape[0])
    out, ns, unnorm, clamped = jax.jit(lambda d: (
        lmo_lib.spectral(d), mj.newton_schulz(d), lmo_lib.spectral(d, normalized=False),
        lmo_lib.spectral(d, max=True)))(d)
    np.testing.assert_allclose(out, ns * factor, rtol=1e-6, atol=1e-7)
    assert_close(out, np_spectral(d.astype(np.float64)))
    assert_close(unnorm, ns * np.sqrt(shape[1]))
    assert_close(clamped, ns * max(1.0, factor))
  # Keller's NS5 is only roughly the polar factor (singular values in ~[0.7, 1.2]);
  # entrywise NS5 is within 0.1 of it once entries are O(1/sqrt(n)) (Emerging-Optimizers' test), so the
  # LMO is within 0.1 x max(1, factor) of polar * factor.
  big = rng.standard_normal((48, 80)).astype(np.float32)
  factor = np.sqrt(80 / 48)
  out, polar = jax.jit(lambda d: (lmo_lib.spectral(d), mj.polar_factor(d)))(big)
  np.testing.assert_allclose(out, polar * factor, atol=0.1 * factor)


def test_matrix_lmos_match_numpy():
  d = np.random.default_rng(2).standard_normal((2, 5, 7))
  fns = {f"{name}_{n}": (lambda x, f=fn, n=n: f(x, n))
         for name, fn in [("sign", lmo_lib.sign), ("colnorm", lmo_lib.colnorm),
                          ("rownorm", lmo_lib.rownorm)] for n in (True, False)}
  fns.update(sign=lmo_lib.sign, colnorm=lmo_lib.colnorm, rownorm=lmo_lib.rownorm)
  out = jax.jit(lambda x: {k: f(x) for k, f in fns.items()})(d.astype(np.float32))
  for n in (True, False):
    assert_close(out[f"sign_{n}"], np_sign(d, n))
    assert_close(out[f"colnorm_{n}"], np_colnorm(d, n))
    assert_close(out[f"rownorm_{n}"], np_rownorm(d, n))
  # Defaults: Sign and RowNorm normalized, ColNorm not.
  assert_close(out["sign"], np_sign(d, True))
  assert_close(out["colnorm"], np_colnorm(d, False))
  assert_close(out["rownorm"], np_rownorm(d, True))
  # ColNorm: every input feature (row) has RMS 1; RowNorm: columns have norm 1/sqrt(n_in).
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(out["colnorm"]), axis=-1)), 1, 1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["rownorm"], axis=-2), 1 / np.sqrt(5), 1e-5)


def test_colnorm_embedding_and_bias_rms():
  rng = np.random.default_rng(3)
  emb = rng.standard_normal((11, 4))  # (vocab, d)
  g = rng.standard_normal(9)
  out, plain, bias, scalar, zero = jax.jit(lambda e, g: (
      lmo_lib.colnorm(e, transpose=True), lmo_lib.colnorm(e), lmo_lib.bias_rms(g),
      lmo_lib.bias_rms(jnp.float32(-3.0)), lmo_lib.bias_rms(jnp.zeros(4))))(
          emb.astype(np.float32), g.astype(np.float32))
  assert_close(out, emb / (np.linalg.norm(emb, axis=1, keepdims=True) / np.sqrt(4) + EPS))
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(out), axis=1)), 1, 1e-5)  # per token
  # Flax embeddings are input-major like kernels: the flag changes nothing.
  np.testing.assert_array_equal(out, plain)
  assert_close(bias, np_bias_rms(g))
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(bias))), 1, 1e-5)
  np.testing.assert_allclose(scalar, -1.0, 1e-6)
  np.testing.assert_array_equal(zero, np.zeros(4))


def test_scale_by_lmo_stacked_custom_dims_and_pass_through():
  rng = np.random.default_rng(5)
  stack = rng.standard_normal((3, 5, 7)).astype(np.float32)
  bias = rng.standard_normal(7).astype(np.float32)
  kinds = {"spectral": lmo_lib.spectral, "sign": lmo_lib.sign, "colnorm": lmo_lib.colnorm,
           "rownorm": lmo_lib.rownorm}
  # A leaf stored (out, in) with dimension numbers that say so.
  dims = {"w": mj.MuonDimensionNumbers(reduction_axis=2, output_axis=1), "b": None}

  @jax.jit
  def run(stack, bias):
    res = {}
    for kind in kinds:
      lmos = {"w": mj.LMO(kind, scale=2.0), "b": None}
      res[kind] = mj.scale_by_lmo(lmos).update({"w": stack, "b": bias}, None)[0]
      res[kind + "_t"] = mj.scale_by_lmo(lmos, dimension_numbers=dims).update(
          {"w": jnp.swapaxes(stack, 1, 2), "b": bias}, None)[0]
      res[kind + "_ref"] = jnp.stack([2.0 * kinds[kind](s) for s in stack])
    res["auto"] = mj.scale_by_lmo("auto").update({"w": stack, "b": bias}, None)[0]
    res["auto_ref"] = {"w": lmo_lib.spectral(stack), "b": lmo_lib.bias_rms(bias)}
    return res

  res = run(stack, bias)
  for kind in kinds:
    np.testing.assert_allclose(res[kind]["w"], res[kind + "_ref"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res[kind]["b"], bias)  # None: pass through
    np.testing.assert_allclose(np.swapaxes(res[kind + "_t"]["w"], 1, 2), res[kind + "_ref"],
                               rtol=1e-5, atol=1e-6)
  # auto: Spectral for matrices, BiasRMS for vectors; string kinds are accepted.
  np.testing.assert_allclose(res["auto"]["w"], res["auto_ref"]["w"], rtol=1e-6)
  np.testing.assert_allclose(res["auto"]["b"], res["auto_ref"]["b"], rtol=1e-6)


def test_scale_by_lmo_inside_partition():
  params = {"w": np.ones((4, 6), np.float32), "b": np.ones(6, np.float32)}
  grads = {"w": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32),
           "b": np.arange(6.0, dtype=np.float32)}
  tx = optax.partition({"a": mj.scale_by_lmo(mj.scion_default_lmos), "s": optax.identity()},
                       {"w": "a", "b": "s"})
  out, ref = jax.jit(lambda g, p: (tx.update(g, tx.init(p), p)[0],
                                   3 * lmo_lib.spectral(g["w"])))(grads, params)
  np.testing.assert_allclose(out["w"], ref, rtol=1e-6)
  np.testing.assert_array_equal(out["b"], grads["b"])


def test_scale_by_lmo_errors():
  with pytest.raises(ValueError, match="kind must be one of .*spectral.*bias_rms"):
    mj.LMO("frobenius")
  with pytest.raises(ValueError, match="kind must be one of"):
    mj.scale_by_lmo({"w": "frobenius"})
  with pytest.raises(ValueError, match="scale"):
    mj.LMO("sign", scale=-1.0)
  with pytest.raises(ValueError, match=r"rank >= 2.*\['b'\]"):
    jax.eval_shape(mj.scale_by_lmo({"b": mj.LMO("spectral")}).update,
                   {"b": jax.ShapeDtypeStruct((3,), jnp.float32)}, optax.EmptyState())


# --- momentum, constrained decay -------------------------------------------------


def test_scion_momentum():
  tx = lmo_lib.scion_momentum(1.0)
  assert jax.tree.leaves(tx.init({"w": np.zeros((3, 4))})) == []  # alpha = 1: no buffer
  g = {"w": np.ones((3, 4), np.float32)}
  np.testing.assert_array_equal(tx.update(g, tx.init(g))[0]["w"], g["w"])
  tx = lmo_lib.scion_momentum(0.3)
  update = jax.jit(tx.update)
  state, d = tx.init(g), np.zeros((3, 4))
  rng = np.random.default_rng(6)
  for _ in range(3):
    g = rng.standard_normal((3, 4))
    d = 0.7 * d + 0.3 * g
    out, state = update({"w": g.astype(np.float32)}, state)
    assert_close(out["w"], d)
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match="alpha"):
      lmo_lib.scion_momentum(bad)


def test_constrained_minus_unconstrained_is_minus_lr_w():
  rng = np.random.default_rng(7)
  params = {k: v for k, v in random_tree(rng, SHAPES).items() if k in ("stack", "bias")}
  grads = {k: v for k, v in random_tree(rng, SHAPES).items() if k in ("stack", "bias")}
  stage = mj.constrained_decay()

  @jax.jit
  def run(grads, params):
    res = {}
    for name, lr in [("const", 0.1), ("sched", optax.linear_schedule(0.2, 0.0, 10))]:
      con, unc = mj.scion(lr, alpha=0.5), mj.scion(lr, alpha=0.5, constrained=False)
      res[name] = jax.tree.map(lambda a, b: a - b,
                               con.update(grads, con.init(params), params)[0],
                               unc.update(grads, unc.init(params), params)[0])
    res["stage"] = stage.update(grads, stage.init(params), params)[0]
    return res

  res = run(grads, params)
  for k in params:
    np.testing.assert_allclose(res["const"][k], -0.1 * params[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res["sched"][k], -0.2 * params[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res["stage"][k], grads[k] + params[k], rtol=1e-6)


# --- routing and init ----------------------------------------------------------


def test_default_lmos_routing_and_overrides():
  sds = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  params = {"blocks": {"attn": sds(2, 4, 4), "ln": {"scale": sds(4)}},
            "wte": {"embedding": sds(10, 4)}, "lm_head": {"kernel": sds(4, 10)},
            "router": sds(4, 3), "temp": sds()}
  lmos = mj.scion_default_lmos(params)
  assert lmos["blocks"]["attn"] == mj.LMO("spectral", 3.0)
  assert lmos["blocks"]["ln"]["scale"] == mj.LMO("bias_rms", 1.0)
  assert lmos["wte"]["embedding"] == mj.LMO("colnorm", 1.0, transpose=True)
  assert lmos["lm_head"]["kernel"] == mj.LMO("sign", 10.0)
  assert lmos["router"] == mj.LMO("spectral", 3.0)
  assert lmos["temp"] == mj.LMO("bias_rms", 1.0)
  lmos = mj.scion_default_lmos(params, overrides={r"lm_head": mj.LMO("rownorm", 5.0),
                                                  r"^router$": "sign"})
  assert lmos["lm_head"]["kernel"] == mj.LMO("rownorm", 5.0)
  assert lmos["router"] == mj.LMO("sign")
  model = nnx.eval_shape(lambda: demo.MLP(4, 8, 2, rngs=nnx.Rngs(0)))
  lmos = mj.scion_default_lmos(model)
  assert lmos["fc1"]["kernel"].kind == "spectral" and lmos["fc1"]["bias"].kind == "bias_rms"


def test_scion_init_inside_balls():
  params = {"w": np.zeros((6, 10), np.float32), "stack": np.zeros((3, 8, 5), np.float32),
            "head": np.zeros((5, 9), np.float32), "emb": np.zeros((11, 4), np.float32),
            "rows": np.zeros((6, 7), np.float32), "b": np.ones(7, np.float32),
            "keep": jnp.full((2, 2), 7.0, jnp.bfloat16)}
  lmos = {"w": mj.LMO("spectral", 3.0), "stack": mj.LMO("spectral", 2.0, max=True),
          "head": mj.LMO("sign", 10.0), "emb": mj.LMO("colnorm", 1.5, transpose=True),
          "rows": mj.LMO("rownorm", 2.0), "b": mj.LMO("bias_rms"), "keep": None}

  @jax.jit
  def run(params, key):
    out = mj.scion_init(params, lmos, key)
    # Sign, ColNorm and RowNorm inits are fixed points of their own scaled LMO.
    fixed = (10 * lmo_lib.sign(out["head"]), 1.5 * lmo_lib.colnorm(out["emb"]),
             2 * lmo_lib.rownorm(out["rows"]))
    return out, fixed

  out, fixed = run(params, jax.random.key(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(out, params)
  np.testing.assert_allclose(np.linalg.norm(out["w"], ord=2), 3 * np.sqrt(10 / 6), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["stack"], ord=2, axis=(1, 2)), [2.0] * 3, rtol=1e-5)
  np.testing.assert_allclose(np.abs(out["head"]), 10 / 5)
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(out["emb"]), axis=1)), 1.5, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["rows"], axis=0), 2 / np.sqrt(6), rtol=1e-5)
  np.testing.assert_array_equal(out["b"], 0)
  np.testing.assert_array_equal(out["keep"], params["keep"])
  for got, want in zip(fixed, (out["head"], out["emb"], out["rows"])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# --- the alias in the ecosystem --------------------------------------------------


@pytest.mark.training
def test_alias_trains_demo_mlp():
  helpers.check_trains_mlp(mj.scion(), cfg=demo.DemoConfig(steps=100, batch=64))


def test_inject_hyperparams_and_schedule():
  rng = np.random.default_rng(8)
  params = {k: v for k, v in random_tree(rng, SHAPES).items() if k in ("wide", "bias")}
  grads = {k: v for k, v in random_tree(rng, SHAPES).items() if k in ("wide", "bias")}
  tx = optax.inject_hyperparams(mj.scion)(learning_rate=1e-2, alpha=0.5)
  tol = dict(rtol=1e-5, atol=1e-7)
  helpers.check_injected_lr(tx, mj.scion(1e-2, alpha=0.5), params, grads, lr=1e-2,
                            scaled=params, check_initial=False, jit_plain=True,
                            plain_tol=tol, tol=tol)


def test_nnx_optimizer():
  helpers.check_nnx_optimizer(mj.scion(1e-2, alpha=0.5))


def test_registry_and_bad_hyperparameters():
  assert "scion" in mj.OPTIMIZERS
  tx = mj.get_optimizer("scion", learning_rate=0.01, alpha=0.1, constrained=False)
  params = {"w": jnp.ones((3, 4))}
  tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match="learning_rate"):
    mj.scion(-1.0)
  for bad in (0.0, 1.5):
    with pytest.raises(ValueError, match="alpha"):
      mj.scion(alpha=bad)
  with pytest.raises(ValueError, match="overrides"):
    mj.scion(lmos=mj.LMO("sign"), overrides={"w": "spectral"})
  with pytest.raises(ValueError, match="kind must be one of"):
    mj.scion(overrides={"w": "nuclear"})
  with pytest.raises(ValueError, match="alpha"):
    mj.get_optimizer("scion", alpha=2.0)
  with pytest.raises(ValueError, match="no hyperparameter"):
    mj.get_optimizer("scion", beta=0.9)
