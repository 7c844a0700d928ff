"""GPT baseline (docs/models.md#gpt): pre-norm decoder, layers stacked by ``nnx.vmap``, run by ``nnx.scan``.

Parameters and where the default routing sends them:

* ``embed/embedding`` (V, d) → AdamW; ``lm_head/kernel`` (d, V) → AdamW (absent when tied);
* ``blocks/.../kernel`` (L, in, out) → Muon, one matrix per layer;
* ``blocks/.../scale`` (L, d) and ``norm/scale`` (d,) → AdamW.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import block_param_count, run_stacked, stacked_blocks


@dataclasses.dataclass(frozen=True)
class GPTConfig(checks.TransformerConfig):
  """Config of :class:`GPT`: the shared transformer fields, nothing more."""


class GPT(nnx.Module):
  """Token embedding → ``n_layers`` pre-norm blocks → RMSNorm → head; returns logits (B, T, V).

  Call with ``key=`` (a PRNG key) to apply dropout; without it the model is deterministic.
  """

  def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    self.embed = nnx.Embed(c.vocab_size, c.d_model,
                           embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.blocks = stacked_blocks(c.n_layers, c.d_model, c.n_heads, c.d_ff,
                                 activation=c.activation, dropout=c.dropout, rngs=rngs)
    self.norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs))

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    if tokens.shape[-1] > self.config.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                       f"max_seq_len={self.config.max_seq_len}")
    x = self.embed(tokens)
    x = run_stacked(self.blocks, x, key=key, remat=self.config.remat)
    x = self.norm(x)
    return self.embed.attend(x) if self.lm_head is None else self.lm_head(x)


def gpt_param_count(config: GPTConfig) -> int:
  """Closed-form parameter count of ``GPT(config)``."""
  c = config
  head = 0 if c.tie_embeddings else c.d_model * c.vocab_size
  return (c.vocab_size * c.d_model + c.n_layers * block_param_count(c.d_model, c.d_ff)
          + c.d_model + head)
