"""The optimizer registry: each name with its factory and what a trainer must provide.

A trainer reads an :class:`OptimizerSpec` instead of checking names: whether
``update`` needs the loss (``value=``), on which updates it needs layer-input
statistics (``activation_stats=``), how parameters group for update-RMS
metrics, and which hyperparameters the factory takes.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

import optax

from muonjax import routing
from muonjax.optimizers.adamw import adamw
from muonjax.optimizers.base import MUON_ARGUMENTS, OPTAX_ARGUMENTS
from muonjax.optimizers.muon import muon
from muonjax.optimizers.muon_adam import momo, muon_adam, muon_max
from muonjax.optimizers.scion import scion
from muonjax.optimizers.variants import (
    NEWTON_MUON_REFRESH_EVERY,
    NEWTON_MUON_REFRESH_RULE,
    adamuon,
    mano,
    newton_muon,
    normuon,
    polar_muon,
)
from muonjax.transforms.precondition import refresh_due

StatsSchedule = Callable[[int], bool]


def default_param_labels(params: Any, hparams: Mapping[str, Any]) -> Any:
  """``"muon"``/``"adam"`` per leaf by the default routing (:func:`muonjax.label_params`)."""
  del hparams
  return routing.label_params(params)


def _no_stats(hparams: Mapping[str, Any]) -> Optional[StatsSchedule]:
  del hparams
  return None


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """What a registered optimizer needs from the trainer.

  Attributes:
    factory: ``factory(learning_rate=..., **hparams) -> GradientTransformation``.
    hyperparameters: the keyword arguments ``factory`` takes.
    needs_value: ``update`` takes the loss as ``value=`` (Momo).
    activation_stats_schedule: ``hparams -> None`` or a rule ``count -> bool``
      (zero-based update count) saying which updates need layer-input
      statistics as ``activation_stats=`` (Newton-Muon).
    param_labels: ``(params, hparams) -> tree of group names`` for the
      update-RMS metrics (params: a parameter tree, e.g. an ``nnx.State``).
    shared_adam: the hyperparameters of the AdamW that trains the non-matrix
      leaves (embeddings, head, norms, biases), keyed by their generic names
      ``learning_rate``, ``b1``, ``b2``, ``eps``, ``weight_decay``; ``None``
      when the optimizer has no such separate AdamW (Scion, MuonAdam). A
      symmetric comparison sets these to one value in every arm.
  """

  factory: Callable[..., optax.GradientTransformation]
  hyperparameters: tuple[str, ...]
  needs_value: bool = False
  activation_stats_schedule: Callable[[Mapping[str, Any]], Optional[StatsSchedule]] = _no_stats
  param_labels: Callable[[Any, Mapping[str, Any]], Any] = default_param_labels
  shared_adam: Optional[Mapping[str, str]] = None


def _newton_muon_stats(hparams: Mapping[str, Any]) -> StatsSchedule:
  """Statistics only on the preconditioner's refresh steps (the stage ignores the others)."""
  every = hparams.get("refresh_every", NEWTON_MUON_REFRESH_EVERY)
  rule = hparams.get("refresh_rule", NEWTON_MUON_REFRESH_RULE)
  return lambda count: bool(refresh_due(count, every, rule))


def _adamw_labels(params: Any, hparams: Mapping[str, Any]) -> Any:
  """Every leaf ``"adam"``, unless the non-matrix leaves have their own rate (a split)."""
  if hparams.get("adam_learning_rate") is not None or hparams.get("adam_weight_decay") is not None:
    return routing.label_params(params)
  return routing.labels_from_dimension_numbers(None, params)


MUON_SHARED_ADAM = {"learning_rate": "adam_learning_rate", "b1": "adam_b1", "b2": "adam_b2",
                    "eps": "adam_eps", "weight_decay": "adam_weight_decay"}
ADAMW_SHARED_ADAM = {"learning_rate": "adam_learning_rate", "b1": "b1", "b2": "b2", "eps": "eps",
                     "weight_decay": "adam_weight_decay"}


_NO_METHOD = tuple(a for a in MUON_ARGUMENTS if a not in ("method", "coeffs"))
_MUON_ADAM = ("learning_rate", "muon_lr_scale", "weight_decay", "weight_decay_mode", "beta",
              "adam_betas", "eps", "steps", "polar_method", "compute_dtype", "global_scale",
              "truncate", "truncate_loss", "clamp_nonnegative", "stale_nuc", "mu_dtype",
              "dimension_numbers")

