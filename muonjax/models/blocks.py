"""Shared transformer building blocks (docs/models.md#building-blocks): RoPE attention, MLP, pre-norm block.

Every linear map is a bias-free ``nnx.Linear`` with an ``(in, out)`` kernel, so the
default routing (``muonjax.routing``) sends attention and MLP kernels to Muon, and
norm scales (leaf ``scale``) to AdamW. Stacked by ``nnx.vmap`` they become
``(L, in, out)`` and are orthogonalized per matrix.

Dropout takes its key at call time (``key=``; docs/models.md#dropout-keys-in-shared-loops): a
block shared across loop iterations gets a fresh key, hence a fresh mask, on every
iteration. ``key=None`` means no dropout (evaluation).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from muonjax.models.stats import Dense

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def rope(x: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding on ``x`` of shape (batch, seq, heads, head_dim).

  Rotates the pairs (x[..., i], x[..., i + head_dim/2]) by angle
  ``position * base^(-2i/head_dim)``.
  """
  seq, head_dim = x.shape[1], x.shape[-1]
  half = head_dim // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim)
  angles = jnp.arange(seq, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # (seq, half)
  sin = jnp.sin(angles)[None, :, None, :].astype(x.dtype)
  cos = jnp.cos(angles)[None, :, None, :].astype(x.dtype)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def dense(n_in: int, n_out: int, *, rngs: nnx.Rngs) -> Dense:
  """A bias-free linear map with an ``(n_in, n_out)`` kernel: every hidden matrix of every model.

  Models build their Muon-routed matrices through this one factory, so every
  model's layers can record their input statistics for Newton-Muon
  (:mod:`muonjax.models.stats`).
  """
  return Dense(n_in, n_out, use_bias=False, rngs=rngs)


def split_key(key: Optional[jax.Array], n: int):
  """``n`` keys split from ``key``, or ``n`` Nones when ``key`` is None (evaluation: no dropout)."""
  return (None,) * n if key is None else tuple(jax.random.split(key, n))


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
                     mask: Optional[jax.Array] = None) -> jax.Array:
  """softmax(q kᵀ · scale + causal mask) v per head.

  ``q``, ``k`` are (batch, seq, heads, d_qk), ``v`` (batch, seq, heads, d_v).
  ``mask`` (batch, seq) bool, optional: keys where it is False are hidden from
  every other query (each position still attends to itself).
  """
  seq = q.shape[1]
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(scale, q.dtype)
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
  if mask is not None:
    causal = causal & (mask[:, None, None, :] | jnp.eye(seq, dtype=bool))
  scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class CausalSelfAttention(nnx.Module):
  """Multi-head causal self-attention with RoPE on queries and keys; scale 1/√head_dim."""

  def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0,
               rope_base: float = 10000.0, use_rope: bool = True, rngs: nnx.Rngs):
    self.n_heads = n_heads
    self.head_dim = d_model // n_heads
    self.rope_base = rope_base
    self.use_rope = use_rope  # False: no rotary embedding (models with learned absolute positions)
    linear = lambda: dense(d_model, d_model, rngs=rngs)
    self.query, self.key, self.value, self.out = linear(), linear(), linear(), linear()
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """``mask`` (batch, seq) bool, optional: keys where it is False are hidden from every
    other query (each position still attends to itself); ``None``: plain causal attention."""
    batch, seq, d_model = x.shape
    heads = lambda y: y.reshape(batch, seq, self.n_heads, self.head_dim)
    q, k = heads(self.query(x)), heads(self.key(x))
    if self.use_rope:
      q, k = rope(q, self.rope_base), rope(k, self.rope_base)
    v = heads(self.value(x))
    y = causal_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim), mask=mask)
    y = self.out(y.reshape(batch, seq, d_model))
    if key is not None:
      y = self.dropout(y, rngs=key)
    return y


class MLP(nnx.Module):
  """W_down φ(W_up x)."""

  def __init__(self, d_model: int, d_ff: int, *, activation: str = "gelu",
               dropout: float = 0.0, rngs: nnx.Rngs):
    self.activation = activation
    self.up = dense(d_model, d_ff, rngs=rngs)
    self.down = dense(d_ff, d_model, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    y = self.down(ACTIVATIONS[self.activation](self.up(x)))
    if key is not None:
      y = self.dropout(y, rngs=key)
    return y


class Block(nnx.Module):
  """Pre-norm decoder block: x ← x + Attn(N₁(x)); x ← x + MLP(N₂(x))."""

  def __init__(self, d_model: int, n_heads: int, d_ff: int, *, activation: str = "gelu",
               dropout: float = 0.0, rngs: nnx.Rngs):
    self.attn_norm = nnx.RMSNorm(d_model, rngs=rngs)
    self.attn = CausalSelfAttention(d_model, n_heads, dropout=dropout, rngs=rngs)
    self.mlp_norm = nnx.RMSNorm(d_model, rngs=rngs)
    self.mlp = MLP(d_model, d_ff, activation=activation, dropout=dropout, rngs=rngs)

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None) -> jax.Array:
    attn_key, mlp_key = split_key(key, 2)
    x = x + self.attn(self.attn_norm(x), key=attn_key, mask=mask)
    return x + self.mlp(self.mlp_norm(x), key=mlp_key)


def block_param_count(d_model: int, d_ff: int) -> int:
  """Parameters of one ``Block``: q, k, v, o, up, down kernels and two norm scales."""
  return 4 * d_model * d_model + 2 * d_model * d_ff + 2 * d_model


def stacked_blocks(n: int, d_model: int, n_heads: int, d_ff: int, *, activation: str,
                   dropout: float, rngs: nnx.Rngs) -> Block:
  """``n`` blocks with every parameter stacked on a leading ``layers`` axis (docs/models.md#stacked-layers)."""

  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def make(rngs: nnx.Rngs) -> Block:
    return Block(d_model, n_heads, d_ff, activation=activation, dropout=dropout, rngs=rngs)

  return make(rngs.split(n))


def _apply_block(block: Block, x: jax.Array, key: Optional[jax.Array]) -> jax.Array:
  return block(x, key=key)


def _apply_block_masked(block: Block, x: jax.Array, key: Optional[jax.Array],
                        mask: jax.Array) -> jax.Array:
  return block(x, key=key, mask=mask)


def run_stacked(blocks: Block, x: jax.Array, *, key: Optional[jax.Array] = None,
                remat: bool = False, mask: Optional[jax.Array] = None) -> jax.Array:
  """Applies stacked ``blocks`` (leading axis L) in order with ``nnx.scan``.

  Each layer gets its own dropout key, split from ``key``. ``mask`` (batch, seq) bool,
  optional, is the attention key mask of every layer (``CausalSelfAttention``).
  """
  n = jax.tree.leaves(nnx.state(blocks, nnx.Param))[0].shape[0]
  keys = None if key is None else jax.random.split(key, n)
  if mask is not None:
    body = nnx.remat(_apply_block_masked) if remat else _apply_block_masked
    return nnx.scan(body, in_axes=(0, nnx.Carry, 0, None), out_axes=nnx.Carry, length=n)(
        blocks, x, keys, mask)
  body = nnx.remat(_apply_block) if remat else _apply_block
  return nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry, length=n)(
      blocks, x, keys)
