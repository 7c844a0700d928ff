"""Newton–Schulz on a device mesh: stack-sharded batches and the Gram all-reduce iteration.

Two layouts (design: ``docs/performance.md#sharding``; cost per layout:
``docs/performance.md#cost-model``):

* **stack-sharded** (:func:`orthogonalize_stack`): a batch of same-shape
  matrices ``(B, m, n)`` is padded with zero matrices to a multiple of the
  device count and sharded along ``B``, so each device iterates on whole
  matrices and the iteration loop runs with no collectives. It is the strategy
  the ``orthogonalize`` stage's ``strategy="auto"`` uses under a context mesh
  (installed by importing this package), and :func:`shard_stack_strategy`
  binds it to an explicit mesh;
* **Gram all-reduce** (:func:`newton_schulz_sharded`): a lone matrix whose long
  axis is sharded is orthogonalized with one all-reduce of its ``m × m`` Gram
  matrix per iteration (GSPMD's own partitioning of
  :func:`muonjax.newton_schulz` produces the same communication).

References:
  Jordan, Muon, https://kellerjordan.github.io/posts/muon/ (the quintic
  iteration); the Gram-matrix form ``X <- aX + (bA + cA²)X`` with ``A = XXᵀ``
  reduces over the long axis only through ``A``, which is what makes one
  all-reduce per iteration sufficient.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from muonjax.distributed.mesh import AxisNames, axis_size
from muonjax.orthogonalization.coefficients import CoeffsLike, get_coefficients
from muonjax.orthogonalization.newton_schulz import (
    divide_by_norm,
    newton_schulz,
    quintic_step,
)
from muonjax.transforms.orthogonalize import Orthogonalizer, Strategy


def _context_mesh():
  """The mesh set with ``jax.set_mesh`` (abstract inside ``jit``), or ``None``."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or mesh.size <= 1:
    return None
  return mesh


def stack_axes(mesh, n_matrices: int) -> tuple:
  """Mesh axes to shard a stack of ``n_matrices`` matrices over.

  Every axis of size > 1 when the stack is at least as large as the whole
  mesh; otherwise the subset of axes with the most devices not exceeding
  ``n_matrices`` (empty: leave the stack unconstrained).
  """
  axes = [a for a in mesh.axis_names if mesh.shape[a] > 1]
  best, best_n = (), 1
  for r in range(len(axes), 0, -1):
    for combo in itertools.combinations(axes, r):
      size = math.prod(mesh.shape[a] for a in combo)
      if best_n < size <= max(n_matrices, 1):
        best, best_n = combo, size
  return best


def _explicit(mesh) -> bool:
  return any(t == AxisType.Explicit for t in mesh.axis_types)


def _constrain(x, mesh, spec):
  if _explicit(mesh):
    return jax.sharding.reshard(x, NamedSharding(mesh, spec) if isinstance(mesh, Mesh) else spec)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)
                                          if isinstance(mesh, Mesh) else spec)


def orthogonalize_stack(orthogonalizer: Orthogonalizer,
                        x: jax.Array, mesh=None,
                        axes: Optional[AxisNames] = None) -> jax.Array:
  """Run ``orthogonalizer`` on a stack ``(B, m, n)`` with ``B`` sharded over the mesh.

  The stack is padded with zero matrices to a multiple of the device count
  along ``axes`` and constrained to ``P(axes, None, None)``, so each device
  iterates on whole matrices of its own and the loop has no collectives; the
  padding is dropped from the result (on ``Explicit`` mesh axes the result is
  resharded to replicated first, since explicit sharding cannot slice a
  sharded stack unevenly). Without a mesh (none given and none set
  with ``jax.set_mesh``), or when no axis fits (:func:`stack_axes`), it is
  ``orthogonalizer(x)``.

  Args:
    orthogonalizer: ``(B, m, n) -> (B, m, n)``, acting per matrix.
    x: the stack.
    mesh: a ``Mesh`` (default: the context mesh).
    axes: mesh axes to shard the stack over (default :func:`stack_axes`).

  Returns:
    ``orthogonalizer(x)``, computed stack-sharded.
  """
  mesh = _context_mesh() if mesh is None else mesh
  if mesh is None or x.ndim != 3:
    return orthogonalizer(x)
  axes = stack_axes(mesh, x.shape[0]) if axes is None else (
      (axes,) if isinstance(axes, str) else tuple(axes))
  if not axes:
    if _explicit(mesh) and _input_spec(x)[1] is not None:
      # Explicit axes: sharded contractions need a decision; take it from the layout.
      if isinstance(orthogonalizer, functools.partial) and orthogonalizer.func is newton_schulz:
        return newton_schulz_sharded(x, mesh, None, **orthogonalizer.keywords)
      return orthogonalizer(_constrain(x, mesh, P()))
    return orthogonalizer(x)
  n = axis_size(mesh, axes)
  b = x.shape[0]
  pad = -b % n
  if pad:
    x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)
  spec = P(axes, None, None)
  y = orthogonalizer(_constrain(x, mesh, spec))
  # Explicit axes cannot slice a sharded stack into unevenly sized parts: the
  # result is gathered (replicated) for the caller to split.
  y = _constrain(y, mesh, P() if _explicit(mesh) else spec)
  return y[:b] if pad else y


