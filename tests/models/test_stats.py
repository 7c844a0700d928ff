"""Tests for muonjax.models.stats: layer-input moments recorded in the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models import blocks
from muonjax.models.stats import Dense, value_grad_and_stats

TINY = dict(vocab_size=64, d_model=16, n_heads=2, d_ff=32, max_seq_len=16)


def moment(x):
  z = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  return z.T @ z / z.shape[0]


def ce_loss(model, x):
  return models.loss_and_metrics(model, x, x)


class TwoLayer(nnx.Module):
  def __init__(self, rngs):
    self.first = blocks.dense(5, 7, rngs=rngs)
    self.second = blocks.dense(7, 3, rngs=rngs)

  def __call__(self, x):
    return self.second(jnp.tanh(self.first(x)))


def test_two_layer_moments_match_numpy():
  model = TwoLayer(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (4, 6, 5))

  def loss(m, x):
    y = m(x)
    return jnp.sum(y ** 2), y

  (value, _), grads, stats = value_grad_and_stats(loss, model, x)
  hidden = np.tanh(np.asarray(x, np.float64) @ np.asarray(model.first.kernel[...], np.float64))
  np.testing.assert_allclose(stats["first"]["kernel"], moment(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["second"]["kernel"], moment(hidden), rtol=1e-5, atol=1e-6)
  (value2, _), grads2 = nnx.value_and_grad(loss, has_aux=True)(model, x)
  assert float(value) == float(value2)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), grads, grads2)
  assert model.first.input_moment is None  # the model itself never carries probes


def test_stacked_gpt_layer_moments_and_jit():
  model = models.build("gpt", rngs=0, **TINY, n_layers=2)
  x = jax.random.randint(jax.random.key(0), (2, 16), 0, 64)
  (_, _), _, stats = nnx.jit(lambda m, x: value_grad_and_stats(ce_loss, m, x))(model, x)
  assert stats["blocks"]["attn"]["query"]["kernel"].shape == (2, 16, 16)
  assert stats["blocks"]["mlp"]["down"]["kernel"].shape == (2, 32, 32)
  assert "embed" not in stats and "lm_head" not in stats  # AdamW leaves get no statistics
  # Layer 0's attention input is the first norm of the embeddings.
  graphdef, state = nnx.split(model.blocks)
  layer0 = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], state))
  reference = moment(layer0.attn_norm(model.embed(x)))
  np.testing.assert_allclose(stats["blocks"]["attn"]["query"]["kernel"][0], reference,
                             rtol=1e-4, atol=1e-6)


def test_looped_kernel_gets_the_mean_over_loop_applications():
  model = models.build("looped", rngs=0, **TINY, n_layers=1, n_loops=3, inject="add")
  x = jax.random.randint(jax.random.key(2), (2, 16), 0, 64)
  # Under jit (one compilation; eager dispatch of the looped backward pass is slow).
  _, _, stats = nnx.jit(lambda m, x: value_grad_and_stats(ce_loss, m, x))(model, x)
  graphdef, state = nnx.split(model.core.blocks)
  block = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], state))
  e = model.embed(x)
  h = jnp.zeros_like(e)
  moments = []
  apply_block = nnx.jit(lambda block, h: block(h))  # the reference, one compiled block
  for _ in range(3):
    h = h + e
    moments.append(moment(block.attn_norm(h)))
    h = apply_block(block, h)
  np.testing.assert_allclose(stats["core"]["blocks"]["attn"]["query"]["kernel"][0],
                             np.mean(moments, axis=0), rtol=1e-4, atol=1e-6)


def test_newton_muon_step_with_recorded_stats():
  model = models.build("gpt", rngs=0, **TINY, n_layers=1)
  optimizer = nnx.Optimizer(model, mj.newton_muon(learning_rate=0.02), wrt=nnx.Param)
  x = jax.random.randint(jax.random.key(3), (4, 16), 0, 64)

  @nnx.jit
  def step(model, optimizer, x):
    (loss, _), grads, stats = value_grad_and_stats(ce_loss, model, x)
    optimizer.update(model, grads, activation_stats=stats)
    return loss

  losses = [float(step(model, optimizer, x)) for _ in range(4)]
  assert losses[-1] < losses[0]
  k = optimizer.opt_state  # the preconditioner state moved away from its identity start
  leaves = [l for l in jax.tree.leaves(k) if hasattr(l, "ndim") and l.ndim == 3
            and l.shape[-1] == l.shape[-2] == 16]
  assert leaves and any(not np.allclose(l, np.eye(16)) for l in leaves)


def test_dense_is_an_nnx_linear():
  layer = blocks.dense(3, 4, rngs=nnx.Rngs(0))
  assert isinstance(layer, Dense) and isinstance(layer, nnx.Linear)
  assert layer.kernel.shape == (3, 4) and layer.bias is None
  assert set(jax.tree.leaves(jax.tree.map(lambda v: type(v).__name__, nnx.state(layer),
                                          is_leaf=lambda v: isinstance(v, nnx.Variable)))) == {"Param"}
