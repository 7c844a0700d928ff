"""The optimizer of a run: the registry's optimizer with its schedule, skipping of
non-finite updates, update-RMS groups and Newton-Muon's statistics schedule."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import optax
from flax import nnx

from muonjax import optimizers
from muonjax.models import hooks
from muonjax.train.config import TrainConfig
from muonjax.train.schedules import schedule_for
from muonjax.transforms.validation import is_real


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


def skip_counts(optimizer: nnx.Optimizer) -> Optional[tuple[jax.Array, jax.Array]]:
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
  spec = optimizers.get_spec(config.optimizer)
  return spec.activation_stats_schedule(config.optimizer_hparams)



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
  spec = optimizers.get_spec(optimizer)
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
  if is_real(adam_lr):
    peaks["adam_learning_rate"] = float(hparams.pop("adam_learning_rate"))
  shape = schedule_for(config, 1.0)

  def factory(learning_rate, adam_learning_rate=None):
    scheduled = {"learning_rate": lambda count: learning_rate * shape(count)}
    if adam_learning_rate is not None:
      scheduled["adam_learning_rate"] = lambda count: adam_learning_rate * shape(count)
    return optimizers.get_optimizer(config.optimizer, **scheduled, **hparams)

  base = factory(**peaks)  # bad hyperparameters fail here, not at init
  tx = optax.inject_hyperparams(factory)(**peaks)
  if isinstance(base, optax.GradientTransformationExtraArgs):
    return tx
  return optax.GradientTransformation(tx.init, lambda u, s, p=None: tx.update(u, s, p))


def with_model_constraint(tx: optax.GradientTransformation, model: nnx.Module,
                          learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """``tx`` followed by ``model``'s constraint stage, or ``tx`` itself when it has none.

  The model decides (:func:`muonjax.models.hooks.optimizer_constraint`), with
  settings from its own config, e.g. a stage keeping constrained weights on
  their constraint set after every step; the trainer knows no model by name.

  Args:
    tx: the optimizer.
    model: the model ``tx`` updates.
    learning_rate: the run's schedule (:func:`~muonjax.train.schedules.schedule_for`).
  """
  constraint = hooks.optimizer_constraint(model, learning_rate)
  return tx if constraint is None else optax.chain(tx, constraint)
