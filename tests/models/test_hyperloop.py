"""Tests for the Hyperloop Transformer (muonjax.models.hyperloop, docs/models.md#hyperloop)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models.blocks import run_stacked
from muonjax.models.hyperloop import (
    PAPER_SIZES,
    HyperloopConfig,
    HyperloopTransformer,
    hyper_connection_param_count,
    hyperloop_paper_config,
    hyperloop_param_count,
)
from muonjax.models.losses import loss_and_metrics

import helpers

TINY = dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16,
            n_begin=1, n_end=1, n_loops=3, n_streams=4)
SEQ = 16


def build(**fields):
  return HyperloopTransformer(HyperloopConfig(**{**TINY, **fields}), rngs=nnx.Rngs(0))


def abstract(**fields):
  """The model with ShapeDtypeStruct parameters (no init compute): counts and routing."""
  return nnx.eval_shape(lambda: build(**fields))


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, TINY["vocab_size"])


@nnx.jit(static_argnames="unroll")
def apply(model, x, key=None, unroll=False):
  return model(x, key=key, unroll=unroll)


def is_dn(x):
  return x is None or isinstance(x, mj.MuonDimensionNumbers)


@nnx.jit
def reference(model, x):
  """docs/models.md#hyperloop written out with Python loops over loops and streams."""
  c = model.config
  hc = {k: v for k, v in nnx.to_pure_dict(nnx.state(model.hyper, nnx.Param)).items()}
  h = run_stacked(model.begin, model.embed(x))
  ys = [h] * c.n_streams
  for l in range(c.n_loops):
    flat = jnp.concatenate(ys, axis=-1)                                    # (B, T, nC)
    z = flat / jnp.sqrt(jnp.mean(flat ** 2, axis=-1, keepdims=True) + 1e-6)
    pre = jax.nn.sigmoid(hc["alpha_pre"][l] * (z @ hc["w_pre"][l]) + hc["b_pre"][l])
    post = 2 * jax.nn.sigmoid(hc["alpha_post"][l] * (z @ hc["w_post"][l]) + hc["b_post"][l])
    res = jax.nn.sigmoid(hc["alpha_res"][l] * (z @ hc["w_res"][l]) + hc["b_res"][l])
    u = sum(pre[..., j:j + 1] * ys[j] for j in range(c.n_streams))
    f = run_stacked(model.middle, u) + hc["loop_embed"][l]
    ys = [res[..., j:j + 1] * ys[j] + post[..., j:j + 1] * f for j in range(c.n_streams)]
  h = run_stacked(model.end, sum(ys) / c.n_streams)
  return model.lm_head(model.norm(h))


# ----------------------------------------------------------------------------- structure


def test_logits_shape_finite_causal_and_matches_reference():
  model = build(dropout=0.1)
  x = tokens()
  logits = apply(model, x)  # no key: evaluation, deterministic
  assert logits.shape == (2, SEQ, TINY["vocab_size"])
  assert np.all(np.isfinite(logits))
  helpers.assert_causal(lambda tokens: apply(model, tokens), x, logits, TINY["vocab_size"], (0, 5, SEQ - 2))
  np.testing.assert_allclose(logits, reference(model, x), atol=1e-5)


def test_parameters_not_weakly_typed():
  """Regression: jnp.full(shape, python_float) is weakly typed; such a parameter flips to a
  strong type after the first update and makes every jitted train step recompile."""
  for leaf in jax.tree.leaves(nnx.state(build(), nnx.Param)):
    assert not leaf.weak_type and leaf.dtype == jnp.float32


def test_gates_at_init():
  """H^pre ≈ 1/n per stream (sums to ≈ 1), H^post ≈ 1, H^res ≈ ½; streams start equal."""
  model = build(n_streams=4)
  y = jax.random.normal(jax.random.key(1), (2, SEQ, 4, TINY["d_model"])) * 3.0
  hc = model.hyper
  graphdef, state = nnx.split(hc)
  for l in range(model.config.n_loops):
    pre, post, res = nnx.merge(graphdef, jax.tree.map(lambda a: a[l], state)).gates(y)
    assert pre.shape == post.shape == res.shape == (2, SEQ, 4)
    np.testing.assert_allclose(pre, 0.25, atol=0.02)
    np.testing.assert_allclose(np.sum(pre, axis=-1), 1.0, atol=0.05)
    np.testing.assert_allclose(post, 1.0, atol=0.05)
    np.testing.assert_allclose(res, 0.5, atol=0.02)
    assert np.std(np.asarray(pre)) > 0  # token-dependent (random W), not constant
  np.testing.assert_allclose(hc.alpha_pre[...], 0.01)


