"""The pure training step and evaluation of ``(model, optimizer)`` NNX states.

The step is a pure function of the NNX state of ``(model, optimizer)``
(``nnx.split`` once, ``nnx.merge`` inside, ``jax.jit`` with the state donated)
rather than ``nnx.jit``: on CPU with the tiny models the tests and the default
preset use, ``nnx.jit``'s per-call graph traversal costs more than the step
itself (measured on a 2-layer d=32 GPT with Muon: 7.0 ms vs 2.7 ms per step),
and a pure function of arrays is what sharding annotations apply to.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from muonjax import models
from muonjax.models import eval_metrics, loss_and_metrics
from muonjax.train import metrics as metrics_lib
from muonjax.train.optimizer import skip_counts

ExtraArgsFn = Callable[[nnx.Module, dict], dict]
"""``extra_args_fn(model, batch) -> dict`` of extra keyword arguments for ``tx.update``.

Called inside the jitted step once per micro-batch, with the model before the
update and the micro-batch ``dict(inputs=(B, T), targets=(B, T))``; the dicts
are averaged over the micro-batches (like the gradients) and passed to
``optimizer.update(model, grads, **extra)``. Newton-Muon's
``activation_stats`` need no function: the loop records them itself on the
refresh steps (:func:`statistics_schedule`).
"""

EXTRA_ARGS_FNS: dict[str, ExtraArgsFn] = {}
"""Default :data:`ExtraArgsFn` per optimizer name, used when ``train`` gets none."""


def register_extra_args(optimizer: str, fn: ExtraArgsFn) -> None:
  """Makes ``fn`` the default :data:`ExtraArgsFn` of ``optimizer``."""
  EXTRA_ARGS_FNS[optimizer] = fn



def mean_tree(tree: Any, n: int) -> Any:
  return tree if n == 1 else jax.tree.map(lambda x: x / n, tree)


def _value_and_grad(model_def, params, rest, x, y, key):
  """``((loss, terms), grads)`` of the training objective on one micro-batch."""
  def objective(p):
    return loss_and_metrics(nnx.merge(model_def, p, rest), x, y, key=key)
  return jax.value_and_grad(objective, has_aux=True)(params)


def build_train_step(
    graphdef: nnx.GraphDef,
    *,
    labels: list[str],
    grad_accum: int,
    seed: int,
    pass_value: bool,
    extra_args_fn: Optional[ExtraArgsFn] = None,
    record_stats: bool = False,
) -> Callable:
  """The pure training step ``(state, inputs, targets, step[, seed]) -> (state, metrics)``.

  Args:
    graphdef: ``nnx.split((model, optimizer))``'s graph definition.
    labels: the group name of each ``nnx.Param`` leaf (update RMS groups).
    grad_accum: micro-batches per update; ``inputs``/``targets`` are
      ``(grad_accum, B, T)``.
    seed: base of the dropout keys, unless the step is called with its own
      ``seed`` (an int32 scalar: runs that differ only in the seed then share
      one compiled step; the keys are the same either way).
    pass_value: call ``optimizer.update(..., value=loss)`` (optax
      ``GradientTransformationExtraArgs``, e.g. Momo).
    extra_args_fn: see :data:`ExtraArgsFn`.
    record_stats: also record every hidden layer's input second moment in the
      backward pass (:func:`muonjax.models.value_grad_and_stats`) and pass it
      as ``activation_stats`` (Newton-Muon's refresh steps).

  Returns:
    A function of ``state`` (the ``nnx.State`` of ``(model, optimizer)``),
    ``inputs`` and ``targets`` ``(grad_accum, B, T)`` int32, and ``step``
    (int32 scalar, 1-based); it returns the new state and a dict of scalars
    ``loss, grad_norm, all_finite, terms{...}, update_rms{...}`` (and, with a
    :func:`skip_nonfinite` optimizer, ``nonfinite_run`` and ``skipped_steps``:
    the consecutive and total skipped updates).
  """

  def step_fn(state, inputs, targets, step, run_seed=None):
    model, optimizer = nnx.merge(graphdef, state)
    model_def, params, rest = nnx.split(model, nnx.Param, ...)
    key = jax.random.fold_in(jax.random.key(seed if run_seed is None else run_seed), step)

    # Values a scan body uses enter it through the carry: NNX refuses to merge
    # Variables of an outer trace level inside nnx.scan (the stacked layers).
    def micro(params, rest, x, y, i):
      extra = ({} if extra_args_fn is None else
               dict(extra_args_fn(nnx.merge(model_def, params, rest),
                                  dict(inputs=x, targets=y))))
      if record_stats:
        (loss, terms), grads, extra["activation_stats"] = models.value_grad_and_stats(
            lambda m: loss_and_metrics(m, x, y, key=jax.random.fold_in(key, i)),
            nnx.merge(model_def, params, rest))
      else:
        (loss, terms), grads = _value_and_grad(model_def, params, rest, x, y,
                                               jax.random.fold_in(key, i))
      return grads, loss, terms, extra

    if grad_accum == 1:
      grads, loss, terms, extra = micro(params, rest, inputs[0], targets[0], 0)
    else:
      shapes = jax.eval_shape(micro, params, rest, inputs[0], targets[0], 0)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

      def body(carry, xs):
        p, r, total = carry
        return (p, r, jax.tree.map(jnp.add, total, micro(p, r, *xs))), None

      (_, _, total), _ = jax.lax.scan(
          body, (params, rest, zeros), (inputs, targets, jnp.arange(grad_accum)))
      grads, loss, terms, extra = mean_tree(total, grad_accum)

    before = jax.tree.leaves(params)
    kwargs = dict(extra)
    if pass_value:
      kwargs["value"] = loss
    optimizer.update(model, grads, **kwargs)
    after = jax.tree.leaves(nnx.state(model, nnx.Param))
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(a)) for a in after]))
    out = dict(loss=loss, grad_norm=optax.tree.norm(grads), all_finite=finite, terms=terms,
               update_rms=metrics_lib.group_rms(labels, before, after))
    skips = skip_counts(optimizer)
    if skips is not None:  # TrainConfig.skip_nonfinite
      out["nonfinite_run"], out["skipped_steps"] = skips
    return nnx.split((model, optimizer))[1], out

  return step_fn


def build_grad_step(graphdef: nnx.GraphDef, *, grad_accum: int, seed: int) -> Callable:
  """The training step without the optimizer: ``(state, inputs, targets, step) -> (loss, grads)``.

  The forward and backward passes of :func:`build_train_step` over the same
  micro-batches (same dropout keys), averaged, and nothing else: the part of a
  step every optimizer shares. Timed beside the full steps, it gives the
  optimizer update's share of a step (:mod:`muonjax.step_timing`).
  """

  def fn(state, inputs, targets, step):
    model, _ = nnx.merge(graphdef, state)
    model_def, params, rest = nnx.split(model, nnx.Param, ...)
    key = jax.random.fold_in(jax.random.key(seed), step)
    loss, grads = 0.0, None
    for i in range(grad_accum):  # static and small: unrolled
      (value, _), g = _value_and_grad(model_def, params, rest, inputs[i], targets[i],
                                      jax.random.fold_in(key, i))
      loss = loss + value
      grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    return mean_tree((loss, grads), grad_accum)

  return fn


def build_eval(graphdef: nnx.GraphDef) -> Callable:
  """The pure evaluation ``(state, inputs, targets) -> (mean loss, mean accuracy)`` over ``(k, B, T)`` batches."""

  def eval_fn(state, inputs, targets):
    model, _ = nnx.merge(graphdef, state)
    model_def, model_state = nnx.split(model)

    def one(carry, xy):  # the state rides in the carry (see build_train_step)
      return carry, eval_metrics(nnx.merge(model_def, carry), *xy)

    losses, accuracies = jax.lax.scan(one, model_state, (inputs, targets))[1]
    return jnp.mean(losses), jnp.mean(accuracies)

  return eval_fn

