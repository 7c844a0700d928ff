"""``TrainConfig``: everything one training run depends on, validated, JSON round-trippable."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional

from muonjax.distributed.mesh import AXES
from muonjax.transforms.validation import is_int, is_real

SCHEDULES = ("constant", "cosine", "wsd")

# Fields that may change when a run is resumed: they do not change what is
# computed at any step (``steps`` is added to these for the constant schedule).
RESUMABLE_CHANGES = frozenset({
    "eval_every", "eval_batches", "checkpoint_dir", "checkpoint_every", "keep", "log_path",
    "mesh", "max_consecutive_nonfinite"})



def _json_normal(value: Any) -> Any:
  """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
  return json.loads(json.dumps(value))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One model × one optimizer × one data stream.

  Attributes:
    model: a name in ``muonjax.models.CONFIGS`` (``"gpt"``, ``"looped"``).
    model_fields: config fields of the model. ``vocab_size`` defaults to the
      corpus's and ``max_seq_len`` to ``seq_len``.
    optimizer: a name in ``muonjax.OPTIMIZERS``.
    optimizer_hparams: keyword arguments of the optimizer, except
      ``learning_rate``. A numeric ``adam_learning_rate`` follows the same
      schedule shape as ``learning_rate``.
    learning_rate: peak learning rate η (> 0).
    schedule: ``"constant"``, ``"cosine"`` (warmup, then cosine to
      ``min_lr_ratio · η``) or ``"wsd"`` (warmup, stable, then a linear decay
      over the last ``decay_fraction`` of the steps to ``min_lr_ratio · η``).
    warmup_steps: linear warmup length (the first step uses ``η / warmup_steps``).
    min_lr_ratio: final learning rate as a fraction of η, in [0, 1].
    decay_fraction: fraction of ``steps`` that WSD spends decaying, in (0, 1].
    steps: optimizer updates (> 0).
    batch_size: sequences per micro-batch.
    seq_len: tokens per sequence.
    grad_accum: micro-batches per update; gradients are averaged, so one
      update sees ``batch_size · grad_accum`` sequences.
    eval_every: evaluate every this many steps (0: only after the last step).
    eval_batches: validation batches per evaluation.
    seed: model init, data order and dropout keys (>= 0).
    data: corpus source for :func:`muonjax.data.load_corpus` (``None``: the
      Python standard library's source text).
    val_fraction: the last fraction of the tokens held out for validation.
    checkpoint_dir: where checkpoints go (``None``: no checkpoints).
    checkpoint_every: save every this many steps (0: only after the last
      step); the last step, a Ctrl-C, are always saved.
    keep: checkpoints kept (the newest).
    log_path: metrics JSONL file (``None``: no log).
    mesh: device mesh sizes ``{"data": d, "fsdp": f}`` (``None``: one device,
      no mesh). The batch is split over every device, parameters and optimizer
      states are sharded over ``fsdp`` (:mod:`muonjax.distributed`), and
      Newton–Schulz runs stack-sharded. An omitted axis takes the remaining
      devices; ``d · f`` must equal ``jax.device_count()`` (checked by
      :func:`~muonjax.train.train`, which also needs ``batch_size`` divisible
      by it). It may change on resume (the checkpoint is restored onto the
      new layout; bit-exactness holds on the same mesh).
    skip_nonfinite: skip an update whose gradient holds a NaN/Inf
      (``optax.apply_if_finite`` around the optimizer: the update is zeroed
      and the optimizer state, momentum included, is kept as it was). Skipped
      steps are counted (``skipped_steps`` in the log and the result). A
      non-finite loss still stops the run.
    max_consecutive_nonfinite: with ``skip_nonfinite``, the run stops
      (:class:`~muonjax.train.NonFiniteLossError`) when more than this many
      consecutive steps had to be skipped (a transient spike is skipped; a
      gradient that stays non-finite stops the run a few steps later).
  """

  model: str = "gpt"
  model_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  optimizer: str = "muon"
  optimizer_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  learning_rate: float = 0.02
  schedule: str = "cosine"
  warmup_steps: int = 0
  min_lr_ratio: float = 0.1
  decay_fraction: float = 0.2
  steps: int = 100
  batch_size: int = 8
  seq_len: int = 64
  grad_accum: int = 1
  eval_every: int = 50
  eval_batches: int = 4
  seed: int = 0
  data: Optional[str] = None
  val_fraction: float = 0.1
  checkpoint_dir: Optional[str] = None
  checkpoint_every: int = 0
  keep: int = 3
  log_path: Optional[str] = None
  mesh: Optional[Mapping[str, int]] = None
  skip_nonfinite: bool = True
  max_consecutive_nonfinite: int = 3

  def __post_init__(self):
    object.__setattr__(self, "model_fields", dict(self.model_fields))
    if self.mesh is not None:
      if not isinstance(self.mesh, Mapping):
        raise ValueError(f"TrainConfig.mesh must be None or a dict of axis sizes over "
                         f"{AXES}, e.g. {{'data': 2, 'fsdp': 4}}; got {self.mesh!r}")
      object.__setattr__(self, "mesh", dict(self.mesh))
    object.__setattr__(self, "optimizer_hparams", dict(self.optimizer_hparams))
    for name in ("model_fields", "optimizer_hparams"):
      try:
        json.dumps(getattr(self, name), allow_nan=False)
      except (TypeError, ValueError) as e:
        raise ValueError(f"TrainConfig.{name} must hold JSON values (numbers, strings, "
                         f"lists, dicts, None): {e}") from None
    self._check_numbers()
    self._check_model()
    self._check_optimizer()

  def _check_numbers(self) -> None:
    def positive_int(name):
      value = getattr(self, name)
      if not is_int(value) or value < 1:
        raise ValueError(f"TrainConfig.{name} must be a positive int; got {value!r}")

    def non_negative_int(name):
      value = getattr(self, name)
      if not is_int(value) or value < 0:
        raise ValueError(f"TrainConfig.{name} must be an int >= 0; got {value!r}")

    for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_batches", "keep"):
      positive_int(name)
    for name in ("warmup_steps", "eval_every", "checkpoint_every"):
      non_negative_int(name)
    if not is_int(self.seed) or self.seed < 0:
      raise ValueError(f"TrainConfig.seed must be an int >= 0; got {self.seed!r}")
    lr = self.learning_rate
    if not is_real(lr) or not lr > 0 or lr != lr or lr == float("inf"):
      raise ValueError(f"TrainConfig.learning_rate must be a finite number > 0; got {lr!r}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}; "
                       f"got {self.schedule!r}")
    if not is_real(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
      raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1]; "
                       f"got {self.min_lr_ratio!r}")
    if not is_real(self.decay_fraction) or not 0 < self.decay_fraction <= 1:
      raise ValueError(f"TrainConfig.decay_fraction must be in (0, 1]; "
                       f"got {self.decay_fraction!r}")
    if not is_real(self.val_fraction) or not 0 < self.val_fraction < 1:
      raise ValueError(f"TrainConfig.val_fraction must be in (0, 1); "
                       f"got {self.val_fraction!r}")
    limit = self.steps if self.schedule == "constant" else self.steps - 1
    if self.warmup_steps > limit:
      raise ValueError(
          f"TrainConfig.warmup_steps={self.warmup_steps} must be "
          f"{'<=' if self.schedule == 'constant' else '<'} steps={self.steps} "
          f"for the {self.schedule!r} schedule")
    if self.mesh is not None:
      unknown = sorted(set(map(str, self.mesh)) - set(AXES))
      if unknown or not self.mesh:
        raise ValueError(f"TrainConfig.mesh axes must be among {AXES} (at least one); "
                         f"got {sorted(map(str, self.mesh))}")
      for axis, size in self.mesh.items():
        if not is_int(size) or size < 1:
          raise ValueError(f"TrainConfig.mesh[{axis!r}] must be a positive int; got {size!r}")
    if not isinstance(self.skip_nonfinite, bool):
      raise ValueError(f"TrainConfig.skip_nonfinite must be a bool; got {self.skip_nonfinite!r}")
    positive_int("max_consecutive_nonfinite")
    for name in ("data", "checkpoint_dir", "log_path"):
      value = getattr(self, name)
      if value is not None and not isinstance(value, str):
        raise ValueError(f"TrainConfig.{name} must be a path string or None; got {value!r}")

  def _check_model(self) -> None:
    from muonjax import models
    if self.model not in models.CONFIGS:
      raise ValueError(f"TrainConfig.model: unknown model {self.model!r}; "
                       f"known: {sorted(models.CONFIGS)}")
    fields = dict(self.model_fields)
    fields.setdefault("max_seq_len", self.seq_len)
    try:
      model_config = models.make_config(self.model, **fields)
    except (ValueError, TypeError) as e:
      raise ValueError(f"TrainConfig.model_fields: {e}") from None
    if model_config.max_seq_len < self.seq_len:
      raise ValueError(f"TrainConfig.model_fields: max_seq_len={model_config.max_seq_len} "
                       f"is shorter than seq_len={self.seq_len}")

  def _check_optimizer(self) -> None:
    from muonjax import optimizers
    if self.optimizer not in optimizers.OPTIMIZERS:
      raise ValueError(f"TrainConfig.optimizer: unknown optimizer {self.optimizer!r}; "
                       f"known: {sorted(optimizers.OPTIMIZERS)}")
    if "learning_rate" in self.optimizer_hparams:
      raise ValueError("TrainConfig.optimizer_hparams must not contain 'learning_rate'; "
                       "set TrainConfig.learning_rate")
    try:  # unknown or out-of-range hyperparameters fail now, not after data loading
      optimizers.get_optimizer(self.optimizer, learning_rate=self.learning_rate,
                       **self.optimizer_hparams)
    except (ValueError, TypeError) as e:
      raise ValueError(f"TrainConfig.optimizer_hparams: {e}") from None

  @property
  def tokens_per_step(self) -> int:
    """Tokens in one optimizer update: ``batch_size · grad_accum · seq_len``."""
    return self.batch_size * self.grad_accum * self.seq_len

  def to_dict(self) -> dict:
    """A JSON-serialisable dict (:meth:`from_dict` inverts it)."""
    return _json_normal(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
    """Builds a config from a dict such as :meth:`to_dict`'s or a JSON file's.

    Raises:
      ValueError: an unknown key (lists the valid ones) or an invalid value.
    """
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
      raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {valid}")
    return cls(**values)

  def replace(self, **changes: Any) -> "TrainConfig":
    """A copy with ``changes`` applied (validated again)."""
    return dataclasses.replace(self, **changes)


def first_mismatch(saved: Mapping[str, Any], config: TrainConfig) -> Optional[str]:
  """The first field whose value differs between a saved config dict and ``config``.

  Only fields that change what a step computes count; see
  :data:`RESUMABLE_CHANGES` (and ``steps`` under the constant schedule).
  ``data`` (a path) is not compared: the caller compares the corpus hashes,
  so a moved corpus resumes and an edited one does not.

  Returns:
    A message ``"field: saved value → new value"``, or ``None`` when they agree.
  """
  current = config.to_dict()
  ignore = set(RESUMABLE_CHANGES) | {"data"}
  if current["schedule"] == "constant" and saved.get("schedule") == "constant":
    ignore.add("steps")
  for name, value in current.items():
    if name in ignore:
      continue
    old = _json_normal(saved.get(name, "<missing>"))
    if old == value:
      continue
    if isinstance(old, dict) and isinstance(value, dict):
      for key in sorted(set(old) | set(value)):
        if old.get(key, "<unset>") != value.get(key, "<unset>"):
          return (f"{name}[{key!r}] is {old.get(key, '<unset>')!r} in the checkpoint "
                  f"but {value.get(key, '<unset>')!r} now")
    return f"{name} is {old!r} in the checkpoint but {value!r} now"
  return None
