"""The training loop: steps, evaluation, logs, checkpoints, Ctrl-C and the result.

:func:`train` runs one :class:`TrainConfig` with an :class:`~muonjax.train.engine.Engine`
(model, optimizer, the jitted step of :mod:`muonjax.train.step`, placement).

Exactness of resume: everything a step depends on is in the checkpoint (the
state, the data stream position) or derived from ``(seed, step)`` (the
dropout key ``fold_in(fold_in(key(seed), step), micro_batch)``), so a
resumed run computes bit-identical steps on the same machine and mesh.

Sharding (``TrainConfig.mesh``): see :func:`train` and :mod:`muonjax.distributed`.
"""

from __future__ import annotations

import collections

import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from muonjax.train import metrics as metrics_lib
from muonjax.train.checkpoint import Checkpointer
from muonjax.train.config import TrainConfig, first_mismatch
from muonjax.train.engine import Engine, mesh_for, model_fields
from muonjax.train.interrupt import TrainingInterrupted, deferred_sigint
from muonjax.train.schedules import schedule_for
from muonjax.train.step import EXTRA_ARGS_FNS, ExtraArgsFn

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



def _alive(state: Any) -> bool:
  return not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))



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
    ``final_val_accuracy``, ``final_terms`` (the model's loss terms, mean over the last tenth of the steps this process ran), ``eval_history`` (``[{"step", "eval_loss", "eval_accuracy"}]``), ``time_per_step``
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
  engine = Engine(config, fields, extra_args_fn)
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
  # The model's loss terms (e.g. LoopFormer's ce / ce_short / consistency) of the
  # last tenth of the steps, averaged into the result's ``final_terms``.
  tail = max(1, config.steps // 10)
  recent_terms: collections.deque = collections.deque(maxlen=tail)
  del state
  try:
    with deferred_sigint() as interrupted, engine.context():
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
        recent_terms.append({name: float(v) for name, v in out["terms"].items()})
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
      final_terms={name: float(np.mean([t[name] for t in recent_terms]))
                   for name in (recent_terms[0] if recent_terms else {})},
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
