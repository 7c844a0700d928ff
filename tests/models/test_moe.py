"""Tests for muonjax.models.moe: small MoE transformer with MHSA or multi-head latent attention."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models import moe
from muonjax.models.blocks import ACTIVATIONS

import helpers

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

VOCAB, SEQ = 64, 12
# MLA sizes chosen so that W_q, W_DKV and W_O are (16, 16) like the MHSA kernels: eager
# init compiles once per kernel shape, and those compiles dominate this file's runtime.
MLA = dict(kv_lora_rank=12, qk_nope_dim=4, qk_rope_dim=4, v_dim=8)
TINY = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=24, max_seq_len=16,
            n_experts=4, top_k=2, **MLA)
ATTENTIONS = ["mhsa", "mhla"]


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, VOCAB)


def config(**fields):
  return moe.MoEConfig(**{**TINY, **fields})


def build(**fields):
  return moe.MoETransformer(config(**fields), rngs=nnx.Rngs(0))


def abstract(**fields):
  """The model built by ``nnx.eval_shape``: shapes and metadata, nothing allocated."""
  return nnx.eval_shape(lambda: build(**fields))


@functools.cache
def cached(attention):
  """One tiny model per attention, shared by the read-only tests (compiles are the cost)."""
  return build(attention=attention, dropout=0.1)


@nnx.jit
def evaluate(model, x):
  """Eval-mode logits of ``x`` and ``(loss, terms)`` of ``x[:, :-1] → x[:, 1:]``."""
  return model(x), models.loss_and_metrics(model, x[:, :-1], x[:, 1:])


def is_dn(x):
  return x is None or isinstance(x, mj.MuonDimensionNumbers)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_logits_shape_finite_and_causal(attention):
  model = cached(attention)
  x = tokens()
  logits = evaluate(model, x)[0]  # no key: evaluation, no dropout, no router noise
  assert logits.shape == (2, SEQ, VOCAB)
  assert np.all(np.isfinite(logits))
  np.testing.assert_array_equal(evaluate(model, x)[0], logits)
  helpers.assert_causal(lambda tokens: evaluate(model, tokens)[0], x, logits, VOCAB, (0, 4, SEQ - 2))
  assert not jax.tree.leaves(nnx.state(model, nnx.RngState))  # keys come at call time


def test_sequence_longer_than_max_raises():
  with pytest.raises(ValueError, match="max_seq_len"):
    cached("mhsa")(jnp.zeros((1, 17), jnp.int32))


# ----------------------------------------------------------------------------- MoE layer


def layer(activation="silu", noise_std=0.1, d=8, d_ff=12, n_experts=4, top_k=2, seed=0):
  """A standalone MoE layer with N(0, 1/fan_in) NumPy weights (no init compiles)."""
  m = nnx.eval_shape(lambda: moe.MoE(d, d_ff, n_experts=n_experts, top_k=top_k,
                                     noise_std=noise_std, activation=activation,
                                     dropout=0.0, rngs=nnx.Rngs(seed)))
  graphdef, state = nnx.split(m)
  rng = np.random.default_rng(seed)
  values = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[-2]), s.dtype), state)
  return nnx.merge(graphdef, values)


@nnx.jit
def run_layer(m, x, key=None):
  return m(x, key=key)


@nnx.jit
def route(m, x):
  return m.route(x)


def reference(m, x, noise=None):
  """The MoE equation of docs/models.md#moe-with-latent-attention, one token at a time, in float64 NumPy."""
  wr = np.asarray(m.router.kernel[...], np.float64)
  w1 = np.asarray(m.experts.w_in.kernel[...], np.float64)
  w2 = np.asarray(m.experts.w_out.kernel[...], np.float64)
  act = lambda h: np.asarray(ACTIVATIONS[m.experts.activation](jnp.asarray(h)), np.float64)
  x = np.asarray(x, np.float64)
  y = np.zeros_like(x)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      logits = x[b, t] @ wr
      if noise is not None:
        logits = logits + noise[b, t]
      chosen = np.argsort(-logits, kind="stable")[:m.top_k]
      w = np.exp(logits[chosen] - logits[chosen].max())
      w /= w.sum()
      for wj, e in zip(w, chosen):
        y[b, t] += wj * (act(x[b, t] @ w1[e]) @ w2[e])
  return y


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_moe_layer_matches_per_token_loop(activation):
  m = layer(activation)
  x = jax.random.normal(jax.random.key(1), (2, 4, 8))
  y, _ = run_layer(m, x)
  np.testing.assert_allclose(y, reference(m, x), rtol=1e-5, atol=1e-6)


