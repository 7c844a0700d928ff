"""Metrics of a training run: the JSONL log, per-group update RMS, run facts.

One JSON object per line, one line per step (keys in :data:`STEP_KEYS`)::

    step            update index, 1-based
    loss            training objective on this step's batch (before the update)
    <term>          each term of loss_and_metrics' dict, e.g. "ce"
    lr              the schedule's learning rate for this update (Momo may step less)
    grad_norm       global L2 norm of the (accumulated) gradient
    update_rms/<g>  RMS of the parameter change over the leaves of group g
                    ("muon": matrices routed to Muon, "adam": the rest)
    step_time       seconds of this step (host to result; the first includes compilation)
    tokens_per_s    tokens of this step / step_time
    elapsed         seconds since the run (or resumed run) started
    eval_loss       validation cross-entropy after this update, when evaluated
    eval_accuracy   validation next-token accuracy (arg-max), with eval_loss

Non-finite numbers are written as ``null`` (strict JSON).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from typing import Any, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

STEP_KEYS = ("step", "loss", "lr", "grad_norm", "step_time", "tokens_per_s", "elapsed")
EVAL_KEY = "eval_loss"
EVAL_ACCURACY_KEY = "eval_accuracy"
UPDATE_RMS_PREFIX = "update_rms/"


def _clean(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if isinstance(value, (np.generic, jax.Array)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def to_json(value: Any) -> str:
  """``json.dumps`` with NumPy scalars unwrapped and non-finite floats as ``null``."""
  return json.dumps(_clean(value), allow_nan=False)


class JsonlLog:
  """Append-only metrics log; each record is flushed as it is written.

  Args:
    path: the ``.jsonl`` file (parent folders are created).
    keep_through: ``None`` starts a new file; a step number keeps the records
      with ``step <= keep_through`` of an existing file and drops the rest
      (resuming from that step's checkpoint).
  """

  def __init__(self, path: str, *, keep_through: Optional[int] = None):
    self.path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(parent, exist_ok=True)
    kept = []
    if keep_through is not None and os.path.exists(self.path):
      kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= keep_through]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for record in kept:
        f.write(to_json(record) + "\n")
    os.replace(tmp, self.path)
    self._file = open(self.path, "a")

  def write(self, record: dict) -> None:
    self._file.write(to_json(record) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file (a torn last line, from a killed writer, is skipped)."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def group_rms(labels: list[str], before: Iterable[jax.Array],
              after: Iterable[jax.Array]) -> dict[str, jax.Array]:
  """``{"update_rms/<label>": RMS of after − before}`` over the leaves of each label.

  Args:
    labels: one group name per leaf.
    before, after: the parameter leaves before and after the update, in the
      order of ``labels``.
  """
  sums: dict[str, Any] = {}
  counts: dict[str, int] = {}
  for label, b, a in zip(labels, before, after, strict=True):
    d = a.astype(jnp.float32) - b.astype(jnp.float32)
    sums[label] = sums.get(label, 0.0) + jnp.sum(d * d)
    counts[label] = counts.get(label, 0) + d.size
  return {f"{UPDATE_RMS_PREFIX}{k}": jnp.sqrt(sums[k] / counts[k]) for k in sorted(sums)}


def steady_state_time(step_times: list[float]) -> Optional[float]:
  """Median step time excluding the first (compiling) step; ``None`` when empty."""
  times = step_times[1:] if len(step_times) > 1 else step_times
  return statistics.median(times) if times else None


def versions() -> dict[str, str]:
  """Versions of Python and the libraries a result depends on."""
  import importlib.metadata as md

  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy"):
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  from muonjax import __version__
  out["muonjax"] = __version__
  return out


def machine() -> dict[str, Any]:
  """Platform, CPU count and accelerator of this process."""
  devices = jax.devices()
  return {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "python_executable": sys.executable,
  }
