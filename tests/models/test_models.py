"""Tests for muonjax.models: GPT (stacked layers) and the looped transformer (shared core)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models.looped import scan_loops

import helpers

TINY = dict(vocab_size=64, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_seq_len=16)
SEQ = 16
LOOP = dict(TINY, n_layers=1)  # loop tests: a one-layer shared core keeps compiles short
MODEL_NAMES = ["gpt", "looped"]


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, TINY["vocab_size"])


@nnx.jit(static_argnames=("unroll", "n_loops"))
def apply(model, x, key=None, unroll=False, n_loops=None):
  """Jitted forward (eager calls re-dispatch every op; jit keeps the file fast)."""
  if unroll or n_loops:
    return model(x, key=key, unroll=unroll, n_loops=n_loops)
  return model(x, key=key)


def is_dn(x):
  return x is None or isinstance(x, mj.MuonDimensionNumbers)


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_shape_and_causality(name):
  model = models.build(name, rngs=0, **TINY, dropout=0.1)
  x = tokens()
  logits = apply(model, x)  # no key: evaluation, deterministic
  assert logits.shape == (2, SEQ, TINY["vocab_size"])
  assert np.all(np.isfinite(logits))
  helpers.assert_causal(lambda tokens: apply(model, tokens), x, logits, TINY["vocab_size"], (0, 5, SEQ - 2))


def test_gpt_stacked_kernels_and_routing():
  model = models.build("gpt", rngs=0, **dict(TINY, n_layers=3))
  assert model.blocks.mlp.up.kernel.shape == (3, 16, 32)
  assert model.blocks.mlp.down.kernel.shape == (3, 32, 16)
  assert model.blocks.attn.query.kernel.shape == (3, 16, 16)
  assert model.blocks.attn_norm.scale.shape == (3, 16)
  dims = mj.muon_dimension_numbers(model)
  stacked = mj.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  for sub in (dims["blocks"]["attn"], dims["blocks"]["mlp"]):
    for leaf in jax.tree.leaves(sub, is_leaf=is_dn):
      assert leaf == stacked
  assert dims["blocks"]["attn_norm"]["scale"] is None
  assert dims["blocks"]["mlp_norm"]["scale"] is None
  assert dims["embed"]["embedding"] is None
  assert dims["lm_head"]["kernel"] is None
  assert dims["norm"]["scale"] is None


def test_looped_routing_and_no_rng_state():
  model = models.build("looped", rngs=0, **TINY, inject="concat", dropout=0.1)
  dims = mj.muon_dimension_numbers(model)
  assert dims["core"]["blocks"]["mlp"]["up"]["kernel"] == mj.MuonDimensionNumbers(1, 2)
  assert dims["core"]["adapter"]["kernel"] == mj.MuonDimensionNumbers(0, 1)
  assert dims["embed"]["embedding"] is None and dims["lm_head"]["kernel"] is None
  # Dropout keys come in at call time: no RNG state hides in the modules.
  assert not jax.tree.leaves(nnx.state(model, nnx.RngState))
  assert not jax.tree.leaves(nnx.state(models.build("gpt", **TINY, dropout=0.1), nnx.RngState))


def test_tied_embeddings_have_no_head():
  model = models.build("gpt", **TINY, tie_embeddings=True)
  assert model.lm_head is None
  assert apply(model, tokens()).shape == (2, SEQ, TINY["vocab_size"])


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("name,fields", [
    ("gpt", {}),
    ("gpt", dict(tie_embeddings=True, n_layers=3)),
    ("gpt", dict(d_model=32, n_heads=4, d_ff=64, vocab_size=100)),
    ("looped", {}),
    ("looped", dict(inject=None, tie_embeddings=True)),
    ("looped", dict(inject="concat", n_layers=1, d_model=32, n_heads=2)),
])
def test_analytic_param_count(name, fields):
  model = models.build(name, **{**TINY, **fields})
  assert models.param_count(model) == models.analytic_param_count(model.config)


def test_looped_param_count_independent_of_loops():
  counts = {models.param_count(models.build("looped", **TINY, n_loops=n)) for n in (1, 3, 8)}
  assert len(counts) == 1


# ----------------------------------------------------------------------------- loops


@pytest.mark.parametrize("inject", [
    pytest.param(None, marks=pytest.mark.slow), "add",
    pytest.param("concat", marks=pytest.mark.slow)])
def test_scan_matches_unrolled_loop(inject):
  model = models.build("looped", rngs=1, **LOOP, n_loops=3, inject=inject, dropout=0.2)
  x = tokens(1)
  key = jax.random.key(7)  # train mode: the same per-loop keys on both paths
  with_grads = inject == "add"  # gradients: one injection mode is enough

  @nnx.jit(static_argnames="unroll")
  def run(m, unroll):
    """Eval logits, train logits and (for "add") their gradients: one program per path."""
    evaluation = m(x, unroll=unroll)
    if not with_grads:
      return evaluation, m(x, key=key, unroll=unroll), None
    loss = lambda m: (jnp.mean((y := m(x, key=key, unroll=unroll)) ** 2), y)
    (_, train), grads = nnx.value_and_grad(loss, has_aux=True)(m)
    return evaluation, train, grads

  (eval_scan, train_scan, g_scan), (eval_unroll, train_unroll, g_unroll) = (
      run(model, False), run(model, True))
  np.testing.assert_allclose(eval_scan, eval_unroll, atol=1e-5)
  np.testing.assert_allclose(train_scan, train_unroll, atol=1e-5)
  assert not np.allclose(train_scan, eval_scan, atol=1e-3)
  for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_unroll)):
    np.testing.assert_allclose(a, b, atol=1e-5)


class DropoutProbe(nnx.Module):
  """A loop step that outputs its dropout mask (ones through dropout), ignoring the state."""

  def __init__(self):
    self.dropout = nnx.Dropout(0.5)

  def __call__(self, h, e, key):
    return self.dropout(jnp.ones_like(h), rngs=key)


def test_dropout_masks_differ_between_loop_iterations():
  h = jnp.zeros((4, 64))
  for unroll in (False, True):
    _, masks = scan_loops(DropoutProbe(), h, h, length=3, key=jax.random.key(0),
                          all_states=True, unroll=unroll)
    masks = np.asarray(masks)
    assert masks.shape == (3, 4, 64)
    assert 0.3 < np.mean(masks > 0) < 0.7
    for i in range(3):
      for j in range(i):
        assert not np.array_equal(masks[i], masks[j])


def test_elastic_loop_count():
  model = models.build("looped", **LOOP, n_loops=2)
  x = tokens(2)
  assert not np.allclose(apply(model, x), apply(model, x, n_loops=4))


# ----------------------------------------------------------------------------- training


def train(model, tx, steps=10, dropout=False):
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = tokens(3, batch=4)
  inputs, targets = x[:, :-1], x[:, 1:]

  @nnx.jit
  def step(model, optimizer, key):
    def loss_fn(m):
      logits = m(inputs, key=key if dropout else None)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  keys = jax.random.split(jax.random.key(0), steps)
  return [float(step(model, optimizer, k)) for k in keys]


@pytest.mark.training
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("opt", ["muon", "adamw"])
def test_train_step_reduces_loss(name, opt):
  tx = mj.muon(0.02) if opt == "muon" else optax.adamw(3e-3)
  remat = opt == "adamw"  # remat + scan: gradients keep the stacked shapes and train
  model = models.build(name, **TINY, dropout=0.1, remat=remat)
  before = nnx.state(model, nnx.Param)
  shapes = jax.tree.map(jnp.shape, before)
  losses = train(model, tx, dropout=True)
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == shapes


# ----------------------------------------------------------------------------- configs


def test_unknown_model_name_lists_names():
  with pytest.raises(ValueError, match="gpt.*looped"):
    models.build("bert")


def test_unknown_field_lists_valid_fields():
  with pytest.raises(ValueError, match="n_loop.*valid fields.*n_loops"):
    models.build("looped", n_loop=3)
  with pytest.raises(ValueError, match="n_loops"):
    models.build("gpt", n_loops=3)


@pytest.mark.parametrize("name,field,value", [
    ("gpt", "d_model", 0),
    ("gpt", "n_layers", 2.5),
    ("gpt", "n_heads", 3),          # does not divide d_model = 16
    ("gpt", "activation", "swish"),
    ("gpt", "dropout", 1.0),
    ("gpt", "remat", 1),
    ("looped", "n_loops", 0),
    ("looped", "inject", "mul"),
    ("looped", "vocab_size", -1),
    ("looped", "tie_embeddings", "yes"),
])
def test_bad_config_names_field(name, field, value):
  with pytest.raises(ValueError, match=field):
    models.build(name, **{**TINY, field: value})


def test_configs_are_frozen_dataclasses():
  for cls in models.CONFIGS.values():
    config = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
      config.d_model = 8
    assert models.make_config(
        [k for k, v in models.CONFIGS.items() if v is cls][0]) == config


def test_sequence_longer_than_max_raises():
  model = models.build("gpt", **TINY)
  with pytest.raises(ValueError, match="max_seq_len"):
    model(tokens(seq=SEQ + 1))
