"""Shape scale stage (S5): a per-leaf constant from the matrix's fan-in and fan-out."""

from __future__ import annotations

import math
from typing import Literal

import jax.numpy as jnp
import optax

from muonjax.transforms import dimensions
from muonjax.transforms.validation import check_choice, check_non_negative

ShapeRule = Literal["keller", "rms_match", "spectral", "spectral_max", "none"]
RULES = ("keller", "rms_match", "spectral", "spectral_max", "none")


def shape_factor(rule: ShapeRule, n_in: int, n_out: int, rms: float = 0.2) -> float:
  """The factor of ``rule`` for a Flax ``(n_in, n_out)`` matrix.

  * ``keller``: ``sqrt(max(1, n_out / n_in))`` (Keller Muon, optax default);
  * ``rms_match``: ``rms * sqrt(max(n_in, n_out))`` (Moonlight; update RMS ~ rms);
  * ``spectral``: ``sqrt(n_out / n_in)`` (Dion, Scion; RMS->RMS geometry);
  * ``spectral_max``: ``sqrt(max(n_in, n_out))`` (EO "spectral", no 0.2);
  * ``none``: 1.
  """
  check_choice("rule", rule, RULES)
  if rule == "keller":
    return math.sqrt(max(1.0, n_out / n_in))
  if rule == "rms_match":
    return rms * math.sqrt(max(n_in, n_out))
  if rule == "spectral":
    return math.sqrt(n_out / n_in)
  if rule == "spectral_max":
    return math.sqrt(max(n_in, n_out))
  return 1.0


def scale_by_shape(
    rule: ShapeRule = "keller",
    *,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    rms: float = 0.2,
    multiplier: float = 1.0,
) -> optax.GradientTransformation:
  r"""Multiply each matrix update by a factor that depends on its shape.

  Fan-in and fan-out come from the dimension numbers (products over the
  reduction and output axes, so conv kernels use the flattened fans); batch
  axes do not count. Flax kernels are ``(in, out)``: Keller's PyTorch
  ``max(1, rows/cols)`` is ``max(1, n_out/n_in)`` here.

  Args:
    rule: ``"keller"``, ``"rms_match"``, ``"spectral"``, ``"spectral_max"`` or
      ``"none"`` (see :func:`shape_factor`).
    dimension_numbers: as in :func:`muonjax.orthogonalize`; ``None`` leaves in a
      tree pass through unscaled.
    rms: target RMS of ``"rms_match"`` (Moonlight uses 0.2).
    multiplier: extra constant factor (EO's ``extra_scale_factor``).

  Returns:
    A stateless ``optax.GradientTransformation``.

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    Liu et al., Muon is Scalable for LLM Training, arXiv 2502.16982.
  """
  check_choice("rule", rule, RULES)
  check_non_negative("rms", rms)

  def update_fn(updates, state, params=None):
    del params
    def scale(path, leaf, view):
      factor = shape_factor(rule, view.n_in, view.n_out, rms) * multiplier
      return leaf * jnp.asarray(factor, leaf.dtype)
    return dimensions.map_matrices(scale, dimension_numbers, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
