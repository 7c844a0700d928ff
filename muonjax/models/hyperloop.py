"""Hyperloop Transformer (docs/models.md#hyperloop): a Middle-Cycle looped transformer with loop-level hyper-connections.

Zeitoun, Torroba-Hennigen, Kim, "Hyperloop Transformers", arXiv 2604.21254 (no official
code). Hyper-connections as simplified from mHC (Xie et al., arXiv 2512.24880).

Architecture (docs/models.md#hyperloop, equations followed exactly)::

    x      = Begin(E[tokens])                           n_begin unique layers
    Y^(0)  = [x, …, x] ∈ R^{B×T×n×C}                    n = n_streams parallel residual streams
    for l = 0..L−1 (L = n_loops; F = the n_layers-layer middle block, shared):
        z        = RMSNorm(flatten(y_t)) ∈ R^{nC}                      (per token t)
        H^pre_l  = σ(α^pre_l  · (z W^pre_l)  + b^pre_l)   ∈ R^{1×n}
        H^post_l = 2σ(α^post_l · (z W^post_l) + b^post_l) ∈ R^{n×1}
        H^res_l  = diag σ(α^res_l · (z W^res_l) + b^res_l)  ∈ R^{n×n}
        Y^(l+1)  = H^res_l Y^(l) + H^post_l (F(H^pre_l Y^(l)) + e_l)    e_l ∈ R^C: loop embedding
    X_end  = mean over the n streams of Y^(L)
    logits = head(RMSNorm(End(X_end)))                  n_end unique layers

F is a stack of ordinary pre-norm blocks (each sub-layer keeps its own residual; Llama
pre-RMSNorm as the paper's Llama backbone suggests). **Per-loop**: {W^τ_l, b^τ_l, α^τ_l, e_l}, τ ∈ {pre,
post, res}, stored stacked with a leading [L] axis; **shared**: everything in F.

Choices where the paper/spec is silent (muonjax):

* The RMSNorm on the flattened streams has no learnable scale (a scale s would be
  absorbed by W: W·(s ⊙ ẑ) = (diag(s) W)·ẑ) and ε = 1e-6.
* Initialization: W^τ_l ~ N(0, 1/(nC)) (LeCun normal, so W z is O(1)), α^τ_l = 0.01
  (mHC-style small gating factor), b^post = b^res = 0, b^pre = −log(n − 1) and
  e_l ~ N(0, 0.02). At init the token-dependent part α·W z is ~1 % of the bias, so
  H^pre ≈ 1/n per stream (Σ_j H^pre_j ≈ 1: F reads the average stream, the looped
  model's input on the first loop), H^post ≈ 1 and H^res ≈ ½. The spec defines no
  identity-at-init property; this init is tested instead. Random W break the
  symmetry between the (initially identical) streams.
* ``n_streams`` ≥ 2 (with one stream b^pre = −log 0 is undefined).

**Loop.** ``nnx.scan`` (:func:`muonjax.models.mor.scan_shared`) with F broadcast
(``in_axes=None``, gradient summed over loops), the per-loop parameters scanned
(``in_axes=0``), carry Y ∈ R^{B×T×n×C}, one dropout key per loop (docs/models.md#weight-shared-loops, #dropout-keys-in-shared-loops
fix (b)); ``unroll=True`` is the Python reference. The parameter count does not depend
on ``n_loops`` except through the per-loop parameters::

    count = V·C + (n_begin + n_layers + n_end)·block + C [+ C·V untied]
            + n_loops · (3·nC·n + 3n + 3 + C)

**Routing.** Kernels of begin/middle/end blocks (stacked ``(k, in, out)``) → Muon per
matrix. W^pre/post/res (stacked ``(L, nC, n)``) carry ``muon=`` metadata: AdamW by
default (they are small gate generators, and Hyperloop used AdamW throughout),
``hc_to_muon=True`` sends them to Muon per loop (docs/models.md#routing-of-model-parameters). Biases, α, the
loop embeddings e_l, the token embedding, head and norm scales → AdamW.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from muonjax.models import config as checks
from muonjax.models.blocks import block_param_count, run_stacked, stacked_blocks
from muonjax.models.mor import scan_shared

ALPHA_INIT = 0.01
NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class HyperloopConfig(checks.TransformerConfig):
  """Config of :class:`HyperloopTransformer`; :func:`hyperloop_paper_config` gives Table 1 sizes."""

  n_layers: int = 2           # layers of the looped middle block F
  n_begin: int = 1            # unique begin layers (≥ 0)
  n_end: int = 1              # unique end layers (≥ 0)
  n_loops: int = 3            # L
  n_streams: int = 4          # n
  hc_to_muon: bool = False    # route W^pre/post/res to Muon

  def __post_init__(self):
    super().__post_init__()
    cls = type(self).__name__
    checks.positive_int(self, "n_loops")
    checks.positive_int(self, "n_streams")
    if self.n_streams < 2:
      raise ValueError(f"{cls}.n_streams must be >= 2; got {self.n_streams!r}")
    for name in ("n_begin", "n_end"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{cls}.{name} must be a non-negative int; got {value!r}")
    if not isinstance(self.hc_to_muon, bool):
      raise ValueError(f"{cls}.hc_to_muon must be a bool; got {self.hc_to_muon!r}")


class LoopHyperConnections(nnx.Module):
  """The per-loop parameters {W^τ_l, b^τ_l, α^τ_l, e_l}, stacked on a leading [n_loops] axis."""

  def __init__(self, n_loops: int, n_streams: int, d_model: int, *, to_muon: bool = False,
               rngs: nnx.Rngs):
    n, width = n_streams, n_streams * d_model
    w_route = MuonDimensionNumbers(reduction_axis=1, output_axis=2) if to_muon else None
    w_init = nnx.initializers.normal(1.0 / math.sqrt(width))
    adam = lambda value: nnx.Param(value, muon=None)
    for tau in ("pre", "post", "res"):
      setattr(self, f"w_{tau}", nnx.Param(w_init(rngs.params(), (n_loops, width, n)),
                                          muon=w_route))
      setattr(self, f"alpha_{tau}", adam(jnp.full((n_loops,), ALPHA_INIT, jnp.float32)))
    # explicit dtype: a weakly typed parameter would make a jitted step recompile as it updates
    self.b_pre = adam(jnp.full((n_loops, n), -math.log(n - 1), jnp.float32))
    self.b_post = adam(jnp.zeros((n_loops, n)))
    self.b_res = adam(jnp.zeros((n_loops, n)))
    self.loop_embed = adam(nnx.initializers.normal(0.02)(rngs.params(), (n_loops, d_model)))

  def gates(self, y: jax.Array):
    """(H^pre, H^post, H^res diagonal), each (..., n), for streams y (..., n, C) of one loop."""
    flat = y.reshape(y.shape[:-2] + (-1,))
    z = flat * jax.lax.rsqrt(jnp.mean(jnp.square(flat), axis=-1, keepdims=True) + NORM_EPS)
    gate = lambda tau: (getattr(self, f"alpha_{tau}")[...] * (z @ getattr(self, f"w_{tau}")[...])
                        + getattr(self, f"b_{tau}")[...])
    return jax.nn.sigmoid(gate("pre")), 2.0 * jax.nn.sigmoid(gate("post")), \
        jax.nn.sigmoid(gate("res"))


def _loop_step(middle, per_loop, y, key, *, remat):
  (hc,) = per_loop
  pre, post, res = hc.gates(y)
  f = run_stacked(middle, jnp.einsum("btn,btnc->btc", pre, y), key=key, remat=remat)
  f = f + hc.loop_embed[...]
  return res[..., None] * y + post[..., None] * f[:, :, None, :], None


class HyperloopTransformer(nnx.Module):
  """Embedding → begin → (F with hyper-connections) × n_loops → stream mean → end → norm → head.

  ``model(tokens)`` returns logits (B, T, V); ``key=`` turns dropout on;
  ``unroll=True`` runs the loop in Python (reference for the scan).
  """

  def __init__(self, config: HyperloopConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    stack = lambda k: (stacked_blocks(k, c.d_model, c.n_heads, c.d_ff, activation=c.activation,
                                      dropout=c.dropout, rngs=rngs) if k else None)
    self.embed = nnx.Embed(c.vocab_size, c.d_model,
                           embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.begin = stack(c.n_begin)
    self.middle = stack(c.n_layers)
    self.end = stack(c.n_end)
    self.hyper = LoopHyperConnections(c.n_loops, c.n_streams, c.d_model,
                                      to_muon=c.hc_to_muon, rngs=rngs)
    self.norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs))

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None,
               unroll: bool = False) -> jax.Array:
    c = self.config
    if tokens.shape[-1] > c.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds max_seq_len={c.max_seq_len}")
    k_begin, k_loop, k_end = (None,) * 3 if key is None else tuple(jax.random.split(key, 3))
    x = self.embed(tokens)
    if self.begin is not None:
      x = run_stacked(self.begin, x, key=k_begin, remat=c.remat)
    y = jnp.broadcast_to(x[:, :, None, :], x.shape[:2] + (c.n_streams, c.d_model))
    y, _ = scan_shared(functools.partial(_loop_step, remat=c.remat), self.middle,
                       (self.hyper,), y, length=c.n_loops, key=k_loop, unroll=unroll)
    x = jnp.mean(y, axis=2)
    if self.end is not None:
      x = run_stacked(self.end, x, key=k_end, remat=c.remat)
    x = self.norm(x)
    return self.embed.attend(x) if self.lm_head is None else self.lm_head(x)


def hyper_connection_param_count(config: HyperloopConfig) -> int:
  """Per-loop parameters of all loops: n_loops · (3·nC·n + 3n + 3 + C)."""
  c, n = config, config.n_streams
  return c.n_loops * (3 * n * c.d_model * n + 3 * n + 3 + c.d_model)


def hyperloop_param_count(config: HyperloopConfig) -> int:
  """Closed-form parameter count of ``HyperloopTransformer(config)`` (formula in the module doc)."""
  c = config
  head = 0 if c.tie_embeddings else c.d_model * c.vocab_size
  layers = c.n_begin + c.n_layers + c.n_end
  return (c.vocab_size * c.d_model + layers * block_param_count(c.d_model, c.d_ff) + c.d_model
          + head + hyper_connection_param_count(c))


PAPER_SIZES = {  # Table 1: (d, begin, middle, end)
    "136M": (1024, 2, 4, 2),
    "580M": (2048, 3, 4, 3),
    "991M": (2048, 4, 10, 4),
}


def hyperloop_paper_config(size: str = "136M", **fields) -> HyperloopConfig:
  """The paper's Hyperloop models (Table 1): "136M" (2→4(×3)→2, d 1024), "580M", "991M".

  16 heads, 3 loops, 4 streams, Llama-2 vocabulary (32,000), untied head, sequence 2048,
  SiLU. The paper's MLP is SwiGLU with d_ff = 2.75·d (three matrices); muonjax blocks
  have a two-matrix MLP, so ``d_ff = 1.5 · 2.75·d`` keeps the parameter count equal.
  The paper's counts exclude the unembedding matrix: ``hyperloop_param_count − d·V``
  gives 135.7M, 579.7M and 990.8M. ``fields`` override.
  """
  if size not in PAPER_SIZES:
    raise ValueError(f"size must be one of {sorted(PAPER_SIZES)}; got {size!r}")
  d, begin, middle, end = PAPER_SIZES[size]
  base = dict(vocab_size=32000, d_model=d, n_layers=middle, n_heads=16,
              d_ff=3 * int(2.75 * d) // 2, max_seq_len=2048, n_begin=begin, n_end=end,
              n_loops=3, n_streams=4, activation="silu", tie_embeddings=False)
  return HyperloopConfig(**{**base, **fields})
