"""Training engine: config validation, schedules, the step, the loop, its logs and stops."""

from __future__ import annotations

import json
import math
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import helpers
from muonjax import models
from muonjax.train import (
    STEP_KEYS,
    Checkpointer,
    NonFiniteLossError,
    TrainConfig,
    build_optimizer,
    build_train_step,
    make_schedule,
    param_labels,
    read_jsonl,
    train,
)
from muonjax.train.engine import Engine, model_fields

TINY = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)


@pytest.fixture(scope="module", autouse=True)
def jax_cache(tmp_path_factory):
  """A persistent compilation cache: runs of one program (here the logged run and
  the interrupted one) compile it once."""
  yield from helpers.persistent_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  """~40 KB of deterministic Python-like text."""
  return helpers.write_word_corpus(tmp_path_factory.mktemp("corpus") / "text.txt",
                                   ["def", "return", "self", "x", "y", "for", "in", "range", "if", "else", "(", ")", ":"], seed=0)


def tiny(corpus_file, **overrides) -> TrainConfig:
  values = dict(model="gpt", model_fields=TINY, optimizer="muon", learning_rate=0.02,
                schedule="constant", steps=6, batch_size=4, seq_len=16, eval_every=3,
                eval_batches=2, data=corpus_file)
  values.update(overrides)
  return TrainConfig(**values)


# One training program for the step and loop tests (the grad-accumulation check, the
# logged run, the non-finite stop, the interrupted runs): Muon with fp32 Newton-Schulz
# (no bf16 rounding flips between the accumulated and the big batch), 2 micro-batches
# of 4, a warmup of 2 steps. Learning rate, seed and step count are not part of the
# compiled program (tests/apps/test_study.py), so it is compiled once and loaded from
# the compilation cache by every other run of it.
SHARED = dict(optimizer_hparams=dict(compute_dtype=None), batch_size=4, grad_accum=2,
              warmup_steps=2)


def shared(corpus_file, **overrides) -> TrainConfig:
  return tiny(corpus_file, **{**SHARED, **overrides})


# --- config -----------------------------------------------------------------


@pytest.mark.parametrize("field, value, match", [
    ("learning_rate", 0.0, "learning_rate"),
    ("learning_rate", -1e-3, "learning_rate"),
    ("learning_rate", float("nan"), "learning_rate"),
    ("steps", 0, "steps"),
    ("batch_size", -2, "batch_size"),
    ("grad_accum", 0, "grad_accum"),
    ("seed", -1, "seed"),
    ("schedule", "linear", r"schedule.*'constant', 'cosine', 'wsd'"),
    ("val_fraction", 1.0, "val_fraction"),
    ("min_lr_ratio", 1.5, "min_lr_ratio"),
    ("warmup_steps", 100, "warmup_steps"),
    ("model", "transformerxl", r"model.*known: \['gpt'"),
    ("optimizer", "sgdx", r"optimizer.*known: \[.*'muon'"),
    ("optimizer_hparams", {"betaa": 0.9}, r"optimizer_hparams.*'betaa'"),
    ("optimizer_hparams", {"learning_rate": 0.1}, "learning_rate"),
    ("model_fields", {"d_modle": 8}, r"model_fields.*d_modle"),
    ("model_fields", {"max_seq_len": 8}, "max_seq_len"),
    ("optimizer_hparams", {"dimension_numbers": object()}, "JSON"),
])
def test_config_rejects_bad_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    TrainConfig(**{"steps": 10, field: value})


def test_config_round_trips_through_json():
  config = TrainConfig(model_fields=dict(d_model=32), optimizer="muon_adam",
                       optimizer_hparams=dict(adam_betas=(0.9, 0.95)), steps=7)
  again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
  assert again.to_dict() == config.to_dict()
  assert config.tokens_per_step == config.batch_size * config.seq_len
  with pytest.raises(ValueError, match=r"unknown TrainConfig field.*'stepz'"):
    TrainConfig.from_dict({"stepz": 3})


# --- schedules --------------------------------------------------------------


