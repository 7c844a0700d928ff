"""Looped transformer (docs/models.md#looped-transformer): one shared k-layer core applied ``n_loops`` times.

    h₀ = e if inject is None else 0                       (e = token embedding)
    h_{i+1} = Core(h_i)              inject=None           (Base-Loop)
    h_{i+1} = Core(h_i + e)          inject="add"          (Yang et al., input injection)
    h_{i+1} = Core(A [h_i; e])       inject="concat"       (Huginn-style adapter A: 2d → d)
    logits = head(RMSNorm(h_L))

The core is broadcast into an ``nnx.scan`` over loops (docs/models.md#weight-shared-loops): its gradient is
the sum over loops, and the parameter count does not depend on ``n_loops``. The
core's k layers are themselves stacked (kernels (k, in, out), Muon per matrix).
Each loop gets its own dropout key, scanned with ``in_axes=0`` (docs/models.md#dropout-keys-in-shared-loops,
fix (b)), so dropout masks differ between iterations.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import block_param_count, dense, run_stacked, stacked_blocks

INJECTIONS = (None, "add", "concat")


@dataclasses.dataclass(frozen=True)
class LoopedConfig(checks.TransformerConfig):
  n_layers: int = 2          # distinct layers in the shared core (k)
  n_loops: int = 4           # times the core is applied (effective depth k · n_loops)
  inject: Optional[str] = "add"

  def __post_init__(self):
    super().__post_init__()
    checks.positive_int(self, "n_loops")
    if self.inject not in INJECTIONS:
      raise ValueError(f"LoopedConfig.inject must be one of {INJECTIONS}; got {self.inject!r}")


class LoopedCore(nnx.Module):
  """One loop iteration: input injection, then the k stacked blocks."""

  def __init__(self, config: LoopedConfig, *, rngs: nnx.Rngs):
    c = config
    self.inject = c.inject
    self.remat = c.remat
    self.adapter = (dense(2 * c.d_model, c.d_model, rngs=rngs)
                    if c.inject == "concat" else None)
    self.blocks = stacked_blocks(c.n_layers, c.d_model, c.n_heads, c.d_ff,
                                 activation=c.activation, dropout=c.dropout, rngs=rngs)

  def __call__(self, h: jax.Array, e: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
    if self.inject == "add":
      h = h + e
    elif self.inject == "concat":
      h = self.adapter(jnp.concatenate([h, e], axis=-1))
    return run_stacked(self.blocks, h, key=key, remat=self.remat)


def _step(core, h, e, key):
  return core(h, e, key)


def _step_with_state(core, h, e, key):
  h = core(h, e, key)
  return h, h


def scan_loops(core: nnx.Module, h: jax.Array, e: jax.Array, *, length: int,
               key: Optional[jax.Array] = None, all_states: bool = False,
               unroll: bool = False):
  """Runs ``h ← core(h, e, key_i)`` for ``i < length`` with one weight-shared ``core``.

  Args:
    core: a module called as ``core(h, e, key)``; broadcast to every iteration.
    h: initial hidden state (the scan carry).
    e: the injected input, the same every iteration.
    length: number of iterations (static).
    key: dropout key; iteration i uses ``jax.random.split(key, length)[i]``.
      ``None``: no dropout.
    all_states: also return the state after every iteration, stacked (length, ...).
    unroll: a Python loop instead of ``nnx.scan`` (a debugging reference; same result).

  Returns:
    The final state, or ``(final state, all states)`` with ``all_states``.
  """
  keys = None if key is None else jax.random.split(key, length)
  if unroll:
    states = []
    for i in range(length):
      h = core(h, e, None if keys is None else keys[i])
      states.append(h)
    return (h, jnp.stack(states)) if all_states else h
  body, out_axes = ((_step_with_state, (nnx.Carry, 0)) if all_states
                    else (_step, nnx.Carry))
  return nnx.scan(body, in_axes=(None, nnx.Carry, None, 0), out_axes=out_axes,
                  length=length)(core, h, e, keys)


class LoopedTransformer(nnx.Module):
  """Token embedding → shared core looped ``n_loops`` times → RMSNorm → head; logits (B, T, V).

  ``key=`` turns dropout on; ``n_loops=`` overrides the configured loop count (elastic
  depth: same parameters, one compile per distinct count); ``unroll=True`` runs the
  loop in Python (reference for the scan).
  """

  def __init__(self, config: LoopedConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    self.embed = nnx.Embed(c.vocab_size, c.d_model,
                           embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.core = LoopedCore(c, rngs=rngs)
    self.norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs))

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None,
               n_loops: Optional[int] = None, unroll: bool = False) -> jax.Array:
    if tokens.shape[-1] > self.config.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                       f"max_seq_len={self.config.max_seq_len}")
    e = self.embed(tokens)
    h = e if self.config.inject is None else jnp.zeros_like(e)
    h = scan_loops(self.core, h, e, length=n_loops or self.config.n_loops, key=key,
                   unroll=unroll)
    h = self.norm(h)
    return self.embed.attend(h) if self.lm_head is None else self.lm_head(h)


def looped_param_count(config: LoopedConfig) -> int:
  """Closed-form parameter count of ``LoopedTransformer(config)`` (independent of ``n_loops``)."""
  c = config
  head = 0 if c.tie_embeddings else c.d_model * c.vocab_size
  adapter = 2 * c.d_model * c.d_model if c.inject == "concat" else 0
  return (c.vocab_size * c.d_model + adapter + c.n_layers * block_param_count(c.d_model, c.d_ff)
          + c.d_model + head)
