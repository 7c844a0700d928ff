"""The training loop: one jitted step, gradient accumulation, eval, logs, checkpoints.

:func:`train` runs one :class:`TrainConfig`. The step is a pure function of
the NNX state of ``(model, optimizer)`` (``nnx.split`` once, ``nnx.merge``
inside, ``jax.jit`` with the state donated) rather than ``nnx.jit``: on CPU
with the tiny models the tests and the default preset use, ``nnx.jit``'s
per-call graph traversal costs more than the step itself (measured on a
2-layer d=32 GPT with Muon: 7.0 ms vs 2.7 ms per step), and a pure function
of arrays is what sharding annotations apply to.

Exactness of resume: everything a step depends on is in the checkpoint (the
state, the data stream position) or derived from ``(seed, step)`` (the
dropout key ``fold_in(fold_in(key(seed), step), micro_batch)``), so a
resumed run computes bit-identical steps on the same machine and mesh.

Sharding (``TrainConfig.mesh``): see :func:`train` and :mod:`muonjax.distributed`.
"""

from __future__ import annotations

import contextlib
import numbers
import signal
import threading
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models import eval_metrics, loss_and_metrics
from muonjax.train import metrics as metrics_lib
from muonjax.train.checkpoint import Checkpointer
from muonjax.train.config import SPHERE_FIELDS, TrainConfig, first_mismatch
from muonjax.train.schedules import schedule_for

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

StepCallback = Callable[[int, dict], None]

_RESERVED = frozenset(metrics_lib.STEP_KEYS) | {metrics_lib.EVAL_KEY,
                                                 metrics_lib.EVAL_ACCURACY_KEY, "error"}


class NonFiniteLossError(RuntimeError):
  """The loss (or gradient, or parameters) became NaN/Inf; training stopped.

  Attributes:
    step: the step whose loss was not finite.
    loss: that loss (NaN or ±Inf).
    checkpoint_step: the newest checkpoint left in place (``None`` if none).
  """

  def __init__(self, step: int, loss: float, checkpoint_step: Optional[int], what: str):
    self.step, self.loss, self.checkpoint_step = step, loss, checkpoint_step
    where = ("no checkpoint was written" if checkpoint_step is None else
             f"the last good checkpoint is step {checkpoint_step}")
    super().__init__(f"{what} became non-finite at step {step} (loss {loss}); "
                     f"training stopped, {where}")


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (or a ``KeyboardInterrupt`` from ``on_step``) stopped :func:`train`.

  Attributes:
    step: the last completed step (0: none ran in any process of this run).
    checkpoint_step: the newest verified checkpoint left in place, which is
      ``step`` unless the run has no ``checkpoint_dir`` (``None``: none).
  """

  def __init__(self, step: int, checkpoint_step: Optional[int]):
    self.step, self.checkpoint_step = step, checkpoint_step
    if checkpoint_step is None:
      text = ("interrupted before any step completed; no checkpoint was written" if step == 0
              else f"interrupted after step {step}; no checkpoint was written")
    else:
      text = f"interrupted; the last completed step ({checkpoint_step}) is checkpointed"
    super().__init__(text)


def skip_nonfinite(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``tx`` skipping every update whose gradient holds a NaN/Inf (``TrainConfig.skip_nonfinite``).

  ``optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)``: on such a
  step the update is zero and ``tx``'s state (momentum, second moments,
  counts, injected hyperparameters) is kept as it was, so one bad batch does
  not poison the momentum buffers. The state counts the consecutive
  (``notfinite_count``) and total (``total_notfinite``) skips; the loop, not
  optax, decides when to give up (``TrainConfig.max_consecutive_nonfinite``),
  so a non-finite update is never applied.
  """
  return optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)


def _skip_counts(optimizer: nnx.Optimizer) -> Optional[tuple[jax.Array, jax.Array]]:
  """``(consecutive, total)`` skipped updates of a :func:`skip_nonfinite` optimizer, else ``None``."""
  state = optimizer.opt_state
  if not isinstance(state, optax.ApplyIfFiniteState):
    return None
  return state.notfinite_count[...], state.total_notfinite[...]


def statistics_schedule(config: TrainConfig) -> Optional[Callable[[int], bool]]:
  """The rule ``count -> bool`` (zero-based update count) saying on which updates the loop
  records layer-input statistics, or ``None`` when the optimizer needs none.

  The optimizer's registry entry declares it
  (:attr:`muonjax.OptimizerSpec.activation_stats_schedule`): Newton-Muon's are
  its preconditioner's refresh steps, so the extra backward work is paid once
  every ``refresh_every`` updates.
  """
  spec = mj.get_spec(config.optimizer)
  return spec.activation_stats_schedule(config.optimizer_hparams)


