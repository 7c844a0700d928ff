"""Parameter routing: which leaves Muon orthogonalizes and how, which go to AdamW.

Rules on plain pytrees (Flax ``(in, out)`` layout), first match wins:

* an override (a regular expression searched in the ``/``-joined path, see
  :func:`path_names`) mapping to a ``MuonDimensionNumbers``, ``"muon"``, or
  ``"adam"``/``None``;
* leaf metadata: a leaf object exposing ``get_metadata() -> Mapping`` whose
  mapping has a ``"muon"`` entry (``MuonDimensionNumbers`` → Muon with those
  axes; ``True`` → default axes; ``False`` or ``None`` → AdamW). Flax NNX's
  ``nnx.Variable`` implements this protocol (``nnx.Param(x, muon=...)``), so
  ``nnx.state(model, nnx.Param)`` routes by metadata without this module
  importing flax; :mod:`muonjax.nnx` accepts the ``nnx.Module`` itself;
* rank < 2 (biases, norm scales, scalars) → AdamW;
* a path component naming an embedding (``embed``, ``embedding``, ``wte``,
  ``wpe``, … also inside ``token_embed``), an output head (exactly ``head``,
  ``lm_head``, ``output_head``, ``unembed``) or a MoE ``router`` → AdamW: they
  are 2-D but not hidden linear maps; so is a leaf named ``bias`` or ``scale``
  (stacked norms and biases are ``(L, d)``);
* rank 2 → Muon, ``reduction_axis=0, output_axis=1``;
* rank ≥ 3 → Muon per matrix over the last two axes: stacked layers
  ``(L, in, out)``, experts ``(E, in, out)``, ``(L, E, in, out)``. (optax's
  default sends these to Adam silently.) Conv kernels ``(kh, kw, in, out)`` and
  attention ``(D, H, hd)`` kernels need an override or metadata.

Routing is decided once, at ``init``: :func:`routed` wraps an alias's
partitioned chain, resolves the dimension numbers from the params ``init``
sees (``nnx.Optimizer`` passes ``nnx.Variable``\\ s, so metadata is visible)
and keeps the decision as static data of the optimizer state
(:class:`RoutedState`). ``update`` rebuilds the chain from that decision, so
the routing survives ``jax.jit``, ``optax.inject_hyperparams`` (which rebuilds
the optimizer at every update) and checkpoint restore, with no Python-side
memory.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional, Union

import jax
import optax
from optax.contrib import MuonDimensionNumbers

from muonjax.transforms.dimensions import (
    broadcast_to_leaves,
    default_dimension_numbers,
    path_names,
)

__all__ = [
    "MUON", "ADAM", "Override", "RoutedState", "has_metadata", "label_params",
    "labels_from_dimension_numbers", "leaf_role", "metadata_route", "muon_dimension_numbers",
    "optax_dimension_numbers", "params_tree", "path_names", "register_params_view",
    "route_leaf", "routed",
]

MUON, ADAM = "muon", "adam"

EMBEDDING_PATTERN = re.compile(
    r"(^|_)(embed|embeds|embedding|embeddings|emb|wte|wpe)($|_)", re.IGNORECASE)
HEAD_NAMES = frozenset({"head", "lm_head", "output_head", "unembed", "unembedding"})
ROUTER_PATTERN = re.compile(r"(^|_)router($|_)", re.IGNORECASE)
# Last path component of stacked vectors (an nnx.vmap'ed bias or norm scale is (L, d)).
VECTOR_NAMES = frozenset({"bias", "scale"})


def leaf_role(path_names: Any) -> Optional[str]:  # pylint: disable=redefined-outer-name
  """``"embedding"``, ``"head"``, ``"router"``, ``"vector"`` or ``None`` (a hidden matrix).

  Components are matched whole (``multi_head_attention`` is not a head);
  ``vector`` is a leaf named ``bias`` or ``scale`` (stacked by ``nnx.vmap``).
  """
  if path_names and path_names[-1].lower() in VECTOR_NAMES:
    return "vector"
  for name in path_names:
    if name.lower() in HEAD_NAMES:
      return "head"
    if EMBEDDING_PATTERN.search(name):
      return "embedding"
    if ROUTER_PATTERN.search(name):
      return "router"
  return None


Override = Union[MuonDimensionNumbers, str, None]


def has_metadata(x: Any) -> bool:
  """Whether ``x`` follows the metadata protocol (a callable ``get_metadata``)."""
  return callable(getattr(x, "get_metadata", None))


_PARAMS_VIEWS: list[tuple[Callable[[Any], bool], Callable[[Any], Any]]] = []


def register_params_view(predicate: Callable[[Any], bool], view: Callable[[Any], Any]) -> None:
  """Let routing accept objects that are not parameter trees.

  ``view(x)`` replaces ``x`` when ``predicate(x)``: :mod:`muonjax.nnx` registers
  ``nnx.Module → nnx.state(module, nnx.Param)`` so an alias's
  ``dimension_numbers=model`` keeps working while this module stays free of
  flax.
  """
  _PARAMS_VIEWS.append((predicate, view))


def params_tree(x: Any) -> Any:
  """``x`` through the first registered view that accepts it (else unchanged)."""
  for predicate, view in _PARAMS_VIEWS:
    if predicate(x):
      return view(x)
  return x


def _from_override(value: Override, ndim: int, path: str) -> Optional[MuonDimensionNumbers]:
  if isinstance(value, MuonDimensionNumbers):
    return value
  if value is None or value == ADAM or value is False:
    return None
  if value == MUON or value is True:
    if ndim < 2:
      raise ValueError(f"override routes leaf {path} of rank {ndim} to Muon; "
                       "give MuonDimensionNumbers or route it to 'adam'")
    return default_dimension_numbers(ndim)
  raise ValueError(
      f"override for leaf {path} must be MuonDimensionNumbers, 'muon', 'adam' or "
      f"None; got {value!r}")


NO_METADATA = object()
"""Returned by :func:`metadata_route` for a leaf without a ``muon`` entry."""


def metadata_route(leaf: Any) -> Any:
  """The leaf's ``muon`` metadata entry, or :data:`NO_METADATA`."""
  if has_metadata(leaf):
    return leaf.get_metadata().get("muon", NO_METADATA)
  return NO_METADATA


