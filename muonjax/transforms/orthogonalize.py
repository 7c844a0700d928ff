"""Orthogonalize stage (docs/optimizers.md#orthogonalization): replace every matrix update by its (approximate) polar factor."""

from __future__ import annotations

import functools
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import optax

from muonjax.kernels.dispatch import BACKENDS
from muonjax.orthogonalization.coefficients import CoeffsLike, get_coefficients
from muonjax.orthogonalization.newton_schulz import (
    NORMALIZATIONS,
    Normalization,
    newton_schulz,
    polar_factor,
)
from muonjax.transforms import dimensions
from muonjax.transforms.validation import check_choice

Orthogonalizer = Callable[[jax.Array], jax.Array]
METHODS = ("newton_schulz", "polar_express", "svd")

# How one batched call ``(B, m, n) -> (B, m, n)`` is executed: a strategy is a
# callable ``(orthogonalizer, stacked_matrices) -> result`` equal to
# ``orthogonalizer(stacked_matrices)`` up to placement (e.g.
# ``muonjax.distributed.orthogonalize_stack`` shards the stack over a mesh).
Strategy = Callable[[Orthogonalizer, jax.Array], jax.Array]
StrategyLike = Union[str, Strategy]
STRATEGIES = ("auto", "local")


def local(orthogonalizer: Orthogonalizer, stacked: jax.Array) -> jax.Array:
  """The local strategy: ``orthogonalizer(stacked)``, placement left to XLA/GSPMD."""
  return orthogonalizer(stacked)


# The strategy ``"auto"`` uses under a context mesh of more than one device.
# This stage imports nothing above it: ``muonjax.distributed`` installs its
# stack-sharded strategy here when it is imported (``import muonjax`` does).
_mesh_strategy: Optional[Strategy] = None


def set_mesh_strategy(strategy: Optional[Strategy]) -> Optional[Strategy]:
  """Install the strategy ``strategy="auto"`` uses under a multi-device context mesh.

  Args:
    strategy: a :data:`Strategy`, or ``None`` (``"auto"`` is then always local).

  Returns:
    The strategy installed before (to restore it).
  """
  global _mesh_strategy
  if strategy is not None and not callable(strategy):
    raise ValueError(f"strategy must be callable or None; got {strategy!r}")
  previous, _mesh_strategy = _mesh_strategy, strategy
  return previous


