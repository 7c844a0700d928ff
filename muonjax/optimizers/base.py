"""Shared parts of the aliases: argument checks, presets, the AdamW branch, the partition.

Every Muon-family alias is an ``optax.partition`` of its own matrix chain (on
the leaves routed to Muon) and :func:`adam_branch` (on the rest: embeddings,
heads, norms, biases, scalars), with routing decided at ``init`` by
:func:`muonjax.routing.routed`. :class:`MuonSettings` holds the arguments the
aliases share and builds the stages every matrix chain uses, so each alias's
chain reads top to bottom in its own module.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Optional, Sequence, Union

import optax

from muonjax import routing
from muonjax.orthogonalization.coefficients import CoeffsLike
from muonjax.transforms.dual_norm import scale_by_dual_norm
from muonjax.transforms.momentum import MomentumForm, momentum
from muonjax.transforms.orthogonalize import Orthogonalizer, orthogonalize
from muonjax.transforms.scale import ShapeRule, scale_by_shape
from muonjax.transforms.validation import (
    check_choice,
    check_learning_rate,
    check_non_negative,
    check_unit_interval,
    static_int,
)
from muonjax.transforms.weight_decay import DecayMode
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage


class Preset(enum.Enum):
  """Default of a knob whose value comes from the ``compat`` preset (where ``None`` has a meaning)."""

  PRESET = "preset"

  def __repr__(self) -> str:
    return "<preset>"


PRESET = Preset.PRESET

# Knobs that differ between Keller's Muon (muonjax default) and optax.contrib.muon.
# adam_nesterov None in the optax preset: optax's one ``nesterov`` flag drives both branches;
# adam_eps None there: optax's one ``eps`` is also its AdamW eps.
COMPAT_PRESETS: dict[Optional[str], dict[str, Any]] = {
    None: dict(bias_correction=False, eps=None, compute_dtype="bfloat16",
               adam_learning_rate=3e-4, adam_b2=0.95, adam_eps=1e-10,
               adam_nesterov=False, dimension_numbers=None),
    "optax": dict(bias_correction=True, eps=1e-8, compute_dtype=None,
                  adam_learning_rate=None, adam_b2=0.999, adam_eps=None,
                  adam_nesterov=None, dimension_numbers=routing.optax_dimension_numbers),
}

Stage = Union[optax.GradientTransformation, Callable[[Any], optax.GradientTransformation]]

MUON_ARGUMENTS = (
    "learning_rate", "beta", "nesterov", "momentum_form", "bias_correction", "mu_dtype",
    "method", "coeffs", "steps", "normalization", "safety", "eps", "compute_dtype",
    "shape_rule", "rms", "weight_decay", "weight_decay_mask", "weight_decay_mode",
    "adam_learning_rate", "adam_b1", "adam_b2", "adam_eps", "adam_weight_decay",
    "adam_nesterov", "dimension_numbers", "group_by_shape", "before_momentum",
    "before_orthogonalize", "after_orthogonalize", "compat", "adaptive", "consistent_rms",
    "shape_overrides", "adam_eps_root", "adam_weight_decay_mask",
)
"""The keyword arguments of :func:`muonjax.muon`, which every Muon variant also takes."""

OPTAX_ARGUMENTS = ("ns_coeffs", "ns_steps", "preconditioning", "muon_weight_dimension_numbers")
"""optax.contrib.muon's keyword names that :func:`muonjax.muon` also accepts (its others
are muonjax names too: beta, eps, weight_decay, weight_decay_mask, mu_dtype, nesterov,
adaptive, adam_b1, adam_b2, adam_eps_root, adam_weight_decay, adam_learning_rate,
consistent_rms)."""


def build_stages(stages: Sequence[Stage], dims) -> list[optax.GradientTransformation]:
  """Instantiate stage factories with the dimension-numbers spec ``dims``."""
  return [s if isinstance(s, optax.GradientTransformation) else s(dims) for s in stages]


def adam_branch(learning_rate, *, b1, b2, eps, weight_decay, weight_decay_mode="decoupled",
                mu_dtype=None, nesterov=False, eps_root=0.0,
                weight_decay_mask=None) -> optax.GradientTransformation:
  """AdamW for non-matrix leaves: ``optax.adamw``'s chain with a choice of decay.

  With ``weight_decay_mode="cautious_lr"`` the mask is strict (``D ⊙ W > 0``),
  as in modded-nanogpt's Adam step.
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                          nesterov=nesterov),
      weight_decay_stage(weight_decay, mode=weight_decay_mode, mask=weight_decay_mask,
                         learning_rate=learning_rate, strict=True),
      optax.scale_by_learning_rate(learning_rate),
  )


