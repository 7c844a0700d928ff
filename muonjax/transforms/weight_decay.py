"""Weight decay stage (S7), placed before ``scale_by_learning_rate``."""

from __future__ import annotations

from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.validation import check_choice, check_non_negative

DecayMode = Literal["decoupled", "cautious"]
MODES = ("decoupled", "cautious")


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
  check_non_negative("weight_decay", rate)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("cautious weight decay needs params: call update(grads, state, params)")
    def decay(d, w):
      keep = (d * w >= 0).astype(d.dtype)
      return d + jnp.asarray(rate, d.dtype) * keep * w.astype(d.dtype)
    return jax.tree.map(decay, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def weight_decay(rate: float, *, mode: DecayMode = "decoupled",
                 mask: Optional[Any] = None) -> optax.GradientTransformation:
  """Decoupled (``D + λW``) or cautious decay; ``mask`` as in optax.

  Args:
    rate: decay coefficient λ; the following ``scale_by_learning_rate`` turns
      it into ``W <- W (1 - η λ)`` with the base η.
    mode: ``"decoupled"`` or ``"cautious"``.
    mask: optional tree or callable of booleans selecting decayed leaves.

  Returns:
    An ``optax.GradientTransformation``.
  """
  check_choice("weight_decay_mode", mode, MODES)
  check_non_negative("weight_decay", rate)
  if mode == "decoupled":
    return optax.add_decayed_weights(rate, mask)
  tx = cautious_weight_decay(rate)
  return optax.masked(tx, mask) if mask is not None else tx
