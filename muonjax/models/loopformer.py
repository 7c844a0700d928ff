"""LoopFormer (docs/models.md#loopformer): an elastic-depth looped transformer conditioned on its trajectory.

Jeddi, Ciccone, Taati, "LoopFormer", arXiv 2602.11451 (ICLR 2026); official code
https://github.com/armenjeddi/loopformer (``models/loopformer.py``, ``train.py``,
``utils.py``). Equations followed (docs/models.md#loopformer, #trajectories-and-loss)::

    x = Dropout(wte[tokens] + wpe[positions])
    t_0 = 0
    for i = 1..S  (trajectory Δ_1..Δ_S, Σ Δ_i = 1):
        c_i = φ_t(t_{i−1}) + φ_Δ(Δ_i)        # two DiT timestep embedders; t, Δ raw in [0, 1]
        for each of the k blocks (shared by every iteration):
            (g_msa, g_mlp, γ_msa, γ_mlp) = Linear_{d→4d, bias}(SiLU(c_i))
            x ← x + g_msa ⊙ MHSA(RMSNorm_noaffine(x) ⊙ (1 + γ_msa))
            x ← x + g_mlp ⊙ MLP (RMSNorm_noaffine(x) ⊙ (1 + γ_mlp))
        t_i = t_{i−1} + Δ_i
    x = norm_f(x);  logits = x · wteᵀ                      # tied head (``tie_embeddings``)

    φ(s) = Linear_{d→d}(SiLU(Linear_{256→d}([cos(s·f), sin(s·f)]))),  f_j = exp(−ln(10⁴)·j/128)

The attention has no RoPE (positions come from ``wpe``); the MLP is
``Linear(d→d_ff) → GELU → Linear(→d)``; attention and MLP have no biases.
Two small differences from the PyTorch code: ``activation="gelu"`` is
``jax.nn.gelu`` (tanh approximation; PyTorch's ``nn.GELU`` is the erf form), and
the RMSNorm epsilon is flax's 1e-6 (PyTorch's default is the dtype's machine
epsilon).

**Shared vs per-loop.** The whole k-block stack and both embedders are shared
(one set of weights, gradient summed over iterations and over both training
trajectories); only the conditioning inputs (t_{i−1}, Δ_i) and the dropout keys
are per-loop. The loop is an ``nnx.scan`` with the core broadcast
(``in_axes=None``) and (t, Δ, active, key) scanned (docs/models.md#weight-shared-loops, #dropout-keys-in-shared-loops
(b)); ``unroll=True`` runs the same steps in Python. The parameter count does
not depend on the number of loops.

**Elastic depth.** A trajectory is data: ``model(tokens, steps=[0.5, 0.25, 0.25])``
or ``model(tokens, n_loops=M)`` (uniform 1/M) runs the same weights with any
budget. A concrete trajectory (list, NumPy) is validated (Δ ≥ 0, Σ Δ = 1) and
baked into the trace; one passed as an argument of a jitted function is traced,
compiles once per *length*, and is not validated. A step Δ = 0 is padding: the
stack is skipped there (``nnx.cond`` on traced steps; dropped from concrete
ones), so trajectories padded to a fixed length compile once (docs/models.md#variable-loop-counts).

**Training objective** (:meth:`LoopFormer.training_loss`, docs/models.md#trajectories-and-loss)::

    loss = CE(full) + short_weight·CE(short) + consistency_weight·MSE(stop_grad(x_full), x_short)

with the full trajectory [1/L]·L, a short trajectory drawn by
:func:`sample_short_trajectory` (the reference sampler), x the hidden state after
``norm_f`` and the MSE a mean over all elements.

**Initialization** (GPT-2 pass of the official code): every linear weight and
both embeddings N(0, 0.02), biases 0, residual output projections
(``attn.out``, ``mlp.down``) N(0, 0.02/√(2k)). ``adaln_init="reference"`` keeps
the adaLN projection at N(0, 0.02) as the released code ends up doing (its
zero-init is overwritten by that pass); ``"zero"`` is true adaLN-Zero: every
gate starts at 0, every block is the identity and a fresh model is
``head(norm_f(wte + wpe))`` whatever the trajectory. ``"open"`` (a control, not in
the paper) starts the gates at 1 (the adaLN bias of the two gate chunks is 1,
the projection N(0, 0.02)): every block starts as a plain pre-norm residual
block, so a stalled run cannot be blamed on closed gates.

**Routing.** Attention and MLP kernels (stacked ``(k, in, out)``) → Muon per
matrix; embeddings ``wte``/``wpe``, the untied ``lm_head``, ``norm_f`` and all
biases → AdamW. The conditioning path (adaLN projections and the two timestep
MLPs, i.e. everything that produces the gates and scales) carries ``muon=``
metadata: AdamW by default, because its inputs are a handful of (t, Δ) values
per step (its gradient has rank ≤ number of loops) and it acts as a
gate/scale table rather than a hidden map; ``conditioning_to_muon=True`` sends
those kernels to Muon as docs/models.md#routing-of-model-parameters lists them as an option.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import MLP, CausalSelfAttention, dense
from muonjax.models.losses import cross_entropy

ADALN_INITS = ("reference", "zero", "open")
INIT_STD = 0.02
StepsLike = Union[Sequence[float], np.ndarray, jax.Array]


@dataclasses.dataclass(frozen=True)
class LoopFormerConfig:
  vocab_size: int = 256
  d_model: int = 128
  n_layers: int = 3            # k: distinct blocks in the shared stack
  n_heads: int = 4
  d_ff: int = 512
  max_seq_len: int = 256       # rows of the learned position table wpe
  n_loops: int = 8             # L = max_model_loops: full trajectory [1/L]·L, short lengths 1..L−1
  dropout: float = 0.0
  activation: str = "gelu"
  remat: bool = False
  tie_embeddings: bool = True
  adaln_init: str = "reference"
  freq_dim: int = 256          # sinusoidal features of each timestep embedder
  short_weight: float = 0.1
  consistency_weight: float = 0.1
  conditioning_to_muon: bool = False

  def __post_init__(self):
    checks.check_transformer(self)
    checks.positive_int(self, "n_loops")
    checks.positive_int(self, "freq_dim")
    cls = type(self).__name__
    if self.n_loops < 2:
      raise ValueError(f"{cls}.n_loops must be >= 2 (short trajectories have 1..n_loops-1 "
                       f"steps); got {self.n_loops}")
    if self.freq_dim % 2:
      raise ValueError(f"{cls}.freq_dim must be even (cos and sin halves); got {self.freq_dim}")
    if self.adaln_init not in ADALN_INITS:
      raise ValueError(f"{cls}.adaln_init must be one of {ADALN_INITS}; got {self.adaln_init!r}")
    for name in ("short_weight", "consistency_weight"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not math.isfinite(value) or value < 0:
        raise ValueError(f"{cls}.{name} must be a finite float >= 0; got {value!r}")
    if not isinstance(self.conditioning_to_muon, bool):
      raise ValueError(f"{cls}.conditioning_to_muon must be a bool; "
                       f"got {self.conditioning_to_muon!r}")


# Model 3⊗8 of the paper (docs/models.md#published-configuration): d = 2048, 32 heads, d_ff 5120, GPT-2 vocab padded to 50304.
LOOPFORMER_3X8 = LoopFormerConfig(vocab_size=50304, d_model=2048, n_layers=3, n_heads=32,
                                  d_ff=5120, max_seq_len=1024, n_loops=8)


# ----------------------------------------------------------------------------- layers


def _normal_(variable: nnx.Variable, rngs: nnx.Rngs, std: float) -> None:
  if std:
    variable.set_value(std * jax.random.normal(rngs.params(), variable.shape, variable.dtype))
  else:
    variable.set_value(jnp.zeros(variable.shape, variable.dtype))


class Affine(nnx.Module):
  """``dense(n_in, n_out)`` plus a zero bias; kernel N(0, std), zeros if ``std == 0``, ``dense``'s
  init if ``std is None`` (the owner initializes it).

  ``muon`` becomes the kernel's routing metadata (``None`` → AdamW, ``True`` → Muon).
  """

  def __init__(self, n_in: int, n_out: int, *, std: Optional[float], muon: Optional[bool],
               rngs: nnx.Rngs):
    self.linear = dense(n_in, n_out, rngs=rngs)
    if std is not None:
      _normal_(self.linear.kernel, rngs, std)
    self.linear.kernel.set_metadata(muon=muon)
    self.bias = nnx.Param(jnp.zeros((n_out,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x) + self.bias[...]


def timestep_features(s: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """DiT sinusoidal features [cos(s·f), sin(s·f)], f_j = max_period^(−j/(dim/2)); s fed raw."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(s, jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
  """φ(s) = Linear(SiLU(Linear(features(s)))), d-dimensional; biases on both layers."""

  def __init__(self, d_model: int, freq_dim: int, *, muon: Optional[bool], rngs: nnx.Rngs):
    self.freq_dim = freq_dim
    self.fc1 = Affine(freq_dim, d_model, std=INIT_STD, muon=muon, rngs=rngs)
    self.fc2 = Affine(d_model, d_model, std=INIT_STD, muon=muon, rngs=rngs)

  def __call__(self, s: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.silu(self.fc1(timestep_features(s, self.freq_dim))))


