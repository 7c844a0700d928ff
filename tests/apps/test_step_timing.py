"""muonjax.step_timing: every arm's training step timed interleaved in one process, and the
forward+backward reference for the optimizer update's share."""

import dataclasses

import jax
import numpy as np
import pytest

from muonjax import compare, data, report, step_timing
from muonjax.train import EXTRA_ARGS_FNS, Engine, model_fields

PRESET = compare.get_preset("smoke")


@pytest.fixture(scope="module")
def corpus():
  return data.load_corpus(None)


@pytest.fixture(scope="module")
def configs():
  return {name: compare.train_config(PRESET, name, 0) for name in PRESET.optimizers}


@pytest.fixture(scope="module")
def timing(configs, corpus):
  return step_timing.time_arms(configs, corpus, "adamw", repeats=3, rounds=2, warmup=2)


@pytest.mark.training
def test_every_arm_is_timed_against_the_baseline(timing, configs):
  assert set(timing["arms"]) == set(configs)
  assert timing["repeats"] == [3, 3] and timing["rounds"] == 2
  base = timing["arms"]["adamw"]
  assert base["ratio"] == 1.0 and base["ratio_q1"] == base["ratio_q3"] == 1.0
  for name, arm in timing["arms"].items():
    assert arm["median_ms"] > 0 and arm["iqr_ms"] >= 0
    assert arm["ratio"] == pytest.approx(arm["median_ms"] / base["median_ms"])
    assert arm["ratio_q1"] <= arm["ratio_q3"]
    # update share = 1 - t(forward+backward) / t(step)
    assert arm["update_share"] == pytest.approx(1 - timing["grads_median_ms"] / arm["median_ms"])
  assert timing["grads_median_ms"] > 0


@pytest.mark.training
def test_timed_arms_feed_the_table(timing):
  runs = {name: [dict(final_val_loss=3.0, time_per_step=1.0, eval_history=[[5, 3.0]])]
          for name in timing["arms"]}
  rows = report.comparison_rows(runs, baseline="adamw", timing=timing["arms"])
  muon = next(r for r in rows if r["optimizer"] == "muon")
  arm = timing["arms"]["muon"]
  assert muon["time_per_step_ms"] == arm["median_ms"]  # not the runs' own 1000 ms
  assert muon["time_ratio"] == arm["ratio"] and muon["update_share"] == arm["update_share"]
  table = report.markdown_table(rows, baseline="adamw", timing=timing)
  assert "time/step (ms, interleaved)" in table and "update share" in table
  assert f"{arm['ratio']:.2f}× [{arm['ratio_q1']:.2f}, {arm['ratio_q3']:.2f}]" in table
  assert f"{arm['update_share']:.0%}" in table


def test_grad_step_is_the_training_step_without_the_update(configs, corpus):
  """The forward+backward case computes what the training step differentiates: the same
  loss on the same batch and step, and gradients whose norm the step reports."""
  config = configs["muon"]
  engine = Engine(config, model_fields(config, corpus.vocab_size),
                  EXTRA_ARGS_FNS.get(config.optimizer))
  train_tokens, _ = data.split(corpus.tokens, val_fraction=config.val_fraction)
  x, y = engine.batch(next(engine.stream(train_tokens)))
  loss, grads = jax.device_get(engine.grads(engine.state, x, y, 3))
  _, out = engine.step(engine.state, x, y, 3)
  out = jax.device_get(out)
  np.testing.assert_allclose(loss, out["loss"], rtol=1e-6)
  norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
  np.testing.assert_allclose(norm, out["grad_norm"], rtol=1e-5)


def test_bad_arms_are_value_errors(configs, corpus):
  with pytest.raises(ValueError, match="baseline 'sgd' is not one of the arms"):
    step_timing.time_arms(configs, corpus, "sgd")
  other = dict(configs, muon=dataclasses.replace(configs["muon"], batch_size=2))
  with pytest.raises(ValueError, match=r"\(batch_size, seq_len, grad_accum\) differ"):
    step_timing.time_arms(other, corpus, "adamw")
