"""MuonAdam, MuonMax and Momo (Gower et al.): one transformation over the full tree.

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
3. Global-scale stage, :func:`scale_by_global_nuclear_norm` on ``M``: orthogonalizes the Muon
   leaves with :func:`muonjax.orthogonalize_tree` (no Newton–Schulz code here),
   takes ``<M_l, O_l>`` per leaf while it sees both, and multiplies every Muon
   leaf by the global ``N`` (fresh, or last step's values with ``stale=True``).
   Plain MuonAdam uses :func:`muonjax.orthogonalize` instead.
4. Direction ``D``: ``s·N·O`` (MuonMax) or ``s·O`` (MuonAdam) on Muon leaves,
   ``m / (eps + √v)`` on Adam leaves. No shape scale factor.
5. Momo step-size stage, :func:`momo_step_size` (``optax.GradientTransformationExtraArgs``): reads
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

from muonjax import routing
from muonjax.transforms.validation import check_learning_rate
from muonjax.transforms import dimensions
from muonjax.transforms.dtypes import require_real
from muonjax.transforms.global_nuclear_norm import (
    POLAR_METHODS,
    f32_vdot,
    gptopt_orthogonalizer,
    scale_by_global_nuclear_norm,
)
from muonjax.transforms.momentum import momentum
from muonjax.transforms.momo import MomoInputs, momo_step_size
from muonjax.transforms.orthogonalize import Orthogonalizer, orthogonalize
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)
from muonjax.transforms.weight_decay import DecayMode
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage

Variant = Literal["muon_adam", "muon_max"]
VARIANTS = ("muon_adam", "muon_max")


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
        adam_dual = adam_dual + f32_vdot(m, d)
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


def muon_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    muon_lr_scale: float = 10.0,
    weight_decay: float = 0.1,
    weight_decay_mode: DecayMode = "decoupled",
    beta: float = 0.95,
    adam_betas: tuple[float, float] = (0.95, 0.95),
    eps: float = 1e-8,
    steps: int = 5,
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    compute_dtype: Any = "bfloat16",
    global_scale: bool = False,
    truncate: bool = False,
    truncate_loss: Optional[float] = 0.0,
    clamp_nonnegative: bool = True,
    stale_nuc: bool = True,
    mu_dtype: Optional[jnp.dtype] = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MuonAdam (Gower et al.): polar-factor steps on matrices, Adam on the rest, one lr.

  Muon leaves: ``M_1 = G_1``, ``M ← βM + (1−β)G``,
  ``W ← W(1 − ηλ) − η_t·s·polar(M)``. Adam leaves (no bias correction,
  ``m_1 = g_1``, ``v_1 = g_1²``): ``w ← w(1 − ηλ) − η_t·m/(eps + √v)``. No
  shape scale factor. ``global_scale=True`` is MuonMax (:func:`muon_max`);
  ``truncate=True`` adds Momo (:func:`momo`); otherwise ``η_t = η``. Built on
  :func:`gower_optimizer` (one transform over the full
  tree, because MuonMax's and Momo's sums span both branches).

  Call ``tx.update(grads, state, params, value=loss)``: ``value`` is required
  with ``truncate=True`` and ignored otherwise. Under
  ``optax.inject_hyperparams`` pass ``static_args=("steps",)`` (the iteration
  count is static) and keep ``compute_dtype`` a string or ``None``.

  Args:
    learning_rate: base η (float or schedule) of both branches.
    muon_lr_scale: ``s``, the Muon leaves' lr multiplier.
    weight_decay: decay λ of every leaf, with the base η.
    weight_decay_mode: ``"decoupled"`` or ``"cautious"``.
    beta: Muon momentum β.
    adam_betas: Adam ``(β₁, β₂)``; Momo needs ``β₁ == beta``.
    eps: Adam epsilon.
    steps: Newton–Schulz iterations.
    polar_method: ``"polar_express_gptopt"`` (GPT-opt's ``"polar_express"``),
      ``"keller"`` (GPT-opt's ``"jordan"``), ``"svd"`` or a callable.
    compute_dtype: Newton–Schulz dtype (bfloat16 as GPT-opt; ``None`` = the
      momentum's dtype).
    global_scale: multiply Muon steps by ``N = Σ_Muon <M_l, polar(M_l)>``
      (MuonMax).
    truncate: Momo truncation of the step size.
    truncate_loss: Momo's ``f*`` (``None`` disables truncation).
    clamp_nonnegative: clamp the Momo numerator at 0 (``False`` = GPT-opt).
    stale_nuc: use last step's ``<M, polar(M)>`` (fresh at step 1) in ``N``
      and in Momo's denominator, as GPT-opt does.
    mu_dtype: dtype of the moment buffers.
    dimension_numbers: routing, decided at ``init`` (default rules: hidden
      matrices and stacks to Muon; embeddings, heads, vectors to Adam; see
      :func:`muonjax.routing.routed`).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonadam.py``, ``muonmax_momo.py``, ``muonadam_momo.py``).
  """
  check_learning_rate("learning_rate", learning_rate)
  try:
    adam_b1, adam_b2 = adam_betas
  except (TypeError, ValueError):
    raise ValueError(f"adam_betas must be a pair (beta1, beta2); got {adam_betas!r}") from None
  check_unit_interval("adam_betas[0]", adam_b1)
  check_unit_interval("adam_betas[1]", adam_b2)
  orthogonalizer = gptopt_orthogonalizer(polar_method, steps=steps, compute_dtype=compute_dtype)

  def build(dims):
    return gower_optimizer(
        learning_rate, variant="muon_max" if global_scale else "muon_adam",
        muon_lr_scale=muon_lr_scale, weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode, beta=beta, adam_b1=adam_b1, adam_b2=adam_b2,
        eps=eps, orthogonalizer=orthogonalizer, stale_nuc=stale_nuc, truncate=truncate,
        truncate_loss=truncate_loss, clamp_nonnegative=clamp_nonnegative, mu_dtype=mu_dtype,
        dimension_numbers=dims)

  build(None)  # bad hyperparameters fail now, not at init
  return routing.routed(build, dimension_numbers)