SPECS: dict[str, OptimizerSpec] = {
    "muon": OptimizerSpec(muon, MUON_ARGUMENTS + OPTAX_ARGUMENTS, shared_adam=MUON_SHARED_ADAM),
    "polar_muon": OptimizerSpec(polar_muon, ("variant",) + _NO_METHOD,
                                shared_adam=MUON_SHARED_ADAM),
    "normuon": OptimizerSpec(normuon, ("beta2", "form") + MUON_ARGUMENTS,
                             shared_adam=MUON_SHARED_ADAM),
    "adamuon": OptimizerSpec(adamuon, ("form", "nu_dtype", "recipe") + MUON_ARGUMENTS,
                             shared_adam=MUON_SHARED_ADAM),
    "newton_muon": OptimizerSpec(
        newton_muon, ("beta2", "refresh_every", "ridge", "k0", "ridge_eps", "refresh_rule",
                      "block_diagonal", "recipe") + MUON_ARGUMENTS,
        activation_stats_schedule=_newton_muon_stats, shared_adam=MUON_SHARED_ADAM),
    "adamw": OptimizerSpec(adamw, ("learning_rate", "b1", "b2", "eps", "weight_decay",
                                   "nesterov", "adam_learning_rate", "adam_weight_decay",
                                   "dimension_numbers"),
                           param_labels=_adamw_labels, shared_adam=ADAMW_SHARED_ADAM),
    "scion": OptimizerSpec(scion, ("learning_rate", "alpha", "constrained", "lmos", "overrides",
                                   "dimension_numbers", "compute_dtype", "mu_dtype")),
    "mano": OptimizerSpec(mano, ("version", "both_axes") + MUON_ARGUMENTS,
                          shared_adam=MUON_SHARED_ADAM),
    "muon_adam": OptimizerSpec(muon_adam, _MUON_ADAM, needs_value=True),
    "muon_max": OptimizerSpec(muon_max, tuple(a for a in _MUON_ADAM if a != "global_scale"),
                              needs_value=True),
    "momo": OptimizerSpec(momo, ("learning_rate", "base") + tuple(
        a for a in _MUON_ADAM if a not in ("global_scale", "truncate")), needs_value=True),
}

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    name: spec.factory for name, spec in SPECS.items()}
"""Name → factory (the factories of :data:`SPECS`)."""


def _signature_names(factory: Callable[..., Any]) -> tuple[str, ...]:
  return tuple(p.name for p in inspect.signature(factory).parameters.values()
               if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL))


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation], *,
                       hyperparameters: Optional[tuple[str, ...]] = None,
                       needs_value: bool = False,
                       activation_stats_schedule: Optional[Callable[..., Any]] = None,
                       param_labels: Optional[Callable[[Any, Mapping[str, Any]], Any]] = None,
                       ) -> None:
  """Add ``factory`` to the registry under ``name`` (an error if taken).

  ``hyperparameters`` defaults to the names in ``factory``'s signature; the
  other arguments are the :class:`OptimizerSpec` fields.
  """
  if name in SPECS:
    raise ValueError(f"optimizer {name!r} is already registered")
  SPECS[name] = OptimizerSpec(
      factory, tuple(hyperparameters) if hyperparameters is not None
      else _signature_names(factory), needs_value=needs_value,
      activation_stats_schedule=activation_stats_schedule or _no_stats,
      param_labels=param_labels or default_param_labels)
  OPTIMIZERS[name] = factory


def get_spec(name: str) -> OptimizerSpec:
  """The :class:`OptimizerSpec` of a registered name (``ValueError`` lists the known ones)."""
  if name not in SPECS:
    raise ValueError(f"unknown optimizer {name!r}; known: {sorted(SPECS)}")
  return SPECS[name]


def hyperparameters(factory: Callable[..., Any]) -> list[str]:
  """Names a factory accepts: its registered list, else its signature's names."""
  for spec in SPECS.values():
    if spec.factory is factory:
      return list(spec.hyperparameters)
  return list(_signature_names(factory))


def get_optimizer(name: str, **hparams) -> optax.GradientTransformation:
  """Build a registered optimizer by name.

  Raises:
    ValueError: unknown name (lists the known ones), a hyperparameter the
      optimizer does not take (lists the ones it takes), or a value out of range.
  """
  spec = get_spec(name)
  allowed = list(spec.hyperparameters)
  unknown = sorted(set(hparams) - set(allowed))
  if unknown:
    raise ValueError(
        f"optimizer {name!r} has no hyperparameter {unknown[0]!r}; allowed: {allowed}")
  return spec.factory(**hparams)