class LoopFormerBlock(nnx.Module):
  """Pre-norm block with adaLN scale and gate (no shift), conditioned on c ∈ R^d."""

  def __init__(self, config: LoopFormerConfig, *, rngs: nnx.Rngs):
    c = config
    self.attn_norm = nnx.RMSNorm(c.d_model, use_scale=False, rngs=rngs)
    self.attn = CausalSelfAttention(c.d_model, c.n_heads, dropout=c.dropout, use_rope=False,
                                    rngs=rngs)
    self.mlp_norm = nnx.RMSNorm(c.d_model, use_scale=False, rngs=rngs)
    self.mlp = MLP(c.d_model, c.d_ff, activation=c.activation, dropout=c.dropout, rngs=rngs)
    self.adaln = Affine(c.d_model, 4 * c.d_model, std=None,
                        muon=True if c.conditioning_to_muon else None, rngs=rngs)

  def modulation(self, cond: jax.Array):
    """(g_msa, g_mlp, γ_msa, γ_mlp), each (..., d), from the conditioning vector."""
    return tuple(jnp.split(self.adaln(jax.nn.silu(cond)), 4, axis=-1))

  def __call__(self, x: jax.Array, cond: jax.Array, *,
               key: Optional[jax.Array] = None) -> jax.Array:
    g_msa, g_mlp, s_msa, s_mlp = self.modulation(cond)
    attn_key, mlp_key = (None, None) if key is None else tuple(jax.random.split(key, 2))
    x = x + g_msa * self.attn(self.attn_norm(x) * (1 + s_msa), key=attn_key)
    return x + g_mlp * self.mlp(self.mlp_norm(x) * (1 + s_mlp), key=mlp_key)