def muon_max(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    muon_lr_scale: float = 10.0,
    weight_decay: float = 0.1,
    weight_decay_mode: DecayMode = "decoupled",
    beta: float = 0.95,
    adam_betas: tuple[float, float] = (0.95, 0.95),
    eps: float = 1e-8,
    steps: int = 5,
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    compute_dtype: Any = "bfloat16",
    truncate: bool = False,
    truncate_loss: Optional[float] = 0.0,
    clamp_nonnegative: bool = True,
    stale_nuc: bool = True,
    mu_dtype: Optional[jnp.dtype] = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MuonMax (Gower et al.): MuonAdam with Muon steps scaled by the global dual norm.

  ``W ← W(1 − ηλ) − η_t·s·N·polar(M)`` with the tree-wide scalar
  ``N = Σ_Muon <M_l, polar(M_l)>`` (≈ Σ‖M_l‖_*; last step's per-leaf values
  when ``stale_nuc``, fresh at step 1) from
  :func:`muonjax.scale_by_global_nuclear_norm`; Adam leaves
  as :func:`muon_adam`. ``truncate=True`` adds Momo with
  ``D² = s·N² + Σ_Adam Σ m²/(eps + √v)``.

  Args:
    learning_rate: base η.
    other arguments: as :func:`muon_adam` (no ``global_scale``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``).
  """
  return muon_adam(
      learning_rate, global_scale=True,
      muon_lr_scale=muon_lr_scale, weight_decay=weight_decay,
      weight_decay_mode=weight_decay_mode, beta=beta, adam_betas=adam_betas, eps=eps,
      steps=steps, polar_method=polar_method, compute_dtype=compute_dtype,
      truncate=truncate, truncate_loss=truncate_loss,
      clamp_nonnegative=clamp_nonnegative, stale_nuc=stale_nuc, mu_dtype=mu_dtype,
      dimension_numbers=dimension_numbers)


def momo(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    base: str = "muon_max",
    muon_lr_scale: float = 10.0,
    weight_decay: float = 0.1,
    weight_decay_mode: DecayMode = "decoupled",
    beta: float = 0.95,
    adam_betas: tuple[float, float] = (0.95, 0.95),
    eps: float = 1e-8,
    steps: int = 5,
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    compute_dtype: Any = "bfloat16",
    truncate_loss: Optional[float] = 0.0,
    clamp_nonnegative: bool = True,
    stale_nuc: bool = True,
    mu_dtype: Optional[jnp.dtype] = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Momo-truncated MuonMax (default) or MuonAdam: ``base(..., truncate=True)``.

  ``η_t = min(η, max(f̄ − f* + Σ<W, M>, 0) / D)`` with ``f̄`` the EMA (β) of
  ``loss − Σ<W, G>`` (``f̄_1`` = its first value), sums over **all** leaves, and
  ``D = D²`` (MuonMax) or ``D₁`` (MuonAdam); weight decay keeps the base η.
  ``f* = truncate_loss = 0`` by default. The numerator is clamped at 0 unless
  ``clamp_nonnegative=False`` (GPT-opt has no clamp: a negative numerator
  reverses the step). Requires ``beta == adam_betas[0]``.

  Call ``tx.update(grads, state, params, value=loss)``; without ``value`` the
  update raises ``ValueError``.

  Args:
    learning_rate: base η.
    base: ``"muon_max"`` or ``"muon_adam"``.
    other arguments: as :func:`muon_adam` (no ``global_scale``, ``truncate``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``, ``muonadam_momo.py``); Schaipp et al., MoMo,
    arXiv 2305.07583.
  """
  check_choice("base", base, ("muon_max", "muon_adam"))
  return muon_adam(
      learning_rate, global_scale=base == "muon_max", truncate=True,
      muon_lr_scale=muon_lr_scale, weight_decay=weight_decay,
      weight_decay_mode=weight_decay_mode, beta=beta, adam_betas=adam_betas, eps=eps,
      steps=steps, polar_method=polar_method, compute_dtype=compute_dtype,
      truncate_loss=truncate_loss, clamp_nonnegative=clamp_nonnegative,
      stale_nuc=stale_nuc, mu_dtype=mu_dtype, dimension_numbers=dimension_numbers)