def shard_stack_strategy(mesh: Optional[Mesh] = None,
                         axes: Optional[AxisNames] = None
                         ) -> Strategy:
  """An ``orthogonalize`` strategy that runs every batched call stack-sharded.

  For ``muonjax.orthogonalize(..., strategy=shard_stack_strategy(mesh))`` (or
  ``orthogonalize_tree``): each group of same-shape matrices is orthogonalized
  with :func:`orthogonalize_stack` on ``mesh`` (default: the mesh set with
  ``jax.set_mesh`` at trace time, as ``strategy="auto"`` does).

  Args:
    mesh: a ``Mesh``, or ``None`` for the context mesh.
    axes: mesh axes to shard stacks over (default :func:`stack_axes`).

  Returns:
    A callable ``(orthogonalizer, stack) -> result``.
  """
  def strategy(orthogonalizer: Orthogonalizer, stacked: jax.Array) -> jax.Array:
    return orthogonalize_stack(orthogonalizer, stacked, mesh, axes)
  return strategy


# --------------------------------------------------- NS: Gram all-reduce mode


def _gram_ns_local(x, rows, *, axis_name, wide, normalization, safety, eps,
                   compute_dtype):
  """shard_map body: ``x`` is this device's slice of the long axis."""
  out_dtype = x.dtype
  if not wide:
    x = jnp.swapaxes(x, -1, -2)
  if normalization == "frobenius":
    amax = jax.lax.pmax(jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True), axis_name)
    amax = jnp.where(amax > 0, amax, jnp.ones_like(amax))
    x = x / amax
    norm = jnp.sqrt(jax.lax.psum(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True),
                                 axis_name))
    x = divide_by_norm(x, norm, safety, eps, amax)
  x = x.astype(compute_dtype)
  table = jnp.asarray(rows, dtype=jnp.promote_types(compute_dtype, jnp.float32))

  def body(x, abc):
    gram = jax.lax.psum(jnp.einsum("...ik,...jk->...ij", x, x), axis_name)
    return quintic_step(x, gram, abc), None

  if table.shape[0]:
    with jax.named_scope("newton_schulz"):
      x, _ = jax.lax.scan(body, x, table)
  if not wide:
    x = jnp.swapaxes(x, -1, -2)
  return x.astype(out_dtype)


def _spec_axes(entry) -> tuple:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def _input_spec(x):
  """The partition spec of ``x`` where it is known (committed array or Explicit axes)."""
  sharding = getattr(x, "sharding", None)
  if isinstance(sharding, NamedSharding):
    return sharding.mesh, sharding.spec
  try:
    aval_sharding = jax.typeof(x).sharding
  except Exception:  # pragma: no cover
    return None, None
  if isinstance(aval_sharding, NamedSharding) and any(aval_sharding.spec):
    return aval_sharding.mesh, aval_sharding.spec
  return None, None


