"""nGPT: the normalized transformer on the hypersphere (docs/models.md#ngpt).

Loshchilov, Hsieh, Sun, Ginsburg, "nGPT: Normalized Transformer with Representation
Learning on the Hypersphere", arXiv 2410.01131 (ICLR 2025); official code
https://github.com/NVIDIA/ngpt (``model.py``: ``Block.forward``, ``GPT.forward``).

With Norm(x) = x / ‖x‖₂ over the embedding axis, every hidden state h stays on the
unit sphere (docs/models.md#ngpt; the code's form, with |α|)::

    h₀ = Norm(E[tokens])
    h_A = Norm(ATTN(h));   h ← Norm(Norm(h) + |α_A| ⊙ (h_A − Norm(h)))
    h_M = Norm(MLP(h));    h ← Norm(Norm(h) + |α_M| ⊙ (h_M − Norm(h)))
    logits = s_z ⊙ (E_out h)

* ATTN: q, k, v = W_q h, W_k h, W_v h per head; RoPE on q, k; then q ← s_qk ⊙ Norm(q),
  k ← s_qk ⊙ Norm(k) (norm over head_dim, s_qk ∈ R^d viewed as (heads, head_dim));
  softmax scale √head_dim; output projection W_o.
* MLP (SwiGLU): u = s_u ⊙ W_u h, ν = s_ν ⊙ W_ν h · √d; output W_down(u ⊙ SiLU(ν)).
  (The official code also multiplies u by √d; MLP(h) is renormalized, so that
  factor changes neither the forward nor any gradient.)
* No norm layers (hence no norm scales), no weight tying, no dropout, no weight
  decay. ``h₀`` is normalized explicitly: a no-op when the embedding rows are unit
  vectors, and it keeps every hidden state on the sphere under any optimizer.
  :meth:`NGPT.hidden_states` returns h₀ and every layer's output.
* RoPE is muonjax's rotate-half form (``blocks.rope``); the official code rotates
  interleaved pairs with the same frequencies, which is the same model up to a fixed
  permutation of the head dimensions (of W_q, W_k columns and s_qk).

Scaled-parameter trick (docs/models.md#scaled-parameters): every learnable scale stores θ, initialized to
``s_scale``, and is used as s = θ·(s_init/s_scale); ``s_init``/``s_scale`` are kept
in the Param's metadata. α_A, α_M (d,): s_init ``alpha_init`` (0.05), s_scale 1/√d;
s_qk (d,): 1, 1/√d; s_u, s_ν (d_ff,): 1, 1; s_z (V,): 1, 1/√d. muonjax computes 1/√d
from ``d_model`` (the official config hard-codes 1/√1024).

Gated variant (``gated=True``): the "gated residual connections" of the nGPT
architecture study behind ``gated_ngpt`` (seed 002, hypothesis H3): a per-channel
gate g ∈ R^d per branch and layer, stored plainly and initialized to ``gate_init``
(0: σ(g) = 1/2), scales the eigen learning rate:
h ← Norm(Norm(h) + σ(g_A) ⊙ |α_A| ⊙ (h_A − Norm(h))), likewise for the MLP.

Weights on the sphere (docs/models.md#weights-on-the-sphere): every matrix and the embedding carry
``sphere_axis`` metadata, the axis their unit vectors are taken over (the d_model
axis), read by :func:`muonjax.sphere_axes`:

========================================  ====================  ===========
leaf                                      shape                 sphere_axis
========================================  ====================  ===========
``embed/embedding``                       (V, d)                1
``lm_head/kernel``                        (d, V)                0
``blocks/attn/{query,key,value}/kernel``  (L, d, d)             1
``blocks/attn/out/kernel``                (L, d, d)             2
``blocks/mlp/{up,gate}/kernel``           (L, d, d_ff)          1
``blocks/mlp/down/kernel``                (L, d_ff, d)          2
scales, gates                             (L, d), (L, d_ff), …  ``None``
========================================  ====================  ===========

A fresh model is already projected (matrices drawn from N(0, 1/√d), then
normalized, as nGPT does at init). After each optimizer step the weights must be
projected again: end the chain with :func:`sphere_projection` (any optimizer, e.g.
``optax.chain(mj.muon(0.02), sphere_projection(model))``; the trainer chains
:meth:`NGPT.optimizer_constraint`, that stage with the config's ``sphere_*`` fields), with
``mj.hypersphere(lr, axes=mj.sphere_axes(model))`` in place of the learning-rate
scaling, or call :func:`normalize_weights` after the update.

Routing (default ``mj.muon`` rules plus metadata): the hidden kernels (L, in, out)
→ Muon per matrix; embedding, head, s_z → AdamW by name/rank; the stacked scale
and gate vectors (L, d) carry ``muon=None`` → AdamW.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from muonjax.models import config as checks
from muonjax.models.blocks import CausalSelfAttention, causal_attention, dense, rope, run_stacked
from muonjax.nnx import sphere_axes
from muonjax.transforms.hypersphere import hypersphere
from muonjax.transforms.validation import check_choice, is_real

# Smallest norm divided by; keeps Norm(0) finite (nGPT's justnorm has no guard).
_NORM_FLOOR = 1e-12
# The sphere stage's settings (:func:`sphere_projection`), fields of :class:`NGPTConfig`.
SPHERE_UPDATES = ("project", "geodesic")
SPHERE_THETAS = ("lr", "norm")
# Which unit vectors take the geodesic move: all, or only the blocks' matrices (the
# embedding and head, trained by the AdamW branch of a Muon chain, are projected).
SPHERE_SCOPES = ("all", "blocks")


def unit(x: jax.Array, axis: int = -1) -> jax.Array:
  """``x / ‖x‖₂`` along ``axis``, computed in float32 (nGPT's ``justnorm``)."""
  x32 = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=axis, keepdims=True))
  return (x32 / jnp.maximum(norm, _NORM_FLOOR)).astype(x.dtype)