def test_schedule_values_at_key_steps():
  const = make_schedule("constant", learning_rate=1.0, steps=20, warmup_steps=4)
  assert [float(const(c)) for c in (0, 1, 3, 4, 19)] == pytest.approx([0.25, 0.5, 1, 1, 1])

  cos = make_schedule("cosine", learning_rate=2.0, steps=110, warmup_steps=10, min_lr_ratio=0.1)
  assert float(cos(0)) == pytest.approx(0.2)
  assert float(cos(9)) == pytest.approx(2.0)
  assert float(cos(10)) == pytest.approx(2.0)
  assert float(cos(60)) == pytest.approx(2.0 * 0.55)  # half way: r + (1 - r) / 2
  assert float(cos(110)) == pytest.approx(0.2)
  expected_last = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
  assert float(cos(109)) == pytest.approx(expected_last, rel=1e-5)

  wsd = make_schedule("wsd", learning_rate=1.0, steps=100, warmup_steps=10,
                      min_lr_ratio=0.0, decay_fraction=0.2)
  assert [float(wsd(c)) for c in (0, 9, 50, 79, 80, 90, 100)] == pytest.approx(
      [0.1, 1, 1, 1, 1, 0.5, 0])
  no_warmup = make_schedule("cosine", learning_rate=1.0, steps=10, min_lr_ratio=0.0)
  assert float(no_warmup(0)) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="warmup_steps"):
    make_schedule("cosine", learning_rate=1.0, steps=10, warmup_steps=10)
  with pytest.raises(ValueError, match="schedule"):
    make_schedule("step", learning_rate=1.0, steps=10)


# --- the step ---------------------------------------------------------------


def _one_update(config: TrainConfig, inputs, targets, **step_kwargs):
  """(loss, parameter change) of the first update of ``config`` on ``(2B, T)`` data."""
  model = models.build("gpt", rngs=0, vocab_size=256, max_seq_len=config.seq_len, **TINY)
  tx = step_kwargs.pop("tx", None) or build_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
  graphdef, state = nnx.split((model, optimizer))
  fn = jax.jit(build_train_step(
      graphdef, labels=param_labels(model, config.optimizer),
      grad_accum=config.grad_accum, seed=config.seed, pass_value=True, **step_kwargs))
  shape = (config.grad_accum, config.batch_size, config.seq_len)
  state, out = fn(state, inputs.reshape(shape), targets.reshape(shape), jnp.int32(1))
  after = jax.tree.leaves(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
  return out, [np.asarray(a) - b for a, b in zip(after, before)]


def _first_update(config: TrainConfig, inputs, targets):
  """(step outputs, parameter change) of the first update of ``train``'s own step
  (``muonjax.train.engine.Engine``) on ``(grad_accum * B, T)`` data."""
  engine = Engine(config, model_fields(config, 256), None)
  params = lambda state: jax.tree.leaves(nnx.state(nnx.merge(engine.graphdef, state)[0],
                                                   nnx.Param))
  before = [np.asarray(x) for x in params(engine.state)]
  shape = (config.grad_accum, config.batch_size, config.seq_len)
  state, out = engine.step(engine.state, inputs.reshape(shape), targets.reshape(shape), 1)
  return out, [np.asarray(a) - b for a, b in zip(params(state), before)]


def test_grad_accum_equals_one_big_batch(corpus_file):
  rng = np.random.RandomState(1)
  tokens = rng.randint(0, 256, size=(8, 17)).astype(np.int32)
  inputs, targets = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])
  # The accumulated side is the shared program; fp32 Newton-Schulz on both sides.
  big, d_big = _first_update(shared(corpus_file, batch_size=8, grad_accum=1), inputs, targets)
  acc, d_acc = _first_update(shared(corpus_file), inputs, targets)
  assert float(acc["loss"]) == pytest.approx(float(big["loss"]), abs=1e-5)
  assert float(acc["grad_norm"]) == pytest.approx(float(big["grad_norm"]), rel=1e-5)
  assert max(np.abs(d).max() for d in d_big) > 1e-3  # the update is not trivial
  for a, b in zip(d_acc, d_big):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert set(big["update_rms"]) == {"update_rms/adam", "update_rms/muon"}


