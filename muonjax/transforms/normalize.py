"""Normalize stages (after orthogonalization) and pre-orthogonalize elementwise maps (docs/optimizers.md#stage-pipeline).

All statistics are taken on the raw orthogonalized update, before any shape
scale (Emerging-Optimizers PR #186, https://github.com/NVIDIA-NeMo/Emerging-Optimizers/pull/186). Axis names are in Flax ``(n_in, n_out)`` layout: "per output
neuron" means one statistic per column, a reduction over axis -2.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms import dimensions
from muonjax.transforms.dtypes import require_real
from muonjax.transforms.validation import check_choice, check_non_negative, check_unit_interval

StatAxis = Literal["output", "input", "longer"]


class SecondMomentState(NamedTuple):
  """Per-matrix second-moment buffers (``MaskedNode`` for pass-through leaves)."""

  nu: optax.Updates


def _frobenius(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(jnp.abs(x)), axis=(-2, -1), keepdims=True))


def _reduced_axis(view: dimensions.MatrixView, axis: StatAxis) -> int:
  """Matrix axis averaged over: -2 gives one value per output neuron."""
  if axis == "output":
    return -2
  if axis == "input":
    return -1
  return -2 if view.n_out >= view.n_in else -1  # reduce the shorter side


def normuon_normalize(
    beta2: float = 0.95,
    *,
    axis: StatAxis = "output",
    eps: float = 1e-10,
    restore_norm: bool = True,
    clamp: bool = False,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""NorMuon: normalize each neuron of the orthogonalized update by its running RMS.

  Per matrix ``O`` (Flax ``(n_in, n_out)``)::

      v = mean(O * O over the input axis)      # one value per output neuron
      S <- beta2 * S + (1 - beta2) * v          # S_0 = 0, no bias correction
      O' = O / (sqrt(S) + eps)                  # clamp=True: O * rsqrt(max(S, eps))
      O'' = O' * ||O||_F / (||O'||_F + eps)     # restore_norm (official code)

  Args:
    beta2: EMA coefficient of the per-neuron second moment.
    axis: ``"output"`` (one value per output neuron, reduce axis -2; NorMuon
      code and paper), ``"input"`` (per input feature) or ``"longer"`` (one value
      per index of the longer side; modded-nanogpt).
    eps: added to ``sqrt(S)`` (or the clamp floor of ``S`` with ``clamp=True``)
      and to the restored norm's denominator.
    restore_norm: rescale to the Frobenius norm the update had before.
    clamp: modded-nanogpt's ``rsqrt(max(S, eps))`` and ``max(||O'||, eps)``.
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).

  Returns:
    An ``optax.GradientTransformation`` with :class:`SecondMomentState`; the
    buffer of a leaf viewed as ``(B, n_in, n_out)`` has shape ``(B, 1, n_out)``
    for ``axis="output"`` (float32).

  References:
    Li et al., NorMuon, arXiv 2510.05491, https://github.com/zichongli5/NorMuon;
    modded-nanogpt, https://github.com/KellerJordan/modded-nanogpt.
  """
  check_unit_interval("beta2", beta2)
  check_choice("axis", axis, ("output", "input", "longer"))
  check_non_negative("eps", eps)

  def init_fn(params):
    require_real("normuon_normalize", dimension_numbers, params,
                 "a per-neuron second moment of the real orthogonalized update")
    def make(path, leaf, view):
      shape = [view.batch, view.n_in, view.n_out]
      shape[_reduced_axis(view, axis)] = 1
      return jnp.zeros(shape, jnp.float32)
    return SecondMomentState(dimensions.init_per_matrix(make, dimension_numbers, params))

  def update_fn(updates, state, params=None):
    del params
    def step(path, leaf, view, nu):
      o = view.to_matrices(leaf).astype(jnp.float32)
      red = _reduced_axis(view, axis)
      nu = beta2 * nu + (1 - beta2) * jnp.mean(jnp.square(o), axis=red, keepdims=True)
      inv = jax.lax.rsqrt(jnp.maximum(nu, eps)) if clamp else 1 / (jnp.sqrt(nu) + eps)
      out = o * inv
      if restore_norm:
        norm = _frobenius(out)
        out = out * _frobenius(o) / (jnp.maximum(norm, eps) if clamp else norm + eps)
      return view.from_matrices(out).astype(leaf.dtype), nu
    updates, nu = dimensions.map_matrices_with_state(
        step, dimension_numbers, updates, state.nu)
    return updates, SecondMomentState(nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adamuon_normalize(
    beta: float = 0.95,
    *,
    eps: float = 1e-8,
    nu_dtype: Optional[jnp.dtype] = jnp.float32,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""AdaMuon: elementwise second moment of the orthogonalized update.

  ``v <- beta v + (1 - beta) O*O`` (full size, no bias correction), output
  ``O / (sqrt(v) + eps)``. AdaMuon uses the *momentum* beta here.

  Args:
    beta: EMA coefficient (AdaMuon reuses the momentum's 0.95).
    eps: added to ``sqrt(v)``.
    nu_dtype: buffer dtype (float32; the reference code keeps bfloat16).
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).

  Returns:
    An ``optax.GradientTransformation`` with :class:`SecondMomentState` whose
    buffers have the leaves' shapes.

  References:
    Si et al., AdaMuon, arXiv 2507.11005, https://github.com/Chongjie-Si/AdaMuon.
  """
  check_unit_interval("beta", beta)
  check_non_negative("eps", eps)

  def init_fn(params):
    require_real("adamuon_normalize", dimension_numbers, params,
                 "an elementwise second moment of a sign-based update")
    return SecondMomentState(dimensions.init_per_matrix(
        lambda path, leaf, view: jnp.zeros(leaf.shape, nu_dtype or leaf.dtype),
        dimension_numbers, params))

  def update_fn(updates, state, params=None):
    del params
    def step(path, leaf, view, nu):
      o = leaf.astype(jnp.float32)
      nu32 = beta * nu.astype(jnp.float32) + (1 - beta) * jnp.square(o)
      return (o / (jnp.sqrt(nu32) + eps)).astype(leaf.dtype), nu32.astype(nu.dtype)
    updates, nu = dimensions.map_matrices_with_state(
        step, dimension_numbers, updates, state.nu)
    return updates, SecondMomentState(nu)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_to_rms(
    rms: float = 0.2,
    *,
    eps: float = 1e-8,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""Rescale each matrix to a fixed RMS: ``O * rms * sqrt(n_in n_out) / (||O||_F + eps)``.

  The ``rms_after_adaptive`` rule of AdaMuon and the NorMuon paper: the update
  RMS is then exactly ``rms`` (for ``||O||_F >> eps``).

  Args:
    rms: target root-mean-square of every matrix.
    eps: added to the Frobenius norm.
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).

  Returns:
    A stateless ``optax.GradientTransformation``.
  """
  check_non_negative("rms", rms)
  check_non_negative("eps", eps)

  def update_fn(updates, state, params=None):
    del params
    def rescale(path, leaf, view):
      o = view.to_matrices(leaf)
      factor = rms * (view.n_in * view.n_out) ** 0.5 / (_frobenius(o) + eps)
      return view.from_matrices(o * factor.astype(o.dtype))
    return dimensions.map_matrices(rescale, dimension_numbers, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def sign(
    *, dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  """Elementwise ``sign`` of every matrix leaf (AdaMuon's step before Newton–Schulz).

  References:
    Si et al., AdaMuon (v2, "sign-stabilized"), arXiv 2507.11005.
  """
  def init_fn(params):
    require_real("sign", dimension_numbers, params, "an elementwise real sign")
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return dimensions.map_matrices(
        lambda path, leaf, view: jnp.sign(leaf), dimension_numbers, updates), state

  return optax.GradientTransformation(init_fn, update_fn)