def register_extra_args(optimizer: str, fn: ExtraArgsFn) -> None:
  """Makes ``fn`` the default :data:`ExtraArgsFn` of ``optimizer``."""
  EXTRA_ARGS_FNS[optimizer] = fn


# --- the step ---------------------------------------------------------------


def _mean_tree(tree: Any, n: int) -> Any:
  return tree if n == 1 else jax.tree.map(lambda x: x / n, tree)


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
      def objective(p):
        return loss_and_metrics(nnx.merge(model_def, p, rest), x, y,
                                key=jax.random.fold_in(key, i))
      extra = ({} if extra_args_fn is None else
               dict(extra_args_fn(nnx.merge(model_def, params, rest),
                                  dict(inputs=x, targets=y))))
      if record_stats:
        (loss, terms), grads, extra["activation_stats"] = models.value_grad_and_stats(
            lambda m: loss_and_metrics(m, x, y, key=jax.random.fold_in(key, i)),
            nnx.merge(model_def, params, rest))
      else:
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(params)
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
      grads, loss, terms, extra = _mean_tree(total, grad_accum)

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
    skips = _skip_counts(optimizer)
    if skips is not None:  # TrainConfig.skip_nonfinite
      out["nonfinite_run"], out["skipped_steps"] = skips
    return nnx.split((model, optimizer))[1], out

  return step_fn


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


def param_labels(model: nnx.Module, optimizer: str,
                 hparams: Optional[Mapping[str, Any]] = None) -> list[str]:
  """Update-RMS group of each ``nnx.Param`` leaf, in leaf order.

  The optimizer's registry entry declares the groups
  (:attr:`muonjax.OptimizerSpec.param_labels`): the default routing of
  :func:`muonjax.label_params` (``"muon"`` for matrices), or ``"adam"`` for
  every leaf of AdamW.
  """
  params = nnx.state(model, nnx.Param)
  n = len(jax.tree.leaves(params))
  spec = mj.get_spec(optimizer)
  labels = jax.tree.leaves(spec.param_labels(params, dict(hparams or {})))
  if len(labels) != n:
    raise RuntimeError(f"routing labelled {len(labels)} leaves of {n}")
  return labels


def build_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """``config``'s optimizer with its schedule as ``learning_rate``.

  A numeric ``adam_learning_rate`` hyperparameter gets the same schedule shape
  with that peak. The peaks are values in the optimizer state
  (``optax.inject_hyperparams``) scaling a unit-peak schedule, not constants
  of the compiled step, so runs that differ only in their learning rates
  share one compilation (learning-rate sweeps compile once).
  """
  hparams = dict(config.optimizer_hparams)
  peaks = {"learning_rate": float(config.learning_rate)}
  adam_lr = hparams.get("adam_learning_rate")
  if isinstance(adam_lr, numbers.Real) and not isinstance(adam_lr, bool):
    peaks["adam_learning_rate"] = float(hparams.pop("adam_learning_rate"))
  shape = schedule_for(config, 1.0)

  def factory(learning_rate, adam_learning_rate=None):
    scheduled = {"learning_rate": lambda count: learning_rate * shape(count)}
    if adam_learning_rate is not None:
      scheduled["adam_learning_rate"] = lambda count: adam_learning_rate * shape(count)
    return mj.get_optimizer(config.optimizer, **scheduled, **hparams)

  base = factory(**peaks)  # bad hyperparameters fail here, not at init
  tx = optax.inject_hyperparams(factory)(**peaks)
  if isinstance(base, optax.GradientTransformationExtraArgs):
    return tx
  return optax.GradientTransformation(tx.init, lambda u, s, p=None: tx.update(u, s, p))


def with_sphere_projection(tx: optax.GradientTransformation, model: nnx.Module,
                           config: Optional[TrainConfig] = None) -> optax.GradientTransformation:
  """``tx`` followed by the sphere stage when ``model`` has ``sphere_axis`` metadata.

  Normalized models (nGPT) keep their weight vectors on the unit sphere: after
  every optimizer step each constrained vector is renormalized
  (:func:`muonjax.models.ngpt.sphere_projection`), lazily every
  ``config.sphere_every`` steps, or moved along a great circle
  (``config.sphere_update="geodesic"``, angle ``config.sphere_theta``); other
  models get ``tx`` unchanged.
  """
  if not _has_sphere(model):
    return tx
  from muonjax.models.ngpt import sphere_projection
  if config is None:
    return optax.chain(tx, sphere_projection(model))
  return optax.chain(tx, sphere_projection(
      model, mode=config.sphere_update, every=config.sphere_every, theta=config.sphere_theta,
      learning_rate=schedule_for(config)))


