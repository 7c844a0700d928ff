"""Argument checks shared by stages and aliases: one clear ``ValueError`` each.

Only concrete Python/NumPy numbers are checked; traced values (schedules and
``optax.inject_hyperparams`` arrays) are accepted as they are.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any, Iterable

import jax
import numpy as np


def _concrete(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_unit_interval(name: str, value: Any, *, closed: bool = False) -> None:
  """``value`` must lie in ``[0, 1)`` (``[0, 1]`` when ``closed``)."""
  if _concrete(value) and not (0 <= value < 1 or (closed and value == 1)):
    interval = "[0, 1]" if closed else "[0, 1)"
    raise ValueError(f"{name} must be in {interval}; got {value!r}")


def check_positive(name: str, value: Any) -> None:
  """``value`` must be > 0 (a callable schedule is accepted)."""
  if _concrete(value) and not value > 0:
    raise ValueError(f"{name} must be > 0; got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
  """``value`` must be >= 0."""
  if _concrete(value) and not value >= 0:
    raise ValueError(f"{name} must be >= 0; got {value!r}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
  """``value`` must be one of ``allowed``."""
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def static_int(name: str, value: Any, *, minimum: int | None = None,
               allowed: Iterable[int] | None = None) -> int:
  """``value`` as a Python int that may shape the computation (loop length, a version).

  A concrete scalar array (what ``optax.inject_hyperparams`` stores) is
  accepted; a traced one is not, because it would change the program.

  Raises:
    ValueError: not an integer, out of range, or traced (the message says to
      pass ``static_args=(name,)`` to ``optax.inject_hyperparams``).
  """
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be an integer; got {value!r}")
  try:
    value = int(value) if isinstance(value, (jax.Array, np.ndarray)) else operator.index(value)
  except jax.errors.ConcretizationTypeError:
    raise ValueError(
        f"{name} must be a static Python int, not a traced value; with "
        f"optax.inject_hyperparams pass static_args=({name!r},)") from None
  except TypeError:
    raise ValueError(f"{name} must be an integer; got {value!r}") from None
  if allowed is not None:
    check_choice(name, value, allowed)
  if minimum is not None and value < minimum:
    raise ValueError(f"{name} must be >= {minimum}; got {value}")
  return value
