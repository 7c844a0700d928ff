"""Flax NNX glue: the optimizer core's routing and helpers, taking ``nnx.Module``\\ s.

The core (:mod:`muonjax.routing`, :mod:`muonjax.transforms`,
:mod:`muonjax.optimizers`) works on parameter pytrees and reads leaf metadata
through a protocol (a leaf with ``get_metadata()``), so ``nnx.state(model,
nnx.Param)`` already routes by ``muon=`` / ``sphere_axis=`` metadata. This
subpackage adds the module-level entry points: each accepts an ``nnx.Module``
(its ``nnx.Param`` state) as well as a tree. Importing it also registers the
``nnx.Module → nnx.state(module, nnx.Param)`` view with
:func:`muonjax.routing.register_params_view`, so an alias's
``dimension_numbers=model`` routes that model.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from muonjax import routing
from muonjax.optimizers.scion import scion_default_lmos as _core_scion_default_lmos
from muonjax.transforms.hypersphere import sphere_axes as _core_sphere_axes
from muonjax.transforms.lmo import scion_init as _core_scion_init

__all__ = [
    "as_params", "label_params", "muon_dimension_numbers", "optax_dimension_numbers",
    "scion_default_lmos", "scion_init", "sphere_axes",
]


def _is_module(x: Any) -> bool:
  return isinstance(x, nnx.Module)


def as_params(model_or_params: Any) -> Any:
  """``nnx.state(model, nnx.Param)`` for a module; anything else unchanged."""
  if _is_module(model_or_params):
    return nnx.state(model_or_params, nnx.Param)
  return model_or_params


routing.register_params_view(_is_module, as_params)


def muon_dimension_numbers(params: Any, **kwargs) -> Any:
  """:func:`muonjax.routing.muon_dimension_numbers` of a module's ``nnx.Param`` state or a tree."""
  return routing.muon_dimension_numbers(as_params(params), **kwargs)


def label_params(params: Any, **kwargs) -> Any:
  """:func:`muonjax.routing.label_params` of a module's ``nnx.Param`` state or a tree."""
  return routing.label_params(as_params(params), **kwargs)


def optax_dimension_numbers(params: Any) -> Any:
  """:func:`muonjax.routing.optax_dimension_numbers` of a module or a tree."""
  return routing.optax_dimension_numbers(as_params(params))


def sphere_axes(model_or_state: Any) -> Any:
  """Tree of ``sphere_axis`` metadata (``None`` where absent) from an NNX model or state."""
  return _core_sphere_axes(as_params(model_or_state))


def scion_default_lmos(params: Any, **kwargs) -> Any:
  """:func:`muonjax.optimizers.scion.scion_default_lmos` of a module or a tree."""
  return _core_scion_default_lmos(as_params(params), **kwargs)


def scion_init(params: Any, lmos: Any, key: jax.Array, **kwargs) -> Any:
  """:func:`muonjax.transforms.lmo.scion_init` of a module's params or a tree."""
  return _core_scion_init(as_params(params), lmos, key, **kwargs)
