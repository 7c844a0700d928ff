"""Tests of the chain stages: momentum, scale_by_shape, orthogonalize.

Every expected value comes from an independent float64 NumPy reference written
from published equations (docs/optimizers.md#momentum-forms, #orthogonalization, #shape-scale-rules, #test-oracles), or from optax.
"""

from __future__ import annotations

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import muonjax as mj
from muonjax import MuonDimensionNumbers as DN

import references
from helpers import random_tree

HYP = hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=list(hypothesis.HealthCheck))


# --------------------------------------------------------------------------------------
# Independent NumPy references.
# --------------------------------------------------------------------------------------


def np_momentum_steps(grads, beta, form, nesterov, bias_correction):
  """docs/optimizers.md#momentum-forms, step by step. Returns (outputs, buffers) per step."""
  buf = np.zeros_like(grads[0], dtype=np.float64)
  outs, bufs = [], []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64)
    if form == "sgd":
      buf = beta * buf + g
      out = g + beta * buf if nesterov else buf
    else:
      if form == "ema_from_first" and t == 1:
        buf = g
      else:
        buf = beta * buf + (1 - beta) * g
      if bias_correction:
        if nesterov:
          out = beta * buf / (1 - beta**(t + 1)) + (1 - beta) * g / (1 - beta**t)
        else:
          out = buf / (1 - beta**t)
      else:
        out = beta * buf + (1 - beta) * g if nesterov else buf
    outs.append(out)
    bufs.append(buf.copy())
  return outs, bufs


TREE_SHAPES = {"w": (4, 6), "b": (6,), "s": (2, 3, 5)}


# --------------------------------------------------------------------------------------
# momentum stage
# --------------------------------------------------------------------------------------


MOMENTUM_CASES = [
    dict(testcase_name=f"{form}_nest{int(nest)}_bc{int(bc)}", form=form, nesterov=nest,
         bias_correction=bc)
    for form in ("ema", "sgd", "ema_from_first")
    for nest in (True, False)
    for bc in ((False, True) if form == "ema" else (False,))
]


class MomentumTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*MOMENTUM_CASES)
  def test_matches_numpy_reference(self, form, nesterov, bias_correction):
    beta = 0.9
    grads = [random_tree(s, TREE_SHAPES) for s in range(4)]
    tx = mj.momentum(beta, form=form, nesterov=nesterov, bias_correction=bias_correction)
    update = self.variant(tx.update)
    state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]))
    for t, g in enumerate(grads):
      out, state = update(g, state)
      for k in TREE_SHAPES:
        ref_out, ref_buf = np_momentum_steps([gg[k] for gg in grads[:t + 1]], beta, form,
                                             nesterov, bias_correction)
        chex.assert_trees_all_close(out[k], ref_out[-1], rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(state.mu[k], ref_buf[-1], rtol=1e-5, atol=1e-6)
      self.assertEqual(int(state.count), t + 1)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sgd_buffer_is_ema_over_one_minus_beta(self):
    beta = 0.8
    grads = [random_tree(10 + s, TREE_SHAPES) for s in range(5)]
    for nesterov in (True, False):
      ema = mj.momentum(beta, form="ema", nesterov=nesterov)
      sgd = mj.momentum(beta, form="sgd", nesterov=nesterov)
      ue, us = self.variant(ema.update), self.variant(sgd.update)
      se, ss = ema.init(grads[0]), sgd.init(grads[0])
      for g in grads:
        oe, se = ue(g, se)
        os_, ss = us(g, ss)
        # S_t = M_t / (1 - beta) and the emitted inputs differ by the same factor.
        chex.assert_trees_all_close(ss.mu, jax.tree.map(lambda m: m / (1 - beta), se.mu),
                                    rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(os_, jax.tree.map(lambda o: o / (1 - beta), oe),
                                    rtol=1e-5, atol=1e-6)

  def test_state_dtypes(self):
    params = {"w": jnp.zeros((3, 4), jnp.float32), "b": jnp.zeros((4,), jnp.float32)}
    grads = jax.tree.map(jnp.ones_like, params)
    state = mj.momentum().init(params)
    self.assertEqual(state.count.dtype, jnp.int32)
    chex.assert_trees_all_equal_dtypes(state.mu, params)
    out, state = mj.momentum().update(grads, state)
    chex.assert_trees_all_equal_dtypes(state.mu, params)
    chex.assert_trees_all_equal_dtypes(out, params)
    self.assertEqual(state.count.dtype, jnp.int32)

    tx = mj.momentum(mu_dtype=jnp.bfloat16)
    state = tx.init(params)
    for leaf in jax.tree.leaves(state.mu):
      self.assertEqual(leaf.dtype, jnp.bfloat16)
    out, state = jax.jit(tx.update)(grads, state)
    for leaf in jax.tree.leaves(state.mu):
      self.assertEqual(leaf.dtype, jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(out, params)  # outputs keep the update dtype
    self.assertEqual(state.count.dtype, jnp.int32)

  @parameterized.named_parameters(
      dict(testcase_name="beta_one", kwargs=dict(beta=1.0), name="beta"),
      dict(testcase_name="beta_negative", kwargs=dict(beta=-0.1), name="beta"),
      dict(testcase_name="bad_form", kwargs=dict(form="foo"), name="form"),
      dict(testcase_name="bias_correction_sgd", kwargs=dict(form="sgd", bias_correction=True),
           name="bias_correction"),
  )
  def test_bad_arguments(self, kwargs, name):
    with pytest.raises(ValueError, match=name):
      mj.momentum(**kwargs)

  @HYP
  @hypothesis.given(beta=st.floats(0.0, 0.99), rows=st.integers(1, 5), cols=st.integers(1, 5))
  def test_ema_plain_any_beta_shape(self, beta, rows, cols):
    grads = [np.random.default_rng(s).standard_normal((rows, cols)).astype(np.float32)
             for s in range(3)]
    tx = mj.momentum(beta, nesterov=False)
    state = tx.init(grads[0])
    ref, _ = np_momentum_steps(grads, beta, "ema", False, False)
    for g, r in zip(grads, ref):
      out, state = tx.update(g, state)
      chex.assert_trees_all_close(out, r, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# shape scale stage (scale_by_shape)
# --------------------------------------------------------------------------------------


class ScaleByShapeTest(chex.TestCase):

  @parameterized.named_parameters(
      dict(testcase_name="keller_wide", rule="keller", shape=(768, 3072), expected=2.0),
      dict(testcase_name="keller_tall", rule="keller", shape=(3072, 768), expected=1.0),
      dict(testcase_name="keller_square", rule="keller", shape=(768, 768), expected=1.0),
      dict(testcase_name="rms_match", rule="rms_match", shape=(768, 3072),
           expected=0.2 * math.sqrt(3072)),
      dict(testcase_name="rms_match_tall", rule="rms_match", shape=(3072, 768),
           expected=0.2 * math.sqrt(3072)),
      dict(testcase_name="spectral_wide", rule="spectral", shape=(768, 3072), expected=2.0),
      dict(testcase_name="spectral_tall", rule="spectral", shape=(3072, 768), expected=0.5),
      dict(testcase_name="spectral_max", rule="spectral_max", shape=(3072, 768),
           expected=math.sqrt(3072)),
      dict(testcase_name="none", rule="none", shape=(3072, 768), expected=1.0),
  )
  def test_spec_values(self, rule, shape, expected):
    self.assertAlmostEqual(mj.shape_factor(rule, *shape), expected, places=10)
    if rule == "rms_match" and shape == (768, 3072):
      self.assertAlmostEqual(expected, 11.09, places=2)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      dict(testcase_name=r, rule=r) for r in ("keller", "rms_match", "spectral",
                                                "spectral_max", "none"))
  def test_tree_with_conv_stacked_and_passthrough(self, rule):
    def ref_factor(n_in, n_out):
      return {"keller": math.sqrt(max(1.0, n_out / n_in)),
              "rms_match": 0.2 * math.sqrt(max(n_in, n_out)),
              "spectral": math.sqrt(n_out / n_in),
              "spectral_max": math.sqrt(max(n_in, n_out)),
              "none": 1.0}[rule]
    u = random_tree(3, {"w": (8, 32), "t": (32, 8), "conv": (3, 3, 16, 32),
                        "stack": (4, 8, 32), "b": (32,)})
    dims = {"w": DN(0, 1), "t": DN(0, 1), "conv": DN(reduction_axis=(0, 1, 2), output_axis=3),
            "stack": DN(1, 2), "b": None}
    out = self.variant(
        lambda x: mj.scale_by_shape(rule, dimension_numbers=dims).update(x, optax.EmptyState()))(u)[0]
    expected = {
        "w": u["w"] * ref_factor(8, 32),
        "t": u["t"] * ref_factor(32, 8),
        "conv": u["conv"] * ref_factor(3 * 3 * 16, 32),  # flattened fan_in = 144
        "stack": u["stack"] * ref_factor(8, 32),  # per matrix: L is a batch axis
        "b": u["b"],  # None: untouched
    }
    chex.assert_trees_all_close(out, expected, rtol=1e-6)

  def test_conv_uses_flattened_fan_in(self):
    # docs/optimizers.md#pitfalls: kh*kw*in, not in: keller on (3,3,16,32) is 1, not sqrt(2).
    u = {"conv": jnp.ones((3, 3, 16, 32))}
    dims = {"conv": DN(reduction_axis=(0, 1, 2), output_axis=3)}
    out, _ = mj.scale_by_shape("keller", dimension_numbers=dims).update(u, optax.EmptyState())
    chex.assert_trees_all_close(out["conv"], jnp.ones((3, 3, 16, 32)))
    out, _ = mj.scale_by_shape("rms_match", dimension_numbers=dims).update(u, optax.EmptyState())
    chex.assert_trees_all_close(out["conv"], 2.4 * jnp.ones((3, 3, 16, 32)), rtol=1e-6)

  def test_default_dims_and_multiplier(self):
    u = {"w": jnp.ones((2, 8)), "s": jnp.ones((3, 2, 8))}
    out, _ = mj.scale_by_shape("keller", multiplier=0.5).update(u, optax.EmptyState())
    chex.assert_trees_all_close(out, {"w": jnp.full((2, 8), 0.5 * 2.0),
                                      "s": jnp.full((3, 2, 8), 0.5 * 2.0)})

  @HYP
  @hypothesis.given(n_in=st.integers(1, 4096), n_out=st.integers(1, 4096))
  def test_shape_factor_formulas(self, n_in, n_out):
    self.assertAlmostEqual(mj.shape_factor("keller", n_in, n_out),
                           math.sqrt(max(1, n_out / n_in)))
    self.assertAlmostEqual(mj.shape_factor("rms_match", n_in, n_out),
                           0.2 * math.sqrt(max(n_in, n_out)))
    self.assertAlmostEqual(mj.shape_factor("spectral", n_in, n_out), math.sqrt(n_out / n_in))
    self.assertGreaterEqual(mj.shape_factor("keller", n_in, n_out), 1.0)


# --------------------------------------------------------------------------------------
# orthogonalize stage
# --------------------------------------------------------------------------------------


def apply_stage(tx, updates):
  return tx.update(updates, tx.init(updates))[0]


# One compiled program per example shape; run eagerly, the stage compiles each of
# its primitives for every new shape (the eager path is covered by the
# ``without_jit`` variants of test_svd_tree_with_dims_forms).
_svd_stage = jax.jit(lambda x: apply_stage(mj.orthogonalize("svd"), {"x": x})["x"])


class OrthogonalizeTest(chex.TestCase):

  def test_rank1_leaf_without_dims_names_path_and_shape(self):
    u = {"w": jnp.ones((4, 6)), "b": jnp.ones((6,))}
    with pytest.raises(ValueError) as err:
      apply_stage(mj.orthogonalize(), u)
    self.assertIn("['b']", str(err.value))
    self.assertIn("(6,)", str(err.value))

  def test_bad_method_lists_allowed(self):
    with pytest.raises(ValueError) as err:
      mj.orthogonalize("qr")
    msg = str(err.value)
    self.assertIn("method", msg)
    for name in ("newton_schulz", "polar_express", "svd"):
      self.assertIn(name, msg)

  @chex.variants(with_jit=True, without_jit=True)
  def test_svd_tree_with_dims_forms(self):
    u = random_tree(5, {"w": (4, 6), "t": (7, 3), "s": (2, 3, 5), "b": (6,)})
    expected = {
        "w": references.polar(u["w"]),
        "t": references.polar(u["t"]),
        "s": np.stack([references.polar(m) for m in u["s"]]),
        "b": u["b"],
    }
    tree_dims = {"w": DN(0, 1), "t": DN(0, 1), "s": DN(1, 2), "b": None}
    for dims in (tree_dims, lambda upd: tree_dims):
      out = self.variant(lambda x, dims=dims: apply_stage(
          mj.orthogonalize("svd", dimension_numbers=dims), x))(u)
      chex.assert_trees_all_close(out, expected, atol=2e-5)

    # One MuonDimensionNumbers for every leaf (all leaves rank 2 here).
    u2 = {"w": u["w"], "t": u["t"]}
    out = self.variant(lambda x: apply_stage(
        mj.orthogonalize("svd", dimension_numbers=DN(0, 1)), x))(u2)
    chex.assert_trees_all_close(out, {"w": expected["w"], "t": expected["t"]}, atol=2e-5)

    # A single DN with a non-trailing layout: (in, L, out) MaxText style, batch axis 1.
    x = random_tree(6, {"m": (3, 2, 5)})
    out = self.variant(lambda x: apply_stage(
        mj.orthogonalize("svd", dimension_numbers=DN(reduction_axis=0, output_axis=2)), x))(x)
    ref = np.stack([references.polar(x["m"][:, i, :]) for i in range(2)], axis=1)
    chex.assert_trees_all_close(out["m"], ref, atol=2e-5)

  @HYP
  @hypothesis.given(batch=st.integers(1, 3), m=st.integers(2, 7), n=st.integers(2, 7),
                    seed=st.integers(0, 2**16))
  def test_svd_matches_numpy_any_shape(self, batch, m, n, seed):
    x = np.random.default_rng(seed).standard_normal((batch, m, n)).astype(np.float32)
    out = _svd_stage(x)
    ref = np.stack([references.polar(a) for a in x])
    chex.assert_trees_all_close(out, ref, atol=5e-4)

  def test_custom_callable_and_grouping(self):
    calls = []

    def ortho(x):
      calls.append(x.shape)
      return 2.0 * x

    u = random_tree(7, {"a": (8, 16), "b": (8, 16), "c": (16, 8)})
    calls.clear()
    out = apply_stage(mj.orthogonalize(ortho, group_by_shape=True), u)
    self.assertEqual(calls, [(3, 8, 16)])  # one batched call, tall leaf turned wide
    chex.assert_trees_all_close(out, jax.tree.map(lambda x: 2.0 * x, u))

    calls.clear()
    out = apply_stage(mj.orthogonalize(ortho, group_by_shape=False), u)
    self.assertEqual(sorted(calls), [(1, 8, 16)] * 3)
    chex.assert_trees_all_close(out, jax.tree.map(lambda x: 2.0 * x, u))

    # Under jit the callable is traced once per group, with the same batch.
    calls.clear()
    jax.jit(lambda x: apply_stage(mj.orthogonalize(ortho), x))(u)
    self.assertEqual(calls, [(3, 8, 16)])

  def test_callable_sees_wide_transposed_matrix(self):
    seen = {}

    def ortho(x):
      seen["x"] = np.asarray(x)
      return x

    t = np.arange(12, dtype=np.float32).reshape(4, 3)  # tall (n_in=4 > n_out=3)
    apply_stage(mj.orthogonalize(ortho), {"t": t})
    np.testing.assert_array_equal(seen["x"], t.T[None])

  @chex.variants(with_jit=True, without_jit=True)
  def test_grouped_equals_per_leaf(self):
    u = random_tree(8, {"a": (8, 16), "b": (8, 16), "c": (16, 8), "s": (2, 16, 8)})
    grouped = self.variant(lambda x: apply_stage(mj.orthogonalize(group_by_shape=True), x))(u)
    single = self.variant(lambda x: apply_stage(mj.orthogonalize(group_by_shape=False), x))(u)
    chex.assert_trees_all_close(grouped, single, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_moe_stack_is_per_expert_newton_schulz(self):
    e = random_tree(9, {"experts": (4, 6, 10), "experts_tall": (3, 10, 6)})
    out = self.variant(lambda x: apply_stage(mj.orthogonalize(), x))(e)
    for k in e:
      ref = np.stack([references.newton_schulz(m) for m in e[k]])
      chex.assert_trees_all_close(out[k], ref, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_newton_schulz_2d_matches_numpy(self):
    u = random_tree(11, {"w": (6, 10), "t": (12, 5)})
    out = self.variant(lambda x: apply_stage(mj.orthogonalize(), x))(u)
    chex.assert_trees_all_close(out, {k: references.newton_schulz(v) for k, v in u.items()},
                                atol=2e-5)

  def test_zero_input_gives_zero(self):
    out = apply_stage(mj.orthogonalize(), {"w": jnp.zeros((4, 6))})
    chex.assert_trees_all_equal(out, {"w": jnp.zeros((4, 6))})


# --------------------------------------------------------------------------------------
# "core equals SGD" (docs/optimizers.md#test-oracles)
# --------------------------------------------------------------------------------------


class CoreEqualsSGDTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_chain_with_identity_orthogonalizer_is_sgd(self):
    lr, beta = 0.1, 0.9
    params = random_tree(12, {"w": (4, 6), "s": (2, 3, 5), "b": (6,)})
    dims = {"w": DN(0, 1), "s": DN(1, 2), "b": None}
    core = optax.chain(
        mj.momentum(beta, form="sgd", nesterov=False),
        mj.orthogonalize(lambda x: x, dimension_numbers=dims),
        mj.scale_by_shape("none", dimension_numbers=dims),
        optax.scale_by_learning_rate(lr),
    )
    sgd = optax.sgd(lr, momentum=beta)
    uc, us = self.variant(core.update), self.variant(sgd.update)
    sc, ss = core.init(params), sgd.init(params)
    for t in range(5):
      g = random_tree(100 + t, {"w": (4, 6), "s": (2, 3, 5), "b": (6,)})
      dc, sc = uc(g, sc, params)
      ds, ss = us(g, ss, params)
      chex.assert_trees_all_close(dc, ds, rtol=1e-6, atol=1e-7)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
