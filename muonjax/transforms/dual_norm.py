"""Dual-norm scaling of an orthogonalized update (optax ``adaptive=True``)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from muonjax.transforms import dimensions


def scale_by_dual_norm(
    inner: optax.GradientTransformation,
    *,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformation:
  r"""Run ``inner`` (an orthogonalization) and scale its output by ``⟨U, O⟩``.

  For each matrix leaf with input ``U`` (the momentum that ``inner``
  orthogonalizes) and output ``O = inner(U)``, the update becomes
  ``sum(conj(U) * O) · O``. With ``O ≈ polar(U)``, ``⟨U, O⟩ ≈ ‖U‖_*`` (the
  nuclear norm, the dual of the spectral norm), so the step is steepest
  descent in the spectral norm rather than its LMO. As in optax 0.2.8
  (``scale_by_muon(adaptive=True)``), the sum runs over the **whole leaf**,
  batch axes included (one scalar per leaf, not per stacked matrix), and is
  taken before the shape scale. Leaves that the dimension numbers pass
  through are returned as ``inner`` left them.

  Args:
    inner: the orthogonalization stage (e.g. :func:`muonjax.orthogonalize`);
      its state is this stage's state.
    dimension_numbers: as in :func:`muonjax.orthogonalize`; ``None`` leaves in
      a tree are not scaled.

  Returns:
    An ``optax.GradientTransformation`` with ``inner``'s state.

  References:
    Bernstein & Newhouse, Old Optimizer, New Norm: An Anthology, arXiv
    2409.20325; ``optax.contrib.scale_by_muon(adaptive=True)``
    (https://github.com/google-deepmind/optax/blob/main/optax/contrib/_muon.py).
  """

  def update_fn(updates, state, params=None):
    out, state = inner.update(updates, state, params)
    items, treedef = dimensions.resolve(dimension_numbers, updates)
    outs = treedef.flatten_up_to(out)
    scaled = []
    for (path, u, dn), o in zip(items, outs):
      if dimensions.leaf_view(path, u, dn) is None:
        scaled.append(o)
      else:
        scaled.append((jnp.sum(jnp.conj(u) * o) * o).astype(o.dtype))
    return treedef.unflatten(scaled), state

  return optax.GradientTransformation(inner.init, update_fn)
