"""Checkpoints of a training run with orbax's ``CheckpointManager``.

A checkpoint is one step directory with two items, written atomically (orbax
writes to a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoints intact):

* ``state``: every array of the NNX state of ``(model, optimizer)`` (params,
  optimizer step, optax state), as a flat dict ``{"00000": array, ...}`` in
  ``jax.tree`` leaf order. Flat keys survive any optax state structure
  (``optax.partition``'s ``MaskedNode``\\ s, named tuples);
* ``meta`` (JSON): the step, the leaf paths and shapes (to explain a
  structural mismatch), the :class:`TrainConfig` dict, the data stream state,
  the corpus info, the RNG rule, the evaluation history and the last log record.

The newest ``keep`` checkpoints are kept.

Integrity: after orbax commits a step directory, :meth:`Checkpointer.save`
writes ``integrity.json`` into it (the SHA-256 and size of every file orbax
wrote), through a temporary file, ``fsync`` and an atomic rename. A step
directory without a valid record (a process killed between orbax's commit and
the record) is not a finished checkpoint: :meth:`~Checkpointer.steps` skips it
and the next save of that step replaces it. :meth:`~Checkpointer.verify`
recomputes the hashes; :meth:`~Checkpointer.restore` verifies first, so a
flipped bit or a deleted file raises :class:`CorruptCheckpointError` (naming
the path) instead of restoring wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

STATE, META = "state", "meta"
INTEGRITY = "integrity.json"
_INTEGRITY_VERSION = 1


class CorruptCheckpointError(ValueError):
  """A checkpoint failed verification or could not be read (the message names its path)."""


class CheckpointFallbackWarning(UserWarning):
  """The newest checkpoint failed verification; an older verified one is used."""


def leaf_paths(state: Any) -> list[str]:
  """``jax.tree_util.keystr`` of every leaf of ``state``, in leaf order."""
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


def _flat(leaves: list) -> dict:
  return {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _files(step_dir: str) -> list[str]:
  """Every regular file under ``step_dir`` except the integrity record, relative, sorted."""
  out = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != INTEGRITY:
        out.append(rel)
  return sorted(out)


def _fsync_dir(path: str) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _sync_processes(name: str) -> None:
  """A barrier across processes (nothing on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def write_integrity(step_dir: str) -> dict:
  """Hashes every file of a committed step directory into its ``integrity.json``.

  Written to a temporary file, fsynced, renamed into place and the directory
  fsynced, so the record is either absent or complete.
  """
  record = {"version": _INTEGRITY_VERSION, "algorithm": "sha256",
            "files": {rel: {"sha256": _sha256(os.path.join(step_dir, rel)),
                            "size": os.path.getsize(os.path.join(step_dir, rel))}
                      for rel in _files(step_dir)}}
  tmp = os.path.join(step_dir, INTEGRITY + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, INTEGRITY))
  _fsync_dir(step_dir)
  return record


