"""The training objective of every model, in one place for the training loop.

Most models are trained on next-token cross-entropy of their logits. A model
whose objective is more than that (auxiliary router or load-balance losses,
LoopFormer's full + short trajectories with a consistency term) defines::

    def training_loss(self, inputs, targets, *, key=None) -> tuple[jax.Array, dict]

returning the scalar loss to differentiate and a dict of named scalar terms
(for example ``{"ce": ..., "aux": ...}``; ``"ce"`` is always present).
:func:`loss_and_metrics` dispatches to it, so the loop never special-cases a
model. Evaluation is always plain cross-entropy of ``model(inputs)``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy, computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets).mean()


def loss_and_metrics(model: nnx.Module, inputs: jax.Array, targets: jax.Array, *,
                     key: Optional[jax.Array] = None) -> tuple[jax.Array, dict]:
  """``(loss, metrics)`` of ``model`` on one batch; ``key`` turns dropout/noise on.

  Uses ``model.training_loss`` when the model defines it, else cross-entropy.
  """
  if hasattr(model, "training_loss"):
    return model.training_loss(inputs, targets, key=key)
  ce = cross_entropy(model(inputs, key=key), targets)
  return ce, {"ce": ce}


def eval_loss(model: nnx.Module, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy of the deterministic forward ``model(inputs)`` (no dropout, no noise)."""
  return cross_entropy(model(inputs), targets)


def eval_metrics(model: nnx.Module, inputs: jax.Array,
                 targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(cross-entropy, next-token accuracy)`` of the deterministic forward ``model(inputs)``.

  Accuracy is the fraction of positions whose arg-max logit is the target.
  """
  logits = model(inputs)
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32))
  return cross_entropy(logits, targets), accuracy
