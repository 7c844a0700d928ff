"""Ready-made optimizers (aliases) built from muonjax stages, and their registry.

Every alias is an ``optax.partition`` of a Muon-family chain on matrix leaves
and AdamW on the rest (embeddings, heads, norms, biases, scalars); routing comes
from :func:`muonjax.muon_dimension_numbers` unless ``dimension_numbers`` says
otherwise.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

import jax.numpy as jnp
import optax

from muonjax import routing
from muonjax.orthogonalize.coefficients import CoeffsLike
from muonjax.transforms.momentum import MomentumForm, momentum
from muonjax.transforms.orthogonalize import Orthogonalizer, orthogonalize
from muonjax.transforms.scale import ShapeRule, scale_by_shape
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)


class _Preset:
  """Marker default: the value comes from the ``compat`` preset."""

  def __repr__(self) -> str:
    return "<preset>"


PRESET: Any = _Preset()

# Knobs that differ between Keller's Muon (muonjax default) and optax.contrib.muon.
_COMPAT_PRESETS: dict[Optional[str], dict[str, Any]] = {
    None: dict(bias_correction=False, eps=None, compute_dtype=jnp.bfloat16,
               adam_learning_rate=3e-4, adam_b2=0.95, adam_eps=1e-10,
               adam_nesterov=False, dimension_numbers=routing.muon_dimension_numbers),
    "optax": dict(bias_correction=True, eps=1e-8, compute_dtype=None,
                  adam_learning_rate=None, adam_b2=0.999, adam_eps=1e-8,
                  adam_nesterov=True, dimension_numbers=routing.optax_dimension_numbers),
}


def check_learning_rate(name: str, value) -> None:
  if not callable(value):
    check_positive(name, value)


def partition_matrices(
    matrix_tx: Callable[[Any], optax.GradientTransformation],
    other_tx: optax.GradientTransformation,
    dimension_numbers,
) -> optax.GradientTransformation:
  """``optax.partition`` of ``matrix_tx(dim_nums)`` (Muon leaves) and ``other_tx``.

  Args:
    matrix_tx: builds the matrix chain from the dimension-numbers spec it must
      use (a static tree or a callable evaluated on the masked updates).
    other_tx: transformation for leaves routed to ``None``.
    dimension_numbers: a tree of ``MuonDimensionNumbers | None`` or a callable
      ``params -> tree``.
  """
  def labels(params):
    dims = dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers
    return routing.labels_from_dimension_numbers(dims, params)

  return optax.partition(
      {routing.MUON: matrix_tx(dimension_numbers), routing.ADAM: other_tx}, labels)


def muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: MomentumForm = "ema",
    bias_correction: bool = PRESET,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = PRESET,
    compute_dtype: Optional[jnp.dtype] = PRESET,
    shape_rule: ShapeRule = "keller",
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: float = PRESET,
    adam_eps: float = PRESET,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool = PRESET,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    compat: Optional[str] = None,
) -> optax.GradientTransformation:
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
  NAdamW: same learning rate, b2 0.999, eps 1e-8, Nesterov on. Arguments passed
  explicitly override either preset.

  Args:
    learning_rate: base learning rate η (float or schedule).
    beta: momentum coefficient.
    nesterov: Nesterov look-ahead for the matrix momentum.
    momentum_form: ``"ema"``, ``"sgd"`` or ``"ema_from_first"``.
    bias_correction: optax-style bias correction of the EMA.
    mu_dtype: momentum buffer dtype (default: the parameter dtype).
    method: ``"newton_schulz"``, ``"polar_express"``, ``"svd"`` or a callable.
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
    adam_learning_rate: AdamW learning rate (None: same as ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay, adam_nesterov: AdamW knobs.
    dimension_numbers: routing: a tree of ``MuonDimensionNumbers`` / ``None``
      (e.g. from :func:`muonjax.muon_dimension_numbers` of an ``nnx.Module``,
      which reads Variable metadata) or a callable ``params -> tree``.
    group_by_shape: orthogonalize equal-shape matrices in one batched call.
    compat: ``None`` (Keller) or ``"optax"``.

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    optax.contrib.muon, https://github.com/google-deepmind/optax.
  """
  check_choice("compat", compat, tuple(_COMPAT_PRESETS))
  preset = _COMPAT_PRESETS[compat]
  given = dict(bias_correction=bias_correction, eps=eps, compute_dtype=compute_dtype,
               adam_learning_rate=adam_learning_rate, adam_b2=adam_b2,
               adam_eps=adam_eps, adam_nesterov=adam_nesterov,
               dimension_numbers=dimension_numbers)
  # A knob left at PRESET takes the preset's value.
  knobs = {k: preset[k] if v is PRESET else v for k, v in given.items()}
  adam_lr = (learning_rate if knobs["adam_learning_rate"] is None
             else knobs["adam_learning_rate"])

  check_learning_rate("learning_rate", learning_rate)
  check_learning_rate("adam_learning_rate", adam_lr)
  for name, value in [("beta", beta), ("adam_b1", adam_b1), ("adam_b2", knobs["adam_b2"])]:
    check_unit_interval(name, value)
  for name, value in [("weight_decay", weight_decay), ("adam_weight_decay", adam_weight_decay),
                      ("adam_eps", knobs["adam_eps"])]:
    check_non_negative(name, value)
  if steps is not None and steps < 1:
    raise ValueError(f"steps must be >= 1; got {steps}")

  def matrix_chain(dims):
    return optax.chain(
        momentum(beta, nesterov=nesterov, form=momentum_form,
                 bias_correction=knobs["bias_correction"], mu_dtype=mu_dtype),
        orthogonalize(method, coeffs=coeffs, steps=steps, normalization=normalization,
                      safety=safety, eps=knobs["eps"], compute_dtype=knobs["compute_dtype"],
                      dimension_numbers=dims, group_by_shape=group_by_shape),
        scale_by_shape(shape_rule, dimension_numbers=dims, rms=rms),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )

  other = optax.adamw(adam_lr, b1=adam_b1, b2=knobs["adam_b2"], eps=knobs["adam_eps"],
                      weight_decay=adam_weight_decay, mu_dtype=mu_dtype,
                      nesterov=knobs["adam_nesterov"])
  return partition_matrices(matrix_chain, other, knobs["dimension_numbers"])


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  """``optax.adamw`` with argument checks, for the registry and the CLI."""
  check_learning_rate("learning_rate", learning_rate)
  check_unit_interval("b1", b1)
  check_unit_interval("b2", b2)
  check_non_negative("eps", eps)
  check_non_negative("weight_decay", weight_decay)
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     nesterov=nesterov)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "muon": muon,
    "adamw": adamw,
}


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation]) -> None:
  """Add ``factory`` to the registry under ``name`` (an error if taken)."""
  if name in OPTIMIZERS:
    raise ValueError(f"optimizer {name!r} is already registered")
  OPTIMIZERS[name] = factory


def get_optimizer(name: str, **hparams) -> optax.GradientTransformation:
  """Build a registered optimizer by name.

  Raises:
    ValueError: unknown name (lists the known ones), a hyperparameter the
      optimizer does not take (lists the ones it takes), or a value out of range.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
  factory = OPTIMIZERS[name]
  allowed = [p for p in inspect.signature(factory).parameters]
  unknown = sorted(set(hparams) - set(allowed))
  if unknown:
    raise ValueError(
        f"optimizer {name!r} has no hyperparameter {unknown[0]!r}; allowed: {allowed}")
  return factory(**hparams)