def _context_mesh_size() -> int:
  """Devices of the mesh set with ``jax.set_mesh`` (1 when none is set)."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh is None or mesh.empty else mesh.size


def resolve_strategy(strategy: StrategyLike) -> Strategy:
  """The callable a strategy spec stands for, at trace time.

  ``"local"``: :func:`local`. ``"auto"``: the strategy installed with
  :func:`set_mesh_strategy` (``muonjax.distributed``'s stack-sharded one) when
  a mesh of more than one device is set with ``jax.set_mesh``, else
  :func:`local`. A callable is returned unchanged.

  Raises:
    ValueError: an unknown name.
  """
  if callable(strategy):
    return strategy
  check_choice("strategy", strategy, STRATEGIES)
  if strategy == "auto" and _mesh_strategy is not None and _context_mesh_size() > 1:
    return _mesh_strategy
  return local


def make_orthogonalizer(
    method: Union[str, Orthogonalizer] = "newton_schulz",
    *,
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: Normalization = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = None,
    compute_dtype: Optional[jnp.dtype] = None,
    backend: str = "auto",
) -> Orthogonalizer:
  """Build ``f(X: (..., m, n)) -> (..., m, n)`` from a method name or callable.

  ``"newton_schulz"`` defaults to Keller's coefficients, ``"polar_express"`` to
  the paper's table; ``coeffs`` overrides either. ``"svd"`` is the exact polar
  factor. A callable is returned unchanged (the optax #1660 use case: sharded
  matmuls, Gram-NS, a kernel of your own). ``backend`` (``"auto"``, ``"xla"``,
  ``"pallas"``) is passed to :func:`muonjax.newton_schulz`.
  """
  check_choice("backend", backend, BACKENDS)
  if callable(method):
    return method
  check_choice("method", method, METHODS)
  check_choice("normalization", normalization, NORMALIZATIONS)
  if method == "svd":
    if compute_dtype is None:
      return polar_factor
    # Complex x keeps a complex dtype (as newton_schulz): bfloat16 -> complex64.
    return lambda x: polar_factor(x.astype(
        jnp.result_type(compute_dtype, jnp.complex64) if jnp.iscomplexobj(x)
        else compute_dtype)).astype(x.dtype)
  if coeffs is None:
    coeffs = "keller" if method == "newton_schulz" else "polar_express"
  if steps is None and method == "polar_express" and isinstance(coeffs, str):
    steps = 5
  # Resolve eagerly so bad coefficients fail at construction, not under jit.
  cset = get_coefficients(coeffs)
  cset.rows(steps)
  return functools.partial(
      newton_schulz, coeffs=cset, steps=steps, normalization=normalization,
      safety=safety, eps=eps, compute_dtype=compute_dtype, backend=backend)


def orthogonalize_tree(
    updates: optax.Updates,
    orthogonalizer: Orthogonalizer,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    *,
    group_by_shape: bool = True,
    strategy: StrategyLike = "auto",
) -> optax.Updates:
  """Orthogonalize every matrix leaf of ``updates``.

  Each leaf is viewed as ``(batch, n_in, n_out)`` by its dimension numbers and
  turned wide (``m <= n``). With ``group_by_shape`` all matrices of equal
  ``(m, n, dtype)`` (across leaves, stacks and orientations) are concatenated
  and orthogonalized in one batched call, then split back; batched matmuls act
  per matrix, so the result equals the per-leaf one.

  Each batched call runs through ``strategy`` (:func:`resolve_strategy`): with
  ``"auto"`` (the default) and a mesh of several devices set by
  ``jax.set_mesh``, :func:`muonjax.distributed.orthogonalize_stack` pads each
  group to a multiple of the device count and shards it along its stack axis,
  so every device iterates on whole matrices and the Newton–Schulz loop has no
  collectives; without a mesh, or with ``"local"``, it is
  ``orthogonalizer(stack)``.

  Raises:
    ValueError: a rank < 2 leaf without dimension numbers (names the path).
  """
  run = resolve_strategy(strategy)
  items, treedef = dimensions.resolve(dimension_numbers, updates)
  out = [leaf for _, leaf, _ in items]
  jobs = []  # (index, view, wide (B, m, n) array, transposed)
  for i, (path, leaf, dn) in enumerate(items):
    view = dimensions.leaf_view(path, leaf, dn)
    if view is None:
      continue
    mats = view.to_matrices(leaf)
    transposed = view.n_in > view.n_out
    jobs.append((i, view, jnp.swapaxes(mats, -1, -2) if transposed else mats, transposed))

  groups: dict[tuple, list] = {}
  for job in jobs:
    key = job[2].shape[1:] + (job[2].dtype,) if group_by_shape else (job[0],)
    groups.setdefault(key, []).append(job)

  for members in groups.values():
    stacked = (members[0][2] if len(members) == 1
               else jnp.concatenate([m[2] for m in members], axis=0))
    result = run(orthogonalizer, stacked)
    offsets = 0
    for i, view, wide, transposed in members:
      part = result[offsets:offsets + wide.shape[0]]
      offsets += wide.shape[0]
      if transposed:
        part = jnp.swapaxes(part, -1, -2)
      out[i] = view.from_matrices(part).astype(items[i][1].dtype)
  return treedef.unflatten(out)


def orthogonalize(
    method: Union[str, Orthogonalizer] = "newton_schulz",
    *,
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: Normalization = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = None,
    compute_dtype: Optional[jnp.dtype] = None,
    backend: str = "auto",
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    group_by_shape: bool = True,
    strategy: StrategyLike = "auto",
) -> optax.GradientTransformation:
  r"""Replace each matrix update ``U`` by an approximation of ``msign(U) = U V^T``.

  Args:
    method: ``"newton_schulz"``, ``"polar_express"``, ``"svd"`` (exact) or a
      callable ``(..., m, n) -> (..., m, n)``.
    coeffs: coefficient preset or table (see :func:`muonjax.newton_schulz`).
    steps: iterations (default: the coefficient set's; 5 for Polar Express).
    normalization: ``"frobenius"``, ``"spectral"``, ``"aol"``, ``"schatten"``
      or ``"none"``.
    safety, eps: pre-normalization ``X / (||X||_F * safety + eps)``; default to
      the coefficient set's own values.
    compute_dtype: iteration dtype (``jnp.bfloat16`` for the PyTorch anchors'
      speed/precision); default: the update's dtype (optax's behaviour).
    backend: ``"auto"`` (XLA unless a measured threshold says Pallas wins;
      today XLA everywhere), ``"xla"`` or ``"pallas"`` (the symmetric kernels
      of :mod:`muonjax.kernels`; interpret mode on CPU).
    dimension_numbers: ``None`` (every leaf is a matrix, leading axes batched),
      one :class:`optax.contrib.MuonDimensionNumbers`, a tree of them with
      ``None`` for leaves to pass through, or a callable returning that tree.
    group_by_shape: batch equal-shape matrices across leaves into one call.
    strategy: how each batched call runs: ``"auto"`` (under a mesh of several
      devices set with ``jax.set_mesh``, stack-sharded so the iteration has no
      collectives, see :func:`orthogonalize_tree`; otherwise local),
      ``"local"``, or a callable ``(orthogonalizer, stack) -> result`` such as
      ``muonjax.distributed.shard_stack_strategy(mesh)``.

  Returns:
    A stateless ``optax.GradientTransformation``.

  References:
    Jordan, Muon, https://kellerjordan.github.io/posts/muon/;
    Amsel et al., The Polar Express, arXiv 2505.16932.
  """
  ortho = make_orthogonalizer(method, coeffs=coeffs, steps=steps,
                              normalization=normalization, safety=safety, eps=eps,
                              compute_dtype=compute_dtype, backend=backend)
  if not callable(strategy):
    check_choice("strategy", strategy, STRATEGIES)

  def update_fn(updates, state, params=None):
    del params
    return orthogonalize_tree(updates, ortho, dimension_numbers,
                              group_by_shape=group_by_shape,
                              strategy=strategy), state

  return optax.GradientTransformation(
      lambda params: optax.EmptyState(), update_fn)
