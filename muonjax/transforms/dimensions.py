"""Dimension numbers: how a leaf is viewed as a batch of ``(n_in, n_out)`` matrices.

muonjax uses optax's :class:`optax.contrib.MuonDimensionNumbers` unchanged, so a
tree of dimension numbers written for ``optax.contrib.muon`` works here too.
Axes that are neither reduction nor output axes are batch axes: a stacked
``(L, in, out)`` kernel with ``reduction_axis=1, output_axis=2`` is ``L``
independent matrices. Flax kernels are ``(in, out)``, so the default for a 2-D
leaf is ``reduction_axis=0, output_axis=1``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import optax
from optax.contrib import MuonDimensionNumbers


MaskedNode = optax.MaskedNode

DimensionNumbersSpec = Union[
    None, MuonDimensionNumbers, Any, Callable[[Any], Any]]


def path_names(path) -> tuple[str, ...]:
  """The names of a ``jax.tree_util`` key path: ``DictKey.key``, ``GetAttrKey.name``,
  ``SequenceKey.idx`` (or ``FlattenedIndexKey.key``), each as a string.

  The one path-name extractor of muonjax (re-exported as
  :func:`muonjax.routing.path_names`); routing rules and override regexes
  match against these names, ``/``-joined.
  """
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return tuple(names)


def default_dimension_numbers(ndim: int) -> MuonDimensionNumbers:
  """Last two axes are (in, out); every leading axis is a batch axis."""
  return MuonDimensionNumbers(reduction_axis=ndim - 2, output_axis=ndim - 1)


def _is_spec_leaf(x) -> bool:
  return x is None or isinstance(x, (MuonDimensionNumbers, MaskedNode))


class MatrixView(NamedTuple):
  """How one leaf maps to ``(batch, n_in, n_out)`` and back."""

  shape: tuple[int, ...]
  perm: tuple[int, ...]
  n_in: int
  n_out: int

  @property
  def batch(self) -> int:
    return math.prod(self.shape) // (self.n_in * self.n_out)

  def to_matrices(self, x: jax.Array) -> jax.Array:
    return x.transpose(self.perm).reshape(self.batch, self.n_in, self.n_out)

  def from_matrices(self, x: jax.Array) -> jax.Array:
    permuted = tuple(self.shape[p] for p in self.perm)
    inverse = tuple(sorted(range(len(self.perm)), key=lambda i: self.perm[i]))
    return x.reshape(permuted).transpose(inverse)


def matrix_view(shape: tuple[int, ...], dim_nums: MuonDimensionNumbers,
                path: str = "") -> MatrixView:
  """Validate ``dim_nums`` against ``shape`` and build the matrix view.

  Raises:
    ValueError: axes out of range, overlapping, or a rank < 2 leaf.
  """
  ndim = len(shape)
  where = f"leaf {path or '<root>'} with shape {tuple(shape)}"
  if ndim < 2:
    raise ValueError(
        f"{where}: matrix transforms need rank >= 2; route this leaf to another "
        "optimizer (dimension numbers None) or give MuonDimensionNumbers")
  def norm(axes):
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    if not axes or any(not -ndim <= a < ndim for a in axes):
      raise ValueError(f"{where}: axes {axes} out of range for rank {ndim}")
    return tuple(a % ndim for a in axes)
  red, out = norm(dim_nums.reduction_axis), norm(dim_nums.output_axis)
  if set(red) & set(out) or len(set(red)) != len(red) or len(set(out)) != len(out):
    raise ValueError(
        f"{where}: reduction axes {red} and output axes {out} must be distinct")
  batch = tuple(a for a in range(ndim) if a not in red and a not in out)
  return MatrixView(tuple(shape), batch + red + out,
                    math.prod(shape[a] for a in red),
                    math.prod(shape[a] for a in out))


class _Box:
  """Opaque (non-pytree) holder used to broadcast a spec leaf over a subtree."""

  __slots__ = ("value",)

  def __init__(self, value):
    self.value = value


def broadcast_to_leaves(prefix: Any, tree: Any, is_leaf: Callable[[Any], bool]) -> list:
  """Values of ``prefix`` (a prefix tree of ``tree``) repeated for each leaf of ``tree``.

  ``is_leaf`` marks the spec values (e.g. ``None``, ints, dimension numbers);
  the result is aligned with ``jax.tree_util.tree_leaves(tree)``.
  """
  spec_leaves, spec_def = jax.tree_util.tree_flatten(prefix, is_leaf=is_leaf)
  try:
    subtrees = spec_def.flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise ValueError(f"spec tree does not match the update tree: {e}") from e
  boxed = [jax.tree.map(lambda _, v=v: _Box(v), sub) for v, sub in zip(spec_leaves, subtrees)]
  return [b.value for b in jax.tree_util.tree_leaves(spec_def.unflatten(boxed))]


def resolve(spec: DimensionNumbersSpec, updates: Any):
  """Align a dimension-numbers spec with the array leaves of ``updates``.

  Args:
    spec: ``None`` (every leaf uses :func:`default_dimension_numbers`; rank < 2
      leaves are an error), one ``MuonDimensionNumbers`` for every leaf, a tree
      (a prefix of ``updates``) whose leaves are ``MuonDimensionNumbers`` or
      ``None`` (leave that subtree untouched), or a callable ``updates -> tree``.
    updates: the update tree (``optax.MaskedNode`` subtrees hold no leaves).

  Returns:
    ``(items, treedef)``: ``items`` lists ``(path, leaf, dim_nums)`` for every
    array leaf, where ``dim_nums`` is ``MuonDimensionNumbers``, ``"default"`` or
    ``None`` (pass through); ``treedef.unflatten(new_leaves)`` rebuilds the tree.
  """
  if callable(spec) and not isinstance(spec, MuonDimensionNumbers):
    spec = spec(updates)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
  if spec is None or isinstance(spec, MuonDimensionNumbers):
    dns = [spec or "default"] * len(leaves)
  else:
    dns = [None if isinstance(d, MaskedNode) else d
           for d in broadcast_to_leaves(spec, updates, _is_spec_leaf)]
  items = [(jax.tree_util.keystr(p), leaf, dn)
           for (p, leaf), dn in zip(leaves, dns)]
  return items, treedef


def leaf_view(path: str, leaf: jax.Array, dn) -> Optional[MatrixView]:
  """The matrix view of an array leaf; ``None`` when it passes through."""
  if dn is None:
    return None
  if dn == "default":
    if leaf.ndim < 2:
      matrix_view(leaf.shape, MuonDimensionNumbers(), path)  # raises
    dn = default_dimension_numbers(leaf.ndim)
  return matrix_view(leaf.shape, dn, path)


def map_matrices(fn: Callable[[str, jax.Array, MatrixView], jax.Array],
                 spec: DimensionNumbersSpec, updates: Any) -> Any:
  """Apply ``fn(path, leaf, view)`` to every matrix leaf; others pass through."""
  items, treedef = resolve(spec, updates)
  out = []
  for path, leaf, dn in items:
    view = leaf_view(path, leaf, dn)
    out.append(leaf if view is None else fn(path, leaf, view))
  return treedef.unflatten(out)


def init_per_matrix(fn: Callable[[str, jax.Array, MatrixView], Any],
                    spec: DimensionNumbersSpec, params: Any) -> Any:
  """Per-matrix state: ``fn(path, leaf, view)`` at matrix leaves, ``MaskedNode()`` elsewhere.

  The result has the structure of ``params``; pass-through leaves hold an empty
  ``optax.MaskedNode`` so the state has no arrays for them.
  """
  items, treedef = resolve(spec, params)
  out = []
  for path, leaf, dn in items:
    view = leaf_view(path, leaf, dn)
    out.append(MaskedNode() if view is None else fn(path, leaf, view))
  return treedef.unflatten(out)


def map_matrices_with_state(
    fn: Callable[[str, jax.Array, MatrixView, Any], tuple[jax.Array, Any]],
    spec: DimensionNumbersSpec, updates: Any, state: Any, *extra_trees: Any,
) -> tuple[Any, Any]:
  """Apply ``fn(path, leaf, view, leaf_state, *extra_leaves) -> (new_leaf, new_state)``.

  ``state`` is a tree built by :func:`init_per_matrix` over the same routing;
  ``extra_trees`` (e.g. params) have the structure of ``updates``. Pass-through
  leaves keep their update and their (empty) state.
  """
  items, treedef = resolve(spec, updates)
  states = treedef.flatten_up_to(state)
  extras = [treedef.flatten_up_to(t) for t in extra_trees]
  new_updates, new_states = [], []
  for i, (path, leaf, dn) in enumerate(items):
    view = leaf_view(path, leaf, dn)
    if view is None:
      new_updates.append(leaf)
      new_states.append(states[i])
      continue
    u, s = fn(path, leaf, view, states[i], *(e[i] for e in extras))
    new_updates.append(u)
    new_states.append(s)
  return treedef.unflatten(new_updates), treedef.unflatten(new_states)
