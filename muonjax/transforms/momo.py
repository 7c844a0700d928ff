"""Momo step-size stage: the model-based truncation of the learning rate.

``eta_t = min(eta, max(fbar - f* + sum <W, M>, 0) / D)`` with ``fbar`` the EMA
of ``loss - sum <W, G>``; sums over every leaf (see :func:`momo_step_size`).

References:
  Schaipp et al., MoMo: Momentum Models for Adaptive Learning Rates,
  arXiv 2305.07583; Gower et al., arXiv 2510.09827,
  https://github.com/modichirag/GPT-opt (``muonmax_momo.py``, ``muonadam_momo.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.global_nuclear_norm import tree_vdot
from muonjax.transforms.validation import check_unit_interval


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
  r"""Momo: scale the direction ``D`` by ``η_t / η`` (the Momo step-size stage).

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
    sample = jnp.asarray(value, jnp.float32) - tree_vdot(params, momo_inputs.grads)
    loss_model = jnp.where(state.count == 0, sample,
                           beta * state.loss_model + (1 - beta) * sample)
    numerator = loss_model - truncate_loss + tree_vdot(params, momo_inputs.momentum)
    if clamp_nonnegative:
      numerator = jnp.maximum(numerator, 0.0)
    den = jnp.asarray(momo_inputs.denominator, jnp.float32)
    # A zero denominator means M = 0, hence D = 0: any finite η_t will do.
    step = jnp.where(den > 0, jnp.minimum(lr, numerator / jnp.where(den > 0, den, 1.0)), lr)
    ratio = jnp.where(lr > 0, step / jnp.where(lr > 0, lr, 1.0), 1.0)
    updates = jax.tree.map(lambda u: u * ratio.astype(u.dtype), updates)
    return updates, MomoState(optax.safe_increment(state.count), loss_model, step)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


