"""Weight decay stage (docs/optimizers.md#weight-decay), placed before ``scale_by_learning_rate``."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.validation import check_choice, check_learning_rate, check_non_negative

DecayMode = Literal["decoupled", "cautious", "cautious_lr"]
MODES = ("decoupled", "cautious", "cautious_lr")


def _check_rate(rate) -> None:
  if callable(rate):
    raise ValueError("weight_decay must be a number (schedule the learning rate instead: "
                     "the decay is multiplied by it)")
  check_non_negative("weight_decay", rate)


def _cautious_mask(d, w, strict: bool):
  """``1[Re(D conj(W)) >= 0]`` (``> 0`` if strict): the step already shrinks ``|W|``."""
  inner = jnp.real(d * jnp.conj(w))
  return ((inner > 0) if strict else (inner >= 0)).astype(d.dtype)


def _decayed_weights(rate: float, cautious: bool) -> optax.GradientTransformation:
  _check_rate(rate)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs params: call update(grads, state, params)")
    def decay(d, w):
      w = w.astype(d.dtype)
      if cautious:  # Re(D conj(W)) >= 0: the step shrinks |W| (D * W >= 0 for reals)
        w = _cautious_mask(d, w, strict=False) * w
      return d + jnp.asarray(rate, d.dtype) * w
    return jax.tree.map(decay, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def cautious_weight_decay(rate: float) -> optax.GradientTransformation:
  r"""Decay only coordinates where the step already shrinks ``|W|``.

  ``D <- D + rate * 1[D * W >= 0] * W``: with the learning rate applied after,
  ``W <- W - eta D - eta rate (mask * W)``. ``D`` is the descent direction (the
  quantity subtracted), so ``D * W >= 0`` marks coordinates moving toward zero.

  Args:
    rate: decay coefficient lambda (multiplied by the learning rate later).

  Returns:
    A stateless ``optax.GradientTransformation`` that needs ``params``.

  References:
    Chen et al., Cautious Weight Decay, arXiv 2510.12402; microsoft/dion
    ``cautious_wd`` (https://github.com/microsoft/dion).
  """
  return _decayed_weights(rate, cautious=True)


class LRTiedDecayState(NamedTuple):
  """State of :func:`lr_tied_cautious_weight_decay`: the step count of the learning-rate schedule."""

  count: jax.Array  # int32 scalar, in step with ``optax.scale_by_learning_rate``'s


def lr_tied_cautious_weight_decay(
    rate: float,
    learning_rate: optax.ScalarOrSchedule,
    *,
    strict: bool = False,
) -> optax.GradientTransformation:
  r"""Cautious weight decay whose coefficient is tied to the learning rate (modded-nanogpt).

  ``D <- D + rate · η_t · 1[D ⊙ W >= 0] ⊙ W``; the following
  ``scale_by_learning_rate(η)`` then gives
  ``W <- W − η_t D − η_t² · rate · (mask ⊙ W)``: the decay follows the
  *square* of the schedule, so it fades with the learning-rate cooldown.
  modded-nanogpt's NorMuon step (``NorMuonAndAdam._normuon_update`` and
  ``_cautious_wd_and_update_inplace``) computes ``eff_wd = wd_mul · wd · lr``
  and ``p ← p − p·mask·eff_wd·eff_lr − g·eff_lr`` with ``mask = (g·p) >= 0``;
  its Adam step (``_adam_update``) uses ``eff_wd = lr² · wd · wd_mul`` with
  the strict ``mask = (update·p) > 0``. Here ``η_t`` is the base learning
  rate: modded's ``eff_lr`` also carries its per-matrix lr multipliers
  (``sqrt(max(1, rows/cols))`` and 2 for MLP out-projections), which in muonjax
  live in the shape scale, so on matrices whose multiplier is not 1 modded's
  decay is that multiplier times larger (scale ``rate`` per leaf with
  ``optax.masked`` groups to match exactly).

  Args:
    rate: decay coefficient λ (modded-nanogpt's ``weight_decay · wd_mul``).
    learning_rate: the same float or schedule as the following
      ``scale_by_learning_rate``; a schedule is read at this stage's own
      count, which advances once per update as optax's does.
    strict: mask ``D ⊙ W > 0`` (modded's Adam branch) instead of ``>= 0``.

  Returns:
    An ``optax.GradientTransformation`` (state :class:`LRTiedDecayState`) that
    needs ``params``.

  References:
    modded-nanogpt ``train_gpt.py``
    (https://github.com/KellerJordan/modded-nanogpt/blob/master/train_gpt.py,
    ``NorMuonAndAdam``; record notes: tying the decay to the lr schedule);
    Chen et al., Cautious Weight Decay, arXiv 2510.12402.
  """
  _check_rate(rate)
  check_learning_rate("learning_rate", learning_rate)

  def init_fn(params):
    del params
    return LRTiedDecayState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs params: call update(grads, state, params)")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    def decay(d, w):
      w = w.astype(d.dtype)
      coeff = (jnp.asarray(rate, jnp.float32) * jnp.asarray(lr, jnp.float32)).astype(d.dtype)
      return d + coeff * _cautious_mask(d, w, strict) * w
    new_updates = jax.tree.map(decay, updates, params)
    return new_updates, LRTiedDecayState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def weight_decay(rate: float, *, mode: DecayMode = "decoupled",
                 mask: Optional[Any] = None,
                 learning_rate: Optional[optax.ScalarOrSchedule] = None,
                 strict: bool = False) -> optax.GradientTransformation:
  """Decoupled (``D + λW``, as ``optax.add_decayed_weights``) or cautious decay.

  Args:
    rate: decay coefficient λ; the following ``scale_by_learning_rate`` turns
      it into ``W <- W (1 - η λ)`` with the base η.
    mode: ``"decoupled"``, ``"cautious"`` (mask ``D ⊙ W >= 0``) or
      ``"cautious_lr"`` (cautious with coefficient ``λ η_t``, so the decay is
      ``η_t² λ``: modded-nanogpt, :func:`lr_tied_cautious_weight_decay`).
    mask: optional tree or callable of booleans selecting decayed leaves.
    learning_rate: the learning rate (float or schedule); needed by
      ``"cautious_lr"`` only.
    strict: ``"cautious_lr"`` only: mask ``D ⊙ W > 0`` (modded's Adam branch).

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.
  """
  check_choice("weight_decay_mode", mode, MODES)
  if mode == "cautious_lr":
    if learning_rate is None:
      raise ValueError('weight_decay_mode="cautious_lr" needs the learning_rate')
    tx = lr_tied_cautious_weight_decay(rate, learning_rate, strict=strict)
  else:
    tx = _decayed_weights(rate, cautious=mode == "cautious")
  return optax.masked(tx, mask) if mask is not None else tx
