"""Tests for the Mixture-of-Recursions model (muonjax.models.mor, docs/models.md#mixture-of-recursions)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models.losses import loss_and_metrics
from muonjax.models.mor import (
    MoRConfig,
    MoRTransformer,
    expert_capacities,
    mor_paper_config,
    mor_param_count,
    router_param_count,
    scan_shared,
)

TINY = dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16,
            n_recursions=3)
SEQ = 16


def build(**fields):
  return MoRTransformer(MoRConfig(**{**TINY, **fields}), rngs=nnx.Rngs(0))


def abstract(**fields):
  """The model with ShapeDtypeStruct parameters (no init compute): counts and routing."""
  return nnx.eval_shape(lambda: build(**fields))


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, TINY["vocab_size"])


@nnx.jit(static_argnames=("train", "unroll"))
def forward(model, x, key=None, train=None, unroll=False):
  """Jitted ``forward_with_aux`` (eager NNX calls re-dispatch every op)."""
  return model.forward_with_aux(x, key=key, train=train, unroll=unroll)


def is_dn(x):
  return x is None or isinstance(x, mj.MuonDimensionNumbers)


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("router", ["expert", "token"])
def test_logits_shape_finite_and_eval_causality(router):
  model = build(router=router, dropout=0.1)
  x = tokens()
  logits, aux = forward(model, x)  # no key: evaluation routing (per-token decisions)
  assert logits.shape == (2, SEQ, TINY["vocab_size"])
  assert np.all(np.isfinite(logits))
  selected = np.asarray(aux["selected"])
  assert selected.shape == (3, 2, SEQ)
  assert 0 < selected[1:].sum() < selected[1:].size  # routing is really partial
  for t in (0, 5, SEQ - 2):
    changed = x.at[:, t + 1].set((x[:, t + 1] + 1) % TINY["vocab_size"])
    other, other_aux = forward(model, changed)
    np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-6)
    np.testing.assert_array_equal(other_aux["selected"][..., :t + 1], selected[..., :t + 1])
    assert not np.allclose(other[:, t + 1], logits[:, t + 1])


def test_expert_capacities():
  config = MoRConfig(**TINY)
  assert expert_capacities(config, SEQ) == (16, 10, 5)   # ⌊(N_r − r + 1)·T / N_r⌋
  assert expert_capacities(config, 2) == (2, 1, 1)       # at least one token
  config = dataclasses.replace(config, capacities=(1.0, 2 / 3, 0.01))  # max(1, ⌊c·T⌋)
  assert expert_capacities(config, 15) == (15, 10, 1)
  assert expert_capacities(config, 16) == (16, 10, 1)


def test_capacity_one_equals_plain_middle_cycle():
  """Capacity 1 at every depth and g = 1: MoR is the plain Middle-Cycle recursive model."""
  mor = build(router="expert", gating="unweighted", capacities=(1.0, 1.0, 1.0))
  plain = build(router=None)
  shared = lambda m: {k: v for k, v in nnx.to_pure_dict(nnx.state(m, nnx.Param)).items()
                      if k != "router"}
  jax.tree.map(np.testing.assert_array_equal, shared(mor), shared(plain))  # same params
  x = tokens(2)
  mor_logits, aux = forward(mor, x, train=True)
  assert np.all(aux["selected"])
  plain_logits, plain_aux = forward(plain, x)
  np.testing.assert_allclose(mor_logits, plain_logits, atol=1e-5)
  assert float(plain_aux["router_aux"]) == 0.0
  # Evaluation routing with every router logit > 0 selects everything too.
  state = nnx.state(mor, nnx.Param)
  kernel = state["router"]["kernel"]
  kernel[...] = jnp.zeros_like(kernel[...])
  nnx.update(mor, state)
  logits_none, aux_none = forward(mor, x)  # s = 0, σ(s) = 0.5: nothing selected in eval
  assert not np.any(aux_none["selected"])
  # no recursion at all: the first and last unique layers only
  h = mor.last(mor.first(mor.embed(x)))
  np.testing.assert_allclose(logits_none, mor.lm_head(mor.norm(h)), atol=1e-5)


def test_no_rng_state_and_routing():
  for router, kind in (("expert", "linear"), ("expert", "mlp"), ("token", "linear"),
                       ("token", "mlp")):
    model = abstract(router=router, router_type=kind, dropout=0.1)
    assert not jax.tree.leaves(nnx.state(model, nnx.RngState))
    dims = mj.muon_dimension_numbers(model)
    stacked, plain = mj.MuonDimensionNumbers(1, 2), mj.MuonDimensionNumbers(0, 1)
    for sub in (dims["core"]["attn"], dims["core"]["mlp"]):
      for leaf in jax.tree.leaves(sub, is_leaf=is_dn):
        assert leaf == stacked
    for sub in (dims["first"]["attn"], dims["last"]["mlp"]):
      for leaf in jax.tree.leaves(sub, is_leaf=is_dn):
        assert leaf == plain
    # routers, embedding, head, norms → AdamW
    router_leaves = jax.tree.leaves(dims["router"], is_leaf=is_dn)
    assert router_leaves and all(leaf is None for leaf in router_leaves)
    for path in (("embed", "embedding"), ("lm_head", "kernel"), ("norm", "scale"),
                 ("core", "attn_norm", "scale"), ("first", "mlp_norm", "scale")):
      sub = dims
      for p in path:
        sub = sub[p]
      assert sub is None, path
    labels = mj.label_params(model)
    assert set(jax.tree.leaves(labels["router"])) == {"adam"}
    n_recursions = model.config.n_recursions
    if router == "expert":
      shapes = {k: v.shape for k, v in nnx.to_pure_dict(nnx.state(model.router)).items()}
      assert all(s[0] == n_recursions for s in shapes.values())  # one router per step
  # the MoE flag moves routers to Muon
  dims = mj.muon_dimension_numbers(abstract(router="expert"), router_to_muon=True)
  assert dims["router"]["kernel"] == mj.MuonDimensionNumbers(1, 2)


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("fields", [
    dict(),
    dict(router="token"),
    dict(router=None, tie_embeddings=True),
    dict(router="expert", router_type="mlp", n_layers=2, d_model=32, n_heads=4),
    dict(router="token", router_type="mlp", n_recursions=2),
])
def test_analytic_param_count(fields):
  model = abstract(**fields)
  assert models.param_count(model) == mor_param_count(model.config)


def test_registry():
  model = nnx.eval_shape(lambda: models.build("mor", **TINY, router="token"))
  assert isinstance(model, MoRTransformer) and models.CONFIGS["mor"] is MoRConfig
  assert models.param_count(model) == models.analytic_param_count(model.config)
  config = models.make_config("mor", **TINY, capacities=[1.0, 0.5, 0.25])  # list → tuple
  assert config.capacities == (1.0, 0.5, 0.25)
  hash(config)


def test_param_count_independent_of_recursions_except_routers():
  for router, kind in (("expert", "linear"), ("token", "mlp"), (None, "linear")):
    base = set()
    for n in (1, 2, 4):
      config = MoRConfig(**{**TINY, "n_recursions": n}, router=router, router_type=kind)
      count = mor_param_count(config)
      base.add(count - router_param_count(config))
      d = TINY["d_model"]
      expected = {("expert", "linear"): n * d, ("token", "mlp"): 2 * d * d + 2 * d * n,
                  (None, "linear"): 0}[(router, kind)]
      assert router_param_count(config) == expected
    assert len(base) == 1
  count = lambda n: models.param_count(abstract(n_recursions=n))
  assert count(4) - count(1) == 3 * TINY["d_model"]


def test_paper_configs_analytic_counts():
  """Table 3 (non-embedding, SmolLM-360M shape): 167M at N_r = 2, 118M at N_r = 3."""
  for n_r, params in ((2, 167.1e6), (3, 118.0e6)):
    config = mor_paper_config(n_r)
    assert config.effective_depth == 32
    embed = config.vocab_size * config.d_model
    non_embedding = mor_param_count(config) - embed - config.d_model - router_param_count(config)
    assert abs(non_embedding - params) < 0.1e6, non_embedding
  token = mor_paper_config(3, router="token")
  assert token.router_func == "softmax" and token.aux_loss_weight == 0.1
  assert mor_param_count(token) - mor_param_count(mor_paper_config(3, router=None)) == 960 * 3


# ----------------------------------------------------------------------------- loops


@pytest.mark.slow  # ~30 s on 2 cores; run with -m slow
def test_scan_matches_unrolled_and_capacities_respected():
  model = build(router="expert", n_recursions=2)  # unrolled: one copy of the core per step
  x = tokens(3)

  @nnx.jit(static_argnames="unroll")
  def grad(m, unroll):
    def loss(m):
      logits, aux = m.forward_with_aux(x, train=True, unroll=unroll)
      return jnp.mean(logits ** 2) + aux["router_aux"], (logits, aux)
    return nnx.value_and_grad(loss, has_aux=True)(m)

  (loss_scan, (logits_scan, aux_scan)), g_scan = grad(model, False)
  (loss_unroll, (logits_unroll, aux_unroll)), g_unroll = grad(model, True)
  np.testing.assert_allclose(logits_scan, logits_unroll, atol=1e-5)
  np.testing.assert_allclose(loss_scan, loss_unroll, rtol=1e-6)
  np.testing.assert_array_equal(aux_scan["selected"], aux_unroll["selected"])
  for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_unroll)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # every step's router gets a gradient (gate g_r = α·σ(s_r) and the BCE)
  assert np.all(np.abs(np.asarray(g_scan["router"]["kernel"])).sum(axis=(1, 2)) > 0)
  # training routing: exactly k_r = (16, 8) tokens per sequence, nested across depths
  selected = np.asarray(aux_scan["selected"])
  np.testing.assert_array_equal(selected.sum(-1), [[16, 16], [8, 8]])
  assert np.all(selected[1:] <= selected[:-1])
  assert float(aux_scan["router_aux"]) > 0


class DropoutProbe(nnx.Module):
  """A recursion step whose output is its dropout mask."""

  def __init__(self):
    self.dropout = nnx.Dropout(0.5)


def _probe_step(probe, per_step, carry, key):
  return carry, probe.dropout(jnp.ones((4, 64)), rngs=key)


def test_dropout_masks_differ_between_recursions():
  for unroll in (False, True):
    _, masks = scan_shared(_probe_step, DropoutProbe(), (jnp.arange(3),), jnp.zeros(()),
                           length=3, key=jax.random.key(0), unroll=unroll)
    masks = np.asarray(masks)
    assert masks.shape == (3, 4, 64)
    assert 0.3 < np.mean(masks > 0) < 0.7
    for i in range(3):
      for j in range(i):
        assert not np.array_equal(masks[i], masks[j])


# ----------------------------------------------------------------------------- training


def train(model, tx, steps=8):
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = tokens(4, batch=4)
  inputs, targets = x[:, :-1], x[:, 1:]

  traces = []

  @nnx.jit
  def step(model, optimizer, key):
    traces.append(1)
    (loss, metrics), grads = nnx.value_and_grad(
        lambda m: loss_and_metrics(m, inputs, targets, key=key), has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, metrics

  out = [step(model, optimizer, k) for k in jax.random.split(jax.random.key(0), steps)]
  assert len(traces) == 1  # one compile for all steps (no weakly typed parameters or state)
  return [float(loss) for loss, _ in out], out[-1][1]


@pytest.mark.training
@pytest.mark.parametrize("router,opt", [("expert", "muon"), ("token", "adamw")])
def test_train_step_reduces_loss(router, opt):
  tx = mj.muon(0.02) if opt == "muon" else optax.adamw(3e-3)
  # dropout is off here (its RNG doubles the compile time); it is tested above.
  model = build(router=router, remat=opt == "adamw",
                aux_loss_weight=0.01, z_loss_weight=1e-4)
  before = jax.tree.map(np.asarray, nnx.state(model.router, nnx.Param))
  losses, metrics = train(model, tx)
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
  assert set(metrics) == {"ce", "router_aux", "router_z"}
  after = nnx.state(model.router, nnx.Param)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("field,value", [
    ("n_recursions", 0),
    ("router", "mixture"),
    ("router_type", "wide_mlp"),
    ("router_func", "softmax"),       # not an expert-choice function
    ("router_alpha", 0.0),
    ("gating", "soft"),
    ("capacities", (1.0, 0.5)),       # wrong length
    ("capacities", (0.5, 1.0, 0.3)),  # increasing
    ("capacities", (1.0, 0.5, 0.0)),
    ("aux_loss_weight", -1.0),
    ("z_loss_weight", float("nan")),
    ("d_model", 0),
])
def test_bad_config_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    MoRConfig(**{**TINY, field: value})


def test_capacities_need_expert_router():
  with pytest.raises(ValueError, match="capacities"):
    MoRConfig(**TINY, router="token", capacities=(1.0, 1.0, 1.0))
  MoRConfig(**TINY, router="token", router_func="softmax")  # valid


def test_sequence_longer_than_max_raises():
  with pytest.raises(ValueError, match="max_seq_len"):
    abstract()(tokens(seq=SEQ + 1))
