"""Weight decay stage (S7), placed before ``scale_by_learning_rate``."""

from __future__ import annotations

from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.validation import check_choice, check_non_negative

DecayMode = Literal["decoupled", "cautious"]
MODES = ("decoupled", "cautious")


def _decayed_weights(rate: float, cautious: bool) -> optax.GradientTransformation:
  if callable(rate):
    raise ValueError("weight_decay must be a number (schedule the learning rate instead: "
                     "the decay is multiplied by it)")
  check_non_negative("weight_decay", rate)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs params: call update(grads, state, params)")
    def decay(d, w):
      w = w.astype(d.dtype)
      if cautious:  # Re(D conj(W)) >= 0: the step shrinks |W| (D * W >= 0 for reals)
        w = (jnp.real(d * jnp.conj(w)) >= 0).astype(d.dtype) * w
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


def weight_decay(rate: float, *, mode: DecayMode = "decoupled",
                 mask: Optional[Any] = None) -> optax.GradientTransformation:
  """Decoupled (``D + λW``, as ``optax.add_decayed_weights``) or cautious decay.

  Args:
    rate: decay coefficient λ; the following ``scale_by_learning_rate`` turns
      it into ``W <- W (1 - η λ)`` with the base η.
    mode: ``"decoupled"`` or ``"cautious"``.
    mask: optional tree or callable of booleans selecting decayed leaves.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params``.
  """
  check_choice("weight_decay_mode", mode, MODES)
  tx = _decayed_weights(rate, cautious=mode == "cautious")
  return optax.masked(tx, mask) if mask is not None else tx