# ----------------------------------------------------------------------------- parameters


def scaled_param(shape: tuple[int, ...], s_init: float, s_scale: float) -> nnx.Param:
  """A learnable scale θ = ``s_scale`` (docs/models.md#scaled-parameters), routed to AdamW (``muon=None``)."""
  return nnx.Param(jnp.full(shape, s_scale, jnp.float32), muon=None,
                   s_init=float(s_init), s_scale=float(s_scale))


def scaled_value(param: nnx.Param) -> jax.Array:
  """The scale in use, s = θ · (s_init / s_scale)."""
  meta = param.get_metadata()
  return param[...] * (meta["s_init"] / meta["s_scale"])


_unit = jax.jit(unit, static_argnums=1)  # one compile per shape when called eagerly


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _normal_on_sphere(key, shape, dtype, std, axis):
  return unit(std * jax.random.normal(key, shape, dtype), axis)


def _on_sphere(layer: nnx.Module, axis: int, std: float, rngs: nnx.Rngs) -> nnx.Module:
  """Redraw ``layer``'s kernel (or embedding) from N(0, std²), normalize it, tag it."""
  var = layer.embedding if isinstance(layer, nnx.Embed) else layer.kernel
  var[...] = _normal_on_sphere(rngs.params(), var.shape, var[...].dtype, std, axis)
  var.set_metadata(sphere_axis=axis)
  return layer


def _sphere_params(model: nnx.Module):
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Param) and node.get_metadata().get("sphere_axis") is not None:
      yield node


def normalize_weights(model: nnx.Module) -> nnx.Module:
  """Projects, in place, every Param with ``sphere_axis`` metadata onto the unit sphere.

  nGPT's ``normalize_matrices()``. A fresh :class:`NGPT` is already projected; call
  this after each optimizer step when the chain does not end in a projection, or after
  loading or editing weights. Unconstrained leaves are untouched. Works inside ``nnx.jit``.
  """
  for var in _sphere_params(model):
    var[...] = _unit(var[...], var.get_metadata()["sphere_axis"])
  return model


