"""Ctrl-C during training: finish the current step, checkpoint it, then stop.

:func:`deferred_sigint` turns the first SIGINT into a flag the loop polls after
each step; :class:`TrainingInterrupted` is what :func:`muonjax.train.train`
raises then.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional


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



@contextlib.contextmanager
def deferred_sigint():
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

