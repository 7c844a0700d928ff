"""Argument checks shared by stages and aliases: one clear ``ValueError`` each.

Numbers (Python, NumPy or concrete JAX scalars) are checked, and anything
else (a string, ``None``, a bool, NaN, ±Inf) is rejected with the argument's
name; traced values (``optax.inject_hyperparams`` arrays inside ``jit``) are
accepted as they are. Learning rates may also be schedules
(:func:`check_learning_rate`).
"""

from __future__ import annotations

import numbers
import operator
from typing import Any, Iterable, Optional

import jax
import numpy as np


def is_real(value: Any) -> bool:
  """Whether ``value`` is a concrete real number: a Python or NumPy int or float, not a bool
  (nor an array, a string, ``None`` or a callable)."""
  return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value: Any) -> bool:
  """Whether ``value`` is a concrete integer: a Python or NumPy int, not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _concrete(name: str, value: Any) -> Optional[np.ndarray]:
  """``value`` as a float64 NumPy array when it is a concrete number, ``None`` when
  it is a traced array (checked by nobody: its value is not known yet).

  Raises:
    ValueError: ``value`` is not a number (a string, ``None``, a bool, a
      list...), or it is NaN or ±Inf; the message names ``name``.
  """
  if isinstance(value, (bool, np.bool_)) or not (
      isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array))):
    raise ValueError(f"{name} must be a number; got {value!r}")
  try:
    array = np.asarray(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None  # traced (optax.inject_hyperparams inside jit)
  if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                     or np.issubdtype(array.dtype, np.floating)):
    raise ValueError(f"{name} must be a real number; got {value!r}")
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} must be a finite number; got {value!r}")
  return array


def check_unit_interval(name: str, value: Any, *, closed: bool = False) -> None:
  """``value`` must be a finite number in ``[0, 1)`` (``[0, 1]`` when ``closed``)."""
  array = _concrete(name, value)
  if array is not None and not np.all((array >= 0) & ((array < 1) | (closed & (array == 1)))):
    interval = "[0, 1]" if closed else "[0, 1)"
    raise ValueError(f"{name} must be in {interval}; got {value!r}")


def check_positive(name: str, value: Any) -> None:
  """``value`` must be a finite number > 0 (not a callable: see :func:`check_learning_rate`)."""
  array = _concrete(name, value)
  if array is not None and not np.all(array > 0):
    raise ValueError(f"{name} must be > 0; got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
  """``value`` must be a finite number >= 0."""
  array = _concrete(name, value)
  if array is not None and not np.all(array >= 0):
    raise ValueError(f"{name} must be >= 0; got {value!r}")


def check_learning_rate(name: str, value: Any) -> None:
  """``value`` must be a schedule (a callable ``count -> lr``) or a finite number > 0."""
  if not callable(value):
    check_positive(name, value)


def check_same_shapes(updates: Any, reference: Any, *, what: str = "params") -> None:
  """Every leaf of ``updates`` must have the shape of the same leaf of ``reference``.

  Shapes are static, so this costs nothing inside ``jit``. Stages whose state
  holds per-parameter buffers call it with that state (its leaves have the
  parameters' shapes).

  Raises:
    ValueError: a gradient leaf's shape differs; names its path
      (``jax.tree_util.keystr``) and both shapes.
  """
  ref_leaves = jax.tree_util.tree_flatten_with_path(reference)[0]
  upd_leaves = jax.tree_util.tree_leaves(updates)
  if len(ref_leaves) != len(upd_leaves):
    return  # a structural mismatch: optax's own tree error names it
  for (path, ref), upd in zip(ref_leaves, upd_leaves):
    ref_shape, upd_shape = getattr(ref, "shape", None), getattr(upd, "shape", None)
    if ref_shape is not None and upd_shape is not None and tuple(ref_shape) != tuple(upd_shape):
      raise ValueError(f"gradient leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                       f"{tuple(upd_shape)} but its {what} leaf has shape {tuple(ref_shape)}")


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