def test_router_noise_only_with_key_and_before_topk():
  m = layer(noise_std=0.5)
  x = jax.random.normal(jax.random.key(1), (2, 4, 8))
  key = jax.random.key(3)
  y_train, _ = run_layer(m, x, key)
  # Documented rule: the noise key is the first of jax.random.split(key, 2).
  noise = 0.5 * np.asarray(jax.random.normal(jax.random.split(key)[0], (2, 4, 4)))
  np.testing.assert_allclose(y_train, reference(m, x, noise), rtol=1e-5, atol=1e-6)
  assert not np.allclose(y_train, run_layer(m, x)[0], atol=1e-4)
  np.testing.assert_array_equal(run_layer(m, x)[0], run_layer(m, x)[0])


def test_top2_distinct_experts_with_renormalized_weights():
  m = layer()
  x = jax.random.normal(jax.random.key(2), (2, 4, 8))
  combine, probs, indices = map(np.asarray, route(m, x))
  assert indices.shape == (2, 4, 2) and combine.shape == probs.shape == (2, 4, 4)
  assert np.all(indices[..., 0] != indices[..., 1])
  logits = np.asarray(m.router(x))
  top2 = np.argsort(-logits, axis=-1)[..., :2]
  np.testing.assert_array_equal(indices, top2)
  assert np.all((combine > 0).sum(-1) == 2)
  np.testing.assert_allclose(combine.sum(-1), 1.0, rtol=1e-6)
  chosen = np.take_along_axis(probs, indices, -1)
  # Renormalized over the two chosen (docs/models.md#moe-with-latent-attention: w = softmax(top-2 logits)), not the raw P.
  np.testing.assert_allclose(np.take_along_axis(combine, indices, -1),
                             chosen / chosen.sum(-1, keepdims=True), rtol=1e-5)
  assert np.all(np.take_along_axis(combine, indices, -1)[..., 0]
                >= np.take_along_axis(combine, indices, -1)[..., 1])


# ----------------------------------------------------------------------------- balance loss


balance = jax.jit(moe.load_balance_loss, static_argnums=2)  # one compile: (16, 4) / (16, 2)


def np_route(logits, k=2):
  """NumPy softmax and top-k (ties to the lower index, like ``jax.lax.top_k``)."""
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True), np.argsort(-logits, axis=-1, kind="stable")[:, :k]


def test_load_balance_uniform_probabilities_give_the_weight():
  probs = np.full((16, 4), 0.25)
  rng = np.random.default_rng(0)
  for _ in range(3):  # whatever the choice, uniform P̄ gives λ·E·Σ_e f_e/E = λ
    indices = np.stack([rng.permutation(4)[:2] for _ in range(16)])
    assert float(balance(probs, indices, 4, 0.01)) == pytest.approx(0.01, rel=1e-6)


def test_load_balance_router_that_routes_uniformly():
  """A router whose tokens cycle through every rotation of one logit vector.

  f_e = 1/E and P̄_e = 1/E exactly: the balanced value λ (docs/models.md#expected-behaviours: exactly 0.01).
  """
  e, d = 4, 8
  m = layer(d=d, n_experts=e)
  base = np.array([2.0, 1.0, -0.5, -1.0])
  m.router.kernel[...] = jnp.asarray(
      np.stack([np.roll(base, r) for r in range(e)] + [np.zeros(e)] * (d - e)), jnp.float32)
  x = jnp.tile(jnp.eye(d)[:e], (2, 1, 1))  # (2, 4, d): every rotation equally often
  combine, probs, indices = route(m, x)
  f = np.bincount(np.asarray(indices).ravel(), minlength=e) / indices.size
  np.testing.assert_allclose(f, 1.0 / e)
  np.testing.assert_allclose(np.asarray(probs).reshape(-1, e).mean(0), 1.0 / e, rtol=1e-6)
  assert float(run_layer(m, x)[1]) == pytest.approx(1.0, rel=1e-6)  # unweighted E·Σ f·P̄
  probs, indices = np.asarray(probs).reshape(8, e), np.asarray(indices).reshape(8, 2)
  value = balance(np.tile(probs, (2, 1)), np.tile(indices, (2, 1)), e, 0.01)
  assert float(value) == pytest.approx(0.01, rel=1e-6)


def test_load_balance_nonnegative_and_larger_when_collapsed():
  rng = np.random.default_rng(1)
  for _ in range(5):
    probs, indices = np_route(3.0 * rng.normal(size=(16, 4)))
    assert float(balance(probs, indices, 4, 1.0)) >= 0.0
  probs, indices = np_route(np.tile([5.0, 4.0, 0.0, 0.0], (16, 1)))  # all to experts 0, 1
  assert float(balance(probs, indices, 4, 1.0)) > 1.9  # ≈ E·(P̄₀ + P̄₁)/2 ≈ 2


