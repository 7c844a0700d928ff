"""Scion's SpectralConv LMO on Flax conv kernels, against NumPy written from the official code.

The reference follows ``SpectralConv.lmo`` of https://github.com/LIONS-EPFL/scion
(``scion.py``) in the PyTorch layout ``(out, in, k, k)``: Keller's NS5 on the
``(out, in·k·k)`` view (transposed when tall, ``X / (||X||_F + 1e-7)``), then
``· sqrt(out / in) / k²`` (``/ k`` for rank 3). The Flax kernel
``(kh, kw, in, out)`` is converted to that layout and back, so the test also
checks the layout translation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj

KELLER = (3.4445, -4.7750, 2.0315)


def np_ns5(g, steps=5):
  """zeropower_via_newtonschulz5 of the official scion.py, in float64."""
  x = np.asarray(g, np.float64)
  tall = x.shape[0] > x.shape[1]
  if tall:
    x = x.T
  x = x / (np.linalg.norm(x) + 1e-7)
  a, b, c = KELLER
  for _ in range(steps):
    m = x @ x.T
    x = a * x + (b * m + c * m @ m) @ x
  return x.T if tall else x


def np_spectral_conv_torch(g, steps=5):
  """SpectralConv.lmo on a PyTorch kernel (out, in, k[, k])."""
  out = np_ns5(g.reshape(len(g), -1), steps).reshape(g.shape)
  if g.ndim == 3:
    out_channels, in_channels, k = g.shape
    return out * (out_channels / in_channels) ** 0.5 / k
  out_channels, in_channels, k, _ = g.shape
  return out * (out_channels / in_channels) ** 0.5 / k**2


def np_spectral_conv_flax(kernel, steps=5):
  """The official LMO through the layout change Flax (*k, in, out) <-> PyTorch (out, in, *k)."""
  rank = kernel.ndim
  to_torch = (rank - 1, rank - 2) + tuple(range(rank - 2))
  from_torch = tuple(np.argsort(to_torch))
  return np_spectral_conv_torch(np.transpose(kernel, to_torch), steps).transpose(from_torch)


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (3, 3, 16, 4), (3, 3, 2, 64), (3, 8, 16)],
                         ids=["wide", "wide_few_out", "tall", "conv1d"])
@pytest.mark.parametrize("steps", [5, 9])
def test_spectral_conv_matches_official_equations(shape, steps):
  kernel = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  ref = np_spectral_conv_flax(kernel, steps)
  out = mj.LMO("spectral_conv", steps=steps).apply(jnp.asarray(kernel))
  assert out.shape == shape and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-6)


def test_scale_by_lmo_applies_spectral_conv_with_radius():
  kernel = np.random.default_rng(1).standard_normal((3, 3, 8, 16)).astype(np.float32)
  tx = mj.scale_by_lmo({"conv": {"kernel": mj.LMO("spectral_conv", 8.0)}})
  updates, _ = tx.update({"conv": {"kernel": jnp.asarray(kernel)}}, tx.init(None))
  np.testing.assert_allclose(np.asarray(updates["conv"]["kernel"]),
                             8.0 * np_spectral_conv_flax(kernel), rtol=1e-4, atol=1e-6)


def test_spectral_conv_on_a_matrix_names_the_leaf():
  tx = mj.scale_by_lmo({"w": "spectral_conv"})
  with pytest.raises(ValueError, match=r"spectral_conv.*\['w'\].*\(4, 5\)"):
    tx.update({"w": jnp.ones((4, 5))}, tx.init(None))


def test_automatic_rules_send_conv_kernels_to_spectral_conv_and_stacks_to_spectral():
  params = {
      "conv1": {"kernel": jnp.zeros((3, 3, 3, 8)), "bias": jnp.zeros((8,))},
      "Conv_1": {"kernel": jnp.zeros((5, 8, 8))},  # 1-D conv (k, in, out)
      "blocks": {"kernel": jnp.zeros((4, 8, 8))},  # nnx.vmap stack (L, in, out)
      "experts": {"kernel": jnp.zeros((2, 4, 8, 8))},  # (L, E, in, out)
      "dense": {"kernel": jnp.zeros((8, 8))},
  }
  lmos = mj.scion_default_lmos(params)
  assert lmos["conv1"]["kernel"] == mj.LMO("spectral_conv", 3.0)
  assert lmos["Conv_1"]["kernel"].kind == "spectral_conv"
  assert lmos["blocks"]["kernel"] == mj.LMO("spectral", 3.0)
  assert lmos["experts"]["kernel"].kind == "spectral"
  assert lmos["dense"]["kernel"].kind == "spectral"
  assert lmos["conv1"]["bias"].kind == "bias_rms"
  # LMO("auto") (scale_by_lmo's default) decides with the leaf's path too.
  auto = mj.LMO("auto")
  assert auto.resolved(4, "['conv1']['kernel']").kind == "spectral_conv"
  assert auto.resolved(3, "['blocks']['kernel']").kind == "spectral"
  assert auto.resolved(4, "['experts']['kernel']").kind == "spectral"
  assert auto.resolved(2, "['conv1']['kernel']").kind == "spectral"
  # An override names a conv whose path does not say so.
  lmos = mj.scion_default_lmos(params, overrides={"experts": "spectral_conv"})
  assert lmos["experts"]["kernel"].kind == "spectral_conv"


def test_scion_init_spectral_conv_taps_are_scaled_semi_orthogonal():
  params = {"conv": {"kernel": jnp.zeros((3, 3, 8, 16))}}
  lmos = {"conv": {"kernel": mj.LMO("spectral_conv", 2.0)}}
  w = np.asarray(mj.scion_init(params, lmos, jax.random.key(0))["conv"]["kernel"], np.float64)
  expected = 2.0 * np.sqrt(16 / 8) / 9
  for a in range(3):
    for b in range(3):
      s = np.linalg.svd(w[a, b], compute_uv=False)
      np.testing.assert_allclose(s, expected, rtol=1e-5)


class ConvNet(nnx.Module):
  """Two 3x3 convs, global average pool, dense head."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(8, 16, (3, 3), rngs=rngs)
    self.head = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.conv1(x))
    x = jax.nn.relu(self.conv2(x))
    return self.head(x.mean(axis=(1, 2)))


@pytest.mark.training
def test_scion_trains_an_nnx_conv_net():
  model = ConvNet(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  lmos = mj.scion_default_lmos(params)
  assert lmos["conv1"]["kernel"].kind == "spectral_conv"
  assert lmos["conv2"]["kernel"].kind == "spectral_conv"
  assert lmos["head"]["kernel"].kind == "sign"
  nnx.update(model, mj.scion_init(params, lmos, jax.random.key(1)))

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, 8, 8, 1)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 4, 64))

  optimizer = nnx.Optimizer(model, mj.scion(0.05, alpha=0.5, compute_dtype=None),
                            wrt=nnx.Param)

  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(30)]
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.9 * losses[0], losses
