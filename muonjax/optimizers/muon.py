"""Muon (Keller Jordan's form, or ``optax.contrib.muon``'s with ``compat="optax"``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax.numpy as jnp
import optax

from muonjax.optimizers.base import PRESET, Preset, Stage, build_stages, muon_settings
from muonjax.orthogonalization.coefficients import CoeffsLike
from muonjax.transforms.momentum import MomentumForm
from muonjax.transforms.orthogonalize import Orthogonalizer
from muonjax.transforms.scale import ShapeRule, scale_by_shape
from muonjax.transforms.weight_decay import DecayMode


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
  branch's (optax's one ``nesterov`` flag drives both). Arguments passed
  explicitly override either preset.

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
      S0, e.g. :func:`muonjax.precondition_input` for Newton-Muon), in the
      same forms as ``before_orthogonalize``.
    before_orthogonalize: stages run after momentum, before orthogonalization
      (e.g. ``mj.sign()``): ``GradientTransformation``\ s, or callables taking
      the dimension-numbers spec and returning one.
    after_orthogonalize: stages run on the orthogonalized update, before the
      shape scale (e.g. ``mj.normuon_normalize``), in the same forms.
    compat: ``None`` (Keller) or ``"optax"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (an ``optax.partition``
    wrapped by :func:`muonjax.routing.routed`).

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    optax.contrib.muon, https://github.com/google-deepmind/optax.
  """
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
      after_orthogonalize=after_orthogonalize, compat=compat)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        *build_stages(s.after_orthogonalize, dims),
        scale_by_shape(s.shape_rule, dimension_numbers=dims, rms=s.rms),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)