def test_extra_args_fn_and_loss_value_reach_the_optimizer(corpus_file):
  """``tx.update`` gets ``value=loss`` and the hook's dict (averaged over micro-batches)."""

  def update(updates, state, params=None, *, value=None, probe=None, **extra):
    return jax.tree.map(lambda u: jnp.full_like(u, -(value + probe)), updates), state

  tx = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)
  hook = lambda model, batch: {"probe": jnp.mean(batch["inputs"].astype(jnp.float32))}
  tokens = np.random.RandomState(2).randint(0, 256, size=(8, 17)).astype(np.int32)
  inputs, targets = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])
  out, deltas = _one_update(tiny(corpus_file, optimizer="adamw", grad_accum=2),
                            inputs, targets, tx=tx, extra_args_fn=hook)
  expected = -(float(out["loss"]) + float(np.mean(tokens[:, :-1])))
  for d in deltas:
    np.testing.assert_allclose(d, expected, rtol=1e-5)


# --- the loop ---------------------------------------------------------------


def test_log_records_result_and_callback(corpus_file, tmp_path):
  seen = []
  config = shared(corpus_file, log_path=str(tmp_path / "log.jsonl"),
                  checkpoint_dir=str(tmp_path / "ckpt"))
  result = train(config, on_step=lambda step, record: seen.append((step, record)))
  records = read_jsonl(config.log_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] == [s for s, _ in seen]
  assert records == [r for _, r in seen]
  for r in records:
    assert set(STEP_KEYS) | {"ce", "update_rms/muon", "update_rms/adam"} <= set(r)
    assert all(math.isfinite(r[k]) for k in STEP_KEYS)
    assert ("eval_loss" in r) == (r["step"] in (3, 6))
  assert records[0]["lr"] == pytest.approx(0.01)  # warmup: η / 2
  assert records[0]["loss"] == pytest.approx(math.log(256), abs=1.0)
  assert records[-1]["loss"] < records[0]["loss"]

  assert result["final_train_loss"] == records[-1]["loss"]
  assert result["final_val_loss"] == records[-1]["eval_loss"]
  # The loss terms averaged over the last tenth of the steps (here: the last one).
  assert result["final_terms"] == {"ce": pytest.approx(records[-1]["ce"])}
  assert [h["step"] for h in result["eval_history"]] == [3, 6]
  assert result["time_per_step"] > 0 and result["tokens_per_s"] > 0
  assert result["n_params"] == models.param_count(models.build("gpt", vocab_size=256,
                                                                max_seq_len=16, **TINY))
  assert result["data"]["sha256"] and result["data"]["train_tokens"] > 0
  assert {"python", "jax", "flax", "optax", "muonjax"} <= set(result["versions"])
  assert {"platform", "cpu_count", "device_kind"} <= set(result["machine"])
  assert result["config"] == config.to_dict()
  json.dumps(result)  # serialisable
  assert Checkpointer(config.checkpoint_dir).steps() == [6]  # the last step is always saved
  with pytest.raises(ValueError, match="already holds a checkpoint"):
    train(config)  # nothing is overwritten


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(corpus_file, tmp_path):
  config = shared(corpus_file, learning_rate=1e30, steps=10,
                  checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1, keep=5,
                  log_path=str(tmp_path / "log.jsonl"))
  with pytest.raises(NonFiniteLossError, match="non-finite at step") as info:
    train(config)
  bad = info.value.step
  assert bad >= 2 and info.value.checkpoint_step == bad - 1
  checkpoints = Checkpointer(config.checkpoint_dir)
  assert checkpoints.latest_step() == bad - 1
  records = read_jsonl(config.log_path)
  assert records[-1]["step"] == bad and records[-1]["error"] == "non-finite"
  assert all(math.isfinite(r["loss"]) for r in records[:-1])


@pytest.mark.e2e
def test_keyboard_interrupt_saves_a_checkpoint(corpus_file, tmp_path):
  # The shared program (a compilation cache hit).
  config = shared(corpus_file, checkpoint_dir=str(tmp_path / "ckpt"))

  def stop_at_3(step, record):
    if step == 3:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train(config, on_step=stop_at_3)
  checkpoints = Checkpointer(config.checkpoint_dir)
  assert checkpoints.steps() == [3]
  meta = checkpoints.read_meta(3)
  assert meta["step"] == 3 and meta["last_record"]["step"] == 3 and meta["stream"]


