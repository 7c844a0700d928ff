"""Small MoE transformer with MHSA or multi-head latent attention (docs/models.md#moe-with-latent-attention).

Anchor: Open-Superintelligence-Lab/blueberry-llm (commit ``f59dd0c``),
https://github.com/Open-Superintelligence-Lab/blueberry-llm — ``models/layers.py``
(``MultiHeadLatentAttention``, ``MoETransformerBlock``), ``models/components.py``
(``Expert``, ``TopKRouter``, ``MixtureOfExperts``), ``models/moe_llm.py``. Study:
Mehta et al., *Muon: Training and Trade-offs with Latent Attention and MoE*,
arXiv 2509.24406. MLA reference: DeepSeek-V2, arXiv 2405.04434, section 2.1.

Model (docs/models.md#moe-with-latent-attention)::

    x = Dropout(√d · E[tokens])
    x ← x + Dropout(Attn(RMSNorm(x)))                 Attn = MHSA or MLA
    x ← x + Dropout(MoE(RMSNorm(x)))                  per layer, layers scanned
    logits = Dropout(RMSNorm(x)) · Eᵀ                 tied head (untied: lm_head)

MoE layer, for every token x (docs/models.md#moe-with-latent-attention, equations followed exactly)::

    logits = x W_r (+ N(0, σ²) noise when training)   W_r: (d, E), no bias
    P      = softmax(logits)                          full distribution (balance loss)
    (v, i) = top_k(logits);  w = softmax(v)           renormalized over the k chosen
    y      = Σ_j w_j · Expert_{i_j}(x),   Expert(x) = W₂ Dropout(act(W₁ x))
    aux    = λ · E · Σ_e f_e · P̄_e                     f_e: share of the (token, slot)
                                                      assignments, P̄_e: mean P_e

Both the top-k choice and ``P`` use the noisy logits, as in the anchor. The layer
aux terms are summed over layers (anchor ``moe_llm.py``) and added to the
cross-entropy: ``training_loss`` returns ``(ce + aux, {"ce", "load_balance"})``.

**Dispatch is dense**: every expert computes every token and the outputs are
combined with the top-k weights (zero for the experts not chosen). This is the
static-shape formulation of the anchor's gather/scatter loop: no capacity, no
dropped tokens, so the output is exactly the routing equation above (an expert
that is not chosen gets exactly zero gradient from that token). It costs E/k times
the expert FLOPs of sparse dispatch, affordable at E = 8, d = 384.

MLA (blueberry form, docs/models.md#moe-with-latent-attention; full-rank query, one RoPE key shared by heads)::

    q = W_q x → per head [q_nope (d_nope); q_rope (d_rope)],  q_rope ← RoPE(q_rope)
    [c; k_rope] = W_DKV x,  c ∈ R^{d_c},  k_rope ← RoPE(k_rope) ∈ R^{d_rope}, shared by heads
    [k_nope; v] = W_UKV RMSNorm(c)  (per head d_nope + d_v)
    o = causal softmax([q_nope; q_rope]·[k_nope; k_rope]ᵀ / √(d_nope + d_rope)) v;  out = W_O o

RoPE handling follows the anchor: only the ``d_rope`` slice of each query head
and the single shared ``k_rope`` are rotated, positions 0..T−1, base 10000. The
anchor rotates interleaved pairs (torchtune); :func:`muonjax.models.blocks.rope`
rotates half-split pairs, a fixed permutation of the learned ``q_rope``/``k_rope``
columns, so the model family is the same. ``W_DKV`` is one matrix producing both
``c`` and ``k_rope`` (as in the anchor), so Muon orthogonalizes it as one matrix.

Parameters and their routing (``muonjax.routing`` defaults):

* ``blocks/moe/experts/w_in/kernel`` (L, E, d, d_ff), ``.../w_out/kernel``
  (L, E, d_ff, d) → Muon, one (in, out) matrix per layer and expert
  (``MuonDimensionNumbers(2, 3)``);
* attention kernels (L, in, out) → Muon per layer (MHSA query/key/value/out; MLA
  query, kv_down = W_DKV, kv_up = W_UKV, out);
* ``blocks/moe/router/kernel`` (L, d, E) → AdamW by name (``router_to_muon=True``
  sends it to Muon as the anchor does);
* ``embed/embedding``, ``lm_head/kernel``, norm scales (incl. MLA ``kv_norm``) → AdamW.

Differences from the anchor (documented choices): MHSA reuses
:class:`muonjax.models.blocks.CausalSelfAttention`, which has separate q/k/v
kernels where the anchor fuses them into one ``(d, 3d)`` matrix (Muon then
orthogonalizes the three separately); neither attention applies dropout to the
attention probabilities (the anchor's ``dropout_p`` in SDPA), only to the
attention output; kernels use ``nnx.Linear``'s default init (through
:func:`muonjax.models.blocks.dense`) instead of the anchor's N(0, 0.02), the
embedding is N(0, 0.02) as in the anchor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import (
    ACTIVATIONS,
    CausalSelfAttention,
    causal_attention,
    dense,
    rope,
    split_key,
)
from muonjax.models.losses import cross_entropy

ATTENTIONS = ("mhsa", "mhla")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
  """Config of :class:`MoETransformer`; :func:`moe_study_config` gives the blueberry sizes."""

  vocab_size: int = 256
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  d_ff: int = 512                    # hidden width of each expert
  max_seq_len: int = 256
  n_experts: int = 8
  top_k: int = 2
  router_noise_std: float = 0.1      # σ of the training-time logit noise
  load_balance_weight: float = 0.01  # λ
  attention: str = "mhsa"            # "mhsa" | "mhla"
  kv_lora_rank: int = 64             # MLA d_c (the "64 latents")
  qk_nope_dim: int = 128
  qk_rope_dim: int = 32
  v_dim: int = 128
  dropout: float = 0.0
  activation: str = "silu"
  remat: bool = False
  tie_embeddings: bool = True

  def __post_init__(self):
    checks.check_transformer(self)
    cls = type(self).__name__
    for name in ("n_experts", "top_k", "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_dim"):
      checks.positive_int(self, name)
    if self.top_k > self.n_experts:
      raise ValueError(f"{cls}.top_k={self.top_k} must be <= n_experts={self.n_experts}")
    if self.qk_rope_dim % 2:
      raise ValueError(f"{cls}.qk_rope_dim={self.qk_rope_dim} must be even for RoPE")
    for name in ("router_noise_std", "load_balance_weight"):
      value = getattr(self, name)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value) or value < 0):
        raise ValueError(f"{cls}.{name} must be a finite float >= 0; got {value!r}")
    if self.attention not in ATTENTIONS:
      raise ValueError(f"{cls}.attention must be one of {ATTENTIONS}; got {self.attention!r}")


def moe_study_config(attention: str = "mhsa", **fields) -> MoEConfig:
  """The blueberry-llm / arXiv 2509.24406 study model (docs/models.md#moe-with-latent-attention).

  d 384, 6 layers, 8 heads, expert d_ff 1536, 8 experts top-2, sequence 512,
  dropout 0.1, SmolLM-135M vocabulary (49,152), tied embeddings; MLA with
  kv_lora_rank 64, qk_nope 128, qk_rope 32, v 128. ``fields`` override.
  """
  base = dict(vocab_size=49152, d_model=384, n_layers=6, n_heads=8, d_ff=1536,
              max_seq_len=512, n_experts=8, top_k=2, router_noise_std=0.1,
              load_balance_weight=0.01, attention=attention, kv_lora_rank=64,
              qk_nope_dim=128, qk_rope_dim=32, v_dim=128, dropout=0.1,
              activation="silu", tie_embeddings=True)
  return MoEConfig(**{**base, **fields})


class MultiHeadLatentAttention(nnx.Module):
  """MLA in the blueberry form (module doc); causal; dropout on the output when ``key`` is given."""

  def __init__(self, d_model: int, n_heads: int, *, kv_lora_rank: int, qk_nope_dim: int,
               qk_rope_dim: int, v_dim: int, dropout: float = 0.0,
               rope_base: float = 10000.0, rngs: nnx.Rngs):
    self.n_heads = n_heads
    self.kv_lora_rank = kv_lora_rank
    self.qk_nope_dim, self.qk_rope_dim, self.v_dim = qk_nope_dim, qk_rope_dim, v_dim
    self.rope_base = rope_base
    self.query = dense(d_model, n_heads * (qk_nope_dim + qk_rope_dim), rngs=rngs)
    self.kv_down = dense(d_model, kv_lora_rank + qk_rope_dim, rngs=rngs)       # W_DKV
    self.kv_norm = nnx.RMSNorm(kv_lora_rank, rngs=rngs)
    self.kv_up = dense(kv_lora_rank, n_heads * (qk_nope_dim + v_dim), rngs=rngs)  # W_UKV
    self.out = dense(n_heads * v_dim, d_model, rngs=rngs)                      # W_O
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    batch, seq, _ = x.shape
    h, nope, rot = self.n_heads, self.qk_nope_dim, self.qk_rope_dim
    q = self.query(x).reshape(batch, seq, h, nope + rot)
    q = jnp.concatenate([q[..., :nope], rope(q[..., nope:], self.rope_base)], axis=-1)
    ckr = self.kv_down(x)
    c, k_rope = ckr[..., :self.kv_lora_rank], ckr[..., self.kv_lora_rank:]
    k_rope = rope(k_rope[:, :, None, :], self.rope_base)                 # (B, T, 1, d_rope)
    kv = self.kv_up(self.kv_norm(c)).reshape(batch, seq, h, nope + self.v_dim)
    k_nope, v = kv[..., :nope], kv[..., nope:]
    k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope, (batch, seq, h, rot))], axis=-1)
    o = causal_attention(q, k, v, scale=1.0 / math.sqrt(nope + rot))
    y = self.out(o.reshape(batch, seq, h * self.v_dim))
    if key is not None:
      y = self.dropout(y, rngs=key)
    return y


def mla_param_count(d_model: int, n_heads: int, kv_lora_rank: int, qk_nope_dim: int,
                    qk_rope_dim: int, v_dim: int) -> int:
  """Parameters of one :class:`MultiHeadLatentAttention`: W_q, W_DKV, kv_norm, W_UKV, W_O."""
  return (d_model * n_heads * (qk_nope_dim + qk_rope_dim)
          + d_model * (kv_lora_rank + qk_rope_dim) + kv_lora_rank
          + kv_lora_rank * n_heads * (qk_nope_dim + v_dim)
          + n_heads * v_dim * d_model)


class Expert(nnx.Module):
  """Expert(x) = W₂ Dropout(act(W₁ x)), not gated (anchor ``Expert``)."""

  def __init__(self, d_model: int, d_ff: int, *, activation: str, dropout: float,
               rngs: nnx.Rngs):
    self.activation = activation
    self.w_in = dense(d_model, d_ff, rngs=rngs)
    self.w_out = dense(d_ff, d_model, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
    h = ACTIVATIONS[self.activation](self.w_in(x))
    if key is not None:
      h = self.dropout(h, rngs=key)
    return self.w_out(h)


def _expert_forward(expert: Expert, x: jax.Array, key: Optional[jax.Array]) -> jax.Array:
  return expert(x, key)


def load_balance_loss(probs: jax.Array, indices: jax.Array, n_experts: int,
                      weight: float = 1.0) -> jax.Array:
  """λ · E · Σ_e f_e · P̄_e (docs/models.md#moe-with-latent-attention; Switch Transformer, arXiv 2101.03961, eq. 4).

  Args:
    probs: router softmax over all experts, shape (..., E).
    indices: the chosen experts, shape (..., k).
    n_experts: E.
    weight: λ.

  ``f_e`` is the share of the (token, slot) assignments that go to expert e (Σ f = 1)
  and ``P̄_e`` the mean router probability of e. When ``P̄`` is uniform (or ``f`` is),
  the value is exactly λ, the balanced value the loss pushes towards. It is ≥ 0,
  but not a strict lower bound of the function (``f`` concentrated on experts whose
  mean probability is below 1/E gives slightly less); gradient flows through ``P̄``
  only, ``f`` being a count.
  """
  counts = jax.nn.one_hot(indices, n_experts, dtype=jnp.float32).reshape(-1, n_experts)
  f = counts.sum(0) / counts.sum()
  p_mean = probs.reshape(-1, n_experts).astype(jnp.float32).mean(0)
  return weight * n_experts * jnp.sum(f * p_mean)


class MoE(nnx.Module):
  """Top-k noisy-gated mixture of ``n_experts`` experts with dense dispatch (module doc).

  The experts are one stacked module (kernels (E, in, out)) built by ``nnx.vmap``
  over :func:`muonjax.models.blocks.dense`; the router is a bias-free ``(d, E)``
  linear map named ``router`` (routed to AdamW by default).
  """

  def __init__(self, d_model: int, d_ff: int, *, n_experts: int, top_k: int,
               noise_std: float, activation: str, dropout: float, rngs: nnx.Rngs):
    self.n_experts, self.top_k, self.noise_std = n_experts, top_k, noise_std
    self.router = dense(d_model, n_experts, rngs=rngs)

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "experts"})
    def make(rngs: nnx.Rngs) -> Expert:
      return Expert(d_model, d_ff, activation=activation, dropout=dropout, rngs=rngs)

    self.experts = make(rngs.split(n_experts))

  def route(self, x: jax.Array, noise_key: Optional[jax.Array] = None):
    """Routing of every token of ``x`` (..., d).

    Args:
      x: tokens.
      noise_key: adds ``noise_std · jax.random.normal(noise_key, logits.shape)`` to
        the router logits (training); ``None``: no noise.

    Returns:
      ``(combine, probs, indices)``: combine weights (..., E), equal to the
      renormalized top-k softmax at the chosen experts and 0 elsewhere; the full
      softmax (..., E); the chosen experts (..., k), in decreasing logit order.
    """
    logits = self.router(x)
    if noise_key is not None and self.noise_std > 0:
      logits = logits + self.noise_std * jax.random.normal(noise_key, logits.shape,
                                                           logits.dtype)
    probs = jax.nn.softmax(logits, axis=-1)
    top_logits, indices = jax.lax.top_k(logits, self.top_k)
    weights = jax.nn.softmax(top_logits, axis=-1)
    combine = jnp.einsum("...k,...ke->...e", weights,
                         jax.nn.one_hot(indices, self.n_experts, dtype=weights.dtype))
    return combine, probs, indices

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None):
    """Returns ``(y, balance)``: the layer output and the unweighted E·Σ f·P̄ (λ = 1)."""
    noise_key, dropout_key = split_key(key, 2)
    combine, probs, indices = self.route(x, noise_key)
    keys = None if dropout_key is None else jax.random.split(dropout_key, self.n_experts)
    outputs = nnx.vmap(_expert_forward, in_axes=(0, None, 0), out_axes=0)(
        self.experts, x, keys)                                   # (E, ..., d)
    y = jnp.einsum("...e,e...d->...d", combine, outputs)
    return y, load_balance_loss(probs, indices, self.n_experts)


class MoEBlock(nnx.Module):
  """x ← x + Dropout(Attn(RMSNorm(x))); x ← x + Dropout(MoE(RMSNorm(x))); → (x, balance)."""

  def __init__(self, config: MoEConfig, *, rngs: nnx.Rngs):
    c = config
    self.attn_norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    if c.attention == "mhsa":
      self.attn = CausalSelfAttention(c.d_model, c.n_heads, dropout=c.dropout, rngs=rngs)
    else:
      self.attn = MultiHeadLatentAttention(
          c.d_model, c.n_heads, kv_lora_rank=c.kv_lora_rank, qk_nope_dim=c.qk_nope_dim,
          qk_rope_dim=c.qk_rope_dim, v_dim=c.v_dim, dropout=c.dropout, rngs=rngs)
    self.moe_norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.moe = MoE(c.d_model, c.d_ff, n_experts=c.n_experts, top_k=c.top_k,
                   noise_std=c.router_noise_std, activation=c.activation,
                   dropout=c.dropout, rngs=rngs)
    self.dropout = nnx.Dropout(c.dropout)

  def __call__(self, x: jax.Array, key: Optional[jax.Array] = None):
    attn_key, moe_key, drop_key = split_key(key, 3)
    x = x + self.attn(self.attn_norm(x), key=attn_key)  # the attention drops its output
    y, balance = self.moe(self.moe_norm(x), key=moe_key)
    if drop_key is not None:
      y = self.dropout(y, rngs=drop_key)
    return x + y, balance


def _apply_block(block: MoEBlock, x: jax.Array, key: Optional[jax.Array]):
  return block(x, key)


class MoETransformer(nnx.Module):
  """Token embedding ×√d → ``n_layers`` MoE blocks (stacked, scanned) → RMSNorm → head.

  ``model(tokens, key=None)`` returns logits (B, T, V); ``key`` turns on dropout and
  router noise. ``model.training_loss(inputs, targets, key=)`` returns
  ``(ce + load_balance, {"ce", "load_balance"})`` where ``load_balance`` is
  λ · Σ_layers E·Σ_e f_e P̄_e (the anchor's per-layer aux, summed).
  """

  def __init__(self, config: MoEConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    self.embed = nnx.Embed(c.vocab_size, c.d_model,
                           embedding_init=nnx.initializers.normal(0.02), rngs=rngs)

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> MoEBlock:
      return MoEBlock(c, rngs=rngs)

    self.blocks = make(rngs.split(c.n_layers))
    self.norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs))
    self.dropout = nnx.Dropout(c.dropout)

  def forward(self, tokens: jax.Array, *, key: Optional[jax.Array] = None):
    """``(logits, balance)``: logits (B, T, V) and the unweighted balance term per layer (L,)."""
    c = self.config
    if tokens.shape[-1] > c.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                       f"max_seq_len={c.max_seq_len}")
    embed_key, blocks_key, out_key = split_key(key, 3)
    x = self.embed(tokens) * jnp.sqrt(c.d_model).astype(self.embed.embedding.dtype)
    if embed_key is not None:
      x = self.dropout(x, rngs=embed_key)
    keys = None if blocks_key is None else jax.random.split(blocks_key, c.n_layers)
    body = nnx.remat(_apply_block) if c.remat else _apply_block
    x, balance = nnx.scan(body, in_axes=(0, nnx.Carry, 0), out_axes=(nnx.Carry, 0),
                          length=c.n_layers)(self.blocks, x, keys)
    x = self.norm(x)
    if out_key is not None:
      x = self.dropout(x, rngs=out_key)
    logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
    return logits, balance

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    return self.forward(tokens, key=key)[0]

  def training_loss(self, inputs: jax.Array, targets: jax.Array, *,
                    key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """``(ce + λ·Σ_layers balance, {"ce", "load_balance"})`` (losses.py convention)."""
    logits, balance = self.forward(inputs, key=key)
    ce = cross_entropy(logits, targets)
    aux = self.config.load_balance_weight * jnp.sum(balance)
    return ce + aux, {"ce": ce, "load_balance": aux}


def moe_param_count(config: MoEConfig, *, active: bool = False) -> int:
  """Closed-form parameter count of ``MoETransformer(config)``.

  ``active=True``: the parameters one token uses (``top_k`` experts per layer
  instead of ``n_experts``; router, attention, norms, embedding all counted).
  """
  c = config
  if c.attention == "mhsa":
    attn = 4 * c.d_model * c.d_model
  else:
    attn = mla_param_count(c.d_model, c.n_heads, c.kv_lora_rank, c.qk_nope_dim,
                           c.qk_rope_dim, c.v_dim)
  experts = c.top_k if active else c.n_experts
  layer = (attn + c.d_model * c.n_experts + experts * 2 * c.d_model * c.d_ff
           + 2 * c.d_model)
  head = 0 if c.tie_embeddings else c.d_model * c.vocab_size
  return c.vocab_size * c.d_model + c.n_layers * layer + c.d_model + head