def test_no_rng_state_and_routing():
  for to_muon in (False, True):
    model = abstract(dropout=0.1, hc_to_muon=to_muon)
    assert not jax.tree.leaves(nnx.state(model, nnx.RngState))
    dims = mj.muon_dimension_numbers(model)
    stacked = mj.MuonDimensionNumbers(1, 2)
    for block in ("begin", "middle", "end"):
      for sub in (dims[block]["attn"], dims[block]["mlp"]):
        for leaf in jax.tree.leaves(sub, is_leaf=is_dn):
          assert leaf == stacked
      assert dims[block]["attn_norm"]["scale"] is None
    hyper = dims["hyper"]
    for name in ("w_pre", "w_post", "w_res"):
      assert hyper[name] == (stacked if to_muon else None), name
    for name in ("b_pre", "b_post", "b_res", "alpha_pre", "alpha_post", "alpha_res",
                 "loop_embed"):
      assert hyper[name] is None, name
    assert dims["embed"]["embedding"] is None and dims["lm_head"]["kernel"] is None
    assert dims["norm"]["scale"] is None
    labels = mj.label_params(model)
    assert set(jax.tree.leaves(labels["hyper"])) == ({"adam", "muon"} if to_muon else {"adam"})
  shapes = nnx.to_pure_dict(nnx.state(abstract().hyper))
  assert shapes["w_pre"].shape == (3, 4 * 16, 4) and shapes["loop_embed"].shape == (3, 16)


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("fields", [
    dict(),
    dict(tie_embeddings=True, n_streams=2),
    dict(n_begin=0, n_end=2, n_layers=2, d_model=32, n_heads=4),
    dict(n_begin=0, n_end=0, hc_to_muon=True, n_loops=5),
])
def test_analytic_param_count(fields):
  model = abstract(**fields)
  assert models.param_count(model) == hyperloop_param_count(model.config)


def test_registry():
  model = nnx.eval_shape(lambda: models.build("hyperloop", **TINY))
  assert isinstance(model, HyperloopTransformer) and models.CONFIGS["hyperloop"] is HyperloopConfig
  assert models.param_count(model) == models.analytic_param_count(model.config)


def test_param_count_independent_of_loops_except_per_loop_params():
  counts = {}
  for n in (1, 3, 6):
    config = HyperloopConfig(**{**TINY, "n_loops": n})
    counts[n] = models.param_count(abstract(n_loops=n))
    assert counts[n] == hyperloop_param_count(config)
    per_loop = 3 * (4 * 16) * 4 + 3 * 4 + 3 + 16   # W ×3, b ×3, α ×3, e_l
    assert hyper_connection_param_count(config) == n * per_loop
    assert counts[n] - hyper_connection_param_count(config) == counts[1] - per_loop


def test_paper_configs_analytic_counts():
  """Table 1 (counts exclude the unembedding): 135.7M, 579.7M, 990.8M; Looped 135.5/579.4/990.5M."""
  expected = {"136M": (135.7e6, 135.5e6), "580M": (579.7e6, 579.4e6), "991M": (990.8e6, 990.5e6)}
  for size, (hyperloop, looped) in expected.items():
    config = hyperloop_paper_config(size)
    no_head = hyperloop_param_count(config) - config.d_model * config.vocab_size
    assert round(no_head / 1e5) == round(hyperloop / 1e5), (size, no_head)
    assert round((no_head - hyper_connection_param_count(config)) / 1e5) == round(looped / 1e5)
  assert set(PAPER_SIZES) == set(expected)
  with pytest.raises(ValueError, match="size"):
    hyperloop_paper_config("1B")


# ----------------------------------------------------------------------------- loops


def test_scan_matches_unrolled():
  model = build(n_loops=2, n_begin=0, n_end=0)  # the loop only (compile time)
  x = tokens(3)

  @nnx.jit(static_argnames="unroll")
  def grad(m, unroll):
    return nnx.value_and_grad(lambda m: jnp.mean(m(x, unroll=unroll) ** 2))(m)

  (loss_scan, g_scan), (loss_unroll, g_unroll) = grad(model, False), grad(model, True)
  np.testing.assert_allclose(loss_scan, loss_unroll, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_unroll)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # every loop's own parameters get gradient
  hyper = g_scan["hyper"]
  for name in ("loop_embed", "w_pre", "w_post", "w_res", "b_res"):
    g = np.asarray(hyper[name]).reshape(2, -1)
    assert np.all(np.abs(g).sum(axis=1) > 0), name


# ----------------------------------------------------------------------------- training


def train(model, tx, steps=8):
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = tokens(4, batch=4)
  inputs, targets = x[:, :-1], x[:, 1:]

  traces = []

  @nnx.jit
  def step(model, optimizer, key):
    traces.append(1)
    (loss, _), grads = nnx.value_and_grad(
        lambda m: loss_and_metrics(m, inputs, targets, key=key), has_aux=True)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer, k)) for k in jax.random.split(jax.random.key(0), steps)]
  assert len(traces) == 1  # no weakly typed parameter or state: one compile for all steps
  return losses


@pytest.mark.training
@pytest.mark.parametrize("opt", ["muon", "adamw"])
def test_train_step_reduces_loss(opt):
  tx = mj.muon(0.02) if opt == "muon" else optax.adamw(3e-3)
  # dropout off and no begin/end stacks (compile time; both are tested above); remat + scan
  # under AdamW; W^pre/post/res in Muon under Muon.
  model = build(remat=opt == "adamw", hc_to_muon=opt == "muon", n_begin=0, n_end=0)
  shapes = jax.tree.map(jnp.shape, nnx.state(model, nnx.Param))
  losses = train(model, tx)
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == shapes


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("field,value", [
    ("n_loops", 0),
    ("n_streams", 1),
    ("n_streams", 2.0),
    ("n_begin", -1),
    ("n_end", True),
    ("hc_to_muon", "yes"),
    ("n_layers", 0),
    ("n_heads", 3),
])
def test_bad_config_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    HyperloopConfig(**{**TINY, field: value})


def test_config_frozen_and_long_sequence_raises():
  config = HyperloopConfig(**TINY)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.n_loops = 4
  with pytest.raises(ValueError, match="max_seq_len"):
    abstract()(tokens(seq=SEQ + 1))
