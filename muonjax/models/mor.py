"""Mixture-of-Recursions (docs/models.md#mixture-of-recursions): a Middle-Cycle recursive transformer with per-token depth.

Bae, Kim, Bayat, …, Courville, Yun, "Mixture-of-Recursions: Learning Dynamic Recursive
Depths for Adaptive Token-Level Computation", arXiv 2507.10524 (NeurIPS 2025); official code
https://github.com/raymin0223/mixture_of_recursions (``model/mor_model/expert_choice_router.py``,
``token_choice_router.py``, ``util.py``; published configs ``conf/pretrain/*smollm-360m*``).

**Middle-Cycle sharing** (paper section 2.1, Fig. 4b; docs/models.md#mixture-of-recursions). The first layer Φ_0 and the
last layer Φ_{L−1} are unique; one shared block of ``n_layers`` (= (L−2)/N_r) layers
Φ′ is cycled ``n_recursions`` = N_r times, for an effective depth 2 + n_layers·N_r::

    h = Φ_0(E[tokens]);  h ← Recursion_r(h), r = 1..N_r;  logits = head(RMSNorm(Φ_{L−1}(h)))

**Recursion step with routing** (paper section 2.2.1, Eq. for expert- and token-choice)::

    Δ_r   = Φ′(H^r; attention keys restricted to m_r) − H^r     (increment of the shared stack)
    H^{r+1} = H^r + m_r ⊙ g_r ⊙ Δ_r                              (m_r ∈ {0, 1} per token)

* ``router="expert"`` (expert-choice; each recursion step is an "expert" with its own
  router θ_r): logits s_r = θ_rᵀ H^r, gate g_r = α·G(s_r), G = sigmoid (paper's best)
  or tanh. Training: m_r = top-k_r of s_r over the sequence among the candidates
  m_{r−1} (hierarchical filtering, m_0 = all tokens), capacity k_r = ⌊c_r·T⌋ (at
  least 1) with the paper's schedule c_r = (N_r − r + 1)/N_r by default (computed
  exactly as ⌊(N_r − r + 1)·T / N_r⌋). Auxiliary loss (the code's
  ``sampling="aux_loss"``): BCE-with-logits of s_r against m_r, averaged over the
  candidates of step r and summed over steps; optional z-loss mean(s_r²) over the
  candidates, summed over steps.
* ``router="token"`` (token-choice): one router on H^1 gives N_r logits, p = α·softmax
  (or α·sigmoid), i = argmax p; the token runs recursions 1..i: m_r = [r ≤ i], with
  gate g = p_i at its last recursion r = i and 1 before. Balancing loss
  Σ_j P̄_j·f_j (P̄_j mean probability, f_j = N_r × the share of tokens choosing j),
  z-loss mean(logsumexp(s)²), as in the code.
* ``router=None``: the plain Recursive Middle-Cycle baseline (Table 3 row 2): m = g = 1.

**Routing by masking (static shapes).** The paper gathers the k_r selected tokens,
runs Φ′ on that shorter sequence (causal mask and RoPE angles gathered with them)
and scatters back. Here Φ′ runs on all T tokens and the update is masked with
``where``; the attention at step r lets every token attend only to the tokens
selected at r (plus itself), which is the gather formulation exactly for the
selected tokens (original positions for RoPE, attention among the routed tokens:
the paper's "recursion-wise caching" semantics, Table 2). Unselected tokens keep
their hidden state. Shapes stay static under ``jit``/``scan``; the price is that
**no FLOPs are saved** (every recursion costs a full pass, on CPU and elsewhere).
Recursive KV sharing is not implemented.

**Causality.** Expert-choice top-k over the sequence is **not causal**: in training
mode whether token t is processed depends on the router scores of later tokens.
Evaluation (``train=False``, the default when no ``key`` is given) replaces the top-k
by the per-token decision of the BCE-trained router, m_r = m_{r−1} ∧ [σ(s_r) > 0.5]
(i.e. s_r > 0; docs/models.md#static-shape-routing, the paper's auxiliary-loss remedy), which depends only on
the token's own state, so eval is causal and autoregressive decoding is possible;
capacities then hold only approximately (as well as the router learned them).
Token-choice decides per token from H^1 and is causal in both modes.

**Deviation from the official code** (documented choice, docs/models.md#static-shape-routing). The code adds
g·Block(H) where Block includes its skip connection, i.e. H + g·(H + Δ), and
token-choice exits with H^1 + g·Block(H^i). muonjax uses H + m·g·Δ throughout
(docs/models.md#static-shape-routing): the gate scales only what the recursion adds, and
with ``gating="unweighted"`` (g = 1, the code's non-"weighted" gating) and capacity
1 at every depth MoR equals the plain Middle-Cycle model exactly.

**Loop.** The recursions are an ``nnx.scan`` (:func:`scan_shared`) with Φ′ broadcast
(``in_axes=None``; its gradient is the sum over recursions), the stacked per-step
routers (N_r, …) and capacities scanned (``in_axes=0``), and one dropout key per
recursion (docs/models.md#dropout-keys-in-shared-loops). ``unroll=True`` runs the same steps in Python.

**Parameters and routing.** Attention/MLP kernels of Φ_0, Φ_{L−1} (2-D) and Φ′
(stacked ``(n_layers, in, out)``) → Muon per matrix; ``router/...`` (per-step
``(N_r, d, 1)`` expert routers, or ``(d, N_r)`` token router; MLP routers
d → 2d → out with GELU as the code's ``MLPRouter``), embeddings, head and norm
scales → AdamW (``router_to_muon=True`` moves routers to Muon). Parameter count
(:func:`mor_param_count`) = V·d + (2 + n_layers)·block + d [+ d·V untied] + R with
R = N_r·d (expert, linear), N_r·(2d² + 2d) (expert, mlp), d·N_r (token, linear),
2d² + 2d·N_r (token, mlp), 0 (None): independent of N_r except through R.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import Block, block_param_count, run_stacked, stacked_blocks
from muonjax.models.losses import cross_entropy

ROUTERS = ("expert", "token", None)
ROUTER_FUNCS = {"expert": ("sigmoid", "tanh"), "token": ("softmax", "sigmoid")}
ROUTER_TYPES = ("linear", "mlp")
GATINGS = ("weighted", "unweighted")
ROUTER_INIT_STD = 0.02  # the code's ``initializer_range`` for router weights


@dataclasses.dataclass(frozen=True)
class MoRConfig(checks.TransformerConfig):
  """Config of :class:`MoRTransformer`; :func:`mor_paper_config` gives the published sizes."""

  n_layers: int = 2                  # distinct layers of the shared middle block Φ′
  n_recursions: int = 3              # N_r
  router: Optional[str] = "expert"   # "expert" | "token" | None (plain Middle-Cycle)
  router_type: str = "linear"        # "linear" | "mlp"
  router_func: str = "sigmoid"       # expert: sigmoid | tanh; token: softmax | sigmoid
  router_alpha: float = 0.1          # α in g = α·G(s)
  gating: str = "weighted"           # "weighted" (g = α·G(s)) | "unweighted" (g = 1)
  capacities: Optional[tuple] = None  # expert: c_r per step; None → (N_r − r + 1)/N_r
  aux_loss_weight: float = 0.001     # expert: BCE coefficient; token: balancing coefficient
  z_loss_weight: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    checks.positive_int(self, "n_recursions")
    cls = type(self).__name__
    if self.router not in ROUTERS:
      raise ValueError(f"{cls}.router must be one of {ROUTERS}; got {self.router!r}")
    if self.router_type not in ROUTER_TYPES:
      raise ValueError(f"{cls}.router_type must be one of {ROUTER_TYPES}; "
                       f"got {self.router_type!r}")
    funcs = (ROUTER_FUNCS[self.router] if self.router is not None
             else tuple(sorted({f for v in ROUTER_FUNCS.values() for f in v})))
    if self.router_func not in funcs:
      raise ValueError(f"{cls}.router_func must be one of {funcs} for router="
                       f"{self.router!r}; got {self.router_func!r}")
    if self.gating not in GATINGS:
      raise ValueError(f"{cls}.gating must be one of {GATINGS}; got {self.gating!r}")
    for name, low in (("router_alpha", 0.0), ("aux_loss_weight", None), ("z_loss_weight", None)):
      value = getattr(self, name)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value) or value < 0 or (low is not None and value <= low)):
        raise ValueError(f"{cls}.{name} must be a finite float "
                         f"{'> 0' if low is not None else '>= 0'}; got {value!r}")
    if isinstance(self.capacities, list):  # from JSON/CLI; a tuple keeps the config hashable
      object.__setattr__(self, "capacities", tuple(self.capacities))
    if self.capacities is not None:
      if self.router != "expert":
        raise ValueError(f"{cls}.capacities apply to router='expert' only; "
                         f"got router={self.router!r}")
      caps = self.capacities
      if (not isinstance(caps, tuple) or len(caps) != self.n_recursions
          or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in caps)
          or any(not 0 < c <= 1 for c in caps)
          or any(b > a for a, b in zip(caps, caps[1:]))):
        raise ValueError(f"{cls}.capacities must be a tuple of n_recursions="
                         f"{self.n_recursions} non-increasing floats in (0, 1]; got {caps!r}")

  @property
  def effective_depth(self) -> int:
    """Unrolled depth L = 2 + n_layers·n_recursions (first and last layers unique)."""
    return 2 + self.n_layers * self.n_recursions


def expert_capacities(config: MoRConfig, seq_len: int) -> tuple[int, ...]:
  """Tokens k_r selected per sequence at each recursion step (expert-choice, training mode).

  ``capacities=None``: k_r = max(1, ⌊(N_r − r + 1)·T / N_r⌋) (exact integer arithmetic);
  otherwise k_r = max(1, ⌊c_r·T⌋) as the code's ``max(1, int(capacity_factor·seq_len))``
  (with 1e-6 slack so that e.g. c = 2/3, T = 15 gives 10).
  """
  n = config.n_recursions
  if config.capacities is None:
    return tuple(max(1, ((n - r) * seq_len) // n) for r in range(n))
  return tuple(max(1, int(math.floor(c * seq_len + 1e-6))) for c in config.capacities)


class Router(nnx.Module):
  """Linear (d → out) or MLP (d → 2d → GELU → out) router, bias-free, weights N(0, 0.02).

  ``stack=n`` gives every weight a leading axis of n (one router per recursion step).
  """

  def __init__(self, d_model: int, out: int, *, kind: str = "linear",
               stack: Optional[int] = None, rngs: nnx.Rngs):
    init = nnx.initializers.normal(ROUTER_INIT_STD)
    lead = () if stack is None else (stack,)
    self.kind = kind
    if kind == "linear":
      self.kernel = nnx.Param(init(rngs.params(), lead + (d_model, out)))
    else:
      self.w_in = nnx.Param(init(rngs.params(), lead + (d_model, 2 * d_model)))
      self.w_out = nnx.Param(init(rngs.params(), lead + (2 * d_model, out)))

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "linear":
      return x @ self.kernel[...]
    return jax.nn.gelu(x @ self.w_in[...], approximate=False) @ self.w_out[...]


def router_param_count(config: MoRConfig) -> int:
  """R in the parameter-count formula (module doc)."""
  c, d, n = config, config.d_model, config.n_recursions
  if c.router is None:
    return 0
  out, stack = (1, n) if c.router == "expert" else (n, 1)
  per = d * out if c.router_type == "linear" else 2 * d * d + 2 * d * out
  return stack * per


# ----------------------------------------------------------------------------- loop


def _index(tree: Any, i: int) -> Any:
  """Slice ``i`` of the leading axis of every array in ``tree`` (modules via split/merge)."""
  if isinstance(tree, nnx.Module):
    graphdef, state = nnx.split(tree)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
  if isinstance(tree, tuple):
    return tuple(_index(t, i) for t in tree)
  return jax.tree.map(lambda a: a[i], tree)


def scan_shared(step: Callable, shared: nnx.Module, per_loop: Any, carry: Any, *,
                length: int, key: Optional[jax.Array] = None, unroll: bool = False):
  """Runs ``carry, out_i = step(shared, per_loop[i], carry, key_i)`` for ``i < length``.

  Args:
    step: a plain function (not a bound method, docs/models.md#bound-methods).
    shared: the weight-shared module, broadcast to every iteration (``in_axes=None``).
    per_loop: a tuple of per-iteration things with a leading axis ``length``: stacked
      modules (routers, hyper-connection parameters) and arrays (capacities, indices).
    carry: the loop state.
    key: dropout key; iteration i gets ``jax.random.split(key, length)[i]``; ``None``: none.
    unroll: a Python loop instead of ``nnx.scan`` (reference; same result).

  Returns:
    ``(final carry, outputs stacked on a leading axis of length)``.
  """
  keys = None if key is None else jax.random.split(key, length)
  if unroll:
    outs = []
    for i in range(length):
      carry, out = step(shared, _index(per_loop, i), carry, None if keys is None else keys[i])
      outs.append(out)
    return carry, jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return nnx.scan(step, in_axes=(None, 0, nnx.Carry, 0), out_axes=(nnx.Carry, 0),
                  length=length)(shared, per_loop, carry, keys)


def _top_k_mask(scores: jax.Array, candidates: jax.Array, k: jax.Array) -> jax.Array:
  """The k highest ``scores`` per row among ``candidates`` (exactly k if k ≤ #candidates).

  Rank-based, so k may be traced (scanned per step); ties go to the earlier position.
  """
  scores = jnp.where(candidates, scores, -jnp.inf)
  order = jnp.argsort(scores, axis=-1, descending=True, stable=True)
  return jnp.argsort(order, axis=-1) < k


def _masked_update(h: jax.Array, out: jax.Array, active: jax.Array, gate: jax.Array):
  return jnp.where(active[..., None], h + gate[..., None] * (out - h), h)


def _run_core(core, h, mask, key, *, remat):
  return run_stacked(core, h, key=key, remat=remat, mask=mask)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


# ----------------------------------------------------------------------------- model


class MoRTransformer(nnx.Module):
  """Embedding → Φ_0 → N_r routed recursions of the shared block Φ′ → Φ_{L−1} → RMSNorm → head.

  ``model(tokens)`` returns logits (B, T, V). ``key=`` turns dropout on; ``train=``
  picks the routing mode (default: ``key is not None``): top-k (training, not causal
  for expert-choice) or the per-token router decision (evaluation, causal).
  ``unroll=True`` runs the recursions in Python (reference for the scan).
  """

  def __init__(self, config: MoRConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    self.embed = nnx.Embed(c.vocab_size, c.d_model,
                           embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    block = lambda: Block(c.d_model, c.n_heads, c.d_ff, activation=c.activation,
                          dropout=c.dropout, rngs=rngs)
    self.first = block()
    self.core = stacked_blocks(c.n_layers, c.d_model, c.n_heads, c.d_ff,
                               activation=c.activation, dropout=c.dropout, rngs=rngs)
    self.last = block()
    self.norm = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs))
    # Created last: the other parameters are the same as those of router=None at the same seed.
    if c.router == "expert":
      self.router = Router(c.d_model, 1, kind=c.router_type, stack=c.n_recursions, rngs=rngs)
    elif c.router == "token":
      self.router = Router(c.d_model, c.n_recursions, kind=c.router_type, rngs=rngs)
    else:
      self.router = None

  # --- recursions

  def _recurse(self, h, *, key, train, unroll):
    c = self.config
    n = c.n_recursions
    weighted = c.gating == "weighted"
    run_core = functools.partial(_run_core, remat=c.remat)
    if c.router is None:
      def step(core, _, carry, key):
        h = run_core(core, carry, None, key)
        return h, jnp.ones(h.shape[:2], bool)

      h, selected = scan_shared(step, self.core, (), h, length=n, key=key, unroll=unroll)
      zero = jnp.zeros((), jnp.float32)
      return h, {"selected": selected, "router_aux": zero, "router_z": zero}

    if c.router == "expert":
      gate_fn = jax.nn.sigmoid if c.router_func == "sigmoid" else jnp.tanh
      caps = jnp.asarray(expert_capacities(c, h.shape[1]), jnp.int32)

      def step(core, per_step, carry, key):
        router, k = per_step
        h, candidates = carry
        logits = router(h)[..., 0].astype(jnp.float32)              # s_r: (B, T)
        if train:
          selected = _top_k_mask(logits, candidates, k)
        else:
          selected = candidates & (logits > 0)                       # σ(s_r) > 0.5
        gate = c.router_alpha * gate_fn(logits) if weighted else jnp.ones_like(logits)
        out = run_core(core, h, selected, key)
        h = _masked_update(h, out, selected, gate.astype(h.dtype))
        bce = optax.sigmoid_binary_cross_entropy(logits, selected.astype(jnp.float32))
        return (h, selected), {"selected": selected, "bce": _masked_mean(bce, candidates),
                               "z": _masked_mean(logits ** 2, candidates)}

      carry = (h, jnp.ones(h.shape[:2], bool))
      (h, _), outs = scan_shared(step, self.core, (self.router, caps), carry, length=n,
                                 key=key, unroll=unroll)
      return h, {"selected": outs["selected"], "router_aux": jnp.sum(outs["bce"]),
                 "router_z": jnp.sum(outs["z"])}

    # token-choice: one decision from H^1
    logits = self.router(h).astype(jnp.float32)                     # (B, T, N_r)
    probs = c.router_alpha * (jax.nn.softmax(logits, axis=-1) if c.router_func == "softmax"
                              else jax.nn.sigmoid(logits))
    choice = jnp.argmax(probs, axis=-1)                               # i − 1 ∈ [0, N_r)
    g = jnp.take_along_axis(probs, choice[..., None], axis=-1)[..., 0]
    g = g if weighted else jnp.ones_like(g)

    def step(core, per_step, carry, key):
      (r,), (h, choice, g) = per_step, carry
      active = choice >= r
      gate = jnp.where(choice == r, g, 1.0).astype(h.dtype)
      h = _masked_update(h, run_core(core, h, active, key), active, gate)
      return (h, choice, g), active

    (h, _, _), selected = scan_shared(step, self.core, (jnp.arange(n),), (h, choice, g),
                                      length=n, key=key, unroll=unroll)
    share = jnp.mean(jax.nn.one_hot(choice, n), axis=(0, 1))
    balance = jnp.sum(jnp.mean(probs, axis=(0, 1)) * n * share)
    z = jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2)
    return h, {"selected": selected, "router_aux": balance, "router_z": z}

  # --- public API

  def forward_with_aux(self, tokens: jax.Array, *, key: Optional[jax.Array] = None,
                       train: Optional[bool] = None, unroll: bool = False):
    """``(logits, aux)``; aux: ``selected`` (N_r, B, T) bool (m_r of every step),
    ``router_aux`` (BCE or balancing loss, unweighted) and ``router_z`` (z-loss, unweighted)."""
    if tokens.shape[-1] > self.config.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                       f"max_seq_len={self.config.max_seq_len}")
    train = key is not None if train is None else train
    k_first, k_rec, k_last = (None,) * 3 if key is None else tuple(jax.random.split(key, 3))
    h = self.first(self.embed(tokens), key=k_first)
    h, aux = self._recurse(h, key=k_rec, train=train, unroll=unroll)
    h = self.norm(self.last(h, key=k_last))
    logits = self.embed.attend(h) if self.lm_head is None else self.lm_head(h)
    return logits, aux

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None,
               train: Optional[bool] = None, unroll: bool = False) -> jax.Array:
    return self.forward_with_aux(tokens, key=key, train=train, unroll=unroll)[0]

  def training_loss(self, inputs: jax.Array, targets: jax.Array, *,
                    key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """``ce + aux_loss_weight·router_aux + z_loss_weight·router_z`` with training-mode routing.

    Metrics ``{"ce", "router_aux", "router_z"}`` hold the unweighted terms.
    """
    logits, aux = self.forward_with_aux(inputs, key=key, train=True)
    ce = cross_entropy(logits, targets)
    c = self.config
    loss = ce + c.aux_loss_weight * aux["router_aux"] + c.z_loss_weight * aux["router_z"]
    return loss, {"ce": ce, "router_aux": aux["router_aux"], "router_z": aux["router_z"]}


def mor_param_count(config: MoRConfig) -> int:
  """Closed-form parameter count of ``MoRTransformer(config)`` (formula in the module doc)."""
  c = config
  head = 0 if c.tie_embeddings else c.d_model * c.vocab_size
  return (c.vocab_size * c.d_model + (2 + c.n_layers) * block_param_count(c.d_model, c.d_ff)
          + c.d_model + head + router_param_count(c))


def mor_paper_config(n_recursions: int = 3, router: Optional[str] = "expert",
                     **fields) -> MoRConfig:
  """The paper's Table 3 models (SmolLM-360M shape, 32 unrolled layers, Middle-Cycle).

  d 960, 15 heads, vocabulary 49,152, tied embeddings, sequence 2048; shared block
  (32 − 2) // N_r layers. Published router settings (official ``conf/pretrain``):
  expert — linear router, sigmoid, α 0.1, BCE aux 0.001; token — linear router,
  softmax, α 1.0, balancing 0.1, z-loss 1e-5. SmolLM uses GQA (5 KV heads) and a
  SwiGLU MLP of 2560; muonjax blocks are MHA with a two-matrix MLP, so ``d_ff=3200``
  is chosen to match the per-layer parameter count exactly (9,832,320), which
  reproduces the non-embedding counts of Table 3 (167M at N_r = 2, 118M at N_r = 3,
  plus routers). ``fields`` override.
  """
  base = dict(vocab_size=49152, d_model=960, n_layers=30 // n_recursions, n_heads=15,
              d_ff=3200, max_seq_len=2048, n_recursions=n_recursions, router=router,
              activation="silu", tie_embeddings=True)
  if router == "token":
    base.update(router_func="softmax", router_alpha=1.0, aux_loss_weight=0.1,
                z_loss_weight=1e-5)
  return MoRConfig(**{**base, **fields})