def _apply_block(block: LoopFormerBlock, x: jax.Array, cond: jax.Array,
                 key: Optional[jax.Array]) -> jax.Array:
  return block(x, cond, key=key)


class LoopFormerCore(nnx.Module):
  """One loop iteration: c = φ_t(t) + φ_Δ(Δ), then the k stacked blocks (kernels (k, in, out))."""

  def __init__(self, config: LoopFormerConfig, *, rngs: nnx.Rngs):
    c = config
    muon = True if c.conditioning_to_muon else None
    self.n_layers = c.n_layers
    self.remat = c.remat
    self.time_embedder = TimestepEmbedder(c.d_model, c.freq_dim, muon=muon, rngs=rngs)
    self.step_embedder = TimestepEmbedder(c.d_model, c.freq_dim, muon=muon, rngs=rngs)

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> LoopFormerBlock:
      return LoopFormerBlock(c, rngs=rngs)

    self.blocks = make(rngs.split(c.n_layers))
    # Reference init on the stacked (k, in, out) kernels (outside the vmap: cheaper to trace).
    b = self.blocks
    for kernel in (b.attn.query.kernel, b.attn.key.kernel, b.attn.value.kernel, b.mlp.up.kernel):
      _normal_(kernel, rngs, INIT_STD)
    for kernel in (b.attn.out.kernel, b.mlp.down.kernel):
      _normal_(kernel, rngs, INIT_STD / math.sqrt(2 * c.n_layers))
    _normal_(b.adaln.linear.kernel, rngs, 0.0 if c.adaln_init == "zero" else INIT_STD)
    if c.adaln_init == "open":  # (g_msa, g_mlp, γ_msa, γ_mlp): the gates start at 1
      d = c.d_model
      b.adaln.bias.set_value(b.adaln.bias[...].at[..., :2 * d].set(1.0))

  def condition(self, t: jax.Array, dt: jax.Array) -> jax.Array:
    """c = φ_t(t) + φ_Δ(Δ) ∈ R^d (t, Δ scalars, shared by the whole batch)."""
    return self.time_embedder(t) + self.step_embedder(dt)

  def __call__(self, x: jax.Array, t: jax.Array, dt: jax.Array,
               key: Optional[jax.Array] = None) -> jax.Array:
    cond = self.condition(t, dt)
    keys = None if key is None else jax.random.split(key, self.n_layers)
    body = nnx.remat(_apply_block) if self.remat else _apply_block
    return nnx.scan(body, in_axes=(0, nnx.Carry, None, 0), out_axes=nnx.Carry,
                    length=self.n_layers)(self.blocks, x, cond, keys)


