"""Dtype checks of stages: which stages take complex parameters.

Complex matrices are well defined for the stages that only need linear maps,
conjugate transposes and ``|x|`` norms: :func:`muonjax.momentum`,
:func:`muonjax.orthogonalize` (the unitary polar factor ``U V^H``),
:func:`muonjax.scale_by_shape` and :func:`muonjax.weight_decay`; optax's own
AdamW treats complex leaves with ``|g|^2`` second moments. Stages built on an
elementwise sign or on a real second moment of the orthogonalized update
(AdaMuon, NorMuon), on a real tangent-space projection (Mano) or on a real
Cholesky preconditioner (Newton-Muon) have no complex form in their papers
or code, so they refuse complex leaves at ``init`` instead of producing
numbers with no meaning.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from muonjax.transforms import dimensions


def is_complex(leaf: Any) -> bool:
  """Whether an array (or ``ShapeDtypeStruct``) leaf has a complex dtype."""
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating)


def require_real(stage: str, dimension_numbers: dimensions.DimensionNumbersSpec,
                 params: Any, reason: str) -> None:
  """Raise ``ValueError`` naming the first complex matrix leaf ``stage`` would see.

  Args:
    stage: the stage's name, for the message.
    dimension_numbers: the stage's routing spec (leaves routed to ``None`` are
      not its business).
    params: the parameter tree given to ``init``.
    reason: why the stage has no complex form.

  Raises:
    ValueError: a complex leaf routed to the stage.
  """
  for path, leaf, dn in dimensions.resolve(dimension_numbers, params)[0]:
    if dn is not None and is_complex(leaf):
      raise ValueError(
          f"{stage} does not support complex parameters ({reason}); leaf "
          f"{path or '<root>'} has dtype {leaf.dtype}. Complex matrices work with "
          "muon / polar_muon (momentum, orthogonalize, scale_by_shape, weight "
          "decay); route this leaf to another optimizer")
