r"""Input-side gradient preconditioning before momentum (the input-preconditioning stage, docs/optimizers.md#stage-pipeline): Newton-Muon.

Newton-Muon multiplies each raw matrix gradient by the inverse (ridge-damped)
second moment of the layer's inputs before Muon's momentum. PyTorch weights are
``(out, in)`` and the paper writes ``G (K + γI)^{-1}``; Flax kernels are
``(in, out)``, so here the preconditioner multiplies from the **left**, mixing
the rows of the ``(n_in, n_out)`` view (one row per input feature)::

    K ← β₂ K + (1 − β₂) S          S = (1/N) Σ_tokens z zᵀ   (n_in × n_in, float32)
    γ = ridge · tr(K) / n_in + ridge_eps
    P = (K + γ I)^{-1}              (Cholesky; a non-finite factor gives P = I)
    G̃ = P G

The model records ``S`` (see :func:`input_second_moment`) and the training
loop passes it as the extra argument ``activation_stats``.

Recording statistics from a Flax NNX model (``nnx.sow`` + ``nnx.capture``)::

    class MLP(nnx.Module):
      def __call__(self, x, record: bool = False):
        if record:  # only on refresh steps: other steps pay nothing
          self.sow(nnx.Intermediate, "up_moment", mj.input_second_moment(x))
        return self.down(act(self.up(x)))

    def loss_fn(model):  # record = mj.refresh_due(step, 16), a static bool
      y, moments = nnx.capture(model, nnx.Intermediate)(x, record=record)
      return loss(y), moments

    (loss, moments), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    stats = {"up": {"kernel": moments["up_moment"][0]}}  # keyed like the params
    optimizer.update(model, grads, activation_stats=stats)

Stacked layers (``nnx.vmap``/``nnx.scan``) record one ``(n_in, n_in)`` moment
per layer; stacked, ``(L, n_in, n_in)`` matches the ``(L, in, out)`` kernel.
Weight-shared (looped) blocks apply one kernel several times per step, so its
gradient is a sum over loop applications: accumulate ``Σ z zᵀ`` over every loop
iteration and divide by ``tokens × loops`` (the mean of the per-iteration
:func:`input_second_moment` when every iteration sees the same tokens).
Fused Q/K/V kernels viewed as a batch of three matrices share one input
moment: pass it once, it broadcasts over the batch axis.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import cho_factor, cho_solve

from muonjax.transforms import dimensions
from muonjax.transforms.dtypes import require_real
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)

RefreshRule = Literal["end", "start"]
REFRESH_RULES = ("end", "start")
BlockSpec = Union[None, int, Any, Callable[[Any], Any]]

_HIGHEST = jax.lax.Precision.HIGHEST


class PreconditionInputState(NamedTuple):
  """State of :func:`precondition_input`.

  ``k`` and ``p`` hold, for a leaf viewed as ``B`` matrices ``(n_in, n_out)``,
  float32 arrays of shape ``(B, n_in, n_in)``, or ``(B, b, n_in/b, n_in/b)``
  with ``block_diagonal=b``; ``MaskedNode`` for leaves that pass through.
  """

  count: jax.Array  # int32 scalar: updates so far (the zero-based index of the next step).
  k: optax.Updates  # EWMA of the input second moment, initialised to k0·I.
  p: optax.Updates  # (K + γI)^{-1} from the last refresh, initialised to I.


def refresh_due(step, refresh_every: int = 16, refresh_rule: RefreshRule = "end"):
  """Whether the zero-based ``step`` refreshes the preconditioner.

  ``"end"`` (Newton-Muon scripts): steps ``k−1, 2k−1, …``; ``"start"``:
  steps ``0, k, 2k, …``. Works on Python ints (to decide in the training loop
  when the model records statistics) and on traced integers.
  """
  check_choice("refresh_rule", refresh_rule, REFRESH_RULES)
  phase = refresh_every - 1 if refresh_rule == "end" else 0
  return step % refresh_every == phase


def input_second_moment(x: jax.Array, *, blocks: Optional[int] = None) -> jax.Array:
  r"""``(1/N) Σ z zᵀ`` over every token ``z`` of ``x`` (shape ``(..., n_in)``), in float32.

  Args:
    x: the layer's input activations; all leading axes are tokens.
    blocks: ``b`` returns only the ``b`` diagonal ``(n_in/b, n_in/b)`` blocks,
      shape ``(b, n_in/b, n_in/b)`` (the Newton-Muon MLP-down approximation).

  Returns:
    ``(n_in, n_in)`` (or ``(b, n_in/b, n_in/b)``) float32 second moment. For a
    kernel applied several times per step (weight-shared loops, gradient
    accumulation), pass the token-weighted mean over all applications.
  """
  n_in = x.shape[-1]
  z = x.reshape(-1, n_in).astype(jnp.float32)
  tokens = z.shape[0]
  if blocks is None:
    return jnp.matmul(z.T, z, precision=_HIGHEST) / tokens
  if not isinstance(blocks, int) or blocks < 1 or n_in % blocks:
    raise ValueError(f"blocks must be a positive int dividing n_in={n_in}; got {blocks!r}")
  z = z.reshape(tokens, blocks, n_in // blocks)
  return jnp.einsum("tbi,tbj->bij", z, z, precision=_HIGHEST) / tokens


def _path_key(path) -> tuple:
  """A path without container types; nnx ``Variable`` wrappers (``.value``) dropped."""
  path = tuple(path)
  while path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(getattr(key, attr))
        break
    else:
      names.append(str(key))
  return tuple(names)


def _stats_by_path(stats: Any, updates: Any) -> dict[str, jax.Array]:
  """Match the ``activation_stats`` entries to update leaves by tree path.

  Raises:
    ValueError: an entry whose path names no leaf of ``updates``.
  """
  if stats is None:
    return {}
  is_masked = lambda x: isinstance(x, dimensions.MaskedNode)
  leaves, masked = {}, []
  for path, leaf in jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_masked)[0]:
    if is_masked(leaf):
      masked.append(_path_key(path))
    else:
      leaves[_path_key(path)] = jax.tree_util.keystr(path)
  out = {}
  for path, s in jax.tree_util.tree_flatten_with_path(stats, is_leaf=is_masked)[0]:
    if is_masked(s):
      continue
    key = _path_key(path)
    if key in leaves:
      out[leaves[key]] = s
    elif not any(key[:len(m)] == m for m in masked):  # leaves of another partition are fine
      raise ValueError(
          f"activation_stats entry {jax.tree_util.keystr(path)} matches no parameter; "
          "key the statistics like the params (e.g. {'layer': {'kernel': S}})")
  return out


def _blocks_by_path(block_diagonal: BlockSpec, tree: Any) -> Callable[[str], Optional[int]]:
  """Per-leaf block count from an int, ``None``, a prefix tree or a callable."""
  if block_diagonal is None or isinstance(block_diagonal, numbers.Integral):
    return lambda path: block_diagonal
  spec = block_diagonal(tree) if callable(block_diagonal) else block_diagonal
  values = dimensions.broadcast_to_leaves(
      spec, tree, lambda x: x is None or isinstance(x, numbers.Integral))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  return dict(zip(paths, values)).get


def _check_blocks(path: str, blocks, n_in: int) -> int:
  """The block count of a leaf (1 for a full preconditioner)."""
  if blocks is None:
    return 1
  if (not isinstance(blocks, numbers.Integral) or isinstance(blocks, bool) or blocks < 1
      or n_in % blocks):
    raise ValueError(
        f"block_diagonal for leaf {path} must be None or a positive int dividing "
        f"n_in={n_in}; got {blocks!r}")
  return int(blocks)


def _batch_shape(view: dimensions.MatrixView) -> tuple[int, ...]:
  """The batch axes' sizes, in the order the view flattens them."""
  permuted = [view.shape[a] for a in view.perm]
  shape, size = [], 1
  for dim in permuted:
    if size == view.batch:
      break
    shape.append(dim)
    size *= dim
  return tuple(shape)


