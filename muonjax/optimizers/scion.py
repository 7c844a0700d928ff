"""Scion (Pethick et al.): a norm-constrained LMO step on every leaf, and its default LMOs.

References:
  Pethick et al., Training Deep Learning Models with Norm-Constrained LMOs,
  arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax import routing
from muonjax.transforms.validation import check_learning_rate
from muonjax.transforms.lmo import (
    CONV_PATTERN,
    LMO,
    LMOSpec,
    as_lmo,
    constrained_decay,
    scale_by_lmo,
    scion_momentum,
)


def _default_lmo(names: tuple[str, ...], leaf, *, overrides, hidden, head, embedding,
                 vector) -> LMOSpec:
  path = "/".join(names)
  for pattern, value in overrides.items():
    if re.search(pattern, path):
      return as_lmo(value, path)
  role = routing.leaf_role(names)
  if len(leaf.shape) < 2 or role == "vector":
    return vector
  if role == "head":
    return head
  if role == "embedding":
    return embedding
  if (len(leaf.shape) >= 3 and hidden is not None and hidden.kind in ("spectral", "auto")
      and any(CONV_PATTERN.search(name) for name in names)):
    return dataclasses.replace(hidden, kind="spectral_conv")  # Scion's Auto on conv kernels
  return hidden


def scion_default_lmos(
    params: Any,
    *,
    overrides: Optional[Mapping[str, LMOSpec]] = None,
    hidden: LMO = LMO("spectral", 3.0),
    head: LMO = LMO("sign", 10.0),
    embedding: LMO = LMO("colnorm", 1.0, transpose=True),
    vector: LMO = LMO("bias_rms", 1.0),
) -> Any:
  """Per-leaf LMOs of the shallow-nanogpt "Mixed" setting.

  Rules (names as in :mod:`muonjax.routing`, first match wins):

  * ``overrides``: ``{regex: LMO | kind | None}`` searched in the ``/``-joined
    path (``None`` leaves that leaf's averaged gradient unchanged);
  * rank 0/1 (biases, norm scales, scalars): ``vector`` = BiasRMS;
  * a path component naming an output head (``lm_head``, ``head``,
    ``unembed``): ``head`` = Sign, scale 10;
  * a component naming an embedding (``embed``, ``embedding``, ``wte``,
    ``wpe``, ...): ``embedding`` = ColNorm(transpose=True), scale 1, i.e. per
    token RMS 1;
  * a rank >= 3 leaf under a component naming a convolution
    (:data:`muonjax.transforms.lmo.CONV_PATTERN`: ``conv1``, ``Conv_0``, ...):
    ``hidden``'s radius and steps with kind SpectralConv, as Scion's ``Auto``
    (only when ``hidden`` is Spectral or auto). Rank alone cannot tell a conv
    kernel ``(kh, kw, in, out)`` from a stack of dense layers ``(L, in, out)``
    or ``(L, E, in, out)``, so the name decides; override a conv named
    otherwise with ``overrides={"my_layer": "spectral_conv"}``;
  * everything else of rank >= 2 (hidden kernels, stacks, MoE routers):
    ``hidden`` = Spectral, scale 3, per matrix.

  Args:
    params: parameter pytree or ``nnx.State`` (:func:`muonjax.nnx.scion_default_lmos`
      also takes an ``nnx.Module``).
    overrides: regex -> LMO overrides.
    hidden, head, embedding, vector: LMOs of the four groups.

  Returns:
    A tree of :class:`LMO` with the structure of ``params`` (``nnx.Variable``
    leaves become LMOs), usable as ``lmos`` of :func:`scale_by_lmo`.
  """
  overrides = dict(overrides or {})
  for pattern, value in overrides.items():
    as_lmo(value, f"override {pattern!r}")
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: _default_lmo(
          routing.path_names(p), leaf, overrides=overrides, hidden=hidden,
          head=head, embedding=embedding, vector=vector),
      routing.params_tree(params), is_leaf=routing.has_metadata)


def scion(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    alpha: float = 1.0,
    constrained: bool = True,
    lmos: Any = None,
    overrides: Optional[dict] = None,
    dimension_numbers: Any = None,
    compute_dtype: Any = "bfloat16",
    mu_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Scion: a norm-constrained LMO step on every leaf (no AdamW branch).

  Chain: :func:`scion_momentum` (``d ← (1−α)d + αG``) → :func:`scale_by_lmo`
  (``u = scale·lmo(d)`` per leaf) → :func:`constrained_decay` (``u + W``) →
  ``optax.scale_by_learning_rate``, i.e. ``W ← (1−η)W − η·u`` (Frank-Wolfe);
  ``constrained=False`` gives ``W ← W − η·u`` (uSCG). Unlike :func:`muon` every
  leaf is routed to an LMO; the default routing is :func:`scion_default_lmos`
  (shallow-nanogpt "Mixed": hidden Spectral ×3, head Sign ×10, embeddings
  ColNorm ×1 per token, vectors BiasRMS). Start the constrained form from
  :func:`scion_init` so weights begin inside the balls.

  Args:
    learning_rate: η (float or schedule); also the constrained decay rate.
    alpha: Scion's ``momentum`` = 1 − β, in (0, 1]; 1 keeps no buffer (the
      reference default), 0.1 is the README's recommendation.
    constrained: Frank-Wolfe decay ``(1−η)W`` (True) or uSCG (False).
    lmos: per-leaf :class:`LMO` tree, one LMO, or a callable ``params -> tree``;
      ``None`` uses :func:`scion_default_lmos`.
    overrides: ``{regex: LMO | kind | None}`` for the default routing.
    dimension_numbers: matrix view of the matrix-LMO leaves (default: last two
      axes are (in, out), leading axes batched).
    compute_dtype: Newton-Schulz dtype of Spectral (bfloat16 like the
      reference; ``None`` = the update's dtype).
    mu_dtype: averaging buffer dtype.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Pethick et al., Training Deep Learning Models with Norm-Constrained LMOs,
    arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
  """
  check_learning_rate("learning_rate", learning_rate)
  if lmos is None:
    scion_default_lmos({}, overrides=overrides)  # validate the overrides now
    lmos = lambda tree: scion_default_lmos(tree, overrides=overrides)
  elif overrides:
    raise ValueError("overrides apply to the default routing only (lmos=None); "
                     "put the LMOs in lmos instead")
  return optax.chain(
      scion_momentum(alpha, mu_dtype=mu_dtype),
      scale_by_lmo(lmos, dimension_numbers=dimension_numbers, compute_dtype=compute_dtype),
      *([constrained_decay()] if constrained else []),
      optax.scale_by_learning_rate(learning_rate),
  )
