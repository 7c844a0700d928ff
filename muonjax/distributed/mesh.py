"""Device mesh and placement on a ``("data", "fsdp")`` mesh: parameters, optimizer state, batches.

Layout (design: ``docs/performance.md#sharding``):

* the batch axis is sharded over ``data`` and ``fsdp`` together (every device
  sees ``B / n_devices`` examples);
* every large parameter is sharded over ``fsdp`` along one axis: the stack axis
  ``L`` of a stacked ``(L, in, out)`` kernel when ``fsdp`` divides it (each
  device owns whole matrices), else its largest divisible axis; small and
  indivisible leaves are replicated; parameters are replicated over ``data``;
* optimizer state follows its parameter (:func:`state_shardings`).

Newton–Schulz on such a mesh is in :mod:`muonjax.distributed.newton_schulz`.

Works unchanged on 1 device, on simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX is
imported) and across processes: call ``jax.distributed.initialize()`` (with
``coordinator_address``, ``num_processes`` and ``process_id`` off a managed
cluster) before touching devices in every process, build the mesh over
``jax.devices()`` (all processes' devices) with :func:`make_mesh`, and feed each
process's slice of the global batch to :func:`shard_batch`.

Flax is imported only by the functions that take NNX modules.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
"""The mesh axis names: data parallelism, then parameter (FSDP) sharding."""
DATA, FSDP = AXES
AxisNames = Union[str, Sequence[str]]


def _positive(name: str, value: Optional[int]) -> Optional[int]:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
  return int(value)


def make_mesh(data: Optional[int] = None, fsdp: Optional[int] = None,
              devices: Optional[Sequence[Any]] = None, *,
              axis_types: AxisType = AxisType.Auto) -> Mesh:
  """A 2-D device mesh with axes :data:`AXES` ``("data", "fsdp")``.

  With neither size given every device goes to ``fsdp`` (``data=1``); with one
  given the other takes the remaining devices. Axes are ``Auto`` (GSPMD
  propagates shardings, so unannotated model and optimizer code runs as is).

  Args:
    data: devices along the data-parallel axis.
    fsdp: devices along the parameter-sharding axis.
    devices: the devices to use (default ``jax.devices()``: every device of
      every process).
    axis_types: ``jax.sharding.AxisType`` of both axes.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``(data, fsdp)``.

  Raises:
    ValueError: a non-positive size, or ``data * fsdp`` different from the
      number of devices (or not dividing it when one size is omitted).
  """
  data, fsdp = _positive("data", data), _positive("fsdp", fsdp)
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if n == 0:
    raise ValueError("devices must not be empty")
  if data is None and fsdp is None:
    data, fsdp = 1, n
  elif data is None or fsdp is None:
    given, name = (data, "data") if fsdp is None else (fsdp, "fsdp")
    if n % given:
      raise ValueError(f"{name}={given} does not divide the device count {n}")
    data, fsdp = (given, n // given) if fsdp is None else (n // given, given)
  if data * fsdp != n:
    raise ValueError(
        f"mesh data={data} x fsdp={fsdp} = {data * fsdp} does not match the "
        f"device count {n}")
  return jax.make_mesh((data, fsdp), AXES, axis_types=(axis_types,) * 2,
                       devices=devices)


def axis_size(mesh, axes: AxisNames) -> int:
  """Number of devices along mesh axis (or axes) ``axes``.

  Raises:
    ValueError: an axis not in the mesh.
  """
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  for a in axes:
    if a not in mesh.axis_names:
      raise ValueError(f"mesh axis {a!r} not in the mesh axes {tuple(mesh.axis_names)}")
  return math.prod(mesh.shape[a] for a in axes)


# ------------------------------------------------------------------ shardings


def leaf_spec(shape: Sequence[int], fsdp_size: int, *, axis: AxisNames = FSDP,
              min_size: int = 1024) -> P:
  """The FSDP partition spec of one array of ``shape``.

  Rule: replicate when ``fsdp_size == 1``, the array has fewer than
  ``min_size`` elements, or no axis is divisible by ``fsdp_size``; otherwise
  shard the largest divisible leading (stack) axis of a rank >= 3 array (the
  last two axes are one matrix, so each device owns whole matrices), else the
  largest divisible axis (the first on ties).

  Args:
    shape: array shape.
    fsdp_size: number of devices along the sharding axis.
    axis: mesh axis name(s) to shard over.
    min_size: arrays with fewer elements are replicated.

  Returns:
    A ``PartitionSpec`` (``P()`` for replicated).
  """
  shape = tuple(int(s) for s in shape)
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return P()
  def best(candidates):
    ok = [i for i in candidates if shape[i] % fsdp_size == 0]
    return max(ok, key=lambda i: (shape[i], -i)) if ok else None
  dim = best(range(len(shape) - 2)) if len(shape) >= 3 else None
  if dim is None:
    dim = best(range(len(shape)))
  if dim is None:
    return P()
  spec = [None] * len(shape)
  spec[dim] = axis
  return P(*spec)


def _state_of(tree):
  """``nnx.state(module)`` for Flax NNX modules, else ``tree`` unchanged."""
  try:
    from flax import nnx
  except ImportError:  # pragma: no cover
    return tree
  if isinstance(tree, nnx.Pytree):
    return nnx.state(tree)
  return tree


def param_shardings(params_or_model: Any, mesh: Mesh, *, axis: AxisNames = FSDP,
                    min_size: int = 1024) -> Any:
  """``NamedSharding`` for every parameter (rule: :func:`leaf_spec`).

  Args:
    params_or_model: a pytree of arrays (or ``jax.ShapeDtypeStruct``) or a Flax
      NNX module (its whole ``nnx.state``).
    mesh: the device mesh.
    axis: the mesh axis (or axes) parameters are sharded over.
    min_size: leaves with fewer elements are replicated.

  Returns:
    A tree of ``NamedSharding`` with the structure of the parameters (of
    ``nnx.state(model)`` for a module), usable with ``jax.device_put`` or
    :func:`shard_module`.
  """
  tree = _state_of(params_or_model)
  size = axis_size(mesh, axis)
  return jax.tree.map(
      lambda x: NamedSharding(mesh, leaf_spec(np.shape(x), size, axis=axis,
                                              min_size=min_size)), tree)


def _key_name(k) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return getattr(k, attr)
  return str(k)


def leaf_path(path) -> tuple:
  """The names along a ``jax.tree_util`` key path (``("blocks", "mlp", "up", "kernel")``).

  The trailing ``.value`` of NNX Variable leaves is dropped, so a parameter
  and its optimizer-state moments share the path suffix
  :func:`state_shardings` matches on.
  """
  names = tuple(_key_name(k) for k in path)
  # NNX states end every leaf path in the Variable's ``.value`` attribute.
  if names and names[-1] == "value" and type(path[-1]).__name__ == "GetAttrKey":
    names = names[:-1]
  return names


def _fits(spec: P, shape: tuple, mesh) -> bool:
  if len(spec) > len(shape):
    return False
  return all(s is None or shape[i] % axis_size(mesh, s) == 0
             for i, s in enumerate(spec))


def state_shardings(opt_state: Any, params_shardings: Any, *, axis: AxisNames = FSDP,
                    min_size: int = 1024) -> Any:
  """Shardings of an optimizer state that follow its parameters' shardings.

  Each state leaf whose path ends with a parameter's path (optax states mirror
  the parameter tree: ``mu/blocks/attn/query/kernel`` ends with
  ``blocks/attn/query/kernel``) and whose shape admits that parameter's
  sharding gets it; other leaves (counters, factored statistics, per-row
  moments) get :func:`leaf_spec`'s rule; scalars are replicated.

  Args:
    opt_state: optimizer state (optax state, or ``nnx.state(optimizer)`` or an
      ``nnx.Optimizer``).
    params_shardings: the parameters' shardings (:func:`param_shardings`).
    axis, min_size: for leaves without a matching parameter, as in
      :func:`param_shardings`.

  Returns:
    A tree of ``NamedSharding`` with the structure of ``opt_state``.

  Raises:
    ValueError: ``params_shardings`` holds no ``NamedSharding``.
  """
  state = _state_of(opt_state)
  p_leaves = jax.tree_util.tree_flatten_with_path(
      params_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
  by_path = {leaf_path(p): s for p, s in p_leaves if isinstance(s, NamedSharding)}
  if not by_path:
    raise ValueError("params_shardings must be a tree of NamedSharding "
                     "(see param_shardings)")
  mesh = next(iter(by_path.values())).mesh
  size = axis_size(mesh, axis)
  lengths = sorted({len(k) for k in by_path}, reverse=True)

  def one(path, leaf):
    shape, names = tuple(np.shape(leaf)), leaf_path(path)
    for n in lengths:
      if n <= len(names):
        s = by_path.get(names[len(names) - n:])
        if s is not None and _fits(s.spec, shape, mesh):
          return NamedSharding(mesh, s.spec)
    return NamedSharding(mesh, leaf_spec(shape, size, axis=axis, min_size=min_size))

  return jax.tree_util.tree_map_with_path(one, state)


def shard_module(module: Any, shardings: Any) -> Any:
  """Place a Flax NNX module's (or optimizer's) state with ``shardings``, in place.

  Args:
    module: an ``nnx.Module`` or ``nnx.Optimizer``.
    shardings: a tree of shardings matching ``nnx.state(module)``
      (:func:`param_shardings` or :func:`state_shardings`).

  Returns:
    ``module`` (updated in place).
  """
  from flax import nnx
  state = nnx.state(module)
  nnx.update(module, jax.device_put(state, shardings))
  return module


def batch_sharding(mesh: Mesh, ndim: int = 2, *, axes: AxisNames = AXES) -> NamedSharding:
  """Sharding of a batch array: axis 0 over ``axes`` (default data and fsdp), rest replicated.

  Args:
    mesh: the device mesh.
    ndim: rank of the batch arrays (``(B, T)`` tokens: 2).
    axes: mesh axes the batch axis is split over.

  Returns:
    A ``NamedSharding``.
  """
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  axis_size(mesh, axes)
  if ndim < 1:
    raise ValueError(f"ndim must be >= 1 for a batch; got {ndim}")
  return NamedSharding(mesh, P(axes, *([None] * (ndim - 1))))


def shard_batch(batch: Any, mesh: Mesh, *, axes: AxisNames = AXES) -> Any:
  """Put every array of ``batch`` on the mesh, batch axis sharded (:func:`batch_sharding`).

  In a single process ``batch`` is the global batch; with several processes
  each passes its own slice (``global_batch / process_count`` rows) and the
  global array is assembled with ``jax.make_array_from_process_local_data``.

  Raises:
    ValueError: the (global) batch size is not divisible by the devices along
      ``axes``.
  """
  n = axis_size(mesh, axes)
  procs = jax.process_count()

  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0 or (x.shape[0] * procs) % n:
      raise ValueError(
          f"batch size {x.shape[0] * procs if x.ndim else None} must be divisible "
          f"by the {n} devices along mesh axes {axes}")
    s = batch_sharding(mesh, x.ndim, axes=axes)
    if procs == 1:
      return jax.device_put(x, s)
    return jax.make_array_from_process_local_data(s, np.asarray(x))

  return jax.tree.map(put, batch)
