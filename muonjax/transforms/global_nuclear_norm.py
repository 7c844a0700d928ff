"""MuonMax's global-scale stage: Muon steps times ``N = sum_l <M_l, polar(M_l)>``.

MuonMax (Gower et al.) scales every Muon leaf by one tree-wide scalar, the sum
over Muon leaves of ``<M_l, polar(M_l)>`` (the momentum nuclear norms); the
stage orthogonalizes the Muon leaves itself so it sees ``M`` and ``polar(M)``
together. :func:`gptopt_orthogonalizer` builds GPT-opt's polar methods.

References:
  Gower et al., arXiv 2510.09827; code https://github.com/modichirag/GPT-opt
  (``gptopt/optim/muonmax_momo.py``, ``polar.py``).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms import dimensions
from muonjax.transforms.orthogonalize import (
    Orthogonalizer,
    make_orthogonalizer,
    orthogonalize,
    orthogonalize_tree,
)
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
    static_int,
)

POLAR_METHODS = ("polar_express_gptopt", "keller", "svd")



def f32_vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  """``sum(a * b)`` in float32, elementwise (no reduced-precision matmul)."""
  return jnp.sum(a.astype(jnp.float32) * b.astype(jnp.float32))


def tree_vdot(a: Any, b: Any) -> jax.Array:
  """``sum_l <a_l, b_l>`` over all array leaves, in float32."""
  terms = jax.tree.leaves(jax.tree.map(f32_vdot, a, b))
  return sum(terms, jnp.zeros([], jnp.float32))


def gptopt_orthogonalizer(
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    *,
    steps: int = 5,
    compute_dtype: Optional[Any] = "bfloat16",
) -> Orthogonalizer:
  """The polar-factor approximation of GPT-opt's ``polar_method`` option.

  Args:
    polar_method: ``"polar_express_gptopt"`` (GPT-opt's ``"polar_express"``:
      the paper table with every coefficient ÷ 1.01, ``X/(‖X‖_F·1.01)``),
      ``"keller"`` (GPT-opt's ``"jordan"``: (3.4445, −4.7750, 2.0315),
      ``X/(‖X‖_F + 1e-7)``), ``"svd"`` (exact ``U Vᵀ``, in the update's dtype)
      or a callable ``(..., m, n) -> (..., m, n)``.
    steps: Newton–Schulz iterations (tables repeat their last row).
    compute_dtype: iteration dtype (GPT-opt: bfloat16); ``None`` = the
      momentum's dtype. Ignored by ``"svd"``.

  Returns:
    An orthogonalizer for :func:`muonjax.orthogonalize_tree`.
  """
  if callable(polar_method):
    return polar_method
  check_choice("polar_method", polar_method, POLAR_METHODS)
  if polar_method == "svd":
    return make_orthogonalizer("svd")
  steps = static_int("steps", steps, minimum=1)
  dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
  if polar_method == "keller":
    return make_orthogonalizer("newton_schulz", coeffs="keller", steps=steps,
                               compute_dtype=dtype)
  # GPT-opt polar.py: every coefficient of the paper table / 1.01 and
  # X / (||X||_F * 1.01) with no epsilon; its fixed point is ~0.990, not 1.
  return make_orthogonalizer("newton_schulz", coeffs="polar_express_gptopt", steps=steps,
                             compute_dtype=dtype)


# --- global-scale stage: nuclear-norm scaling ---------------------------------------


class GlobalNuclearNormState(NamedTuple):
  """State of :func:`scale_by_global_nuclear_norm`."""

  count: jax.Array  # int32 scalar: steps taken.
  inner: optax.Updates  # per matrix leaf: float32 scalar <M, O> of the last step.
  norm: jax.Array  # float32 scalar: the N used at the last step.


def scale_by_global_nuclear_norm(
    orthogonalizer: Union[str, Orthogonalizer] = "newton_schulz",
    *,
    stale: bool = True,
    scale: bool = True,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    group_by_shape: bool = True,
) -> optax.GradientTransformation:
  r"""Orthogonalize every matrix leaf and multiply it by the tree-wide ``N``.

  For momentum leaves ``M_l`` with polar factors ``O_l = polar(M_l)``::

      N = sum_l <M_l, O_l>        (≈ sum_l ||M_l||_*; over every matrix leaf)
      out_l = N · O_l

  This is MuonMax's dual-norm scaling (the global-scale stage, like ``clip_by_global_norm``:
  one scalar for the whole tree). The stage needs both ``M`` and ``O``, so it
  runs on the momentum output and calls the orthogonalizer itself. Leaves
  routed to ``None`` (and ``optax.MaskedNode``\ s inside ``optax.partition``)
  pass through and do not enter ``N``. ``<M, O>`` of a stacked leaf sums over
  its matrices.

  Args:
    orthogonalizer: a method name for :func:`muonjax.make_orthogonalizer` or a
      callable ``(..., m, n) -> (..., m, n)`` (e.g. :func:`gptopt_orthogonalizer`).
    stale: use the per-leaf ``<M, O>`` stored at the previous step (GPT-opt's
      ``stale_nuc``; fresh at the first step). The polar factor is computed
      once per leaf per step either way, so this only changes the numbers.
    scale: multiply by ``N``; ``False`` returns ``O`` and only records ``N``
      in the state (the MuonAdam-Momo denominator).
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).
    group_by_shape: batch equal-shape matrices into one orthogonalizer call.

  Returns:
    An ``optax.GradientTransformation`` with :class:`GlobalNuclearNormState`:
    ``inner`` holds one float32 scalar per matrix leaf (``MaskedNode``
    elsewhere); ``norm`` is the ``N`` of the last step.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``).
  """
  ortho = make_orthogonalizer(orthogonalizer)

  def init_fn(params):
    inner = dimensions.init_per_matrix(
        lambda path, leaf, view: jnp.zeros([], jnp.float32), dimension_numbers, params)
    return GlobalNuclearNormState(jnp.zeros([], jnp.int32), inner,
                                  jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    polar = orthogonalize_tree(updates, ortho, dimension_numbers,
                               group_by_shape=group_by_shape)
    items, treedef = dimensions.resolve(dimension_numbers, updates)
    polar_leaves = treedef.flatten_up_to(polar)
    prev_leaves = treedef.flatten_up_to(state.inner)
    fresh_leaves, matrix = [], []
    for i, (path, leaf, dn) in enumerate(items):
      is_matrix = dimensions.leaf_view(path, leaf, dn) is not None
      matrix.append(is_matrix)
      fresh_leaves.append(f32_vdot(leaf, polar_leaves[i]) if is_matrix else prev_leaves[i])
    zero = jnp.zeros([], jnp.float32)
    fresh = sum((f for f, m in zip(fresh_leaves, matrix) if m), zero)
    norm = fresh
    if stale:
      prev = sum((p for p, m in zip(prev_leaves, matrix) if m), zero)
      norm = jnp.where(state.count == 0, fresh, prev)
    out = [(norm.astype(o.dtype) * o if scale else o) if m else leaf
           for (_, leaf, _), o, m in zip(items, polar_leaves, matrix)]
    new_state = GlobalNuclearNormState(optax.safe_increment(state.count),
                                       treedef.unflatten(fresh_leaves), norm)
    return treedef.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


# --- Momo step-size stage: truncated step size -------------------------------------------


