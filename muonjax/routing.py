"""Parameter routing: which leaves Muon orthogonalizes and how, which go to AdamW.

The default rules (optimizers spec §12.2, Flax ``(in, out)`` layout):

* a leaf with a ``muon`` metadata entry on its ``nnx.Variable`` uses it
  (``MuonDimensionNumbers`` → Muon with those axes; ``True`` → default axes;
  ``False`` or ``None`` → AdamW);
* rank < 2 (biases, norm scales, scalars) → AdamW;
* a path component naming an embedding or output head (``embed``,
  ``embedding``, ``wte``, ``wpe``, ``lm_head``, ``head``, ``unembed``, …) or a
  MoE ``router`` → AdamW: they are 2-D but not hidden linear maps;
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

ADAM_NAME_PATTERN = re.compile(
    r"(^|_)(embed|embeds|embedding|embeddings|emb|wte|wpe|lm_head|head|unembed|"
    r"unembedding|router)($|_)", re.IGNORECASE)

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
  for name in path_names:
    match = ADAM_NAME_PATTERN.search(name)
    if match and not (router_to_muon and match.group(2).lower() == "router"):
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