def sphere_projection(model_or_axes: Any, *, mode: str = "project", every: int = 1,
                      theta: str = "lr", learning_rate: Any = 1.0,
                      scope: str = "all") -> optax.GradientTransformation:
  """Post-step sphere stage: append it to any chain whose output is the update.

  ``optax.chain(tx, sphere_projection(model))`` applies ``tx``'s update Δ and then
  normalizes every constrained vector: W ← Norm(W + Δ); unconstrained leaves get
  W + Δ. It is ``mj.hypersphere`` on the descent direction −Δ, so it works after
  any optimizer's learning-rate scaling (``mj.muon``, ``optax.adamw``):

  * ``mode="project"``, ``every=k``: lazy projection, W ← W + Δ and the
    renormalization only on every k-th step (nGPT's ``lazy_proj_freq``);
  * ``mode="geodesic"``: an exact great-circle move of each unit vector towards
    the tangent part of Δ by ``θ = learning_rate`` (``theta="lr"``; pass the
    run's schedule) or ``θ = ‖Δ‖ = η‖U‖`` per vector (``theta="norm"``);
    unconstrained leaves get W + Δ in every mode. ``scope="blocks"``: only
    the leaves under ``blocks`` move along geodesics, the other constrained
    leaves (nGPT's embedding and head) are projected — in a Muon chain those
    train in the AdamW branch, whose step is not Muon's angle.

  Args:
    model_or_axes: an NNX model or state (axes read by :func:`muonjax.sphere_axes`),
      or an axes tree / callable as ``mj.hypersphere`` takes.
    mode: ``"project"`` or ``"geodesic"``.
    every: lazy projection period (``"project"`` only).
    theta: geodesic angle rule, ``"lr"`` or ``"norm"``.
    learning_rate: η of ``theta="lr"`` (float or schedule).
    scope: ``"all"`` or ``"blocks"`` (geodesic mode only).
  """
  check_choice("theta", theta, SPHERE_THETAS)  # mode and every: hypersphere checks them
  check_choice("scope", scope, SPHERE_SCOPES)
  if scope != "all" and mode != "geodesic":
    raise ValueError(f"scope={scope!r} applies to mode='geodesic' only")
  axes = (sphere_axes(model_or_axes)
          if isinstance(model_or_axes, (nnx.Module, nnx.State)) else model_or_axes)
  if mode == "project":
    return optax.chain(optax.scale(-1.0), hypersphere(1.0, axes=axes, mode="project",
                                                      every=every))
  # The input Δ is already scaled: step size 1 (unconstrained leaves: W + Δ), and θ = η
  # (theta="lr") or θ = ‖Δ‖ (theta="norm").
  geodesic_axes = axes if scope == "all" else _split_axes(axes, in_blocks=True)
  stage = optax.chain(optax.scale(-1.0), hypersphere(
      1.0, axes=geodesic_axes, mode="geodesic", theta=theta,
      angle=learning_rate if theta == "lr" else None))
  if scope == "all":
    return stage
  # The constrained leaves outside the blocks: W + Δ, then renormalized.
  return optax.chain(stage, optax.scale(-1.0), hypersphere(
      1.0, axes=_split_axes(axes, in_blocks=False), mode="project"))


