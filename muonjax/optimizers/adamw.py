"""AdamW: ``optax.adamw`` with argument checks, optionally with its own rate on non-matrix leaves."""

from __future__ import annotations

from typing import Any, Optional

import optax

from muonjax.optimizers.base import adam_branch, partition_matrices
from muonjax.transforms.validation import (
    check_learning_rate,
    check_non_negative,
    check_unit_interval,
)


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = None,
    adam_weight_decay: Optional[float] = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformation:
  """AdamW on every leaf; with ``adam_learning_rate``/``adam_weight_decay``, split like Muon.

  Without the two ``adam_*`` arguments this is ``optax.adamw``. With either,
  the leaves are routed as the Muon aliases route them (hidden matrices vs.
  embeddings, head, norms, biases, scalars; ``dimension_numbers`` as in
  :func:`muonjax.muon`): the matrices take ``learning_rate`` and
  ``weight_decay``, the other leaves ``adam_learning_rate`` and
  ``adam_weight_decay`` (each defaulting to the matrices' value), with the
  same ``b1``, ``b2``, ``eps``. That is the baseline of a symmetric
  comparison: it trains the non-matrix leaves exactly as a Muon alias's AdamW
  branch with the same ``adam_*`` settings, so the two arms differ only in
  the matrix update.

  Args:
    learning_rate: learning rate (of the matrices when split).
    b1, b2, eps, nesterov: Adam's moments, shared by both groups.
    weight_decay: decoupled weight decay (of the matrices when split).
    adam_learning_rate: learning rate of the non-matrix leaves (splits).
    adam_weight_decay: weight decay of the non-matrix leaves (splits).
    dimension_numbers: routing of the split (default: the Muon rules).

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Loshchilov & Hutter, Decoupled Weight Decay Regularization, arXiv 1711.05101.
  """
  check_learning_rate("learning_rate", learning_rate)
  check_unit_interval("b1", b1)
  check_unit_interval("b2", b2)
  check_non_negative("eps", eps)
  check_non_negative("weight_decay", weight_decay)
  if adam_learning_rate is None and adam_weight_decay is None:
    if dimension_numbers is not None:
      raise ValueError("adamw: dimension_numbers routes the split, which needs "
                       "adam_learning_rate or adam_weight_decay")
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       nesterov=nesterov)
  other_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
  other_wd = weight_decay if adam_weight_decay is None else adam_weight_decay
  check_learning_rate("adam_learning_rate", other_lr)
  check_non_negative("adam_weight_decay", other_wd)

  def group(lr, wd):
    return adam_branch(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd, nesterov=nesterov)

  return partition_matrices(lambda dims: group(learning_rate, weight_decay),
                            group(other_lr, other_wd), dimension_numbers)