# ----------------------------------------------------------------------------- loop


def _run_core(core, x, t, dt, key):
  return core(x, t, dt, key)


def _skip(core, x, t, dt, key):
  del core, t, dt, key
  return x


def _loop_step(core, x, t, dt, active, key):
  if active is None:
    return core(x, t, dt, key)
  return nnx.cond(active, _run_core, _skip, core, x, t, dt, key)


def _loop_step_with_state(core, x, t, dt, active, key):
  x = _loop_step(core, x, t, dt, active, key)
  return x, x


def run_trajectory(core: nnx.Module, x: jax.Array, t: jax.Array, dt: jax.Array, *,
                   active: Optional[jax.Array] = None, keys: Optional[jax.Array] = None,
                   unroll: bool = False, all_states: bool = False):
  """Runs ``x ← core(x, t[i], dt[i], keys[i])`` for ``i < len(dt)`` with one weight-shared ``core``.

  Args:
    core: called as ``core(x, t, dt, key)``; broadcast to every iteration (``in_axes=None``).
    x: initial state (the scan carry).
    t, dt: (S,) time before each step and step size (scanned, ``in_axes=0``).
    active: optional (S,) bool; where False the step is skipped (``nnx.cond``), x unchanged.
    keys: optional (S,) dropout keys, one per iteration (docs/models.md#dropout-keys-in-shared-loops).
    unroll: a Python loop instead of ``nnx.scan`` (reference; same result).
    all_states: also return the state after every iteration, stacked (S, ...).
  """
  if unroll:
    states = []
    for i in range(dt.shape[0]):
      x = _loop_step(core, x, t[i], dt[i], None if active is None else active[i],
                     None if keys is None else keys[i])
      states.append(x)
    return (x, jnp.stack(states)) if all_states else x
  body, out_axes = ((_loop_step_with_state, (nnx.Carry, 0)) if all_states
                    else (_loop_step, nnx.Carry))
  return nnx.scan(body, in_axes=(None, nnx.Carry, 0, 0, 0, 0), out_axes=out_axes,
                  length=dt.shape[0])(core, x, t, dt, active, keys)


# ----------------------------------------------------------------------------- trajectories