def _split_axes(axes: Any, *, in_blocks: bool) -> Any:
  """The axes of the leaves under ``blocks`` (``in_blocks``) or of the others; ``None``
  (unconstrained) elsewhere. Takes and returns a tree or a ``params -> tree`` callable."""
  if callable(axes):
    return lambda params: _split_axes(axes(params), in_blocks=in_blocks)

  def keep(path, axis):
    first = path[0]
    name = getattr(first, "key", getattr(first, "name", None))
    return axis if (name == "blocks") == in_blocks else None
  return jax.tree_util.tree_map_with_path(keep, axes)


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class NGPTConfig:
  """nGPT's fields; the last four set the sphere stage the trainer chains after the
  optimizer (:meth:`NGPT.optimizer_constraint`, :func:`sphere_projection`).

  Attributes:
    sphere_update: how the weights stay on the sphere after each step:
      ``"project"`` (renormalize) or ``"geodesic"`` (great-circle move).
    sphere_every: lazy projection period k (``"project"``: renormalize every
      k-th step only).
    sphere_theta: geodesic angle, ``"lr"`` (θ = the scheduled η) or
      ``"norm"`` (θ = η‖U‖ per vector).
    sphere_scope: geodesic moves for every constrained vector (``"all"``) or
      only the blocks' (``"blocks"``: the embedding and head are projected).
  """

  vocab_size: int = 256
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  d_ff: int = 512              # SwiGLU hidden width (official: 4·d_model)
  max_seq_len: int = 256
  alpha_init: float = 0.05     # s_init of the eigen learning rates α_A, α_M
  rope_base: float = 10000.0
  gated: bool = False          # gated residual variant
  gate_init: float = 0.0       # initial gate logit g (σ(0) = 1/2)
  remat: bool = False
  sphere_update: str = "project"
  sphere_every: int = 1
  sphere_theta: str = "lr"
  sphere_scope: str = "all"

  def __post_init__(self):
    cls = type(self).__name__
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
      checks.positive_int(self, name)
    if self.d_model % self.n_heads:
      raise ValueError(f"{cls}.n_heads={self.n_heads} must divide d_model={self.d_model}")
    if (self.d_model // self.n_heads) % 2:
      raise ValueError(f"{cls}.n_heads={self.n_heads}: head dim d_model/n_heads = "
                       f"{self.d_model // self.n_heads} must be even for RoPE")
    for name, positive in (("alpha_init", True), ("rope_base", True), ("gate_init", False)):
      value = getattr(self, name)
      if not is_real(value) or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite float" if positive else "a finite float"
        raise ValueError(f"{cls}.{name} must be {kind}; got {value!r}")
    for name in ("gated", "remat"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"{cls}.{name} must be a bool; got {getattr(self, name)!r}")
    if self.sphere_update not in SPHERE_UPDATES:
      raise ValueError(f"{cls}.sphere_update must be one of {SPHERE_UPDATES}; "
                       f"got {self.sphere_update!r}")
    if self.sphere_theta not in SPHERE_THETAS:
      raise ValueError(f"{cls}.sphere_theta must be one of {SPHERE_THETAS}; "
                       f"got {self.sphere_theta!r}")
    if self.sphere_scope not in SPHERE_SCOPES:
      raise ValueError(f"{cls}.sphere_scope must be one of {SPHERE_SCOPES}; "
                       f"got {self.sphere_scope!r}")
    if self.sphere_scope != "all" and self.sphere_update != "geodesic":
      raise ValueError(f"{cls}.sphere_scope={self.sphere_scope!r} applies to "
                       "sphere_update='geodesic' only")
    checks.positive_int(self, "sphere_every")
    if self.sphere_every != 1 and self.sphere_update != "project":
      raise ValueError(f"{cls}.sphere_every (lazy projection) applies to "
                       "sphere_update='project' only")


# ----------------------------------------------------------------------------- layers


class NormalizedAttention(CausalSelfAttention):
  """Causal attention with per-head s_qk ⊙ Norm(q), s_qk ⊙ Norm(k) after RoPE; scale √head_dim."""

  def __init__(self, d_model: int, n_heads: int, *, rope_base: float, rngs: nnx.Rngs):
    super().__init__(d_model, n_heads, rope_base=rope_base, rngs=rngs)
    std = 1.0 / math.sqrt(d_model)
    for layer in (self.query, self.key, self.value):
      _on_sphere(layer, 0, std, rngs)
    _on_sphere(self.out, 1, std, rngs)
    self.s_qk = scaled_param((d_model,), 1.0, std)

  def __call__(self, h: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    batch, seq, d_model = h.shape
    heads = lambda y: y.reshape(batch, seq, self.n_heads, self.head_dim)
    s_qk = scaled_value(self.s_qk).reshape(self.n_heads, self.head_dim).astype(h.dtype)
    q = s_qk * unit(rope(heads(self.query(h)), self.rope_base))
    k = s_qk * unit(rope(heads(self.key(h)), self.rope_base))
    y = causal_attention(q, k, heads(self.value(h)), scale=math.sqrt(self.head_dim))
    return self.out(y.reshape(batch, seq, d_model))


class NormalizedMLP(nnx.Module):
  """SwiGLU W_down(u ⊙ SiLU(ν)) with u = s_u ⊙ W_up h, ν = s_ν ⊙ W_gate h · √d."""

  def __init__(self, d_model: int, d_ff: int, *, rngs: nnx.Rngs):
    std = 1.0 / math.sqrt(d_model)
    self.sqrt_d = math.sqrt(d_model)
    self.up = _on_sphere(dense(d_model, d_ff, rngs=rngs), 0, std, rngs)
    self.gate = _on_sphere(dense(d_model, d_ff, rngs=rngs), 0, std, rngs)
    self.down = _on_sphere(dense(d_ff, d_model, rngs=rngs), 1, std, rngs)
    self.s_u = scaled_param((d_ff,), 1.0, 1.0)
    self.s_v = scaled_param((d_ff,), 1.0, 1.0)

  def __call__(self, h: jax.Array) -> jax.Array:
    u = scaled_value(self.s_u).astype(h.dtype) * self.up(h)
    v = scaled_value(self.s_v).astype(h.dtype) * self.gate(h) * self.sqrt_d
    return self.down(u * jax.nn.silu(v))


class NGPTBlock(nnx.Module):
  """One nGPT layer: two normalized interpolations on the sphere (attention, then MLP)."""

  def __init__(self, config: NGPTConfig, *, rngs: nnx.Rngs):
    c = config
    scale = 1.0 / math.sqrt(c.d_model)
    self.attn = NormalizedAttention(c.d_model, c.n_heads, rope_base=c.rope_base, rngs=rngs)
    self.mlp = NormalizedMLP(c.d_model, c.d_ff, rngs=rngs)
    self.alpha_attn = scaled_param((c.d_model,), c.alpha_init, scale)
    self.alpha_mlp = scaled_param((c.d_model,), c.alpha_init, scale)
    gate = lambda: nnx.Param(jnp.full((c.d_model,), c.gate_init, jnp.float32), muon=None)
    self.attn_gate = gate() if c.gated else None
    self.mlp_gate = gate() if c.gated else None

  @staticmethod
  def _interpolate(h, h_branch, alpha, gate):
    lr = jnp.abs(scaled_value(alpha))
    if gate is not None:
      lr = jax.nn.sigmoid(gate[...]) * lr
    h = unit(h)
    return unit(h + lr.astype(h.dtype) * (unit(h_branch) - h))

  def __call__(self, h: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    del key  # nGPT has no dropout
    h = self._interpolate(h, self.attn(h), self.alpha_attn, self.attn_gate)
    return self._interpolate(h, self.mlp(h), self.alpha_mlp, self.mlp_gate)


def stacked_ngpt_blocks(config: NGPTConfig, *, rngs: nnx.Rngs) -> NGPTBlock:
  """``n_layers`` blocks stacked on a leading ``layers`` axis; sphere axes shifted by one."""

  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def make(rngs: nnx.Rngs) -> NGPTBlock:
    return NGPTBlock(config, rngs=rngs)

  blocks = make(rngs.split(config.n_layers))
  for var in _sphere_params(blocks):
    var.set_metadata(sphere_axis=var.get_metadata()["sphere_axis"] + 1)
  return blocks


def _layer_with_state(block: NGPTBlock, h: jax.Array):
  h = block(h)
  return h, h


# ----------------------------------------------------------------------------- model


@functools.partial(nnx.jit, static_argnums=0)
def _build_layers(c: NGPTConfig, rngs: nnx.Rngs):
  """Embedding, stacked blocks and head, initialized in one compiled program (eager init
  compiles every op for every shape)."""
  std = 1.0 / math.sqrt(c.d_model)
  embed = _on_sphere(nnx.Embed(c.vocab_size, c.d_model, rngs=rngs), 1, std, rngs)
  blocks = stacked_ngpt_blocks(c, rngs=rngs)
  head = _on_sphere(nnx.Linear(c.d_model, c.vocab_size, use_bias=False, rngs=rngs), 0, std, rngs)
  return embed, blocks, head


class NGPT(nnx.Module):
  """Normalized embedding → ``n_layers`` nGPT blocks → s_z ⊙ head; returns logits (B, T, V).

  Deterministic: ``key`` is accepted for the common model interface and ignored.
  """

  def __init__(self, config: NGPTConfig, *, rngs: nnx.Rngs):
    self.config = config
    # Fields the layers do not read are fixed, so changing them reuses the compiled init.
    layers = dataclasses.replace(config, max_seq_len=1, remat=False, sphere_update="project",
                                 sphere_every=1, sphere_theta="lr", sphere_scope="all")
    self.embed, self.blocks, self.lm_head = _build_layers(layers, rngs)
    self.s_z = scaled_param((config.vocab_size,), 1.0, 1.0 / math.sqrt(config.d_model))

  def _check(self, tokens: jax.Array) -> None:
    if tokens.shape[-1] > self.config.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                       f"max_seq_len={self.config.max_seq_len}")

  def logits(self, h: jax.Array) -> jax.Array:
    """s_z ⊙ (E_out h) for final hidden states ``h``."""
    return scaled_value(self.s_z).astype(h.dtype) * self.lm_head(h)

  def __call__(self, tokens: jax.Array, *, key: Optional[jax.Array] = None) -> jax.Array:
    del key
    self._check(tokens)
    h = unit(self.embed(tokens))
    return self.logits(run_stacked(self.blocks, h, remat=self.config.remat))

  def optimizer_constraint(self, learning_rate: Any) -> optax.GradientTransformation:
    """The sphere stage to chain after any optimizer (:mod:`muonjax.models.hooks`).

    :func:`sphere_projection` of this model's constrained weights with the
    config's ``sphere_update``, ``sphere_every`` and ``sphere_theta``;
    ``learning_rate`` (the run's schedule) is the geodesic angle of
    ``sphere_theta="lr"``.
    """
    c = self.config
    return sphere_projection(self, mode=c.sphere_update, every=c.sphere_every,
                             theta=c.sphere_theta, learning_rate=learning_rate,
                             scope=c.sphere_scope)

  def hidden_states(self, tokens: jax.Array) -> jax.Array:
    """Every hidden state, (n_layers + 1, B, T, d): h₀ and the output of each layer."""
    self._check(tokens)
    h0 = unit(self.embed(tokens))
    _, hs = nnx.scan(_layer_with_state, in_axes=(0, nnx.Carry), out_axes=(nnx.Carry, 0),
                     length=self.config.n_layers)(self.blocks, h0)
    return jnp.concatenate([h0[None], hs], axis=0)


def ngpt_param_count(config: NGPTConfig) -> int:
  """Closed-form parameter count of ``NGPT(config)``.

  Embedding and head 2·V·d, s_z V; per layer q, k, v, o 4d², up, gate, down 3·d·d_ff,
  α_A, α_M, s_qk 3d, s_u, s_ν 2·d_ff, and the two gates 2d when ``gated``.
  """
  c = config
  d, f = c.d_model, c.d_ff
  per_layer = 4 * d * d + 3 * d * f + 3 * d + 2 * f + (2 * d if c.gated else 0)
  return 2 * c.vocab_size * d + c.vocab_size + c.n_layers * per_layer
