"""Hypersphere stage (docs/optimizers.md#hypersphere-and-geodesic-updates) for normalized transformers (nGPT).

nGPT keeps every weight vector along the embedding dimension at unit norm. This
stage takes the place of ``optax.scale_by_learning_rate`` at the end of a chain:
it reads the params and the chain's descent direction ``D`` and returns
``W_new - W``, so ``optax.apply_updates`` lands exactly on ``W_new``.

Which axis of each leaf carries the unit-norm vectors comes from ``axes``: a
tree (a prefix of the params) of ints (the axis the norm is taken over) or
``None`` (unconstrained: plain ``W - eta D``), a callable ``params -> tree``, or
the ``sphere_axis`` metadata of the model's ``nnx.Variable``\\ s via
:func:`muonjax.nnx.sphere_axes`. In Flax layout nGPT normalizes q/k/v/up/gate kernels over
axis 0, output projections over axis 1, the embedding ``(V, d)`` over axis 1
and an untied head ``(d, V)`` over axis 0 (stacked kernels shift by one).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.dimensions import broadcast_to_leaves
from muonjax.transforms.validation import check_choice, check_positive

SphereMode = Literal["project", "geodesic"]
ThetaRule = Literal["lr", "norm", "tangent"]


class HypersphereState(NamedTuple):
  """Step counter (drives the learning-rate schedule and lazy projection)."""

  count: jax.Array


def sphere_axes(params: Any) -> Any:
  """Tree of ``sphere_axis`` metadata (``None`` where absent) of a parameter tree.

  Leaves following the metadata protocol (a callable ``get_metadata()``, as
  ``nnx.Variable`` has) give their ``sphere_axis`` entry; other leaves give
  ``None``. :func:`muonjax.nnx.sphere_axes` also takes an ``nnx.Module``.
  """
  def axis(v):
    get = getattr(v, "get_metadata", None)
    return get().get("sphere_axis") if callable(get) else None
  return jax.tree.map(axis, params, is_leaf=lambda x: callable(getattr(x, "get_metadata", None)))


# u is treated as parallel to w when its tangent part is this small relative to it.
_PARALLEL_RTOL = 1e-5


def _norm(x: jax.Array, axis: int) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))


def _project_step(w, d, lr, axis, renormalize, eps):
  moved = w - lr * d
  return jnp.where(renormalize, moved / (_norm(moved, axis) + eps), moved)


def _geodesic_step(w, d, lr, axis, theta_rule, eps, *, angle):
  w_hat = w / (_norm(w, axis) + eps)
  g = -d
  tangent = g
  for _ in range(2):  # a second Gram-Schmidt pass removes the fp32 radial residue
    tangent = tangent - jnp.sum(tangent * w_hat, axis=axis, keepdims=True) * w_hat
  t_norm = _norm(tangent, axis)
  parallel = t_norm <= _PARALLEL_RTOL * _norm(g, axis) + eps
  direction = tangent / jnp.maximum(t_norm, eps)
  if theta_rule == "lr":
    theta = angle * jnp.ones_like(t_norm)
  elif theta_rule == "norm":
    theta = lr * _norm(d, axis)
  else:
    theta = lr * t_norm
  moved = w_hat * jnp.cos(theta) + direction * jnp.sin(theta)
  moved = moved / _norm(moved, axis)
  return jnp.where(parallel, w_hat, moved)


def _matrix_project_step(w, d, lr, eps):
  """Levanter ``muonh``: one Frobenius sphere per matrix (last two axes)."""
  axes = tuple(range(max(w.ndim - 2, 0), w.ndim))
  fro = lambda x: jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))
  radius = fro(w)
  moved = w - lr * d * radius / (fro(d) + eps)
  return moved * radius / (fro(moved) + eps)


def hypersphere(
    learning_rate: optax.ScalarOrSchedule,
    *,
    axes: Union[Any, Callable[[Any], Any]],
    mode: SphereMode = "project",
    every: int = 1,
    theta: ThetaRule = "lr",
    granularity: Literal["vector", "matrix"] = "vector",
    eps: float = 1e-8,
    angle: Optional[optax.ScalarOrSchedule] = None,
) -> optax.GradientTransformation:
  r"""Take the step ``-eta D`` on the unit sphere of each constrained vector.

  Per constrained vector ``w`` (a slice along its leaf's axis) with direction
  ``u`` (the chain output, shape scale included, learning rate excluded):

  * ``"project"``: ``w' = (w - eta u) / ||w - eta u||``. With ``every=k`` the
    renormalization happens only when ``(t + 1) % k == 0`` (lazy projection);
    in between ``w' = w - eta u`` leaves the sphere.
  * ``"geodesic"``: ``g = -u``, ``g_perp = g - <g, w> w``, ``u_hat =
    g_perp / ||g_perp||``, ``w' = w cos(theta) + u_hat sin(theta)``: an exact
    great-circle move by ``theta = eta`` (``theta="lr"``), ``eta ||u||``
    (``"norm"``) or ``eta ||u_perp||`` (``"tangent"``); ``w' = w`` when
    ``||g_perp|| <= 1e-5 ||g|| + eps`` (u parallel to w). ``w`` is normalized
    first, so ``<w, w'> = cos(theta)``.
  * ``granularity="matrix"`` (Levanter ``muonh``): one Frobenius sphere per
    matrix (the last two axes; leading axes are a stack), ``W_new = W - eta u
    ||W|| / ||u||`` rescaled back to ``||W||``.

  Args:
    learning_rate: η (float or schedule of the step count).
    axes: tree of int/``None`` (see module doc) or a callable ``params -> tree``.
    mode: ``"project"`` or ``"geodesic"``.
    every: lazy projection period k (``"project"`` only).
    theta: angle rule of ``"geodesic"``.
    granularity: ``"vector"`` (nGPT) or ``"matrix"``.
    eps: guards the norms.
    angle: θ of ``theta="lr"`` when it is not the step size η (float or
      schedule; default η). A post-step stage whose input is already the
      scaled update uses ``learning_rate=1`` (unconstrained leaves then take
      that update as it is) and ``angle`` = the run's learning rate.

  Returns:
    An ``optax.GradientTransformation`` with :class:`HypersphereState`; it needs
    ``params`` and returns ``W_new - W``. Use it instead of
    ``optax.scale_by_learning_rate``; nGPT uses no weight decay.

  References:
    Loshchilov et al., nGPT, arXiv 2410.01131; Levanter ``muonh``
    (https://github.com/marin-community/levanter).
  """
  check_choice("mode", mode, ("project", "geodesic"))
  check_choice("theta", theta, ("lr", "norm", "tangent"))
  check_choice("granularity", granularity, ("vector", "matrix"))
  if not isinstance(every, int) or every < 1:
    raise ValueError(f"every must be an integer >= 1; got {every!r}")
  if mode == "geodesic" and every != 1:
    raise ValueError("every (lazy projection) applies to mode='project' only")
  if not callable(learning_rate):
    check_positive("learning_rate", learning_rate)
  if angle is not None and not callable(angle):
    check_positive("angle", angle)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("hypersphere needs params: call update(grads, state, params)")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    rate = lr if angle is None else angle(state.count) if callable(angle) else angle
    renormalize = (state.count + 1) % every == 0
    tree = axes(params) if callable(axes) else axes
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    axis_list = broadcast_to_leaves(tree, updates, lambda x: x is None or isinstance(x, int))
    out = []
    for d, w, axis in zip(leaves, treedef.flatten_up_to(params), axis_list):
      w32, d32 = w.astype(jnp.float32), d.astype(jnp.float32)
      if axis is None:
        new = w32 - lr * d32
      elif granularity == "matrix":
        new = _matrix_project_step(w32, d32, lr, eps)
      elif mode == "project":
        new = _project_step(w32, d32, lr, axis, renormalize, eps)
      else:
        new = _geodesic_step(w32, d32, lr, axis, theta, eps, angle=rate)
      out.append((new - w32).astype(d.dtype))
    return treedef.unflatten(out), HypersphereState(optax.safe_increment(state.count))

  return optax.GradientTransformation(
      lambda params: HypersphereState(jnp.zeros([], jnp.int32)), update_fn)

