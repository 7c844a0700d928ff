"""The engine of a run: model and optimizer built from a config, placed on one device
or a mesh, the jitted step and evaluation, and batches in the step's layout.

Sharding (``TrainConfig.mesh``): see :func:`muonjax.train.train` and
:mod:`muonjax.distributed`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muonjax import distributed, models, optimizers
from muonjax.train.config import TrainConfig
from muonjax.train.optimizer import (
    build_optimizer,
    param_labels,
    skip_nonfinite,
    statistics_schedule,
    with_model_constraint,
)
from muonjax.train.schedules import schedule_for
from muonjax.train.step import (
    EXTRA_ARGS_FNS,
    ExtraArgsFn,
    build_eval,
    build_grad_step,
    build_train_step,
)


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
      # A copy as committed as the original: an uncommitted leaf committed here
      # would make the step's second call compile again (the outputs of the
      # first are all committed, its inputs were not).
      return (jax.device_put(x, x.sharding, may_alias=False) if x.committed
              else jnp.array(x, copy=True))
    seen.add(key)
    return x

  return jax.tree.map(one, state)


def mesh_for(config: TrainConfig) -> Optional[jax.sharding.Mesh]:
  """The :data:`muonjax.distributed.AXES` mesh of ``config.mesh`` over all processes' devices.

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
                       f"{jax.process_count()} processes (e.g. {{{distributed.DATA!r}: "
                       f"{jax.device_count()}}})")
    return None
  try:
    mesh = distributed.make_mesh(**config.mesh)
  except ValueError as e:
    raise ValueError(f"TrainConfig.mesh={config.mesh}: {e}") from None
  if config.batch_size % mesh.size:
    raise ValueError(f"TrainConfig.batch_size={config.batch_size} must be divisible by the "
                     f"{mesh.size} devices of TrainConfig.mesh={config.mesh}")
  return mesh


def _place(tree: Any, shardings: Any) -> Any:
  """``jax.device_put(tree, shardings)``: global arrays from whole values present in
  every process (with several processes each builds its addressable shards from
  its own, identical, copy of the values)."""
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


class Engine:
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
    tx = with_model_constraint(build_optimizer(config), model, schedule_for(config))
    optimizer = nnx.Optimizer(model, skip_nonfinite(tx) if config.skip_nonfinite else tx,
                              wrt=nnx.Param)
    labels = param_labels(model, config.optimizer, config.optimizer_hparams)
    self.graphdef, state = nnx.split((model, optimizer))
    accum, micro, seq = config.grad_accum, config.batch_size, config.seq_len
    kwargs = dict(labels=labels, grad_accum=accum,
                  seed=config.seed,
                  pass_value=optimizers.get_spec(config.optimizer).needs_value,
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
      self._grad_fn = jax.jit(build_grad_step(self.graphdef, grad_accum=accum,
                                              seed=config.seed))
      return

    from jax.sharding import NamedSharding, PartitionSpec as P
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

  def grads(self, state, inputs, targets, step: int):
    """The step's forward and backward passes alone (:func:`build_grad_step`); the state
    is not donated. One device only (``None`` on a mesh)."""
    if self.mesh is not None:
      return None
    return self._grad_fn(state, inputs, targets, jnp.int32(step))

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
      return tuple(_place(a.astype(np.int32), self.batch_sharding) for a in (x, y))
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
      return tuple(_place(a, self.stacked_sharding) for a in (x, y))
    return tuple(jax.make_array_from_process_local_data(self.stacked_sharding, a,
                                                        (k, micro, seq)) for a in (x, y))


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
  engine = Engine(config, model_fields(config, vocab_size), extra_args_fn)
  rows, seq = config.batch_size * config.grad_accum, config.seq_len
  if engine.mesh is None:
    shape = (config.grad_accum, config.batch_size, seq)
    batch = jax.ShapeDtypeStruct(shape, jnp.int32)
  else:
    batch = jax.ShapeDtypeStruct((rows, seq), jnp.int32, sharding=engine.batch_sharding)
  with engine.context():
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    return engine.step_fn(1, stats=record_stats).lower(engine.state, batch, batch, scalar, scalar)

