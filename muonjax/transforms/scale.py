"""Shape scale stage (docs/optimizers.md#shape-scale-rules): a per-leaf constant from the matrix's fan-in and fan-out."""

from __future__ import annotations

import math
import re
from typing import Literal, Mapping, Optional

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
  * ``spectral_max``: ``sqrt(max(n_in, n_out))`` (Emerging-Optimizers' "spectral", no 0.2);
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


def path_names(path: str) -> str:
  """``jax.tree_util.keystr`` path → its key names joined by ``/`` (``['a'][0].b`` → ``a/0/b``)."""
  return "/".join(re.findall(r"[A-Za-z0-9_]+", path))


def scale_by_shape(
    rule: ShapeRule = "keller",
    *,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    rms: float = 0.2,
    multiplier: float = 1.0,
    overrides: Optional[Mapping[str, float]] = None,
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
    multiplier: extra constant factor (Emerging-Optimizers' ``extra_scale_factor``).
    overrides: ``{pattern: factor}``: a leaf whose path (its key names joined
      by ``/``, e.g. ``blocks/layers/mlp/up/kernel``) matches ``pattern``
      (``re.search``) gets ``factor`` instead of the rule's (the first
      matching pattern wins; ``multiplier`` still applies). For a reference
      that stores a matrix the other way round, e.g. Newton-Muon's ``_2``
      script keeps the MLP up-projection as ``(in, out)`` in PyTorch, so
      Keller's ``max(1, rows/cols)`` gives it 1 where the Flax rule gives 2.

  Returns:
    A stateless ``optax.GradientTransformation``.

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    Liu et al., Muon is Scalable for LLM Training, arXiv 2502.16982.
  """
  check_choice("rule", rule, RULES)
  check_non_negative("rms", rms)
  compiled = [(re.compile(k), float(v)) for k, v in dict(overrides or {}).items()]
  for _, v in compiled:
    check_non_negative("overrides factor", v)

  def update_fn(updates, state, params=None):
    del params
    def scale(path, leaf, view):
      names = path_names(path)
      factor = next((v for k, v in compiled if k.search(names)), None)
      if factor is None:
        factor = shape_factor(rule, view.n_in, view.n_out, rms)
      factor = factor * multiplier
      return leaf * jnp.asarray(factor, leaf.dtype)
    return dimensions.map_matrices(scale, dimension_numbers, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_consistent_rms(
    consistent_rms: float = 0.2,
    *,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""optax's ``consistent_rms``: multiply by ``consistent_rms · sqrt(max(fan_in, fan_out))``.

  The same factor as ``scale_by_shape("rms_match", rms=consistent_rms)``: an
  orthogonalized update has RMS ``1/sqrt(max(fan_in, fan_out))``, so the
  result has RMS ``≈ consistent_rms`` for every shape (0.2 matches AdamW's
  typical update RMS, so AdamW's learning rate and weight decay carry over).

  Args:
    consistent_rms: target update RMS (optax's argument of the same name).
    dimension_numbers: as in :func:`scale_by_shape`.

  Returns:
    A stateless ``optax.GradientTransformation``.

  References:
    Liu et al., Muon is Scalable for LLM Training, arXiv 2502.16982;
    ``optax.contrib.muon(consistent_rms=...)``
    (https://github.com/google-deepmind/optax/blob/main/optax/contrib/_muon.py).
  """
  return scale_by_shape("rms_match", dimension_numbers=dimension_numbers, rms=consistent_rms)