def test_load_balance_uniform_value_is_not_a_strict_lower_bound():
  """Documented in ``load_balance_loss``: λ is the balanced value, not the global minimum.

  E = 4, top-2 of the same logits: 14 of 16 tokens have uniform P (choose 0, 1),
  2 put all mass on expert 2 (choose 2, 0). Σ f·P̄ ≈ 0.2266 < 1/4.
  """
  logits = np.zeros((16, 4))
  logits[14:, 2] = 30.0
  probs, indices = np_route(logits)
  assert float(balance(probs, indices, 4, 1.0)) == pytest.approx(0.90625, rel=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_model_balance_with_zero_router_and_loss_composition(attention):
  model = nnx.clone(cached(attention))
  model.blocks.moe.router.kernel[...] = jnp.zeros_like(model.blocks.moe.router.kernel[...])
  x = tokens(4)
  _, (loss, terms) = evaluate(model, x)  # eval routing: uniform P in every layer
  assert set(terms) == {"ce", "load_balance"}
  assert float(terms["load_balance"]) == pytest.approx(0.01 * TINY["n_layers"], rel=1e-6)
  assert float(loss) == pytest.approx(float(terms["ce"] + terms["load_balance"]), rel=1e-6)
  logits = evaluate(model, x)[0][:, :-1]  # causal: the logits of x[:, :-1]
  np.testing.assert_allclose(terms["ce"], models.cross_entropy(logits, x[:, 1:]), rtol=1e-6)


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_routing_experts_per_matrix_router_to_adamw(attention):
  model = abstract(attention=attention, tie_embeddings=False)
  assert model.blocks.moe.experts.w_in.kernel.shape == (2, 4, 16, 24)
  assert model.blocks.moe.experts.w_out.kernel.shape == (2, 4, 24, 16)
  dims = mj.muon_dimension_numbers(model)
  per_expert = mj.MuonDimensionNumbers(reduction_axis=2, output_axis=3)
  per_layer = mj.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  assert dims["blocks"]["moe"]["experts"]["w_in"]["kernel"] == per_expert
  assert dims["blocks"]["moe"]["experts"]["w_out"]["kernel"] == per_expert
  assert dims["blocks"]["moe"]["router"]["kernel"] is None
  names = (["query", "key", "value", "out"] if attention == "mhsa"
           else ["query", "kv_down", "kv_up", "out"])
  assert sorted(k for k in dims["blocks"]["attn"] if k != "kv_norm") == sorted(names)
  for name in names:
    assert dims["blocks"]["attn"][name]["kernel"] == per_layer
  if attention == "mhla":
    assert dims["blocks"]["attn"]["kv_norm"]["scale"] is None
  for name in ("attn_norm", "moe_norm"):
    assert dims["blocks"][name]["scale"] is None
  assert dims["embed"]["embedding"] is None and dims["lm_head"]["kernel"] is None
  assert dims["norm"]["scale"] is None
  labels = jax.tree.leaves(mj.label_params(model))
  assert labels.count("muon") == 6 and labels.count("adam") == len(labels) - 6
  # The anchor's option: the router goes to Muon too, one (d, E) matrix per layer.
  with_router = mj.muon_dimension_numbers(model, router_to_muon=True)
  assert with_router["blocks"]["moe"]["router"]["kernel"] == per_layer


def test_muon_orthogonalizes_each_expert_matrix():
  model = cached("mhsa")
  params = jax.tree.map(lambda v: v[...], nnx.state(model, nnx.Param),
                        is_leaf=lambda v: isinstance(v, nnx.Variable))
  dims = mj.muon_dimension_numbers(model)
  out, _ = jax.jit(mj.orthogonalize("svd", dimension_numbers=dims).update)(
      params, optax.EmptyState())
  w, o = (np.asarray(t["blocks"]["moe"]["experts"]["w_in"]["kernel"], np.float64)
          for t in (params, out))
  for l in range(w.shape[0]):
    for e in range(w.shape[1]):
      u, _, vt = np.linalg.svd(w[l, e], full_matrices=False)
      np.testing.assert_allclose(o[l, e], u @ vt, atol=1e-5)
  np.testing.assert_array_equal(out["blocks"]["moe"]["router"]["kernel"],
                                params["blocks"]["moe"]["router"]["kernel"])


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("fields", [
    dict(attention="mhsa"),
    dict(attention="mhla", tie_embeddings=False),
    dict(attention="mhla", n_layers=1, n_experts=3, top_k=1, d_ff=8),
    dict(attention="mhla", n_heads=4, kv_lora_rank=8, qk_nope_dim=8, qk_rope_dim=2, v_dim=6),
])
def test_analytic_param_count(fields):
  model = abstract(**fields)
  assert models.param_count(model) == moe.moe_param_count(model.config)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_analytic_param_count_of_built_model(attention):
  model = cached(attention)
  assert models.param_count(model) == moe.moe_param_count(model.config)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


STUDY = {  # docs/models.md#moe-with-latent-attention (parameter counts): total (tied, V = 49,152) and active parameters per layer
    "mhsa": (79_059_840, 2_952_960, 589_824),
    "mhla": (81_837_312, 3_415_872, 1_052_736),
}


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_study_config_param_count_abstract(attention):
  config = moe.moe_study_config(attention)
  assert (config.d_model, config.n_layers, config.n_heads, config.d_ff, config.n_experts,
          config.top_k, config.kv_lora_rank, config.vocab_size) == (
              384, 6, 8, 1536, 8, 2, 64, 49_152)
  total, active_layer, attn = STUDY[attention]
  assert moe.moe_param_count(config) == total
  embed = config.vocab_size * config.d_model
  assert moe.moe_param_count(config, active=True) == embed + 6 * active_layer + 384
  if attention == "mhla":
    assert moe.mla_param_count(384, 8, 64, 128, 32, 128) == attn
  abstract = nnx.eval_shape(lambda: moe.MoETransformer(config, rngs=nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing allocated
  assert sum(x.size for x in leaves) == total
  assert abstract.blocks.moe.experts.w_in.kernel.shape == (6, 8, 384, 1536)


# ----------------------------------------------------------------------------- training


@pytest.mark.training
@pytest.mark.parametrize("opt,attention", [("muon", "mhla"), ("adamw", "mhsa")])
def test_train_step_reduces_loss(opt, attention):
  """Muon: training mode (router noise; dropout 0 keeps the compile short); AdamW: remat."""
  train_mode = opt == "muon"
  tx = mj.muon(0.02) if opt == "muon" else optax.adamw(3e-3)
  model = build(attention=attention, remat=not train_mode)
  shapes = jax.tree.map(jnp.shape, nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = tokens(3, batch=4, seq=SEQ + 1)

  @nnx.jit
  def step(model, optimizer, key):
    def loss_fn(m):
      return models.loss_and_metrics(m, x[:, :-1], x[:, 1:], key=key if train_mode else None)

    (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, terms

  results = [step(model, optimizer, k) for k in jax.random.split(jax.random.key(0), 30)]
  losses = [float(loss) for loss, _ in results]
  assert all(np.isfinite(losses))
  assert all(float(t["load_balance"]) >= 0 for _, t in results)
  assert losses[-1] < losses[0] - 0.1, losses
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == shapes


def test_balance_gradient_reaches_router_only():
  m = layer()
  x = jax.random.normal(jax.random.key(1), (2, 4, 8))
  g = nnx.jit(nnx.grad(lambda m: m(x)[1]))(m)
  assert np.any(np.asarray(g["router"]["kernel"][...]) != 0)
  assert not np.any(np.asarray(g["experts"]["w_in"]["kernel"][...]))  # f is a count


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("field,value", [
    ("n_experts", 0),
    ("top_k", 5),                 # > n_experts = 4
    ("top_k", 0),
    ("router_noise_std", -0.1),
    ("load_balance_weight", float("nan")),
    ("attention", "mla"),
    ("activation", "swish"),
    ("kv_lora_rank", 0),
    ("qk_rope_dim", 3),
    ("v_dim", 1.5),
    ("d_model", 0),
    ("n_heads", 3),
    ("dropout", 1.0),
    ("tie_embeddings", 1),
])
def test_bad_config_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    moe.MoEConfig(**{**TINY, field: value})


def test_config_is_frozen_with_anchor_defaults():
  config = moe.MoEConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.top_k = 1
  assert (config.n_experts, config.top_k, config.router_noise_std,
          config.load_balance_weight, config.activation, config.tie_embeddings) == (
              8, 2, 0.1, 0.01, "silu", True)


def test_registered_as_moe():
  assert models.CONFIGS["moe"] is moe.MoEConfig
  model = nnx.eval_shape(lambda: models.build("moe", **TINY, attention="mhla"))
  assert isinstance(model, moe.MoETransformer)
  assert models.param_count(model) == models.analytic_param_count(model.config)
  with pytest.raises(ValueError, match="top_k"):
    models.make_config("moe", **{**TINY, "top_k": 9})
