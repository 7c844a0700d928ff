"""Resuming: a run killed with SIGKILL after a checkpoint continues exactly; bad checkpoints fail cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import pytest

from muonjax.train import Checkpointer, TrainConfig, read_jsonl, train

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)

# Every test here resumes (or refuses to resume) a real 8-step training run with
# checkpoints: CI's second tier (e2e) runs them.
pytestmark = pytest.mark.e2e

# Runs the config in argv[1] and SIGKILLs itself right after the step-4 checkpoint
# is committed (on_step runs after the save returns).
KILLED_RUN = """
import json, os, signal, sys
from muonjax.train import TrainConfig, train

def kill_at_4(step, record):
  if step == 4:
    os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig.from_dict(json.loads(sys.argv[1])), on_step=kill_at_4)
"""


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  """A persistent compilation cache: the three runs of one program compile it once."""
  yield from helpers.persistent_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  return helpers.write_word_corpus(tmp_path_factory.mktemp("corpus") / "text.txt",
                                   ["class", "import", "lambda", "x", "y", "=", "+", "(", ")", "[", "]", ":", "pass"], seed=3)


def config_in(folder, corpus_file, **overrides) -> TrainConfig:
  values = dict(model="gpt", model_fields=dict(TINY, dropout=0.1), optimizer="muon",
                learning_rate=0.02, schedule="cosine", warmup_steps=2, steps=8,
                batch_size=4, seq_len=16, eval_every=2, eval_batches=2, data=corpus_file,
                checkpoint_dir=os.path.join(folder, "ckpt"), checkpoint_every=2, keep=2,
                log_path=os.path.join(folder, "log.jsonl"))
  values.update(overrides)
  return TrainConfig(**values)


@pytest.fixture(scope="module")
def straight(jax_cache, corpus_file, tmp_path_factory):
  """8 steps in one go (dropout on, so the per-step keys matter)."""
  config = config_in(str(tmp_path_factory.mktemp("straight")), corpus_file)
  return config, train(config)


@pytest.mark.e2e
def test_sigkill_after_checkpoint_then_resume_is_exact(straight, jax_cache, corpus_file,
                                                        tmp_path):
  config, result = straight
  resumed = config_in(str(tmp_path), corpus_file)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get(
      "PYTHONPATH")])), JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=jax_cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
      # The straight run compiled in this process with tests/conftest.py's setting; the
      # killed run must compile (or load) the same program for bit-identical losses.
      JAX_DISABLE_MOST_OPTIMIZATIONS=str(jax.config.read("jax_disable_most_optimizations")).lower())
  proc = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(resumed.to_dict())],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert Checkpointer(resumed.checkpoint_dir).steps() == [2, 4]
  assert [r["step"] for r in read_jsonl(resumed.log_path)] == list(range(1, 5))

  again = train(resumed, resume=True)
  assert again["resumed_from"] == 4
  want = read_jsonl(config.log_path)
  got = read_jsonl(resumed.log_path)
  assert [r["step"] for r in got] == list(range(1, 9))
  for key in ("loss", "ce", "lr", "grad_norm", "update_rms/muon", "update_rms/adam"):
    assert [r[key] for r in got] == [r[key] for r in want], key
  assert [r.get("eval_loss") for r in got] == [r.get("eval_loss") for r in want]
  assert again["eval_history"] == result["eval_history"]
  assert again["final_val_loss"] == result["final_val_loss"]
  assert Checkpointer(resumed.checkpoint_dir).steps() == [6, 8]  # keep=2

  finished = train(resumed, resume=True)  # nothing left to do
  assert finished["resumed_from"] == 8
  assert finished["final_train_loss"] == result["final_train_loss"]


@pytest.mark.parametrize("change, field", [
    (dict(learning_rate=0.03), "learning_rate"),
    (dict(model_fields=dict(TINY, dropout=0.1, d_model=32)), r"model_fields\['d_model'\]"),
    (dict(optimizer="adamw"), "optimizer"),
    (dict(batch_size=8), "batch_size"),
    (dict(seed=1), "seed"),
])
def test_resume_with_another_config_names_the_field(straight, change, field):
  config, _ = straight
  before = sorted(os.listdir(config.checkpoint_dir))
  with pytest.raises(ValueError, match=f"cannot resume.*{field}") as info:
    train(config.replace(**change), resume=True)
  assert "\n" not in str(info.value)
  assert sorted(os.listdir(config.checkpoint_dir)) == before


def test_resume_on_another_corpus_is_refused(straight, tmp_path):
  config, _ = straight
  other = tmp_path / "other.txt"
  other.write_text(open(config.data).read().replace("x", "z"))
  with pytest.raises(ValueError, match="corpus differs"):
    train(config.replace(data=str(other)), resume=True)


def test_fresh_run_into_a_used_checkpoint_dir_is_refused(straight):
  config, _ = straight
  with pytest.raises(ValueError, match="already holds a checkpoint"):
    train(config)


@pytest.mark.parametrize("damage", ["meta", "state"])
def test_corrupt_checkpoint_is_one_line_error(straight, tmp_path, damage):
  config, _ = straight
  copy = config.replace(checkpoint_dir=str(tmp_path / "ckpt"), log_path=None)
  shutil.copytree(config.checkpoint_dir, copy.checkpoint_dir)
  # Every checkpoint damaged (one damaged while an older one verifies is resumed
  # from the older one: tests/test_reliability.py).
  for step in ("6", "8"):
    for root, _, files in os.walk(os.path.join(copy.checkpoint_dir, step, damage)):
      for name in files:
        if name != "commit_success.txt":
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"\x00garbage")
  with pytest.raises(ValueError, match="corrupt") as info:
    train(copy, resume=True)
  assert "\n" not in str(info.value)