def _has_sphere(model: nnx.Module) -> bool:
  axes = mj.sphere_axes(model)
  return any(a is not None for a in jax.tree.leaves(axes, is_leaf=lambda a: a is None))


def _sphere_changed(config: TrainConfig) -> bool:
  defaults = TrainConfig.__dataclass_fields__
  return any(getattr(config, name) != defaults[name].default for name in SPHERE_FIELDS)


def model_fields(config: TrainConfig, vocab_size: int) -> dict:
  """The model fields ``config`` builds with: ``vocab_size`` and ``max_seq_len`` filled in.

  Raises:
    ValueError: ``vocab_size`` smaller than the corpus's.
  """
  fields = dict(config.model_fields)
  fields.setdefault("vocab_size", vocab_size)
  fields.setdefault("max_seq_len", config.seq_len)
  if fields["vocab_size"] < vocab_size:
    raise ValueError(f"TrainConfig.model_fields: vocab_size={fields['vocab_size']} is smaller "
                     f"than the corpus vocabulary ({vocab_size})")
  return fields


# --- Ctrl-C -----------------------------------------------------------------


@contextlib.contextmanager
def _deferred_sigint():
  """First Ctrl-C: finish the current step, then raise; a second one raises at once.

  Yields a function telling whether a Ctrl-C is pending. Only in the main
  thread, and only when SIGINT has Python's default handler.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield lambda: False
    return
  pending = []

  def handler(signum, frame):
    if pending:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    pending.append(signum)

  signal.signal(signal.SIGINT, handler)
  try:
    yield lambda: bool(pending)
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _unaliased(state: Any) -> Any:
  """``state`` with no two leaves sharing a device buffer (each copied leaf keeps its sharding).

  The step donates the state, and XLA refuses to donate one buffer twice;
  optimizer states can hold equal constants created as one buffer (e.g. the
  zero counters of ``optax.apply_if_finite`` next to Momo's scalars).
  """
  seen = set()

  def one(x):
    if not isinstance(x, jax.Array):
      return x
    key = tuple(shard.data.unsafe_buffer_pointer() for shard in x.addressable_shards)
    if key in seen:
      return jax.device_put(x, x.sharding, may_alias=False)
    seen.add(key)
    return x

  return jax.tree.map(one, state)


def _alive(state: Any) -> bool:
  return not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


# --- placement: one device or a mesh ----------------------------------------


def mesh_for(config: TrainConfig) -> Optional[jax.sharding.Mesh]:
  """The ``("data", "fsdp")`` mesh of ``config.mesh`` over all processes' devices.

  Returns:
    ``None`` when ``config.mesh`` is ``None`` (one device, no sharding).

  Raises:
    ValueError: the mesh does not match the device count, ``batch_size`` is
      not divisible by it, or several processes run without a mesh (names
      the field).
  """
  if config.mesh is None:
    if jax.process_count() > 1:
      raise ValueError(f"TrainConfig.mesh must be set when training with "
                       f"{jax.process_count()} processes (e.g. {{'data': "
                       f"{jax.device_count()}}})")
    return None
  from muonjax import distributed
  try:
    mesh = distributed.make_mesh(**config.mesh)
  except ValueError as e:
    raise ValueError(f"TrainConfig.mesh={config.mesh}: {e}") from None
  if config.batch_size % mesh.size:
    raise ValueError(f"TrainConfig.batch_size={config.batch_size} must be divisible by the "
                     f"{mesh.size} devices of TrainConfig.mesh={config.mesh}")
  return mesh


def _place(tree: Any, shardings: Any) -> Any:
  """``jax.device_put(tree, shardings)``; with several processes each builds its
  addressable shards from its own (identical) copy of the values."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def put(x, s):
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

  return jax.tree.map(put, tree, shardings)


def _process_block(sharding: jax.sharding.Sharding, shape: tuple, axis: int
                   ) -> Optional[tuple[int, int]]:
  """``(index, count)`` when this process's devices hold exactly block ``index`` of
  ``count`` equal contiguous blocks of ``axis`` (``(0, 1)`` in one process), else ``None``."""
  n = shape[axis]
  spans = sorted({(idx[axis].start or 0, n if idx[axis].stop is None else idx[axis].stop)
                  for idx in sharding.addressable_devices_indices_map(shape).values()})
  lo, hi = spans[0][0], spans[-1][1]
  size = hi - lo
  contiguous = all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
  if not contiguous or size <= 0 or n % size or lo % size:
    return None
  return lo // size, n // size


class _Engine:
  """The state of ``(model, optimizer)``, the jitted step and evaluation of a config.

  Without a mesh: one device, the step takes ``(grad_accum, B, T)`` batches
  (the behaviour before meshes existed). With ``config.mesh``: the state is
  placed with :func:`muonjax.distributed.param_shardings` /
  :func:`~muonjax.distributed.state_shardings`, the step takes the flat global
  batch ``(grad_accum · B, T)`` with its rows split over every device
  (:func:`~muonjax.distributed.shard_batch`) and reshapes it to
  ``(grad_accum, B, T)`` inside (each micro-batch split over every device),
  and the step must be traced under ``jax.set_mesh(self.mesh)`` (so the
  orthogonalize stage shards the Newton–Schulz stacks).
  """

  def __init__(self, config: TrainConfig, fields: dict,
               extra_args_fn: Optional[ExtraArgsFn]):
    self.config = config
    self.mesh = mesh_for(config)
    model = models.build(config.model, rngs=config.seed, **fields)
    self.n_params = models.param_count(model)
    tx = with_sphere_projection(build_optimizer(config), model, config)
    if not _has_sphere(model) and _sphere_changed(config):
      raise ValueError(f"TrainConfig.sphere_update/sphere_every/sphere_theta apply to models "
                       f"with unit-sphere weights (ngpt); {config.model!r} has none")
    optimizer = nnx.Optimizer(model, skip_nonfinite(tx) if config.skip_nonfinite else tx,
                              wrt=nnx.Param)
    labels = param_labels(model, config.optimizer, config.optimizer_hparams)
    self.graphdef, state = nnx.split((model, optimizer))
    accum, micro, seq = config.grad_accum, config.batch_size, config.seq_len
    kwargs = dict(labels=labels, grad_accum=accum,
                  seed=config.seed,
                  pass_value=mj.get_spec(config.optimizer).needs_value,
                  extra_args_fn=extra_args_fn)
    self._stats_due = statistics_schedule(config)
    steps = {False: build_train_step(self.graphdef, **kwargs)}
    if self._stats_due is not None:
      steps[True] = build_train_step(self.graphdef, record_stats=True, **kwargs)
    evaluate = build_eval(self.graphdef)

    if self.mesh is None:
      self.state, self.state_sharding = _unaliased(state), None
      self._steps = {k: jax.jit(f, donate_argnums=0) for k, f in steps.items()}
      self.eval_fn = jax.jit(evaluate)
      return

    from jax.sharding import NamedSharding, PartitionSpec as P
    from muonjax import distributed
    mesh = self.mesh
    self.state_sharding = distributed.state_shardings(
        state, distributed.param_shardings(model, mesh))
    self.state = _unaliased(_place(state, self.state_sharding))
    del model, optimizer, state
    replicated = NamedSharding(mesh, P())
    self.batch_sharding = distributed.batch_sharding(mesh, 2)
    self.stacked_sharding = NamedSharding(mesh, P(None, distributed.AXES, None))

    def flat_batches(step_fn):
      def fn(state, inputs, targets, step, run_seed):
        unflat = lambda a: jax.lax.with_sharding_constraint(
            a.reshape(accum, micro, seq), self.stacked_sharding)
        return step_fn(state, unflat(inputs), unflat(targets), step, run_seed)
      return fn

    self._steps = {
        k: jax.jit(flat_batches(f), donate_argnums=0,
                   in_shardings=(self.state_sharding, self.batch_sharding,
                                 self.batch_sharding, replicated, replicated),
                   out_shardings=(self.state_sharding, replicated))
        for k, f in steps.items()}
    self.eval_fn = jax.jit(evaluate, out_shardings=replicated,
                           in_shardings=(self.state_sharding, self.stacked_sharding,
                                         self.stacked_sharding))

  def context(self):
    """``jax.set_mesh(mesh)`` (or nothing without a mesh): trace and run steps in it."""
    return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

  def step_fn(self, step: int, stats: Optional[bool] = None) -> Callable:
    """The jitted step for update ``step`` (1-based): with Newton-Muon's statistics on refresh steps."""
    if stats is None:
      stats = self._stats_due is not None and bool(self._stats_due(step - 1))
    if stats not in self._steps:
      raise ValueError(f"record_stats: optimizer {self.config.optimizer!r} records no "
                       "layer-input statistics")
    return self._steps[stats]

  def step(self, state, inputs, targets, step: int):
    """One update; ``inputs``/``targets`` from :meth:`batch`."""
    as_int = jnp.int32 if self.mesh is None else np.int32
    return self.step_fn(step)(state, inputs, targets, as_int(step), as_int(self.config.seed))

  def stream(self, tokens) -> Any:
    """This process's training stream: its rows of each global batch of ``grad_accum · B`` sequences."""
    from muonjax import data
    config = self.config
    rows = config.batch_size * config.grad_accum
    index, count = 0, 1
    if self.mesh is not None and jax.process_count() > 1:
      block = _process_block(self.batch_sharding, (rows, config.seq_len), 0)
      # A process whose devices do not hold one contiguous block of rows reads
      # the whole global batch and keeps its shards (_put).
      index, count = block if block is not None else (0, 1)
    return data.BatchStream(tokens, batch_size=rows, seq_len=config.seq_len,
                            seed=config.seed, process_index=index, process_count=count)

  def batch(self, batch: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """``(inputs, targets)`` of a stream batch, as the step takes them."""
    config = self.config
    x, y = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    if self.mesh is None:
      shape = (config.grad_accum, config.batch_size, config.seq_len)
      return jnp.asarray(x.reshape(shape), jnp.int32), jnp.asarray(y.reshape(shape), jnp.int32)
    rows = config.batch_size * config.grad_accum
    if x.shape[0] == rows and jax.process_count() > 1:  # the whole global batch
      return tuple(_put_global(a.astype(np.int32), self.batch_sharding) for a in (x, y))
    from muonjax import distributed
    out = distributed.shard_batch(dict(inputs=x.astype(np.int32), targets=y.astype(np.int32)),
                               self.mesh)
    return out["inputs"], out["targets"]

  def val_batches(self, tokens) -> tuple[jax.Array, jax.Array]:
    """The validation batches ``(eval_batches, B, T)`` (split over devices on a mesh)."""
    from muonjax import data
    config = self.config
    micro, seq, k = config.batch_size, config.seq_len, config.eval_batches
    index, count = 0, 1
    if self.mesh is not None and jax.process_count() > 1:
      block = _process_block(self.stacked_sharding, (k, micro, seq), 1)
      index, count = block if block is not None else (0, 1)
    val = data.eval_batches(tokens, batch_size=micro, seq_len=seq, n_batches=k,
                            process_index=index, process_count=count)
    x = np.stack([b["inputs"] for b in val]).astype(np.int32)
    y = np.stack([b["targets"] for b in val]).astype(np.int32)
    if self.mesh is None:
      return jnp.asarray(x), jnp.asarray(y)
    if count == 1:
      return tuple(_put_global(a, self.stacked_sharding) for a in (x, y))
    return tuple(jax.make_array_from_process_local_data(self.stacked_sharding, a,
                                                        (k, micro, seq)) for a in (x, y))


def _put_global(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from the whole value (present in every process)."""
  if jax.process_count() == 1:
    return jax.device_put(value, sharding)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def lower_train_step(config: TrainConfig, *, vocab_size: Optional[int] = None,
                     record_stats: bool = False,
                     extra_args_fn: Optional[ExtraArgsFn] = None) -> jax.stages.Lowered:
  """The training step :func:`train` runs for ``config``, lowered (not run).

  Lowered under ``jax.set_mesh(mesh)`` with the shardings ``train`` uses, so
  ``lower_train_step(config).compile().as_text()`` is the compiled step's HLO
  (e.g. for :func:`muonjax.testing.hlo.collectives_in_while_loops`).

  Args:
    config: the run (``config.mesh`` is built over ``jax.devices()``).
    vocab_size: the corpus vocabulary (default: ``model_fields["vocab_size"]``,
      else that of ``config.data``'s corpus, which is loaded).
    record_stats: the Newton-Muon refresh-step variant.
    extra_args_fn: as in :func:`train`.

  Returns:
    A ``jax.stages.Lowered`` of ``(state, inputs, targets, step, seed)``.
  """
  if vocab_size is None:
    vocab_size = config.model_fields.get("vocab_size")
  if vocab_size is None:
    from muonjax import data
    vocab_size = data.load_corpus(config.data).vocab_size
  if extra_args_fn is None:
    extra_args_fn = EXTRA_ARGS_FNS.get(config.optimizer)
  engine = _Engine(config, model_fields(config, vocab_size), extra_args_fn)
  rows, seq = config.batch_size * config.grad_accum, config.seq_len
  if engine.mesh is None:
    shape = (config.grad_accum, config.batch_size, seq)
    batch = jax.ShapeDtypeStruct(shape, jnp.int32)
  else:
    batch = jax.ShapeDtypeStruct((rows, seq), jnp.int32, sharding=engine.batch_sharding)
  with engine.context():
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    return engine.step_fn(1, stats=record_stats).lower(engine.state, batch, batch, scalar, scalar)


# --- the loop ---------------------------------------------------------------


def _record(config: TrainConfig, step: int, out: Mapping[str, Any], lr: float, seconds: float,
            elapsed: float) -> dict:
  record = {"step": step, "loss": float(out["loss"])}
  for name, value in out["terms"].items():
    record[f"metric_{name}" if name in _RESERVED else name] = float(value)
  record["lr"] = lr
  record["grad_norm"] = float(out["grad_norm"])
  record.update({k: float(v) for k, v in out["update_rms"].items()})
  record["step_time"] = seconds
  record["tokens_per_s"] = config.tokens_per_step / seconds
  record["elapsed"] = elapsed
  return record


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    on_step: Optional[StepCallback] = None,
    extra_args_fn: Optional[ExtraArgsFn] = None,
    corpus: Any = None,
) -> dict:
  """Trains ``config.model`` with ``config.optimizer`` for ``config.steps`` updates.

  Each step: ``grad_accum`` micro-batches of ``batch_size × seq_len`` tokens
  (gradients and loss averaged), one optimizer update, a JSONL record
  (:mod:`muonjax.train.metrics` lists the keys), an evaluation every
  ``eval_every`` steps and after the last, a checkpoint every
  ``checkpoint_every`` steps and after the last, then ``on_step(step, record)``.
  Nothing is printed.

  Sharding: with ``config.mesh`` (e.g. ``{"data": 2, "fsdp": 4}``) the run uses
  a :func:`muonjax.distributed.make_mesh` mesh over ``jax.devices()``: parameters
  and optimizer states are sharded over ``fsdp``
  (:func:`~muonjax.distributed.param_shardings`,
  :func:`~muonjax.distributed.state_shardings`), every micro-batch is split over
  all devices (:func:`~muonjax.distributed.shard_batch`), and the step runs under
  ``jax.set_mesh(mesh)``, so Newton–Schulz iterates on stack-sharded groups of
  same-shape matrices with no collectives in its loop. Checkpoints hold the
  global arrays and are restored onto the run's shardings. The losses equal
  the one-device run's up to float rounding.

  Several processes (one per host or GPU): call
  ``jax.distributed.initialize(coordinator_address=..., num_processes=...,
  process_id=...)`` (no arguments on managed clusters) in every process
  before anything touches JAX devices, then call ``train`` with the same
  config in every process. ``config.mesh`` is then required and spans all
  processes' devices; each process reads only its rows of every batch
  (``BatchStream(process_index=..., process_count=...)``), only process 0
  writes the metrics log, and orbax coordinates the checkpoint writes
  (``checkpoint_dir`` must be one directory every process sees).

  Args:
    config: the run.
    resume: continue from the newest checkpoint in ``config.checkpoint_dir``
      (exactly: same batches, same dropout keys); starts afresh when there is
      none. Without it, a ``checkpoint_dir`` holding checkpoints is an error.
    on_step: called after every step with the step and its record (e.g. a
      progress bar); a ``KeyboardInterrupt`` raised there is handled like Ctrl-C.
    extra_args_fn: extra ``tx.update`` arguments (see :data:`ExtraArgsFn`);
      default ``EXTRA_ARGS_FNS.get(config.optimizer)``.
    corpus: an already loaded ``muonjax.data`` corpus for ``config.data``
      (saves reloading it across runs).

  Returns:
    A JSON-serialisable dict: ``final_train_loss``, ``final_val_loss``,
    ``final_val_accuracy``, ``eval_history`` (``[{"step", "eval_loss", "eval_accuracy"}]``), ``time_per_step``
    (median, first step of this process excluded: ``None`` when it ran at
    most one step), ``tokens_per_s``, ``wall_time``, ``steps``,
    ``steps_run`` (by this call: 0 when a finished run is resumed, which
    then writes nothing), ``skipped_steps`` (updates skipped for a
    non-finite gradient, over the whole run), ``resumed_from``, ``n_params``,
    ``config``, ``model_fields``, ``data``, ``versions``, ``machine``.

  Raises:
    ValueError: bad input (one line): data, a mesh that does not fit the
      devices or the batch size, a checkpoint directory that holds
      checkpoints without ``resume``, a checkpoint written with another config
      (names the field), no checkpoint passing verification
      (:class:`~muonjax.train.CorruptCheckpointError`). A newest checkpoint
      that fails verification while an older one passes is reported with a
      :class:`~muonjax.train.CheckpointFallbackWarning` and the older one is
      resumed.
    NonFiniteLossError: the loss became NaN/Inf, or more than
      ``max_consecutive_nonfinite`` consecutive updates were skipped for a
      non-finite gradient; checkpoints up to the last good (verified) one are kept.
    TrainingInterrupted: a ``KeyboardInterrupt``, after saving a checkpoint
      of the last completed step when one ran (its attributes say which).
  """
  from muonjax import data

  wall_start = time.perf_counter()
  mesh_for(config)  # a bad mesh fails before the corpus is read
  if corpus is None:
    corpus = data.load_corpus(config.data)
  train_tokens, val_tokens = data.split(corpus.tokens, val_fraction=config.val_fraction)
  fields = model_fields(config, corpus.vocab_size)

  ckpt = None
  if config.checkpoint_dir is not None:
    ckpt = Checkpointer(config.checkpoint_dir, keep=config.keep)
  elif resume:
    raise ValueError("resume needs TrainConfig.checkpoint_dir")
  try:
    return _train(config, ckpt, resume=resume, on_step=on_step, extra_args_fn=extra_args_fn,
                  corpus=corpus, train_tokens=train_tokens, val_tokens=val_tokens,
                  fields=fields, wall_start=wall_start)
  finally:
    if ckpt is not None:
      ckpt.close()


def _train(config, ckpt, *, resume, on_step, extra_args_fn, corpus, train_tokens, val_tokens,
           fields, wall_start) -> dict:
  latest = None
  if ckpt is not None:
    existing = ckpt.all_steps()
    if existing and not resume:
      raise ValueError(f"checkpoint_dir {config.checkpoint_dir!r} already holds a checkpoint "
                       f"(step {existing[-1]}); resume it or choose another directory")
    if resume:
      # The newest checkpoint that passes its integrity record; newer damaged
      # ones are reported (CheckpointFallbackWarning), none at all is an error.
      latest = ckpt.newest_verified()
  meta = None
  if resume and latest is not None:
    meta = ckpt.read_meta(latest)
    mismatch = first_mismatch(meta.get("config", {}), config)
    if mismatch:
      raise ValueError(f"cannot resume from {config.checkpoint_dir!r}: {mismatch}")
    saved_sha = meta.get("data", {}).get("sha256")
    if saved_sha != corpus.info.get("sha256"):
      raise ValueError(f"cannot resume from {config.checkpoint_dir!r}: the corpus differs "
                       f"(sha256 {saved_sha} in the checkpoint, {corpus.info.get('sha256')} now)")
    if latest > config.steps:
      raise ValueError(f"cannot resume from {config.checkpoint_dir!r}: its step {latest} is "
                       f"past steps={config.steps}")

  if extra_args_fn is None:
    extra_args_fn = EXTRA_ARGS_FNS.get(config.optimizer)
  engine = _Engine(config, fields, extra_args_fn)
  # The logged lr of every step, evaluated once rather than op by op each step.
  lrs = np.asarray(jax.vmap(schedule_for(config))(jnp.arange(config.steps)))
  stream = engine.stream(train_tokens)
  val_x, val_y = engine.val_batches(val_tokens)
  n_params, state = engine.n_params, engine.state
  engine.state = None

  start_step, history, last_record = 0, [], None
  if meta is not None:
    # onto the shardings of the fresh state; newest_verified just checked the hashes
    state, meta = ckpt.restore(latest, state, verify=False)
    stream.set_state(meta["stream"])
    start_step = latest
    history = list(meta.get("eval_history", []))
    last_record = meta.get("last_record")
  skipped = int((last_record or {}).get("skipped_steps", 0))
  finished = start_step == config.steps  # a finished run resumed: nothing to do or write

  log = (metrics_lib.JsonlLog(config.log_path, keep_through=start_step if resume else None)
         if config.log_path and jax.process_index() == 0 and not finished else None)

  def save(state, step, stream_state):
    ckpt.save(step, state, dict(
        config=config.to_dict(), stream=stream_state, data=corpus.info,
        seed=config.seed, rng="dropout key = fold_in(fold_in(key(seed), step), micro_batch)",
        eval_history=history, last_record=last_record, versions=metrics_lib.versions()))

  committed = (state, start_step, stream.get_state())
  saved_step = latest if meta is not None else None  # only ever a verified checkpoint
  step_times: list[float] = []
  del state
  try:
    with _deferred_sigint() as interrupted, engine.context():
      for step in range(start_step + 1, config.steps + 1):
        batch = next(stream)
        stream_state = stream.get_state()
        x, y = engine.batch(batch)
        t0 = time.perf_counter()
        new_state, out = engine.step(committed[0], x, y, step)
        out = jax.device_get(out)
        seconds = time.perf_counter() - t0
        record = _record(config, step, out, float(lrs[step - 1]), seconds,
                         time.perf_counter() - wall_start)
        grads_finite = bool(np.isfinite(out["grad_norm"]))
        run = int(out.get("nonfinite_run", 0))
        if "skipped_steps" in out:
          skipped = int(out["skipped_steps"])
          record["skipped_steps"] = skipped
        # A skipped update (skip_nonfinite: zero update, optimizer state kept)
        # leaves finite parameters; a non-finite loss or too many consecutive
        # skips stop the run.
        skip_ok = (not grads_finite and "nonfinite_run" in out
                   and run <= config.max_consecutive_nonfinite)
        if not (bool(out["all_finite"]) and (grads_finite or skip_ok)):
          record["error"] = "non-finite"
          if log:
            log.write(record)
          what = ("loss" if not np.isfinite(out["loss"]) else
                  "gradient" if not grads_finite else "parameters")
          if what == "gradient" and "nonfinite_run" in out:
            what = (f"gradient (non-finite for {run} consecutive steps, more than "
                    f"max_consecutive_nonfinite={config.max_consecutive_nonfinite})")
          raise NonFiniteLossError(step, float(out["loss"]), saved_step, what)
        if not grads_finite:
          record["skipped"] = True
        committed = (new_state, step, stream_state)
        step_times.append(seconds)
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
          val_loss, val_accuracy = jax.device_get(engine.eval_fn(new_state, val_x, val_y))
          record[metrics_lib.EVAL_KEY] = float(val_loss)
          record[metrics_lib.EVAL_ACCURACY_KEY] = float(val_accuracy)
          history.append({"step": step, "eval_loss": float(val_loss),
                          "eval_accuracy": float(val_accuracy)})
        last_record = record
        if log:
          log.write(record)
        if ckpt and (step == config.steps or
                     (config.checkpoint_every and step % config.checkpoint_every == 0)):
          save(new_state, step, stream_state)
          saved_step = step
        del new_state
        if on_step is not None:
          on_step(step, record)
        if interrupted():
          raise KeyboardInterrupt
  except KeyboardInterrupt:
    state, step, stream_state = committed
    if ckpt and step != saved_step and step > 0 and _alive(state):
      save(state, step, stream_state)
      saved_step = step
    raise TrainingInterrupted(step, saved_step) from None
  finally:
    if log:
      log.close()

  # The first step of this process compiles; it is never timed (None: no timed step).
  per_step = metrics_lib.steady_state_time(step_times) if len(step_times) > 1 else None
  return dict(
      final_train_loss=None if last_record is None else last_record["loss"],
      final_val_loss=history[-1]["eval_loss"] if history else None,
      final_val_accuracy=history[-1].get("eval_accuracy") if history else None,
      eval_history=history,
      time_per_step=per_step,
      tokens_per_s=None if per_step is None else config.tokens_per_step / per_step,
      wall_time=time.perf_counter() - wall_start,
      steps=config.steps,
      steps_run=len(step_times),
      skipped_steps=skipped,
      resumed_from=start_step if meta is not None else None,
      n_params=n_params,
      config=config.to_dict(),
      model_fields=fields,
      data=dict(corpus.info, train_tokens=int(len(train_tokens)),
                val_tokens=int(len(val_tokens))),
      versions=metrics_lib.versions(),
      machine=metrics_lib.machine(),
  )