def uniform_trajectory(n: int) -> np.ndarray:
  """[1/n]·n: the full trajectory for n = L, the default inference schedule for budget n."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n_loops must be a positive int; got {n!r}")
  return np.full((n,), 1.0 / n, np.float32)


def default_short_trajectory(max_loops: int) -> np.ndarray:
  """The short trajectory used when no key is given: S = ⌊L/2⌋ steps, coarse first.

  L units of 1/L spread as evenly as possible over S steps, larger steps first
  (L = 8: [1/4]·4; L = 5: [3/5, 2/5]; L = 2: [1]). It is in the support of
  :func:`sample_short_trajectory`, and S = ⌊L/2⌋ is about the mean sampled length.
  """
  s = max(max_loops // 2, 1)
  units = np.array([max_loops // s + (i < max_loops % s) for i in range(s)], np.float32)
  return units / max_loops


def sample_short_trajectory(key: jax.Array, max_loops: int) -> tuple[jax.Array, jax.Array]:
  """The reference short-trajectory sampler (``utils.sample_short_trajectory``), jittable.

  Length S uniform on {1, …, L−1}; each of the first S−1 steps uniform on the
  multiples of 1/L that leave at least 1/L for each remaining step; the last step
  takes what is left, so Σ Δ = 1.

  Returns:
    ``(steps, S)``: steps (L−1,) float32, the trajectory followed by zeros
    (padding, skipped by the model), and S as an int32 scalar.
  """
  if max_loops < 2:
    raise ValueError(f"max_loops must be >= 2; got {max_loops}")
  n = max_loops - 1
  len_key, steps_key = jax.random.split(key)
  length = jax.random.randint(len_key, (), 1, max_loops)

  def step(remaining, inputs):
    i, k = inputs
    cap = remaining - (length - 1 - i)  # units this step may take, leaving 1 per later step
    drawn = jax.random.randint(k, (), 1, jnp.maximum(cap, 1) + 1)
    units = jnp.where(i < length - 1, drawn, jnp.where(i == length - 1, remaining, 0))
    return remaining - units, units

  _, units = jax.lax.scan(step, jnp.int32(max_loops),
                          (jnp.arange(n, dtype=jnp.int32), jax.random.split(steps_key, n)))
  return units.astype(jnp.float32) / max_loops, length


def _as_trajectory(steps: StepsLike) -> tuple[jax.Array, Optional[jax.Array]]:
  """(dt, active): concrete steps are validated and their zeros dropped; traced ones masked."""
  if isinstance(steps, jax.core.Tracer):
    dt = jnp.asarray(steps, jnp.float32)
    if dt.ndim != 1 or dt.shape[0] < 1:
      raise ValueError(f"steps must be a non-empty 1-D trajectory; got shape {dt.shape}")
    return dt, dt > 0
  dt = np.asarray(steps, np.float64)
  if dt.ndim != 1 or dt.shape[0] < 1:
    raise ValueError(f"steps must be a non-empty 1-D trajectory; got shape {dt.shape}")
  if not np.all(np.isfinite(dt)) or np.any(dt < 0):
    raise ValueError(f"steps must be finite and >= 0; got {dt.tolist()}")
  if abs(dt.sum() - 1.0) > 1e-5:
    raise ValueError(f"steps must sum to 1 (a trajectory from t=0 to t=1); got sum "
                     f"{dt.sum():.6g} for {dt.tolist()}")
  return jnp.asarray(dt[dt > 0], jnp.float32), None


# ----------------------------------------------------------------------------- model


class LoopFormer(nnx.Module):
  """wte + wpe → shared k-block stack run along a trajectory → norm_f → tied head; logits (B, T, V).

  ``model(tokens)`` runs the full trajectory [1/L]·L. ``steps=`` (any trajectory
  summing to 1; zeros are skipped) or ``n_loops=M`` (uniform 1/M) change the
  depth at call time. ``key=`` turns dropout on (a fresh key per loop and layer);
  ``unroll=True`` runs the loop in Python (reference for the scan).
  """

  def __init__(self, config: LoopFormerConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config
    init = nnx.initializers.normal(INIT_STD)
    self.wte = nnx.Embed(c.vocab_size, c.d_model, embedding_init=init, rngs=rngs)
    self.wpe = nnx.Embed(c.max_seq_len, c.d_model, embedding_init=init, rngs=rngs)
    self.drop = nnx.Dropout(c.dropout)
    self.core = LoopFormerCore(c, rngs=rngs)
    self.norm_f = nnx.RMSNorm(c.d_model, rngs=rngs)
    self.lm_head = (None if c.tie_embeddings else
                    nnx.Linear(c.d_model, c.vocab_size, use_bias=False, kernel_init=init,
                               rngs=rngs))

  def trajectory(self, steps: Optional[StepsLike] = None,
                 n_loops: Optional[int] = None) -> tuple[jax.Array, Optional[jax.Array]]:
    """(Δ, active) of a call: ``steps``, or uniform over ``n_loops``, or the full [1/L]·L."""
    if steps is not None and n_loops is not None:
      raise ValueError("give steps= or n_loops=, not both")
    if steps is None:
      return jnp.asarray(uniform_trajectory(self.config.n_loops if n_loops is None
                                            else n_loops)), None
    return _as_trajectory(steps)

  def hidden(self, tokens: jax.Array, *, steps: Optional[StepsLike] = None,
             n_loops: Optional[int] = None, key: Optional[jax.Array] = None,
             unroll: bool = False) -> jax.Array:
    """The hidden state after ``norm_f``, (B, T, d) (the x of the consistency term).

    Dropout keys: ``embed_key, loop_key = split(key)``; loop i of S uses
    ``split(loop_key, S)[i]``, split again over the k layers and then into
    (attention, MLP) keys, so every loop and layer draws fresh masks.
    """
    seq = tokens.shape[-1]
    if seq > self.config.max_seq_len:
      raise ValueError(f"sequence length {seq} exceeds max_seq_len={self.config.max_seq_len}")
    dt, active = self.trajectory(steps, n_loops)
    embed_key, loop_key = (None, None) if key is None else tuple(jax.random.split(key, 2))
    x = self.wte(tokens) + self.wpe.embedding[:seq]
    if embed_key is not None:
      x = self.drop(x, rngs=embed_key)
    t = jnp.concatenate([jnp.zeros((1,), dt.dtype), jnp.cumsum(dt)[:-1]])  # t_{i−1} = Σ_{j<i} Δ_j
    keys = None if loop_key is None else jax.random.split(loop_key, dt.shape[0])
    x = run_trajectory(self.core, x, t, dt, active=active, keys=keys, unroll=unroll)
    return self.norm_f(x)

  def logits(self, x: jax.Array) -> jax.Array:
    return self.wte.attend(x) if self.lm_head is None else self.lm_head(x)

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None,
               steps: Optional[StepsLike] = None, n_loops: Optional[int] = None,
               unroll: bool = False) -> jax.Array:
    return self.logits(self.hidden(tokens, steps=steps, n_loops=n_loops, key=key,
                                   unroll=unroll))

  def training_loss(self, inputs: jax.Array, targets: jax.Array, *,
                    key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
    """CE_full + w_s·CE_short + w_c·MSE(stop_grad(x_full), x_short) (docs/models.md#trajectories-and-loss).

    With ``key``: ``k_traj, k_full, k_short = jax.random.split(key, 3)``; the short
    trajectory is ``sample_short_trajectory(k_traj, L)`` (padded to L−1 steps, one
    compile for every length) and the two passes use dropout keys ``k_full`` and
    ``k_short``. With ``key=None``: no dropout and the fixed
    :func:`default_short_trajectory` (⌊L/2⌋ coarse-first steps), so the loss is
    deterministic.

    Returns:
      ``(loss, {"ce": CE_full, "ce_short": CE_short, "consistency": MSE,
      "short_loops": S})``.
    """
    c = self.config
    if key is None:
      short = default_short_trajectory(c.n_loops)
      n_short = jnp.float32(short.shape[0])
      full_key = short_key = None
    else:
      traj_key, full_key, short_key = jax.random.split(key, 3)
      short, n_short = sample_short_trajectory(traj_key, c.n_loops)
    x_full = self.hidden(inputs, key=full_key)
    x_short = self.hidden(inputs, steps=short, key=short_key)
    ce = cross_entropy(self.logits(x_full), targets)
    ce_short = cross_entropy(self.logits(x_short), targets)
    consistency = jnp.mean(jnp.square(jax.lax.stop_gradient(x_full).astype(jnp.float32)
                                      - x_short.astype(jnp.float32)))
    loss = ce + c.short_weight * ce_short + c.consistency_weight * consistency
    return loss, {"ce": ce, "ce_short": ce_short, "consistency": consistency,
                  "short_loops": jnp.asarray(n_short, jnp.float32)}


def loopformer_param_count(config: LoopFormerConfig) -> int:
  """Closed-form parameter count of ``LoopFormer(config)`` (independent of ``n_loops``)."""
  c = config
  d = c.d_model
  block = 4 * d * d + 2 * d * c.d_ff + (d * 4 * d + 4 * d)  # attention, MLP, adaLN; no norm params
  embedder = (c.freq_dim * d + d) + (d * d + d)
  head = 0 if c.tie_embeddings else d * c.vocab_size
  return (c.vocab_size * d + c.max_seq_len * d + c.n_layers * block + 2 * embedder + d + head)
