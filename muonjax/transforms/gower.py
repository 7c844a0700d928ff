r"""MuonAdam, MuonMax and Momo truncation (Gower et al.): stages S6 and S8.

The three algorithms of arXiv 2510.09827 reduce across leaves, so they cannot
live inside one branch of ``optax.partition``:

* MuonMax scales every Muon leaf by ``N = sum_l <M_l, polar(M_l)>`` (≈ the sum
  of the momentum nuclear norms over all Muon leaves);
* Momo computes one step size from sums over **all** leaves (Muon and Adam):
  ``<W, G>``, ``<W, M>`` and a dual norm of the whole direction.

Design. Each cross-leaf quantity is computed by one stage, and
:func:`gower_optimizer` wires the stages over the full parameter tree with
routing labels (a leaf is a Muon leaf when its dimension numbers are not
``None``), so every intermediate tree it needs (G, M, polar(M), v) is at hand:

1. :func:`muonjax.momentum` (``form="ema_from_first"``, no Nesterov) twice,
   masked with ``optax.masked``: β on Muon leaves, β₁ on Adam leaves. Its output
   ``M`` covers every leaf (``M_1 = G_1``, then EMA).
2. :func:`muonjax.momentum` with β₂ on ``G²`` (Adam leaves): ``v_1 = g_1²``,
   then EMA, no bias correction.
3. S6 :func:`scale_by_global_nuclear_norm` on ``M``: orthogonalizes the Muon
   leaves with :func:`muonjax.orthogonalize_tree` (no Newton–Schulz code here),
   takes ``<M_l, O_l>`` per leaf while it sees both, and multiplies every Muon
   leaf by the global ``N`` (fresh, or last step's values with ``stale=True``).
   Plain MuonAdam uses :func:`muonjax.orthogonalize` instead.
4. Direction ``D``: ``s·N·O`` (MuonMax) or ``s·O`` (MuonAdam) on Muon leaves,
   ``m / (eps + √v)`` on Adam leaves. No shape scale factor.
5. S8 :func:`momo_step_size` (``optax.GradientTransformationExtraArgs``): reads
   the loss ``value=``, the params, and :class:`MomoInputs` (the ``G`` and ``M``
   trees and the dual-norm denominator) and multiplies ``D`` by ``η_t / η``.
6. :func:`muonjax.weight_decay` (λ) → ``optax.scale_by_learning_rate(η)``, so
   ``W ← W(1 − ηλ) − η_t·D``: weight decay uses the **base** η, never η_t.

Every counter and statistic (momentum counts, last step's ``<M, O>`` per
leaf, the loss model ``f̄``) lives in the optax state.

Layout: GPT-opt views PyTorch weights as ``(shape[0], -1)``; muonjax uses the
canonical Flax ``(n_in, n_out)`` view of the dimension numbers, and stacked
``(L, in, out)`` leaves are ``L`` matrices (``<M, O>`` sums over the slices).
Newton–Schulz is layout-free, so 2-D leaves give the same result.

References:
  Gower et al., arXiv 2510.09827; code https://github.com/modichirag/GPT-opt
  (``gptopt/optim/muonadam.py``, ``muonmax_momo.py``, ``muonadam_momo.py``,
  ``polar.py``). Schaipp et al., MoMo: Momentum Models for Adaptive Learning
  Rates, arXiv 2305.07583.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics

from muonjax.transforms import dimensions
from muonjax.transforms.dtypes import require_real
from muonjax.transforms.momentum import momentum
from muonjax.transforms.orthogonalize import (
    Orthogonalizer,
    make_orthogonalizer,
    orthogonalize,
    orthogonalize_tree,
)
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
    static_int,
)

Variant = Literal["muon_adam", "muon_max"]
VARIANTS = ("muon_adam", "muon_max")
POLAR_METHODS = ("polar_express_gptopt", "keller", "svd")



def _f32_vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  """``sum(a * b)`` in float32, elementwise (no reduced-precision matmul)."""
  return jnp.sum(a.astype(jnp.float32) * b.astype(jnp.float32))


def _tree_vdot(a: Any, b: Any) -> jax.Array:
  """``sum_l <a_l, b_l>`` over all array leaves, in float32."""
  terms = jax.tree.leaves(jax.tree.map(_f32_vdot, a, b))
  return sum(terms, jnp.zeros([], jnp.float32))


def gptopt_orthogonalizer(
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    *,
    steps: int = 5,
    compute_dtype: Optional[Any] = "bfloat16",
) -> Orthogonalizer:
  """The polar-factor approximation of GPT-opt's ``polar_method`` option.

  Args:
    polar_method: ``"polar_express_gptopt"`` (GPT-opt's ``"polar_express"``:
      the paper table with every coefficient ÷ 1.01, ``X/(‖X‖_F·1.01)``),
      ``"keller"`` (GPT-opt's ``"jordan"``: (3.4445, −4.7750, 2.0315),
      ``X/(‖X‖_F + 1e-7)``), ``"svd"`` (exact ``U Vᵀ``, in the update's dtype)
      or a callable ``(..., m, n) -> (..., m, n)``.
    steps: Newton–Schulz iterations (tables repeat their last row).
    compute_dtype: iteration dtype (GPT-opt: bfloat16); ``None`` = the
      momentum's dtype. Ignored by ``"svd"``.

  Returns:
    An orthogonalizer for :func:`muonjax.orthogonalize_tree`.
  """
  if callable(polar_method):
    return polar_method
  check_choice("polar_method", polar_method, POLAR_METHODS)
  if polar_method == "svd":
    return make_orthogonalizer("svd")
  steps = static_int("steps", steps, minimum=1)
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  if polar_method == "keller":
    return make_orthogonalizer("newton_schulz", coeffs="keller", steps=steps,
                               compute_dtype=dtype)
  # GPT-opt polar.py: every coefficient of the paper table / 1.01 and
  # X / (||X||_F * 1.01) with no epsilon; its fixed point is ~0.990, not 1.
  return make_orthogonalizer("newton_schulz", coeffs="polar_express_gptopt", steps=steps,
                             compute_dtype=dtype)


# --- S6: global nuclear-norm scaling ---------------------------------------


class GlobalNuclearNormState(NamedTuple):
  """State of :func:`scale_by_global_nuclear_norm`."""

  count: jax.Array  # int32 scalar: steps taken.
  inner: optax.Updates  # per matrix leaf: float32 scalar <M, O> of the last step.
  norm: jax.Array  # float32 scalar: the N used at the last step.


def scale_by_global_nuclear_norm(
    orthogonalizer: Union[str, Orthogonalizer] = "newton_schulz",
    *,
    stale: bool = True,
    scale: bool = True,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    group_by_shape: bool = True,
) -> optax.GradientTransformation:
  r"""Orthogonalize every matrix leaf and multiply it by the tree-wide ``N``.

  For momentum leaves ``M_l`` with polar factors ``O_l = polar(M_l)``::

      N = sum_l <M_l, O_l>        (≈ sum_l ||M_l||_*; over every matrix leaf)
      out_l = N · O_l

  This is MuonMax's dual-norm scaling (stage S6, like ``clip_by_global_norm``:
  one scalar for the whole tree). The stage needs both ``M`` and ``O``, so it
  runs on the momentum output and calls the orthogonalizer itself. Leaves
  routed to ``None`` (and ``optax.MaskedNode``\ s inside ``optax.partition``)
  pass through and do not enter ``N``. ``<M, O>`` of a stacked leaf sums over
  its matrices.

  Args:
    orthogonalizer: a method name for :func:`muonjax.make_orthogonalizer` or a
      callable ``(..., m, n) -> (..., m, n)`` (e.g. :func:`gptopt_orthogonalizer`).
    stale: use the per-leaf ``<M, O>`` stored at the previous step (GPT-opt's
      ``stale_nuc``; fresh at the first step). The polar factor is computed
      once per leaf per step either way, so this only changes the numbers.
    scale: multiply by ``N``; ``False`` returns ``O`` and only records ``N``
      in the state (the MuonAdam-Momo denominator).
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).
    group_by_shape: batch equal-shape matrices into one orthogonalizer call.

  Returns:
    An ``optax.GradientTransformation`` with :class:`GlobalNuclearNormState`:
    ``inner`` holds one float32 scalar per matrix leaf (``MaskedNode``
    elsewhere); ``norm`` is the ``N`` of the last step.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``).
  """
  ortho = make_orthogonalizer(orthogonalizer)

  def init_fn(params):
    inner = dimensions.init_per_matrix(
        lambda path, leaf, view: jnp.zeros([], jnp.float32), dimension_numbers, params)
    return GlobalNuclearNormState(jnp.zeros([], jnp.int32), inner,
                                  jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    polar = orthogonalize_tree(updates, ortho, dimension_numbers,
                               group_by_shape=group_by_shape)
    items, treedef = dimensions.resolve(dimension_numbers, updates)
    polar_leaves = treedef.flatten_up_to(polar)
    prev_leaves = treedef.flatten_up_to(state.inner)
    fresh_leaves, matrix = [], []
    for i, (path, leaf, dn) in enumerate(items):
      is_matrix = dimensions.leaf_view(path, leaf, dn) is not None
      matrix.append(is_matrix)
      fresh_leaves.append(_f32_vdot(leaf, polar_leaves[i]) if is_matrix else prev_leaves[i])
    zero = jnp.zeros([], jnp.float32)
    fresh = sum((f for f, m in zip(fresh_leaves, matrix) if m), zero)
    norm = fresh
    if stale:
      prev = sum((p for p, m in zip(prev_leaves, matrix) if m), zero)
      norm = jnp.where(state.count == 0, fresh, prev)
    out = [(norm.astype(o.dtype) * o if scale else o) if m else leaf
           for (_, leaf, _), o, m in zip(items, polar_leaves, matrix)]
    new_state = GlobalNuclearNormState(numerics.safe_increment(state.count),
                                       treedef.unflatten(fresh_leaves), norm)
    return treedef.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


# --- S8: Momo truncated step size -------------------------------------------


class MomoState(NamedTuple):
  """State of :func:`momo_step_size`."""

  count: jax.Array  # int32 scalar: steps taken.
  loss_model: jax.Array  # float32 scalar f̄: EMA of loss − Σ<W, G> (f̄_1 = first value).
  step_size: jax.Array  # float32 scalar: η_t of the last step (for logging).


class MomoInputs(NamedTuple):
  """Cross-leaf statistics :func:`momo_step_size` reads (an extra argument).

  Attributes:
    grads: the raw gradients ``G`` (all leaves).
    momentum: the first moments ``M`` (Muon momentum and Adam ``m``; all leaves).
    denominator: the squared dual norm ``D²`` (MuonMax-Momo) or ``D₁``
      (MuonAdam-Momo) of the direction, a scalar.
  """

  grads: optax.Updates
  momentum: optax.Updates
  denominator: jax.Array


def momo_step_size(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    truncate_loss: float = 0.0,
    clamp_nonnegative: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Momo: scale the direction ``D`` by ``η_t / η`` (stage S8).

  With the loss ``f`` of this step, params ``W``, gradients ``G`` and first
  moments ``M`` (sums over **all** leaves)::

      f̄_1 = f − Σ<W, G>;   f̄ ← β f̄ + (1 − β)(f − Σ<W, G>)
      η_t = min(η, max(f̄ − f* + Σ<W, M>, 0) / denominator)
      out = (η_t / η) · D

  so that the following ``optax.scale_by_learning_rate(η)`` yields
  ``−η_t·D`` while a decay stage in between still uses the base ``η``.

  Call as ``update(D, state, params, value=loss, momo_inputs=MomoInputs(...))``
  (:func:`gower_optimizer` does; an ``optax.chain`` forwards the extra args).

  Args:
    learning_rate: the base η (float or schedule; evaluated at this stage's
      own count, like ``optax.scale_by_learning_rate``).
    beta: EMA coefficient of ``f̄`` (the momentum β).
    truncate_loss: ``f*``, a lower bound of the loss.
    clamp_nonnegative: ``max(numerator, 0)`` as in the base Momo. ``False``
      reproduces GPT-opt, where a negative numerator gives ``η_t < 0`` and
      reverses the step.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`MomoState`.

  Raises:
    ValueError: at update time, when ``value``, ``params`` or ``momo_inputs``
      is missing.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt;
    Schaipp et al., MoMo, arXiv 2305.07583.
  """
  check_unit_interval("beta", beta)
  if truncate_loss is None:
    raise ValueError("truncate_loss must be a number for momo_step_size; "
                     "leave the stage out to disable truncation")

  def init_fn(params):
    del params
    zero = jnp.zeros([], jnp.float32)
    return MomoState(jnp.zeros([], jnp.int32), zero, zero)

  def update_fn(updates, state, params=None, *, value=None, momo_inputs=None, **extra_args):
    del extra_args
    if value is None:
      raise ValueError("Momo needs the loss: call tx.update(grads, state, params, value=loss)")
    if params is None:
      raise ValueError("Momo needs params: call tx.update(grads, state, params, value=loss)")
    if momo_inputs is None:
      raise ValueError("momo_step_size needs momo_inputs=MomoInputs(grads, momentum, "
                       "denominator); use it through muonjax.gower_optimizer")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    lr = jnp.asarray(lr, jnp.float32)
    sample = jnp.asarray(value, jnp.float32) - _tree_vdot(params, momo_inputs.grads)
    loss_model = jnp.where(state.count == 0, sample,
                           beta * state.loss_model + (1 - beta) * sample)
    numerator = loss_model - truncate_loss + _tree_vdot(params, momo_inputs.momentum)
    if clamp_nonnegative:
      numerator = jnp.maximum(numerator, 0.0)
    den = jnp.asarray(momo_inputs.denominator, jnp.float32)
    # A zero denominator means M = 0, hence D = 0: any finite η_t will do.
    step = jnp.where(den > 0, jnp.minimum(lr, numerator / jnp.where(den > 0, den, 1.0)), lr)
    ratio = jnp.where(lr > 0, step / jnp.where(lr > 0, lr, 1.0), 1.0)
    updates = jax.tree.map(lambda u: u * ratio.astype(u.dtype), updates)
    return updates, MomoState(numerics.safe_increment(state.count), loss_model, step)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --- the full optimizer -----------------------------------------------------