def partition_matrices(
    matrix_tx: Callable[[Any], optax.GradientTransformation],
    other_tx: optax.GradientTransformation,
    dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """``optax.partition`` of ``matrix_tx(dims)`` (Muon leaves) and ``other_tx``.

  Args:
    matrix_tx: builds the matrix chain from the dimension-numbers tree it must
      use (structure of the params, ``None`` on the other leaves).
    other_tx: transformation for leaves routed to ``None``.
    dimension_numbers: routing, decided at ``init`` (see
      :func:`muonjax.routing.routed`): ``None`` (default rules, leaf metadata
      included), a tree of ``MuonDimensionNumbers | None``, or a callable
      ``params -> tree``.
  """
  def build(dims):
    return optax.partition({routing.MUON: matrix_tx(dims), routing.ADAM: other_tx},
                           lambda tree: routing.labels_from_dimension_numbers(dims, tree))
  matrix_tx(None)  # bad stage arguments fail now, not at init
  return routing.routed(build, dimension_numbers)


@dataclasses.dataclass(frozen=True)
class MuonSettings:
  """The shared arguments of a Muon-family alias, presets resolved and checked.

  Built by :func:`muon_settings`; its methods make the stages every matrix
  chain shares (the alias chains them in its own order).
  """

  learning_rate: Any
  beta: Any
  nesterov: bool
  momentum_form: MomentumForm
  bias_correction: bool
  mu_dtype: Any
  method: Union[str, Orthogonalizer, None]
  coeffs: Optional[CoeffsLike]
  steps: Optional[int]
  normalization: str
  safety: Optional[float]
  eps: Optional[float]
  compute_dtype: Any
  shape_rule: ShapeRule
  rms: float
  weight_decay: Any
  weight_decay_mask: Any
  weight_decay_mode: DecayMode
  adam_learning_rate: Any
  adam_b1: Any
  adam_b2: Any
  adam_eps: Any
  adam_weight_decay: Any
  adam_nesterov: bool
  dimension_numbers: Any
  group_by_shape: bool
  before_momentum: Sequence[Stage]
  before_orthogonalize: Sequence[Stage]
  after_orthogonalize: Sequence[Stage]
  adaptive: bool = False
  shape_overrides: Any = None
  adam_eps_root: Any = 0.0
  adam_weight_decay_mask: Any = None

  def momentum(self) -> optax.GradientTransformation:
    return momentum(self.beta, nesterov=self.nesterov, form=self.momentum_form,
                    bias_correction=self.bias_correction, mu_dtype=self.mu_dtype)

  def orthogonalize(self, dims) -> list[optax.GradientTransformation]:
    """The orthogonalize stage (wrapped by :func:`scale_by_dual_norm` if ``adaptive``),
    or nothing for ``method=None``."""
    if self.method is None:
      return []
    stage = orthogonalize(
        self.method, coeffs=self.coeffs, steps=self.steps, normalization=self.normalization,
        safety=self.safety, eps=self.eps, compute_dtype=self.compute_dtype,
        dimension_numbers=dims, group_by_shape=self.group_by_shape)
    if self.adaptive:
      stage = scale_by_dual_norm(stage, dimension_numbers=dims)
    return [stage]

  def scale(self, dims) -> optax.GradientTransformation:
    """The shape scale (:func:`scale_by_shape` with ``shape_overrides``)."""
    return scale_by_shape(self.shape_rule, dimension_numbers=dims, rms=self.rms,
                          overrides=self.shape_overrides)

  def decay_and_learning_rate(self) -> list[optax.GradientTransformation]:
    """Decoupled (or cautious) weight decay with the base η, then ``−η``."""
    return [weight_decay_stage(self.weight_decay, mode=self.weight_decay_mode,
                               mask=self.weight_decay_mask, learning_rate=self.learning_rate),
            optax.scale_by_learning_rate(self.learning_rate)]

  def adam(self) -> optax.GradientTransformation:
    return adam_branch(self.adam_learning_rate, b1=self.adam_b1, b2=self.adam_b2,
                       eps=self.adam_eps, weight_decay=self.adam_weight_decay,
                       weight_decay_mode=self.weight_decay_mode, mu_dtype=self.mu_dtype,
                       nesterov=self.adam_nesterov, eps_root=self.adam_eps_root,
                       weight_decay_mask=self.adam_weight_decay_mask)

  def partition(self, matrix_chain: Callable[[Any], optax.GradientTransformation]
                ) -> optax.GradientTransformationExtraArgs:
    """``matrix_chain(dims)`` on Muon leaves, :meth:`adam` on the rest."""
    return partition_matrices(matrix_chain, self.adam(), self.dimension_numbers)


def muon_settings(
    learning_rate, *, beta, nesterov, momentum_form, bias_correction, mu_dtype, method,
    coeffs, steps, normalization, safety, eps, compute_dtype, shape_rule, rms, weight_decay,
    weight_decay_mask, weight_decay_mode, adam_learning_rate, adam_b1, adam_b2, adam_eps,
    adam_weight_decay, adam_nesterov, dimension_numbers, group_by_shape, before_momentum,
    before_orthogonalize, after_orthogonalize, compat, adaptive=False, consistent_rms=None,
    shape_overrides=None, adam_eps_root=0.0, adam_weight_decay_mask=None,
) -> MuonSettings:
  """Resolve the ``compat`` preset (``None``/``PRESET`` knobs), check ranges, build settings.

  ``bias_correction``, ``adam_b2``, ``adam_eps`` and ``adam_nesterov`` take
  the preset's value when ``None``; ``eps``, ``compute_dtype``,
  ``adam_learning_rate`` and ``dimension_numbers`` (where ``None`` has its own
  meaning) when :data:`PRESET`. ``consistent_rms`` (optax's name), when not
  ``None``, sets ``shape_rule="rms_match"`` and ``rms=consistent_rms``.
  """
  check_choice("compat", compat, tuple(COMPAT_PRESETS))
  preset = COMPAT_PRESETS[compat]
  pick_none = lambda name, value: preset[name] if value is None else value
  pick = lambda name, value: preset[name] if value is PRESET else value
  adam_nesterov = pick_none("adam_nesterov", adam_nesterov)
  if adam_nesterov is None:  # the optax preset: one flag for both branches
    adam_nesterov = nesterov
  eps = pick("eps", eps)
  adam_eps = pick_none("adam_eps", adam_eps)
  if adam_eps is None:  # the optax preset: one eps for both branches
    adam_eps = 1e-8 if eps is None else eps
  if not isinstance(adaptive, bool):
    raise ValueError(f"adaptive must be True or False; got {adaptive!r}")
  if adaptive and method is None:
    raise ValueError("adaptive=True scales the orthogonalized update by <U, O>; "
                     "it needs an orthogonalization (method is None)")
  if consistent_rms is not None:
    check_non_negative("consistent_rms", consistent_rms)
    shape_rule, rms = "rms_match", consistent_rms
  adam_learning_rate = pick("adam_learning_rate", adam_learning_rate)
  if adam_learning_rate is None:
    adam_learning_rate = learning_rate
  settings = MuonSettings(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=pick_none("bias_correction", bias_correction), mu_dtype=mu_dtype,
      method=method, coeffs=coeffs, steps=steps, normalization=normalization, safety=safety,
      eps=eps, compute_dtype=pick("compute_dtype", compute_dtype),
      shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1,
      adam_b2=pick_none("adam_b2", adam_b2), adam_eps=adam_eps,
      adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=pick("dimension_numbers", dimension_numbers),
      group_by_shape=group_by_shape, before_momentum=tuple(before_momentum),
      before_orthogonalize=tuple(before_orthogonalize),
      after_orthogonalize=tuple(after_orthogonalize), adaptive=adaptive,
      shape_overrides=shape_overrides, adam_eps_root=adam_eps_root,
      adam_weight_decay_mask=adam_weight_decay_mask)
  check_learning_rate("learning_rate", learning_rate)
  check_learning_rate("adam_learning_rate", adam_learning_rate)
  for name in ("beta", "adam_b1", "adam_b2"):
    check_unit_interval(name, getattr(settings, name))
  for name in ("weight_decay", "adam_weight_decay", "adam_eps", "adam_eps_root"):
    check_non_negative(name, getattr(settings, name))
  if steps is not None:
    static_int("steps", steps, minimum=1)
  return settings