def _stats_matrices(path: str, s: jax.Array, view: dimensions.MatrixView,
                    blocks: Optional[int], state_shape: tuple[int, ...]) -> jax.Array:
  """Bring one leaf's statistics to the state layout ``(B, n, n)`` / ``(B, b, d, d)``."""
  s = jnp.asarray(s, jnp.float32)
  n_in, batch = view.n_in, view.batch
  tails = [(n_in, n_in)]
  if blocks is not None:
    tails.append((blocks, n_in // blocks, n_in // blocks))
  for tail in tails:
    if s.shape[s.ndim - len(tail):] != tail:
      continue
    lead = s.shape[:s.ndim - len(tail)]
    if math.prod(lead) == batch:
      s = s.reshape((batch,) + tail)
    else:
      try:
        target = _batch_shape(view)
        if np.broadcast_shapes(lead, target) != target:
          raise ValueError
      except ValueError:
        break
      s = jnp.broadcast_to(s, target + tail).reshape((batch,) + tail)
    if blocks is not None and tail == (n_in, n_in):  # keep the diagonal blocks only
      d = n_in // blocks
      s = jnp.moveaxis(jnp.diagonal(s.reshape(batch, blocks, d, blocks, d), axis1=1, axis2=3),
                       -1, 1)
    return s.reshape(state_shape)
  expected = " or ".join(f"(*batch, {', '.join(map(str, t))})" for t in tails)
  raise ValueError(
      f"activation_stats for leaf {path} (matrices (n_in={n_in}, n_out={view.n_out}), "
      f"batch {batch}) must have shape {expected}; got {tuple(s.shape)}")


def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(x), axis=(-2, -1), keepdims=True)


def precondition_input(
    *,
    beta2: float = 0.8,
    refresh_every: int = 16,
    ridge: float = 0.2,
    ridge_eps: float = 0.0,
    k0: float = 1e-3,
    refresh_rule: RefreshRule = "end",
    block_diagonal: BlockSpec = None,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Newton-Muon's input preconditioner ``G̃ = (K + γI)^{-1} G`` on the raw gradient.

  Place it before momentum (the input-preconditioning stage, docs/optimizers.md#stage-pipeline). Flax layout: each leaf is viewed as
  matrices ``(n_in, n_out)`` and ``K`` (``n_in × n_in``) is the second moment of
  the layer's **inputs**, so ``P = (K + γI)^{-1}`` multiplies from the left
  (``G (K + γI)^{-1}`` in the paper's PyTorch ``(out, in)`` layout).

  On every update, with ``t = state.count`` (zero-based):

  * if ``activation_stats`` has an entry for the leaf and ``t`` is a refresh
    step (:func:`refresh_due`; ``"end"``: ``t % refresh_every ==
    refresh_every − 1``, both official scripts), ``K ← β₂K + (1−β₂)S`` and
    ``P ← (K + γI)^{-1}`` with ``γ = ridge·tr(K)/n_in + ridge_eps``, by
    Cholesky. If the factor or the inverse is not finite (singular, indefinite
    or NaN statistics) ``P = I`` until the next refresh; a non-finite new ``K``
    is not stored (``K`` keeps its previous value), so one bad batch does not
    disable the preconditioner for the rest of training;
  * statistics passed on other steps are ignored (record them only on refresh
    steps; with ``refresh_every=1`` every step that has statistics refreshes);
  * the update is ``P·G`` with the current ``P``; leaves without statistics,
    and every leaf before its first refresh, get ``P = I`` (plain Muon).

  Args:
    beta2: EWMA coefficient of ``K`` (``_2`` script 0.8, ``_1`` script 0.95).
    refresh_every: refresh interval ``k`` in steps (``_2``: 16, ``_1``: 32).
    ridge: ridge multiplier of ``tr(K)/n_in``.
    ridge_eps: constant added to the ridge (``_1`` script: 1e-8).
    k0: ``K`` starts at ``k0·I``.
    refresh_rule: ``"end"`` (steps ``k−1, 2k−1, …``; both scripts — the
      ``_1`` script's 1-based ``t % k == 0`` is the same schedule) or
      ``"start"`` (steps ``0, k, 2k, …``: preconditioning from the first step).
    block_diagonal: ``b`` keeps only ``b`` equal diagonal blocks of ``K`` (each
      ``n_in/b`` square, inverted separately) and applies block ``i`` to row
      block ``i`` of ``G`` (Newton-Muon's MLP down-projection, ``b = 4``). An
      int for every leaf, ``None`` (full ``K``), a tree (a prefix of the params)
      of ``int | None``, or a callable ``params -> tree``.
    dimension_numbers: routing spec (see :func:`muonjax.orthogonalize`).

  Extra args of ``update``:
    activation_stats: ``None`` or a tree keyed like the params (matched by tree
      path; ``nnx.Variable`` wrappers are ignored, absent or ``None`` entries
      mean no statistics) whose leaves are the float32 input second moments
      ``(1/N) Σ z zᵀ`` (:func:`input_second_moment`): ``(*batch, n_in, n_in)``
      for a leaf viewed as ``batch`` matrices, e.g. ``(n_in, n_in)`` for a 2-D
      kernel and ``(L, n_in, n_in)`` for an ``(L, in, out)`` stack. Leading
      axes may also broadcast against the batch axes (one moment shared by
      fused Q/K/V). With ``block_diagonal=b`` the blocks ``(*batch, b, n_in/b,
      n_in/b)`` may be passed instead. ``n_in`` follows the view's row-major
      flattening of the reduction axes.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with
    :class:`PreconditionInputState`.

  Raises:
    ValueError: a hyperparameter out of range; at ``update``, statistics of the
      wrong shape or keyed by a path that names no parameter.

  References:
    Du et al., Newton-Muon, arXiv 2604.01472,
    https://github.com/zhehangdu/Newton-Muon (``train_gpt_newton_muon_2.py``
    defaults; ``_1`` for the parity knobs).
  """
  check_unit_interval("beta2", beta2)
  if isinstance(refresh_every, bool) or (isinstance(refresh_every, numbers.Number)
                                         and not isinstance(refresh_every, numbers.Integral)):
    raise ValueError(f"refresh_every must be a positive int; got {refresh_every!r}")
  check_positive("refresh_every", refresh_every)
  check_non_negative("ridge", ridge)
  check_non_negative("ridge_eps", ridge_eps)
  check_non_negative("k0", k0)
  check_choice("refresh_rule", refresh_rule, REFRESH_RULES)
  if isinstance(block_diagonal, numbers.Integral):
    _check_blocks("<all>", block_diagonal, block_diagonal)

  def state_shape(path, view, blocks_of):
    b = _check_blocks(path, blocks_of(path), view.n_in)
    if blocks_of(path) is None:
      return (view.batch, view.n_in, view.n_in)
    return (view.batch, b, view.n_in // b, view.n_in // b)

  def init_fn(params):
    require_real("precondition_input", dimension_numbers, params,
                 "a real input second moment inverted by Cholesky")
    blocks_of = _blocks_by_path(block_diagonal, params)
    def make(value):
      def fn(path, leaf, view):
        shape = state_shape(path, view, blocks_of)
        return jnp.broadcast_to(value * jnp.eye(shape[-1], dtype=jnp.float32), shape)
      return fn
    return PreconditionInputState(
        count=jnp.zeros([], jnp.int32),
        k=dimensions.init_per_matrix(make(k0), dimension_numbers, params),
        p=dimensions.init_per_matrix(make(1.0), dimension_numbers, params))

  def refresh(k, s):
    eye = jnp.eye(k.shape[-1], dtype=jnp.float32)
    k_new = beta2 * k + (1 - beta2) * s
    gamma = ridge * jnp.trace(k_new, axis1=-2, axis2=-1) / k.shape[-1] + ridge_eps
    factor = cho_factor(k_new + gamma[..., None, None] * eye, lower=True)
    p = cho_solve(factor, jnp.broadcast_to(eye, k.shape))
    ok = _all_finite(factor[0]) & _all_finite(p)
    return jnp.where(_all_finite(k_new), k_new, k), jnp.where(ok, p, eye)

  def update_fn(updates, state, params=None, *, activation_stats=None, **extra_args):
    del params, extra_args
    stats = _stats_by_path(activation_stats, updates)
    blocks_of = _blocks_by_path(block_diagonal, updates)
    due = refresh_due(state.count, refresh_every, refresh_rule)

    def step(path, leaf, view, k, p):
      s = stats.get(path)
      if s is not None:
        s = _stats_matrices(path, s, view, blocks_of(path), k.shape)
        k, p = jax.lax.cond(due, refresh, lambda k, s: (k, p), k, s)
      b = 1 if k.ndim == 3 else k.shape[1]
      d = view.n_in // b
      g = view.to_matrices(leaf).astype(jnp.float32).reshape(view.batch, b, d, view.n_out)
      out = jnp.matmul(p.reshape(view.batch, b, d, d), g, precision=_HIGHEST)
      out = out.reshape(view.batch, view.n_in, view.n_out)
      return view.from_matrices(out).astype(leaf.dtype), (k, p)

    updates, kp = dimensions.map_matrices_with_state(
        step, dimension_numbers, updates, state.k, state.p)
    # Matrix leaves now hold (k, p) pairs; pass-through leaves kept their MaskedNode.
    is_pair = lambda x: isinstance(x, tuple) and not hasattr(x, "_fields")
    k = jax.tree.map(lambda x: x[0] if is_pair(x) else x, kp, is_leaf=is_pair)
    p = jax.tree.map(lambda x: x[1] if is_pair(x) else x, kp, is_leaf=is_pair)
    return updates, PreconditionInputState(optax.safe_increment(state.count), k, p)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