class GowerState(NamedTuple):
  """State of :func:`gower_optimizer` (see the module docstring for the flow)."""

  muon_momentum: optax.OptState  # masked MomentumState: M on Muon leaves.
  adam_momentum: optax.OptState  # masked MomentumState: m on Adam leaves.
  adam_second_moment: optax.OptState  # masked MomentumState: v on Adam leaves.
  orthogonalize: optax.OptState  # EmptyState or GlobalNuclearNormState.
  momo: optax.OptState  # MomoState, or EmptyState without truncation.
  tail: optax.OptState  # weight decay and learning rate.


def _routing(spec, tree) -> tuple[list[bool], Any]:
  """Per-leaf Muon flags (dimension numbers not ``None``) and the treedef."""
  items, treedef = dimensions.resolve(spec, tree)
  return [dimensions.leaf_view(p, leaf, dn) is not None for p, leaf, dn in items], treedef


def gower_optimizer(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    variant: Variant = "muon_adam",
    muon_lr_scale: float = 10.0,
    weight_decay: float = 0.1,
    weight_decay_mask: Any = None,
    weight_decay_mode: str = "decoupled",
    beta: float = 0.95,
    adam_b1: float = 0.95,
    adam_b2: float = 0.95,
    eps: float = 1e-8,
    orthogonalizer: Union[str, Orthogonalizer] = "polar_express_gptopt",
    stale_nuc: bool = True,
    truncate: bool = False,
    truncate_loss: Optional[float] = 0.0,
    clamp_nonnegative: bool = True,
    mu_dtype: Optional[Any] = None,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    group_by_shape: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""MuonAdam / MuonMax, optionally with Momo truncation, over the full tree.

  Muon leaves (dimension numbers not ``None``; Flax ``(n_in, n_out)`` view,
  leading axes batched), with ``M_1 = G_1`` then ``M ← βM + (1−β)G``::

      MuonAdam:  W ← W(1 − ηλ) − η_t·s·polar(M)
      MuonMax:   W ← W(1 − ηλ) − η_t·s·N·polar(M),   N = Σ_Muon <M_l, polar(M_l)>

  Adam leaves (``m_1 = g_1``, ``v_1 = g_1²``, then EMAs; no bias correction)::

      w ← w(1 − ηλ) − η_t·m / (eps + √v)

  Without truncation ``η_t = η``. With Momo (``truncate=True`` and
  ``truncate_loss`` not ``None``) ``η_t`` comes from :func:`momo_step_size`
  with the denominator ``D² = s·N² + Σ_Adam Σ m²/(eps + √v)`` (MuonMax) or
  ``D₁ = s·N + Σ_Adam Σ m²/(eps + √v)`` (MuonAdam; GPT-opt's ℓ1 norm of
  ``m·|m|/(eps + √v)``); there ``N`` is stale (last step's values) when
  ``stale_nuc``, as in GPT-opt's ``muonadam_momo.py`` too.

  The result is always an ``optax.GradientTransformationExtraArgs``:
  ``update(grads, state, params, value=loss)``; ``value`` is required with
  Momo and ignored otherwise.

  Args:
    learning_rate: base η (float or schedule), shared by both branches.
    variant: ``"muon_adam"`` or ``"muon_max"``.
    muon_lr_scale: ``s``, the extra factor of the Muon leaves.
    weight_decay: decoupled decay λ of every leaf (base η).
    weight_decay_mask: optional optax mask (tree or callable) for the decay.
    weight_decay_mode: ``"decoupled"`` (GPT-opt) or ``"cautious"`` (decay only
      where ``D·W >= 0``, with ``D`` the η_t-scaled direction).
    beta: Muon momentum β (and Momo's loss-model EMA coefficient).
    adam_b1, adam_b2: Adam betas.
    eps: Adam epsilon, added to ``√v``.
    orthogonalizer: a :data:`POLAR_METHODS` name (default options of
      :func:`gptopt_orthogonalizer`) or a callable.
    stale_nuc: reuse last step's ``<M, O>`` per leaf in ``N``.
    truncate: enable Momo (requires ``beta == adam_b1``).
    truncate_loss: ``f*`` (``None`` disables truncation).
    clamp_nonnegative: clamp the Momo numerator at 0 (``False``: GPT-opt parity).
    mu_dtype: dtype of the three moment buffers (default: the param dtype).
    dimension_numbers: routing: a tree (prefix) of ``MuonDimensionNumbers``
      (Muon) / ``None`` (Adam), or a callable ``tree -> that``; ``None`` makes
      every leaf a Muon matrix (see :func:`muonjax.muon_dimension_numbers`).
    group_by_shape: batch equal-shape matrices into one orthogonalizer call.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`GowerState`.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt.
  """
  check_choice("variant", variant, VARIANTS)
  if not callable(learning_rate):
    check_positive("learning_rate", learning_rate)
  for name, value in [("beta", beta), ("adam_b1", adam_b1), ("adam_b2", adam_b2)]:
    check_unit_interval(name, value)
  for name, value in [("muon_lr_scale", muon_lr_scale), ("weight_decay", weight_decay),
                      ("eps", eps)]:
    check_non_negative(name, value)
  use_momo = bool(truncate) and truncate_loss is not None
  if use_momo:
    concrete = all(isinstance(v, (int, float)) for v in (beta, adam_b1))
    if concrete and beta != adam_b1:
      raise ValueError(f"Momo requires the momentum beta to equal the Adam beta1 "
                       f"(adam_betas[0]); got beta={beta!r}, adam_betas[0]={adam_b1!r}")
  ortho = gptopt_orthogonalizer(orthogonalizer)
  dims = dimension_numbers

  def muon_mask(tree):
    flags, treedef = _routing(dims, tree)
    return treedef.unflatten(flags)

  def adam_mask(tree):
    flags, treedef = _routing(dims, tree)
    return treedef.unflatten([not f for f in flags])

  def ema(b):
    return momentum(b, nesterov=False, form="ema_from_first", mu_dtype=mu_dtype)

  muon_mom = optax.masked(ema(beta), muon_mask)
  adam_mom = optax.masked(ema(adam_b1), adam_mask)
  adam_nu = optax.masked(ema(adam_b2), adam_mask)
  if variant == "muon_max" or use_momo:
    polar_stage = scale_by_global_nuclear_norm(
        ortho, stale=stale_nuc, scale=variant == "muon_max", dimension_numbers=dims,
        group_by_shape=group_by_shape)
  else:
    polar_stage = orthogonalize(ortho, dimension_numbers=dims, group_by_shape=group_by_shape)
  momo = (momo_step_size(learning_rate, beta=beta, truncate_loss=truncate_loss,
                         clamp_nonnegative=clamp_nonnegative)
          if use_momo else None)
  tail = optax.chain(
      weight_decay_stage(weight_decay, mode=weight_decay_mode, mask=weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate))

  def init_fn(params):
    # Every leaf: the Adam branch squares gradients and Momo takes real inner products.
    require_real("gower_optimizer (muon_adam, muon_max, momo)", None, params,
                 "real Adam second moments and real inner products across leaves")
    return GowerState(
        muon_momentum=muon_mom.init(params), adam_momentum=adam_mom.init(params),
        adam_second_moment=adam_nu.init(params), orthogonalize=polar_stage.init(params),
        momo=optax.EmptyState() if momo is None else momo.init(params), tail=tail.init(params))

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    if momo is not None and value is None:  # fail before any work
      raise ValueError("Momo needs the loss: call tx.update(grads, state, params, value=loss)")
    grads = updates
    flags, treedef = _routing(dims, grads)
    moments, muon_state = muon_mom.update(grads, state.muon_momentum)
    moments, adam_state = adam_mom.update(moments, state.adam_momentum)
    nu, nu_state = adam_nu.update(jax.tree.map(jnp.square, grads), state.adam_second_moment)
    polar, polar_state = polar_stage.update(moments, state.orthogonalize)

    direction, adam_dual = [], jnp.zeros([], jnp.float32)
    for is_muon, m, o, v in zip(flags, treedef.flatten_up_to(moments),
                                treedef.flatten_up_to(polar), treedef.flatten_up_to(nu)):
      if is_muon:
        direction.append(jnp.asarray(muon_lr_scale, o.dtype) * o)
      else:
        d = m / (eps + jnp.sqrt(v))
        direction.append(d)
        adam_dual = adam_dual + _f32_vdot(m, d)
    direction = treedef.unflatten(direction)

    momo_state = state.momo
    if momo is not None:
      norm = polar_state.norm
      muon_dual = muon_lr_scale * (norm * norm if variant == "muon_max" else norm)
      direction, momo_state = momo.update(
          direction, state.momo, params, value=value,
          momo_inputs=MomoInputs(grads, moments, muon_dual + adam_dual))
    direction, tail_state = tail.update(direction, state.tail, params)
    return direction, GowerState(muon_state, adam_state, nu_state, polar_state, momo_state,
                                 tail_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
