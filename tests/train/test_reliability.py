"""Reliability: argument and input checks, checkpoint integrity, resume of finished runs,
--out checks, honest messages, skipping non-finite gradients (issue: reliability)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import cli
from muonjax.train import (
    CheckpointFallbackWarning,
    Checkpointer,
    CorruptCheckpointError,
    NonFiniteLossError,
    TrainConfig,
    TrainingInterrupted,
    read_jsonl,
    train,
)
from muonjax.train import loop, optimizer as train_optimizer, step as train_step
from muonjax.transforms import validation

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)


# --- argument checks --------------------------------------------------------


@pytest.mark.parametrize("value, fragment", [
    ("a", "must be a number"), (None, "must be a number"), (True, "must be a number"),
    ([0.1], "must be a number"), (float("nan"), "finite"), (float("inf"), "finite"),
    (-float("inf"), "finite"), (0.0, "> 0"), (-1, "> 0")])
def test_check_positive_rejects_non_numbers_and_non_finite(value, fragment):
  with pytest.raises(ValueError, match=f"^eps .*{fragment}|^eps must be {fragment}"):
    validation.check_positive("eps", value)


def test_checks_accept_numbers_arrays_and_traced_values():
  validation.check_positive("eps", np.float32(1e-3))
  validation.check_non_negative("eps", jnp.asarray(0.0))
  validation.check_unit_interval("beta", 1, closed=True)
  validation.check_learning_rate("learning_rate", optax.constant_schedule(0.1))
  jax.jit(lambda b: validation.check_unit_interval("beta", b) or b)(0.5)  # traced: unchecked
  for bad in (float("nan"), "0.5", 1.0):
    with pytest.raises(ValueError, match="beta"):
      validation.check_unit_interval("beta", bad)
  with pytest.raises(ValueError, match="learning_rate must be a number"):
    validation.check_learning_rate("learning_rate", "0.1")


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), "a", None, -0.1])
def test_muon_rejects_bad_learning_rates_at_construction(lr):
  with pytest.raises(ValueError, match="learning_rate"):
    mj.muon(lr)


def test_muon_accepts_a_schedule():
  mj.muon(optax.linear_schedule(0.0, 0.02, 10))


@pytest.mark.parametrize("fn", [mj.newton_schulz, mj.polar_express, mj.polar_factor])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (2, 0, 4), (0, 3, 3)])
def test_empty_matrices_return_an_empty_result(fn, shape):
  out = fn(jnp.zeros(shape, jnp.float32))
  assert out.shape == shape and out.dtype == jnp.float32


@pytest.mark.parametrize("fn", [mj.newton_schulz, mj.polar_express, mj.polar_factor])
def test_array_likes_are_converted_and_bad_inputs_named(fn):
  x = [[1.0, 2.0], [3.0, 4.0]]
  np.testing.assert_allclose(fn(x), fn(jnp.asarray(x)))
  for bad, fragment in [([[1.0, 2.0], [3.0]], "cannot convert"), (None, "NoneType"),
                        ("ab", "str"), (jnp.ones(3), r"shape \(3,\)")]:
    with pytest.raises(ValueError, match=f"x must be an array.*{fragment}"):
      fn(bad)


@pytest.mark.parametrize("jit", [False, True])
def test_gradient_of_another_shape_names_the_leaf(jit):
  tx = mj.muon(0.02)
  params = {"a": {"w": jnp.ones((4, 3))}, "b": jnp.ones(3)}
  grads = {"a": {"w": jnp.ones((3, 4))}, "b": jnp.ones(3)}
  update = jax.jit(tx.update) if jit else tx.update
  # The routing decided at init names the leaf first, Muon and AdamW leaves alike.
  with pytest.raises(ValueError, match=r"leaf a/w has shape \(3, 4\).*\(4, 3\)"):
    update(grads, tx.init(params), params)
  bias = dict(params, b=jnp.ones(3))
  with pytest.raises(ValueError, match=r"leaf b has shape \(4,\).*\(3,\)"):
    update(dict(grads, a=params["a"], b=jnp.ones(4)), tx.init(bias), bias)
  # A stage used on its own (no alias) names the leaf from its buffers.
  stage = mj.momentum(0.9)
  stage_update = jax.jit(stage.update) if jit else stage.update
  with pytest.raises(ValueError, match=r"\['a'\]\['w'\] has shape \(3, 4\).*\(4, 3\)"):
    stage_update(grads, stage.init(params), params)


# --- skipping non-finite gradients ------------------------------------------


def test_skip_nonfinite_zeroes_the_update_and_keeps_the_state():
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  tx = train_optimizer.skip_nonfinite(optax.inject_hyperparams(mj.muon)(learning_rate=0.02))
  state = tx.init(params)
  good = {"w": jnp.full((4, 3), 0.1), "b": jnp.full(3, 0.1)}
  _, state = tx.update(good, state, params)
  bad = {"w": good["w"].at[0, 0].set(jnp.nan), "b": good["b"]}
  updates, skipped = tx.update(bad, state, params)
  assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
  chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), skipped.inner_state,
                            state.inner_state)
  assert all(jax.tree.leaves(chex_equal))  # momentum, counts, hyperparameters kept
  assert int(skipped.notfinite_count) == 1 and int(skipped.total_notfinite) == 1
  updates, after = tx.update(good, skipped, params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  assert int(after.notfinite_count) == 0 and int(after.total_notfinite) == 1

  # Through nnx.Optimizer, as the trainer builds it.
  model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, train_optimizer.skip_nonfinite(mj.muon(0.02)), wrt=nnx.Param)
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  grads = jax.tree.map(lambda p: jnp.full(p.shape, jnp.inf), nnx.state(model, nnx.Param))
  optimizer.update(model, grads)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, before, nnx.state(model, nnx.Param)))
  assert train_optimizer.skip_counts(optimizer)[1] == 1


def test_train_config_skip_fields():
  assert TrainConfig().skip_nonfinite is True
  with pytest.raises(ValueError, match="skip_nonfinite"):
    TrainConfig(skip_nonfinite=1)
  with pytest.raises(ValueError, match="max_consecutive_nonfinite"):
    TrainConfig(max_consecutive_nonfinite=0)


# --- checkpoint integrity (no training: a Checkpointer on a small pytree) --------------


def small_state(seed=0):
  rng = np.random.RandomState(seed)
  return {"w": jnp.asarray(rng.randn(64, 32), jnp.float32), "b": jnp.asarray(rng.randn(32))}


def biggest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs]
  return max(files, key=os.path.getsize)


def flip_bit(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 1
  with open(path, "wb") as f:
    f.write(data)


@pytest.fixture
def two_checkpoints(tmp_path):
  with Checkpointer(str(tmp_path / "ckpt"), keep=3) as ckpt:
    for step in (1, 2):
      ckpt.save(step, small_state(step), {"note": step})
  return str(tmp_path / "ckpt")


def test_every_checkpoint_has_a_verified_integrity_record(two_checkpoints):
  with Checkpointer(two_checkpoints) as ckpt:
    assert ckpt.steps() == [1, 2]
    for step in (1, 2):
      ckpt.verify(step)
      assert os.path.exists(os.path.join(two_checkpoints, str(step), "integrity.json"))
    state, meta = ckpt.restore(2, small_state())
    np.testing.assert_array_equal(state["w"], small_state(2)["w"])
    ckpt.verify(2)  # restoring changes no file


def test_a_flipped_bit_is_detected_and_the_previous_checkpoint_used(two_checkpoints):
  target = biggest_file(os.path.join(two_checkpoints, "2"))
  flip_bit(target)
  with Checkpointer(two_checkpoints) as ckpt:
    with pytest.raises(CorruptCheckpointError, match=os.path.relpath(target, os.path.join(
        two_checkpoints, "2"))):
      ckpt.restore(2, small_state())
    with pytest.warns(CheckpointFallbackWarning, match=f"{two_checkpoints}/2 is corrupt.*"
                      r"previous verified checkpoint \(step 1\)"):
      assert ckpt.newest_verified() == 1
    ckpt.save(2, small_state(2), {"note": 2})  # reached again: replaced, verified
    ckpt.verify(2)


def test_no_verified_checkpoint_is_one_line_error(two_checkpoints):
  for step in ("1", "2"):
    for root, _, files in os.walk(os.path.join(two_checkpoints, step)):
      if "manifest.ocdbt" in files:
        os.remove(os.path.join(root, "manifest.ocdbt"))
  with Checkpointer(two_checkpoints) as ckpt, warnings.catch_warnings():
    warnings.simplefilter("error")  # nothing is reported as a fallback
    with pytest.raises(CorruptCheckpointError, match="manifest.ocdbt is missing") as info:
      ckpt.newest_verified()
  assert "\n" not in str(info.value)


def test_a_step_without_its_record_is_not_finished(two_checkpoints):
  os.remove(os.path.join(two_checkpoints, "2", "integrity.json"))
  with Checkpointer(two_checkpoints) as ckpt:
    assert ckpt.steps() == [1] and ckpt.all_steps() == [1, 2]
    with pytest.warns(CheckpointFallbackWarning, match="no valid integrity.json"):
      assert ckpt.newest_verified() == 1
    ckpt.save(2, small_state(2), {"note": 2})
    assert ckpt.steps() == [1, 2]


def test_checkpointer_close_is_idempotent(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "c"))
  ckpt.close()
  ckpt.close()


# --- CLI: --out, messages ---------------------------------------------------


@pytest.mark.parametrize("command", [["train", "--steps", "1"], ["compare", "--preset", "smoke"],
                                     ["sweep", "--lrs", "0.1"]])
@pytest.mark.parametrize("kind", ["proc", "under_file", "file"])
def test_out_that_cannot_be_created_is_one_line_exit_2(command, kind, tmp_path, capsys,
                                                       monkeypatch):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  out = {"proc": "/proc/muonjax-x", "under_file": str(a_file / "sub"), "file": str(a_file)}[kind]
  started = []
  monkeypatch.setattr(loop, "Engine", lambda *a, **k: started.append(1))
  assert cli.main(command + ["--out", out, "--quiet"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--out" in err and out in err, err
  assert not started


@pytest.mark.parametrize("error, fragment", [
    (TrainingInterrupted(0, None), "before any step completed; no checkpoint was written"),
    (TrainingInterrupted(7, 7), r"last completed step \(7\) is checkpointed"),
    (KeyboardInterrupt(), "before training started; no checkpoint was written")])
def test_ctrl_c_message_says_what_was_saved(error, fragment, tmp_path, capsys, monkeypatch):
  def interrupted(*args, **kwargs):
    raise error
  monkeypatch.setattr("muonjax.train.train", interrupted)
  assert cli.main(["train", "--steps", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 130
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert __import__("re").search(fragment, err), err
  assert "was checkpointed" not in err


# --- training runs (tiny model, one compiled program shared through the cache) ---------


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  yield from helpers.persistent_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  return helpers.write_word_corpus(tmp_path_factory.mktemp("corpus") / "text.txt",
                                   ["a", "b", "c", "d", "=", "(", ")"], seed=1, lines=400)


def run_flags(corpus_file, out, steps):
  flags = ["train", "--model", "gpt", "--optimizer", "muon", "--lr", "0.02", "--schedule",
           "constant", "--steps", str(steps), "--batch-size", "2", "--seq-len", "8",
           "--eval-every", "0", "--eval-batches", "1", "--data", corpus_file,
           "--checkpoint-every", "2", "--out", str(out), "--quiet"]
  for key, value in TINY.items():
    flags += ["--set", f"{key}={value}"]
  return flags


@pytest.fixture(scope="module")
def finished_run(jax_cache, corpus_file, tmp_path_factory):
  out = tmp_path_factory.mktemp("run") / "run"
  assert cli.main(run_flags(corpus_file, out, 4)) == 0
  return out


def snapshot(folder):
  return {name: (folder / name).read_bytes() for name in ("result.json", "metrics.jsonl")}


@pytest.mark.e2e
def test_resuming_a_finished_run_changes_nothing(finished_run, corpus_file, tmp_path, capsys):
  import shutil
  run = tmp_path / "run"
  shutil.copytree(finished_run, run)
  before = snapshot(run)
  capsys.readouterr()
  assert cli.main(run_flags(corpus_file, run, 4) + ["--resume"]) == 0
  out = capsys.readouterr().out
  assert "already finished at step 4" in out and "nothing to do" in out
  assert snapshot(run) == before

  # --steps grew (constant schedule): it extends; one step is its compiling step, so
  # the timing of the earlier invocation is kept rather than replaced by null.
  assert cli.main(run_flags(corpus_file, run, 5) + ["--resume"]) == 0
  result = json.loads((run / "result.json").read_text())
  earlier = json.loads(before["result.json"])
  assert result["steps"] == 5 and result["steps_run"] == 1 and result["resumed_from"] == 4
  assert result["time_per_step"] == earlier["time_per_step"] is not None
  assert "earlier invocation" in result["timing"]
  assert [r["step"] for r in read_jsonl(str(run / "metrics.jsonl"))] == [1, 2, 3, 4, 5]


@pytest.mark.e2e
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    finished_run, corpus_file, tmp_path, capsys):
  import shutil
  run = tmp_path / "run"
  shutil.copytree(finished_run, run)
  want = json.loads((run / "result.json").read_text())["final_train_loss"]
  flip_bit(biggest_file(str(run / "checkpoints" / "4")))
  capsys.readouterr()
  assert cli.main(run_flags(corpus_file, run, 4) + ["--resume"]) == 0
  err = capsys.readouterr().err
  assert "checkpoints/4 is corrupt" in err and "(step 2)" in err
  result = json.loads((run / "result.json").read_text())
  assert result["resumed_from"] == 2 and result["final_train_loss"] == want
  with Checkpointer(str(run / "checkpoints")) as ckpt:
    ckpt.verify(4)


@pytest.mark.training
def test_nonfinite_gradients_are_skipped_then_stop(jax_cache, corpus_file, tmp_path,
                                                   monkeypatch):
  original = train_step.loss_and_metrics

  def nan_gradient(model, x, y, key=None):  # a finite loss with a NaN gradient
    loss, terms = original(model, x, y, key=key)
    w = jax.tree.leaves(nnx.state(model, nnx.Param))[0]
    u = jnp.sum(w) - jax.lax.stop_gradient(jnp.sum(w))
    return loss + 0.0 * jnp.sqrt(jnp.abs(u)), terms

  monkeypatch.setattr(train_step, "loss_and_metrics", nan_gradient)
  config = TrainConfig(model="gpt", model_fields=TINY, optimizer="muon", schedule="constant",
                       steps=5, batch_size=2, seq_len=8, eval_every=0, eval_batches=1,
                       data=corpus_file, checkpoint_dir=str(tmp_path / "ckpt"),
                       checkpoint_every=1, log_path=str(tmp_path / "log.jsonl"),
                       max_consecutive_nonfinite=2)
  with pytest.raises(NonFiniteLossError, match="gradient") as info:
    train(config)
  assert info.value.step == 3 and info.value.checkpoint_step == 2
  records = read_jsonl(config.log_path)
  assert [r.get("skipped_steps") for r in records] == [1, 2, 3]
  assert records[-1]["error"] == "non-finite"
  assert all(r["update_rms/muon"] == 0 for r in records[:2])  # zero updates
  with Checkpointer(config.checkpoint_dir) as ckpt:
    assert ckpt.steps() == [1, 2]
    ckpt.verify(2)


@pytest.mark.e2e
def test_missing_manifests_give_one_line_and_a_clean_exit(finished_run, corpus_file, tmp_path):
  import shutil
  run = tmp_path / "run"
  shutil.copytree(finished_run, run)
  for root, _, files in os.walk(run / "checkpoints"):
    if "manifest.ocdbt" in files:
      os.remove(os.path.join(root, "manifest.ocdbt"))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get(
      "PYTHONPATH")])), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "muonjax", *run_flags(corpus_file, run, 4),
                         "--resume"], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "manifest.ocdbt is missing" in lines[0], proc.stderr[-2000:]