def read_integrity(step_dir: str) -> Optional[dict]:
  """The integrity record of a step directory, or ``None`` when absent or unreadable."""
  try:
    with open(os.path.join(step_dir, INTEGRITY)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  if (not isinstance(record, dict) or record.get("version") != _INTEGRITY_VERSION
      or not isinstance(record.get("files"), dict) or not record["files"]):
    return None
  return record


def verify_integrity(step_dir: str) -> None:
  """Checks every file of ``step_dir`` against its integrity record.

  Raises:
    CorruptCheckpointError: no valid record, a file missing, added, resized or
      with another SHA-256 (one line naming the directory and the file).
  """
  record = read_integrity(step_dir)
  if record is None:
    raise CorruptCheckpointError(f"checkpoint {step_dir} has no valid {INTEGRITY} "
                                 "(unfinished or damaged)")
  want = record["files"]
  have = set(_files(step_dir))
  for rel in sorted(set(want) | have):
    path = os.path.join(step_dir, rel)
    if rel not in have:
      raise CorruptCheckpointError(f"checkpoint {step_dir} is corrupt: {rel} is missing")
    if rel not in want:
      raise CorruptCheckpointError(f"checkpoint {step_dir} is corrupt: unexpected file {rel}")
    if (os.path.getsize(path) != want[rel].get("size")
        or _sha256(path) != want[rel].get("sha256")):
      raise CorruptCheckpointError(f"checkpoint {step_dir} is corrupt: {rel} does not match "
                                   f"its SHA-256 in {INTEGRITY}")


class Checkpointer:
  """Saves and restores training checkpoints in ``directory``.

  Args:
    directory: checkpoint root (created on the first save).
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory: str, *, keep: int = 3):
    self.directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f"checkpoint_dir {directory!r} exists and is not a directory")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=False, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE, META))

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def steps(self) -> list[int]:
    """Steps of the finished checkpoints (committed by orbax, with an integrity record), oldest first.

    The record is only checked for presence here; :meth:`verify` checks the hashes.
    """
    return [s for s in self.all_steps() if read_integrity(self._step_dir(s)) is not None]

  def all_steps(self) -> list[int]:
    """Steps of every step directory orbax committed, finished or not, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def newest_verified(self, on_corrupt=None) -> Optional[int]:
    """The newest checkpoint that passes :meth:`verify` and whose metadata reads.

    Args:
      on_corrupt: called with the one-line message of every newer checkpoint
        that fails (``warnings.warn`` by default).

    Returns:
      Its step, or ``None`` when the directory holds no step directory at all.

    Raises:
      CorruptCheckpointError: step directories exist but none verifies.
    """
    steps = self.all_steps()
    failures = []
    for step in reversed(steps):
      try:
        self.verify(step)
        self.read_meta(step)
      except CorruptCheckpointError as e:
        failures.append(str(e))
        continue
      for message in failures:  # reported only when an older one is used instead
        message = f"{message}; falling back to the previous verified checkpoint (step {step})"
        if on_corrupt is not None:
          on_corrupt(message)
        else:
          warnings.warn(message, CheckpointFallbackWarning, stacklevel=2)
      return step
    if steps:
      raise CorruptCheckpointError(
          f"no checkpoint in {self.directory} passes verification (newest: {failures[0]})")
    return None

  def verify(self, step: int) -> None:
    """Recomputes the SHA-256 of every file of checkpoint ``step`` against its record.

    Raises:
      CorruptCheckpointError: see :func:`verify_integrity`.
    """
    verify_integrity(self._step_dir(step))

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or ``None``."""
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Writes ``state`` (an NNX state pytree) and ``meta`` (JSON) as checkpoint ``step``.

    Returns when the checkpoint and its integrity record are committed. Saving
    a step that exists and verifies is a no-op; one that does not (killed
    before its record, or damaged: a run resumed from an older checkpoint
    reaches it again) is replaced.
    """
    if step in self.all_steps():
      try:
        self.verify(step)
        return
      except CorruptCheckpointError:
        if jax.process_index() == 0:  # one process edits the shared folder
          shutil.rmtree(self._step_dir(step))
        _sync_processes(f"muonjax_checkpoint_replace_{step}")
        self._manager.reload()
    os.makedirs(self.directory, exist_ok=True)
    leaves = jax.tree.leaves(state)
    meta = dict(meta, step=step, leaf_paths=leaf_paths(state),
                leaf_shapes=[[list(x.shape), str(x.dtype)] for x in leaves])
    self._manager.save(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(_flat(leaves)), META: ocp.args.JsonSave(meta)}))
    self._manager.wait_until_finished()
    # Every process's shards are committed before the primary hashes them; the
    # others wait for the record so no process reads a step without it.
    _sync_processes(f"muonjax_checkpoint_saved_{step}")
    if jax.process_index() == 0:
      write_integrity(self._step_dir(step))
    _sync_processes(f"muonjax_checkpoint_integrity_{step}")

  def read_meta(self, step: int) -> dict:
    """The JSON metadata of checkpoint ``step``.

    Raises:
      ValueError: the checkpoint is missing or unreadable (one line).
    """
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
      meta = restored[META]
    except Exception as e:  # orbax raises many types for damaged files
      raise CorruptCheckpointError(f"checkpoint {self._step_dir(step)} is corrupt or "
                                   f"unreadable ({_one_line(e)})") from None
    if not isinstance(meta, dict) or "step" not in meta:
      raise CorruptCheckpointError(f"checkpoint {self._step_dir(step)} is corrupt: no metadata")
    return meta

  def restore(self, step: int, like: Any, *, verify: bool = True) -> tuple[Any, dict]:
    """Checkpoint ``step`` as a pytree shaped like ``like``, and its metadata.

    Args:
      step: the checkpoint's step.
      like: a state pytree with the expected structure, shapes, dtypes and
        shardings (a freshly built one); its arrays are not used.
      verify: check the integrity record first (skip only right after
        :meth:`verify` or :meth:`newest_verified` checked this step).

    Raises:
      ValueError: the saved leaves differ from ``like``'s (names the first
        differing leaf).
      CorruptCheckpointError: the checkpoint fails verification or is
        unreadable (one line naming its path).
    """
    if verify:
      self.verify(step)
    meta = self.read_meta(step)
    leaves, treedef = jax.tree.flatten(like)
    paths = leaf_paths(like)
    saved_paths = meta.get("leaf_paths", [])
    saved_shapes = meta.get("leaf_shapes", [])
    want_shapes = [[list(x.shape), str(x.dtype)] for x in leaves]
    if saved_paths != paths or saved_shapes != want_shapes:
      for i in range(max(len(paths), len(saved_paths))):
        have = (saved_paths[i:i + 1], saved_shapes[i:i + 1])
        want = (paths[i:i + 1], want_shapes[i:i + 1])
        if have != want:
          raise ValueError(
              f"checkpoint {self._step_dir(step)} does not match the model/optimizer: "
              f"leaf {i} is {have[0][0] if have[0] else None} {have[1][0] if have[1] else ''}"
              f" there but {want[0][0] if want[0] else None} "
              f"{want[1][0] if want[1] else ''} now")
    abstract = _flat([jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                      for x in leaves])
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract)}))
      arrays = restored[STATE]
      values = [arrays[k] for k in sorted(abstract)]
    except Exception as e:
      raise CorruptCheckpointError(f"checkpoint {self._step_dir(step)} is corrupt or "
                                   f"unreadable ({_one_line(e)})") from None
    return jax.tree.unflatten(treedef, values), meta

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def close(self) -> None:
    """Releases orbax's resources (idempotent)."""
    manager, self._manager = self._manager, None
    if manager is not None:
      manager.close()