def route_leaf(names: Any, leaf, *, overrides: Mapping[str, Override] = (),
               router_to_muon: bool = False) -> Optional[MuonDimensionNumbers]:
  """Dimension numbers for one leaf, or ``None`` for AdamW (rules in the module doc)."""
  path = "/".join(names)
  ndim = len(leaf.shape)
  for pattern, value in dict(overrides).items():
    if re.search(pattern, path):
      return _from_override(value, ndim, path)
  meta = metadata_route(leaf)
  if meta is not NO_METADATA:
    return _from_override(meta, ndim, path)
  if ndim < 2:
    return None
  role = leaf_role(names)
  if role is not None and not (router_to_muon and role == "router"):
    return None
  return default_dimension_numbers(ndim)


def muon_dimension_numbers(
    params: Any,
    *,
    overrides: Mapping[str, Override] = (),
    router_to_muon: bool = False,
) -> Any:
  """A tree of ``MuonDimensionNumbers`` (Muon leaves) and ``None`` (AdamW leaves).

  Args:
    params: a parameter pytree; leaves following the metadata protocol (e.g.
      the ``nnx.Variable``\\ s of an ``nnx.State``) are routed by their
      ``muon`` metadata. (:func:`muonjax.nnx.muon_dimension_numbers` also
      takes an ``nnx.Module``.)
    overrides: ``{regex: MuonDimensionNumbers | 'muon' | 'adam' | None}``.
    router_to_muon: send MoE router matrices to Muon.

  Returns:
    A tree with the structure of ``params`` usable as ``dimension_numbers`` of
    every muonjax stage and alias (and as optax's
    ``muon_weight_dimension_numbers``).
  """
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: route_leaf(path_names(p), leaf, overrides=overrides,
                                 router_to_muon=router_to_muon),
      params_tree(params), is_leaf=has_metadata)


def _is_spec(x) -> bool:
  return x is None or isinstance(x, MuonDimensionNumbers)


def labels_from_dimension_numbers(dim_nums: Any, params: Any) -> Any:
  """``"muon"``/``"adam"`` labels with the structure of ``params``."""
  return jax.tree.map(
      lambda dn, sub: jax.tree.map(lambda _: MUON if dn is not None else ADAM, sub,
                                   is_leaf=has_metadata),
      dim_nums, params, is_leaf=_is_spec)


def label_params(params: Any, **kwargs) -> Any:
  """``"muon"``/``"adam"`` per leaf by the default rules (see module doc).

  Accepts the arguments of :func:`muon_dimension_numbers`.
  """
  tree = params_tree(params)
  return labels_from_dimension_numbers(muon_dimension_numbers(tree, **kwargs), tree)


def optax_dimension_numbers(params: Any) -> Any:
  """optax.contrib.muon's labelling: every rank-2 leaf to Muon, the rest to Adam."""
  return jax.tree.map(
      lambda x: MuonDimensionNumbers() if len(x.shape) == 2 else None, params_tree(params),
      is_leaf=has_metadata)