@pytest.mark.e2e
def test_ctrl_c_finishes_the_step_then_saves(corpus_file, tmp_path):
  """A real SIGINT is deferred to the end of the step: the step completes, then it stops."""
  config = shared(corpus_file, checkpoint_dir=str(tmp_path / "ckpt"))
  finished = []

  def sigint_at_2(step, record):
    if step == 2:
      # raise_signal delivers to this (main) thread; os.kill may land on one of
      # XLA's threads and reach the Python handler a step later under load.
      signal.raise_signal(signal.SIGINT)
    finished.append(step)  # not reached if the signal raised at once

  # The deferral applies under Python's default handler; another test or library
  # in this worker process may have left a different one.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      train(config, on_step=sigint_at_2)
  finally:
    restored = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, previous)
  assert restored is signal.default_int_handler
  assert finished == [1, 2]
  assert Checkpointer(config.checkpoint_dir).steps() == [2]


@pytest.mark.training
def test_momo_trains_with_its_loss_value_and_grad_accum(corpus_file, tmp_path, monkeypatch):
  from muonjax.train import loop
  engines = []

  class Recorded(Engine):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      engines.append(self)

  monkeypatch.setattr(loop, "Engine", Recorded)
  config = tiny(corpus_file, optimizer="momo", learning_rate=0.01, grad_accum=2,
                log_path=str(tmp_path / "log.jsonl"))
  result = train(config)
  records = read_jsonl(config.log_path)
  assert len(records) == 6 and all(math.isfinite(r["loss"]) for r in records)
  assert records[-1]["loss"] < records[0]["loss"]
  assert math.isfinite(result["final_val_loss"])
  # Momo's state holds equal constants that Engine copies apart (donation); the
  # copies must stay uncommitted like the rest, or step 2 compiles the step again.
  assert engines[0].step_fn(1)._cache_size() == 1


# --- Newton-Muon statistics -------------------------------------------------


def test_statistics_schedule_follows_the_refresh_rule(corpus_file):
  from muonjax.train.optimizer import statistics_schedule
  assert statistics_schedule(tiny(corpus_file)) is None  # plain Muon records nothing
  due = statistics_schedule(tiny(corpus_file, optimizer="newton_muon"))
  assert [c for c in range(40) if due(c)] == [15, 31]  # default refresh_every=16, "end"
  due = statistics_schedule(tiny(corpus_file, optimizer="newton_muon",
                                 optimizer_hparams={"refresh_every": 3, "refresh_rule": "start"}))
  assert [c for c in range(7) if due(c)] == [0, 3, 6]


@pytest.mark.training
def test_newton_muon_gets_recorded_statistics_on_refresh_steps(corpus_file, monkeypatch):
  """Refresh after update 2 ("end", k=2): losses agree through step 2, then differ
  from a run whose statistics are withheld (which is plain Muon)."""
  from muonjax.train import engine
  config = tiny(corpus_file, optimizer="newton_muon", steps=4, eval_every=0,
                optimizer_hparams={"refresh_every": 2}, log_path=None)
  losses = {}
  for name in ("with", "without"):
    if name == "without":
      monkeypatch.setattr(engine, "statistics_schedule", lambda config: None)
    records = []
    train(config, on_step=lambda step, record: records.append(record["loss"]))
    losses[name] = records
  np.testing.assert_allclose(losses["with"][:2], losses["without"][:2], rtol=1e-6)
  assert abs(losses["with"][3] - losses["without"][3]) > 1e-6
  assert np.all(np.isfinite(losses["with"]))


@pytest.mark.training
def test_loop_keeps_normalized_models_on_the_sphere():
  import muonjax as mj
  from muonjax.train.optimizer import with_model_constraint
  gpt = models.build("gpt", rngs=0, vocab_size=64, max_seq_len=16, **TINY)
  tx = optax.adamw(0.1)
  assert with_model_constraint(tx, gpt, 0.1) is tx  # no hook: the optimizer unchanged
  model = models.build("ngpt", rngs=0, vocab_size=64, max_seq_len=16, **TINY)
  optimizer = nnx.Optimizer(model, with_model_constraint(mj.muon(0.05), model, 0.05),
                            wrt=nnx.Param)
  params = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(1)
  grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
  # One compiled update (an eager Muon update dispatches and compiles every op).
  nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, grads)
  axes = mj.sphere_axes(model)
  checked = 0
  for (path, axis), (_, leaf) in zip(nnx.to_flat_state(axes), nnx.to_flat_state(nnx.state(model, nnx.Param))):
    axis = axis[...] if isinstance(axis, nnx.Variable) else axis
    if axis is None:
      continue
    norms = jnp.linalg.norm(leaf[...], axis=axis)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5, err_msg=str(path))
    checked += 1
  assert checked >= 4
