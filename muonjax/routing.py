"""Parameter routing: which leaves Muon orthogonalizes and how, which go to AdamW.

The default rules (optimizers spec §12.2, Flax ``(in, out)`` layout):

* a leaf with a ``muon`` metadata entry on its ``nnx.Variable`` uses it
  (``MuonDimensionNumbers`` → Muon with those axes; ``True`` → default axes;
  ``False`` or ``None`` → AdamW);
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

Overrides map a regular expression, searched in the ``/``-joined path, to a
``MuonDimensionNumbers``, ``"muon"``, or ``"adam"``/``None``; the first match
wins and beats every rule above.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Union

import jax
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from muonjax.transforms.dimensions import default_dimension_numbers

MUON, ADAM = "muon", "adam"

EMBEDDING_PATTERN = re.compile(
    r"(^|_)(embed|embeds|embedding|embeddings|emb|wte|wpe)($|_)", re.IGNORECASE)
HEAD_NAMES = frozenset({"head", "lm_head", "output_head", "unembed", "unembedding"})
ROUTER_PATTERN = re.compile(r"(^|_)router($|_)", re.IGNORECASE)
# Last path component of stacked vectors (an nnx.vmap'ed bias or norm scale is (L, d)).
VECTOR_NAMES = frozenset({"bias", "scale"})


def leaf_role(path_names: list[str]) -> Optional[str]:
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


def _path_names(path) -> list[str]:
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return names


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


_NO_METADATA = object()


def _metadata_route(leaf) -> Any:
  if isinstance(leaf, nnx.Variable):
    return leaf.get_metadata().get("muon", _NO_METADATA)
  return _NO_METADATA


def route_leaf(path_names: list[str], leaf, *, overrides: Mapping[str, Override] = (),
               router_to_muon: bool = False) -> Optional[MuonDimensionNumbers]:
  """Dimension numbers for one leaf, or ``None`` for AdamW (rules in the module doc)."""
  path = "/".join(path_names)
  ndim = len(leaf.shape)
  for pattern, value in dict(overrides).items():
    if re.search(pattern, path):
      return _from_override(value, ndim, path)
  meta = _metadata_route(leaf)
  if meta is not _NO_METADATA:
    return _from_override(meta, ndim, path)
  if ndim < 2:
    return None
  role = leaf_role(path_names)
  if role is not None and not (router_to_muon and role == "router"):
    return None
  return default_dimension_numbers(ndim)


def _as_tree(params_or_model):
  if isinstance(params_or_model, nnx.Module):
    return nnx.state(params_or_model, nnx.Param)
  return params_or_model


def muon_dimension_numbers(
    params: Any,
    *,
    overrides: Mapping[str, Override] = (),
    router_to_muon: bool = False,
) -> Any:
  """A tree of ``MuonDimensionNumbers`` (Muon leaves) and ``None`` (AdamW leaves).

  Args:
    params: a parameter pytree, an ``nnx.State`` or an ``nnx.Module`` (its
      ``nnx.Param`` state; Variable metadata is read).
    overrides: ``{regex: MuonDimensionNumbers | 'muon' | 'adam' | None}``.
    router_to_muon: send MoE router matrices to Muon.

  Returns:
    A tree with the structure of ``params`` usable as ``dimension_numbers`` of
    every muonjax stage and alias (and as optax's
    ``muon_weight_dimension_numbers``).
  """
  tree = _as_tree(params)
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: route_leaf(_path_names(p), leaf, overrides=overrides,
                                 router_to_muon=router_to_muon),
      tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def labels_from_dimension_numbers(dim_nums: Any, params: Any) -> Any:
  """``"muon"``/``"adam"`` labels with the structure of ``params``."""
  is_spec = lambda x: x is None or isinstance(x, MuonDimensionNumbers)
  is_var = lambda x: isinstance(x, nnx.Variable)
  return jax.tree.map(
      lambda dn, sub: jax.tree.map(lambda _: MUON if dn is not None else ADAM, sub,
                                   is_leaf=is_var),
      dim_nums, params, is_leaf=is_spec)


def label_params(params: Any, **kwargs) -> Any:
  """``"muon"``/``"adam"`` per leaf by the default rules (see module doc).

  Accepts the arguments of :func:`muon_dimension_numbers`.
  """
  tree = _as_tree(params)
  return labels_from_dimension_numbers(muon_dimension_numbers(tree, **kwargs), tree)


def optax_dimension_numbers(params: Any) -> Any:
  """optax.contrib.muon's labelling: every rank-2 leaf to Muon, the rest to Adam."""
  return jax.tree.map(
      lambda x: MuonDimensionNumbers() if len(x.shape) == 2 else None, _as_tree(params),
      is_leaf=lambda x: isinstance(x, nnx.Variable))


class Router:
  """The default routing of muonjax aliases: the rules above, metadata included.

  ``nnx.Optimizer`` calls ``tx.init`` on the model's ``nnx.Variable``\\ s (their
  metadata visible) but ``tx.update`` on plain arrays. A ``Router`` remembers
  the metadata-driven decisions it makes at init, keyed by leaf path and shape,
  and replays them at update, so ``mj.muon(...)`` honours ``muon=`` metadata
  without a hand-written tree. Build one optimizer per model: initializing the
  same optimizer on a model whose metadata routes a leaf of the same path and
  shape differently raises ``ValueError``.

  Args:
    overrides: ``{regex: MuonDimensionNumbers | 'muon' | 'adam' | None}``.
    router_to_muon: send MoE router matrices to Muon.
  """

  def __init__(self, *, overrides: Mapping[str, Override] = (), router_to_muon: bool = False):
    self.overrides = dict(overrides)
    self.router_to_muon = router_to_muon
    self._from_metadata: dict[tuple, Optional[MuonDimensionNumbers]] = {}

  def __call__(self, tree: Any) -> Any:
    def one(path, leaf):
      names = _path_names(path)
      key = (tuple(names), tuple(leaf.shape))
      dn = route_leaf(names, leaf, overrides=self.overrides,
                      router_to_muon=self.router_to_muon)
      if _metadata_route(leaf) is not _NO_METADATA:
        if key in self._from_metadata and self._from_metadata[key] != dn:
          raise ValueError(
              f"leaf {'/'.join(names)} was routed by another model's metadata to "
              f"{self._from_metadata[key]}; build one optimizer per model")
        self._from_metadata[key] = dn
        return dn
      return self._from_metadata.get(key, dn)
    return jax.tree_util.tree_map_with_path(
        one, _as_tree(tree), is_leaf=lambda x: isinstance(x, nnx.Variable))
