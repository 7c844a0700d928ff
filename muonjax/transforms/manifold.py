"""Manifold stages (the normalize stage of Mano, docs/optimizers.md#mano): Mano's tangent projection and slice normalization.

Axis names are in Flax ``(n_in, n_out)`` layout (the matrix view of
:mod:`muonjax.transforms.dimensions`). A *slice indexed by input feature* is a
row of the view: its norm is taken over the output axis (axis -1) and it has
``n_out`` entries. A *slice indexed by output neuron* is a column: norm over
axis -2, ``n_in`` entries. PyTorch's ``dim=0`` on an ``(out, in)`` weight is the
first of these.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from muonjax.transforms import dimensions
from muonjax.transforms.dtypes import require_real
from muonjax.transforms.validation import (
    check_non_negative,
    check_positive,
    static_int,
)

VERSIONS = (1, 2)
EVEN_AXIS = -1  # t even: one slice per input feature (rows), norms over the output axis
ODD_AXIS = -2  # t odd: one slice per output neuron (columns), norms over the input axis


class ManoState(NamedTuple):
  """State of :func:`mano_normalize`."""

  count: jax.Array  # int32 scalar t: updates so far; the slice axis is t mod 2.


def _norm(x: jax.Array, axis: int) -> jax.Array:
  """Euclidean norm along ``axis`` (keepdims), scaled by the slice max to avoid overflow."""
  peak = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
  safe = jnp.where(peak > 0, peak, 1)
  return peak * jnp.sqrt(jnp.sum(jnp.square(x / safe), axis=axis, keepdims=True))


def _tangent_normalize(u: jax.Array, w: jax.Array, axis: int, version: int, eps) -> jax.Array:
  """Project ``u`` on the tangent space of ``w``'s slices along ``axis``, then unit-normalize."""
  if version == 1:
    w = w / jnp.maximum(_norm(w, axis), eps)
  t = u - jnp.sum(u * w, axis=axis, keepdims=True) * w
  n = _norm(t, axis)
  return t / (n + eps) if version == 2 else t / jnp.maximum(n, eps)


def mano_normalize(
    version: int = 2,
    *,
    eps: float = 1e-8,
    scale: float = 0.2,
    both_axes: bool = False,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""Mano: tangent projection against the weights, then per-slice normalization.

  For each matrix ``U`` (the momentum) and its weights ``W`` (Flax
  ``(n_in, n_out)`` view), with ⟨·,·⟩ and ‖·‖ taken per slice along axis ``a``:

  * ``version=2`` (``mano_v2.py``, default): ``T = U − ⟨U, W⟩ W`` (projection
    against the *raw* ``W``), ``D = T / (‖T‖ + eps)``;
  * ``version=1`` (``mano.py``): ``P̂ = W / max(‖W‖, eps)``,
    ``T = U − ⟨U, P̂⟩ P̂``, ``D = T / max(‖T‖, eps)``.

  Output ``scale · √len · D``: every slice of ``D`` has unit norm, so the
  update RMS is ``scale`` (0.2).

  The axis alternates with the step counter ``t`` (kept in :class:`ManoState`,
  0 at init, +1 per update): at even ``t``, ``a = −1`` (one slice per input
  feature, i.e. per row; ``len = n_out``); at odd ``t``, ``a = −2`` (one slice
  per output neuron, i.e. per column; ``len = n_in``). This is PyTorch's
  ``dim = t mod 2`` on an ``(out, in)`` weight.

  ``both_axes=True`` applies the projection and normalization on both axes at
  every step, in a fixed order: first along axis −1 (the even-step axis, on
  ``U``), then along axis −2 (the odd-step axis, on the result of the first),
  both against the same ``W``; the output is ``scale · √n_in · D``, so each
  column of ``D`` has unit norm and the RMS is ``scale``. The counter still
  advances but does not change the result. The Mano README reports that
  updating "on both/all dimensions each step" can help; the official code
  (``mano.py``, ``mano_v2.py``) has no such option, so this order is muonjax's
  definition.

  Norms are computed in at least float32 and scaled by the slice's largest
  entry, so huge updates do not overflow; zero updates give zero.

  Args:
    version: ``2`` (default) or ``1``.
    eps: added to the tangent norm (v2) or used as the clamp floor of the
      weight and tangent norms (v1).
    scale: target update RMS (0.2 in Mano).
    both_axes: normalize along both axes every step (see above).
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`);
      stacked ``(L, n_in, n_out)`` leaves are handled per matrix.

  Returns:
    An ``optax.GradientTransformation`` with :class:`ManoState` (an int32
    scalar counter). ``update(updates, state, params)`` requires ``params``.

  References:
    Gu & Xie, Mano: Restriking Manifold Optimization for LLM Training,
    arXiv 2601.23000,
    https://github.com/xie-lab-ml/Mano-Restriking-Manifold-Optimization-for-LLM-Training.
  """
  version = static_int("version", version, allowed=VERSIONS)
  check_positive("eps", eps)
  check_non_negative("scale", scale)
  if not isinstance(both_axes, (bool, np.bool_)):
    raise ValueError(f"both_axes must be a bool; got {both_axes!r}")

  def normalize_tree(updates, params, axes: Sequence[int]):
    items, treedef = dimensions.resolve(dimension_numbers, updates)
    try:
      weights = treedef.flatten_up_to(params)
    except (ValueError, TypeError) as e:
      raise ValueError(f"params must have the structure of the updates: {e}") from e
    out = []
    for (path, leaf, dn), w in zip(items, weights):
      view = dimensions.leaf_view(path, leaf, dn)
      if view is None:
        out.append(leaf)
        continue
      dtype = jnp.promote_types(leaf.dtype, jnp.float32)
      d = view.to_matrices(leaf).astype(dtype)
      w = view.to_matrices(w).astype(dtype)
      for axis in axes:
        d = _tangent_normalize(d, w, axis, version, eps)
      length = view.n_out if axes[-1] == EVEN_AXIS else view.n_in
      d = d * (scale * length ** 0.5)
      out.append(view.from_matrices(d).astype(leaf.dtype))
    return treedef.unflatten(out)

  def init_fn(params):
    require_real("mano_normalize", dimension_numbers, params,
                 "a real tangent-space projection on the oblique manifold")
    for path, leaf, dn in dimensions.resolve(dimension_numbers, params)[0]:
      dimensions.leaf_view(path, leaf, dn)  # raises on a bad leaf
    return ManoState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("mano_normalize needs params: call update(updates, state, params)")
    if both_axes:
      updates = normalize_tree(updates, params, (EVEN_AXIS, ODD_AXIS))
    else:
      updates = jax.lax.cond(
          state.count % 2 == 0,
          lambda u, p: normalize_tree(u, p, (EVEN_AXIS,)),
          lambda u, p: normalize_tree(u, p, (ODD_AXIS,)),
          updates, params)
    return updates, ManoState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