# ---------------------------------------------------------------------------
# Routing decided at init, carried in the optimizer state.

Decision = tuple[tuple[tuple[str, ...], tuple[int, ...], Optional[MuonDimensionNumbers]], ...]
"""One ``(path names, shape, dimension numbers or None)`` per parameter leaf."""


@jax.tree_util.register_pytree_with_keys_class
class RoutedState:
  """The state of a :func:`routed` optimizer: the inner state and the routing decision.

  The decision is static pytree data (part of the tree structure, not a leaf),
  so it passes through ``jax.jit``, ``optax.inject_hyperparams`` and
  checkpoint restore unchanged. The inner state's fields are this node's
  children under their own names (``state.inner_states`` of an
  ``optax.partition`` reads through), so leaf paths are those of the inner
  state.

  Attributes:
    inner: the wrapped optimizer's state.
    decision: one ``(path names, shape, MuonDimensionNumbers | None)`` per leaf.
  """

  def __init__(self, inner: Any, decision: Decision):
    self.inner = inner
    self.decision = decision

  def __getattr__(self, name: str) -> Any:
    if name in ("inner", "decision") or name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.inner, name)

  def __repr__(self) -> str:
    return f"RoutedState(inner={self.inner!r}, decision=<{len(self.decision)} leaves>)"

  def tree_flatten_with_keys(self):
    fields = getattr(type(self.inner), "_fields", None)
    if fields is not None:  # a NamedTuple: its fields become this node's children
      children = [(jax.tree_util.GetAttrKey(f), v) for f, v in zip(fields, self.inner)]
      return children, (type(self.inner), self.decision)
    return [(jax.tree_util.GetAttrKey("inner"), self.inner)], (None, self.decision)

  @classmethod
  def tree_unflatten(cls, aux, children):
    kind, decision = aux
    inner = children[0] if kind is None else kind(*children)
    return cls(inner, decision)


def _decide(spec: Any, params: Any) -> Decision:
  if spec is None:
    dims = muon_dimension_numbers(params)
  elif callable(spec) and not isinstance(spec, MuonDimensionNumbers):
    dims = spec(params)
  else:
    dims = spec
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=has_metadata)[0]
  if _is_spec(dims):
    dns = [dims] * len(flat)
  else:
    dns = broadcast_to_leaves(dims, params, _is_spec)
  return tuple((path_names(p), tuple(int(d) for d in leaf.shape), dn)
               for (p, leaf), dn in zip(flat, dns))


def _replay(decision: Decision, tree: Any) -> Any:
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=has_metadata)
  if len(flat) != len(decision):
    raise ValueError(f"the optimizer was initialized on {len(decision)} leaves; "
                     f"update got {len(flat)}: build one optimizer per model")
  for (path, leaf), (names, shape, _) in zip(flat, decision):
    if tuple(leaf.shape) != shape:
      raise ValueError(
          f"leaf {'/'.join(path_names(path))} has shape {tuple(leaf.shape)}; the optimizer "
          f"was initialized with {'/'.join(names)} of shape {shape}")
  return treedef.unflatten([dn for _, _, dn in decision])


def routed(build: Callable[[Any], optax.GradientTransformation],
           dimension_numbers: Any = None) -> optax.GradientTransformationExtraArgs:
  """``build(dims)`` with ``dims`` decided once, at ``init``, and kept in the state.

  Args:
    build: makes the optimizer from a tree of ``MuonDimensionNumbers | None``
      with the structure of the params (``None``: not a Muon leaf).
    dimension_numbers: ``None`` (the default rules of
      :func:`muon_dimension_numbers`, metadata included), a tree (prefix) of
      ``MuonDimensionNumbers | None``, one ``MuonDimensionNumbers`` for every
      leaf, a callable ``params -> tree``, or an object a registered params
      view turns into params (an ``nnx.Module``: its routing by the default
      rules).

  Returns:
    A ``GradientTransformationExtraArgs`` whose state is a
    :class:`RoutedState`; ``update`` forwards extra arguments to ``build``'s
    transformation.
  """
  spec = dimension_numbers
  if not _is_spec(spec) and params_tree(spec) is not spec:  # e.g. an nnx.Module
    spec = muon_dimension_numbers(spec)

  def init_fn(params):
    decision = _decide(spec, params)
    inner = build(_replay(decision, params))
    return RoutedState(inner.init(params), decision)

  def update_fn(updates, state, params=None, **extra_args):
    inner = optax.with_extra_args_support(build(_replay(state.decision, updates)))
    new_updates, new_inner = inner.update(updates, state.inner, params, **extra_args)
    return new_updates, RoutedState(new_inner, state.decision)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
