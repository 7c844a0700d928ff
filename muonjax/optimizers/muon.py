"""Muon (Keller Jordan's form, or ``optax.contrib.muon``'s with ``compat="optax"``)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np
import optax

from muonjax.optimizers.base import PRESET, Preset, Stage, build_stages, muon_settings
from muonjax.orthogonalization.coefficients import CoeffsLike
from muonjax.transforms.momentum import MomentumForm
from muonjax.transforms.orthogonalize import Orthogonalizer
from muonjax.transforms.scale import ShapeRule
from muonjax.transforms.weight_decay import DecayMode


OPTAX_COEFF_PRESETS = {"standard": "keller", "dion": "dion"}
"""optax.contrib.muon's ``ns_coeffs`` preset names → muonjax coefficient presets."""


def optax_keywords(*, ns_coeffs, ns_steps, preconditioning, muon_weight_dimension_numbers,
                   coeffs, steps, normalization, dimension_numbers):
  """Map optax.contrib.muon's keyword names to ``(coeffs, steps, normalization, dimension_numbers)``.

  Raises:
    ValueError: an optax name given together with its muonjax counterpart, or
      an ``(n, 3)`` table with more rows than ``ns_steps`` (optax raises then too).
  """
  def both(optax_name, ours):
    raise ValueError(f"{optax_name}= is optax.contrib.muon's name for {ours}=; give only one")

  if preconditioning is not None:
    if normalization != "frobenius":
      both("preconditioning", "normalization")
    normalization = preconditioning
  if muon_weight_dimension_numbers is not None:
    if dimension_numbers is not PRESET:
      both("muon_weight_dimension_numbers", "dimension_numbers")
    dimension_numbers = muon_weight_dimension_numbers
  if ns_steps is not None and steps is not None:
    both("ns_steps", "steps")
  if ns_coeffs is None:
    return coeffs, (ns_steps if steps is None else steps), normalization, dimension_numbers
  if coeffs is not None:
    both("ns_coeffs", "coeffs")
  if isinstance(ns_coeffs, str):
    coeffs = OPTAX_COEFF_PRESETS.get(ns_coeffs, ns_coeffs)
    rows = None if coeffs != "dion" else 5
  else:
    coeffs = ns_coeffs
    table = np.asarray(ns_coeffs)
    rows = table.shape[0] if table.ndim == 2 else None
  if rows is None:  # a single triple: ns_steps iterations (optax's default 5)
    return coeffs, ns_steps if ns_steps is not None else steps, normalization, dimension_numbers
  limit = 5 if ns_steps is None else ns_steps
  if rows > limit:
    raise ValueError(f"ns_coeffs has {rows} rows, more than ns_steps={limit} "
                     "(optax.contrib.muon raises 'Not enough coeffs' too)")
  return coeffs, rows, normalization, dimension_numbers


def muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: MomentumForm = "ema",
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Union[float, None, Preset] = PRESET,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: ShapeRule = "keller",
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = None,
    adam_eps: Optional[float] = None,
    adam_weight_decay: float = 0.0,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
    ns_coeffs: Optional[CoeffsLike] = None,
    ns_steps: Optional[int] = None,
    preconditioning: Optional[str] = None,
    muon_weight_dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Muon on matrix leaves, AdamW on the rest.

  Matrix chain: :func:`momentum` → :func:`orthogonalize` → :func:`scale_by_shape`
  → ``optax.add_decayed_weights`` → ``optax.scale_by_learning_rate``, i.e.
  ``W ← W − η (s · NS(U) + λ W)`` (decoupled decay with the base η).

  The default is Keller Jordan's form: EMA momentum 0.95 with Nesterov and no
  bias correction, 5 steps of Keller's quintic in bfloat16, ``‖X‖_F + 1e-7``,
  scale ``sqrt(max(1, n_out/n_in))``; AdamW(3e-4, b1 0.9, b2 0.95, eps 1e-10)
  on embeddings, heads, norms, biases and scalars.

  ``compat="optax"`` reproduces ``optax.contrib.muon(learning_rate)`` (to 1e-5
  relative on float32 params): bias-corrected Nesterov EMA, NS in the update's
  dtype with ``eps=1e-8``, every rank-2 leaf to Muon (embeddings and heads
  included, rank-3 stacks to Adam, as optax does) and, on the rest, optax's
  NAdamW: same learning rate, b2 0.999, eps 1e-8, Nesterov as the Muon
  branch's (optax's one ``nesterov`` flag drives both), eps = the Muon
  ``eps`` (optax's one ``eps`` serves both). Arguments passed explicitly
  override either preset.

  **Drop-in for optax.contrib.muon (0.2.8).** ``optax.contrib.muon(lr, **kw)``
  and ``mj.muon(lr, **kw, compat="optax")`` build the same optimizer for every
  keyword of optax's signature (given by name):

  ==============================  ==============================================
  optax keyword                   muonjax meaning
  ==============================  ==============================================
  ``ns_coeffs``                   ``coeffs``: ``'standard'`` → ``"keller"``,
                                  ``'dion'`` → ``"dion"``, a triple, or an
                                  ``(n, 3)`` table, which runs all its ``n``
                                  rows (``n > ns_steps`` is a ``ValueError``,
                                  as optax's "Not enough coeffs")
  ``ns_steps``                    ``steps`` (ignored by a table, as in optax)
  ``beta``, ``eps``, ``mu_dtype``,  same name, same meaning (``eps`` is also
  ``nesterov``, ``weight_decay``,   the AdamW eps and ``nesterov`` also the
  ``weight_decay_mask``             AdamW's Nesterov under ``compat="optax"``)
  ``adaptive``                    same: :func:`muonjax.scale_by_dual_norm`
  ``preconditioning``             ``normalization``
  ``adam_b1``, ``adam_b2``,       same name (AdamW branch)
  ``adam_eps_root``,
  ``adam_weight_decay``,
  ``adam_learning_rate``
  ``muon_weight_dimension_numbers``  ``dimension_numbers`` (a tree or callable
                                  of ``MuonDimensionNumbers | None``)
  ``consistent_rms``              ``shape_rule="rms_match", rms=consistent_rms``
                                  (:func:`muonjax.scale_by_consistent_rms`)
  ==============================  ==============================================

  The optax-only names (``ns_coeffs``, ``ns_steps``, ``preconditioning``,
  ``muon_weight_dimension_numbers``) are plain aliases: they mean the same
  without ``compat="optax"`` (with Keller's other defaults). Giving an optax
  name together with its muonjax counterpart (e.g. ``ns_steps`` and
  ``steps``) is a ``ValueError`` naming both.

  Args:
    learning_rate: base learning rate η (float or schedule).
    beta: momentum coefficient.
    nesterov: Nesterov look-ahead for the matrix momentum.
    momentum_form: ``"ema"``, ``"sgd"`` or ``"ema_from_first"``.
    bias_correction: optax-style bias correction of the EMA (None: preset).
    mu_dtype: momentum buffer dtype (default: the parameter dtype).
    method: ``"newton_schulz"``, ``"polar_express"``, ``"svd"``, a callable, or
      ``None`` for no orthogonalization (Mano; the "momentum only" ablation).
    coeffs: coefficient preset or table (default: Keller / Polar Express).
    steps: orthogonalization iterations (default 5).
    normalization: ``"frobenius"``, ``"spectral"``, ``"aol"``, ``"schatten"``.
    safety: Frobenius-norm safety divisor (default: the coefficient set's).
    eps: normalization epsilon (default: the coefficient set's, 1e-7 for Keller).
    compute_dtype: Newton–Schulz dtype (default bfloat16; None = update dtype).
    shape_rule: ``"keller"``, ``"rms_match"``, ``"spectral"``, ``"spectral_max"``
      or ``"none"``.
    rms: target RMS of ``"rms_match"``.
    weight_decay: decoupled decay λ of the matrix leaves.
    weight_decay_mask: optax mask (tree or callable) for the matrix decay.
    weight_decay_mode: ``"decoupled"`` or ``"cautious"`` (both branches).
    adam_learning_rate: AdamW learning rate (None: same as ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay, adam_nesterov: AdamW knobs.
    dimension_numbers: routing, decided at ``init`` and kept in the state
      (:func:`muonjax.routing.routed`). Default: the preset's (name/shape
      rules plus ``muon=`` leaf metadata, which ``nnx.Optimizer``'s ``init``
      shows; ``None`` also means these rules). Or a tree of
      ``MuonDimensionNumbers`` / ``None``, an ``nnx.Module`` (with
      :mod:`muonjax.nnx` imported), or a callable ``params -> tree``.
    group_by_shape: orthogonalize equal-shape matrices in one batched call.
    before_momentum: stages run on the raw gradient, before momentum (stage
      input-preconditioning stage, e.g. :func:`muonjax.precondition_input` for Newton-Muon), in the
      same forms as ``before_orthogonalize``.
    before_orthogonalize: stages run after momentum, before orthogonalization
      (e.g. ``mj.sign()``): ``GradientTransformation``\ s, or callables taking
      the dimension-numbers spec and returning one.
    after_orthogonalize: stages run on the orthogonalized update, before the
      shape scale (e.g. ``mj.normuon_normalize``), in the same forms.
    compat: ``None`` (Keller) or ``"optax"``.
    adaptive: scale each orthogonalized leaf by ``⟨U, O⟩`` (optax's
      ``adaptive``; :func:`muonjax.scale_by_dual_norm`).
    consistent_rms: optax's name: when given, ``shape_rule="rms_match"`` with
      ``rms=consistent_rms`` (:func:`muonjax.scale_by_consistent_rms`).
    shape_overrides: ``{path pattern: factor}`` replacing the shape scale of
      matching leaves (see :func:`muonjax.scale_by_shape` ``overrides``).
    adam_eps_root: AdamW ``eps_root`` (inside the square root).
    adam_weight_decay_mask: optax mask (tree or callable) for the AdamW decay.
    ns_coeffs, ns_steps, preconditioning, muon_weight_dimension_numbers:
      optax's names (table above).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (an ``optax.partition``
    wrapped by :func:`muonjax.routing.routed`).

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    optax.contrib.muon, https://github.com/google-deepmind/optax.
  """
  coeffs, steps, normalization, dimension_numbers = optax_keywords(
      ns_coeffs=ns_coeffs, ns_steps=ns_steps, preconditioning=preconditioning,
      muon_weight_dimension_numbers=muon_weight_dimension_numbers, coeffs=coeffs, steps=steps,
      normalization=normalization, dimension_numbers=dimension_numbers)
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method=method, coeffs=coeffs,
      steps=steps, normalization=normalization, safety=safety, eps=eps,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)
