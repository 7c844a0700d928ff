"""Argument checks shared by stages and aliases: one clear ``ValueError`` each.

Only concrete Python/NumPy numbers are checked; traced values (schedules and
``optax.inject_hyperparams`` arrays) are accepted as they are.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable


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
