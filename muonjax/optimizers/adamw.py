"""AdamW (``optax.adamw`` with argument checks), for the registry and the CLI."""

from __future__ import annotations

import optax

from muonjax.transforms.validation import check_learning_rate
from muonjax.transforms.validation import check_non_negative, check_unit_interval


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