def newton_schulz_sharded(
    x: jax.Array,
    mesh: Optional[Mesh] = None,
    axis_name: Optional[AxisNames] = None,
    *,
    coeffs: CoeffsLike = "keller",
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = None,
    compute_dtype: Optional[jnp.dtype] = None,
    backend: str = "auto",
) -> jax.Array:
  r"""Newton–Schulz on a sharded array, communication chosen by the layout.

  With ``axis_name`` given: **Gram all-reduce mode** (a ``jax.shard_map``).
  The long matrix axis (``max(m, n)``) is split over ``axis_name``; each device
  keeps ``X_i`` (``m × n/P`` after turning wide) and per iteration computes
  ``A = psum(X_i X_iᵀ)`` (**one all-reduce of the m × m Gram matrix**),
  ``B = bA + cA²`` (replicated) and ``X_i ← aX_i + BX_i`` locally; the
  Frobenius normalization adds two scalar all-reduces (max and sum of squares)
  before the loop. Leading batch axes stay unsharded.

  With ``axis_name=None``: **automatic choice** from the sharding of ``x``
  (known for committed arrays outside ``jit`` and for ``Explicit`` mesh axes
  inside it): a sharded leading (stack) axis → stack mode (device-local
  batched NS, no collectives in the loop); a sharded long matrix axis → Gram
  all-reduce mode on that axis; a sharded short axis → resharded to the long
  axis first (when divisible; else replicated), then Gram mode; replicated or
  unknown → :func:`muonjax.newton_schulz` (inside ``jit`` with ``Auto`` axes
  GSPMD partitions it from the input's sharding: stack-sharded → no loop
  collectives, long-axis-sharded → one Gram all-reduce per iteration).

  Args:
    x: ``(..., m, n)`` floating array.
    mesh: the mesh (default: the array's own, else the context mesh).
    axis_name: mesh axis (or axes) splitting the long axis, or ``None`` (auto).
    coeffs, steps, safety, eps, compute_dtype: as in :func:`muonjax.newton_schulz`.
    normalization: ``"frobenius"`` or ``"none"`` in Gram mode; any in the others.
    backend: passed to :func:`muonjax.newton_schulz` in the other modes; Gram
      mode uses XLA matmuls.

  Returns:
    The orthogonalized array, shape and dtype of ``x``, with the long axis
    sharded over ``axis_name`` in Gram mode.

  Raises:
    ValueError: rank < 2, an unsupported normalization in Gram mode, an axis
      not in the mesh, or a long axis not divisible by its device count.
  """
  kwargs = dict(coeffs=coeffs, steps=steps, normalization=normalization,
                safety=safety, eps=eps, compute_dtype=compute_dtype, backend=backend)
  if x.ndim < 2:
    raise ValueError(f"newton_schulz_sharded expects (..., m, n); got shape {x.shape}")
  m, n = x.shape[-2:]
  long_dim = x.ndim - 1 if n >= m else x.ndim - 2
  if axis_name is None:
    x_mesh, spec = _input_spec(x)
    mesh = mesh if mesh is not None else (x_mesh if x_mesh is not None else _context_mesh())
    spec = tuple(spec or ()) + (None,) * (x.ndim - len(spec or ()))
    if mesh is None or not any(spec):
      return newton_schulz(x, **kwargs)
    lead = [a for s in spec[:-2] for a in _spec_axes(s)]
    if lead:
      flat = x.reshape((-1,) + x.shape[-2:])
      out = orthogonalize_stack(lambda y: newton_schulz(y, **kwargs), flat, mesh,
                                tuple(lead))
      return _constrain(out.reshape(x.shape), mesh, P(*spec))
    short_dim = 2 * x.ndim - 3 - long_dim
    axes = _spec_axes(spec[long_dim]) + _spec_axes(spec[short_dim])
    if (x.shape[long_dim] % axis_size(mesh, axes)
        or normalization not in ("frobenius", "none")
        or not jnp.issubdtype(x.dtype, jnp.inexact)):
      return newton_schulz(_constrain(x, mesh, P()), **kwargs)
    axis_name = axes
  if mesh is None:
    x_mesh, _ = _input_spec(x)
    mesh = x_mesh if x_mesh is not None else _context_mesh()
    if mesh is None:
      raise ValueError("newton_schulz_sharded needs a mesh: pass mesh= or use jax.set_mesh")
  axes = _spec_axes(axis_name)
  size = axis_size(mesh, axes)
  if x.shape[long_dim] % size:
    raise ValueError(
        f"long axis of size {x.shape[long_dim]} is not divisible by the {size} "
        f"devices along {axes}")
  if normalization not in ("frobenius", "none"):
    raise ValueError("normalization must be one of ('frobenius', 'none') in Gram "
                     f"all-reduce mode; got {normalization!r}")
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    raise ValueError(f"newton_schulz_sharded expects a floating array; got {x.dtype}")
  cset = get_coefficients(coeffs)
  rows = cset.rows(steps)
  spec = [None] * x.ndim
  spec[long_dim] = axes if len(axes) > 1 else axes[0]
  spec = P(*spec)
  body = lambda y: _gram_ns_local(
      y, rows, axis_name=axes, wide=n >= m, normalization=normalization,
      safety=cset.safety if safety is None else float(safety),
      eps=cset.eps if eps is None else float(eps),
      compute_dtype=x.dtype if compute_dtype is None else jnp.dtype(compute_dtype))
  x = _constrain(x, mesh, spec)
  return jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(x)
