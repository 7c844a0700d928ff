"""muonjax.compare: run configs of a comparison, symmetric arms (no training here)."""

import dataclasses

import pytest

from muonjax import compare


def test_every_arm_trains_non_matrix_leaves_with_the_shared_adamw():
  preset = compare.get_preset("default")
  shared = preset.shared_adam
  muon = compare.train_config(preset, "muon", 0).optimizer_hparams
  assert {muon[f"adam_{k}"] for k in ("b1", "b2", "eps")} >= {shared["b1"], shared["b2"]}
  assert muon["adam_learning_rate"] == shared["learning_rate"]
  assert muon["adam_weight_decay"] == shared["weight_decay"]
  assert muon["adam_eps"] == shared["eps"]
  adamw = compare.train_config(preset, "adamw", 0).optimizer_hparams
  # the baseline's matrices share the betas/eps; its other leaves the shared rate and decay
  assert (adamw["b1"], adamw["b2"], adamw["eps"]) == (shared["b1"], shared["b2"], shared["eps"])
  assert adamw["adam_learning_rate"] == shared["learning_rate"]
  assert adamw["adam_weight_decay"] == shared["weight_decay"]
  assert compare.asymmetries(preset) == {}


def test_asymmetric_arms_are_named():
  preset = dataclasses.replace(compare.get_preset("smoke"), optimizers={
      "adamw": {"learning_rate": 1e-3},
      "muon": {"learning_rate": 0.02, "adam_learning_rate": 1e-2},
      "scion": {"learning_rate": 1e-3}})
  assert compare.train_config(preset, "muon", 0).optimizer_hparams["adam_learning_rate"] == 1e-2
  assert compare.asymmetries(preset) == {
      "muon": "sets adam_learning_rate=0.01",
      "scion": "no separate AdamW for the non-matrix leaves"}
  own = dataclasses.replace(preset, shared_adam=None)
  assert "adam_learning_rate" not in compare.train_config(own, "adamw", 0).optimizer_hparams
  assert compare.asymmetries(own) == {}


def test_unknown_entry_optimizer_is_a_value_error():
  preset = dataclasses.replace(compare.get_preset("smoke"),
                               optimizers={"x": {"learning_rate": 1e-3}})
  with pytest.raises(ValueError, match="unknown optimizer 'x'"):
    compare.train_config(preset, "x", 0)


def test_default_preset_evaluates_enough_tokens_often_with_a_longer_baseline():
  preset = compare.check_preset(compare.get_preset("default"))
  assert preset.eval_batches * preset.batch_size * preset.seq_len >= 16_384
  assert preset.eval_every <= 10 and preset.steps % preset.eval_every == 0
  assert preset.baseline_length >= 2 and preset.schedule == "constant"
  assert compare.steps_of(preset, "adamw") == 2 * preset.steps
  assert compare.train_config(preset, "adamw", 0).steps == 2 * preset.steps
  assert compare.train_config(preset, "muon", 0).steps == preset.steps


@pytest.mark.parametrize("change, match", [
    (dict(baseline_length=0.5), "baseline_length must be a number >= 1"),
    (dict(baseline_length=2.0, schedule="cosine"), "needs schedule='constant'"),
    (dict(baseline_length=2.0, schedule="constant", eval_every=3), "eval_every to divide"),
    (dict(timing_repeats=-1), "timing_repeats must be an integer >= 0"),
    (dict(baseline="sgd"), "baseline='sgd' is not one of the optimizers"),
])
def test_ill_posed_presets_are_value_errors(change, match):
  with pytest.raises(ValueError, match=match):
    compare.check_preset(dataclasses.replace(compare.get_preset("smoke"), **change))


def test_a_longer_baseline_is_compared_at_the_arms_last_step():
  result = dict(final_val_loss=2.0, final_val_accuracy=0.5, time_per_step=0.1, eval_history=[
      dict(step=5, eval_loss=3.0, eval_accuracy=0.2), dict(step=10, eval_loss=2.0,
                                                           eval_accuracy=0.5)])
  at5 = compare.summary(result, at_step=5)
  assert (at5["final_val_loss"], at5["final_val_accuracy"]) == (3.0, 0.2)
  assert at5["eval_history"] == [[5, 3.0], [10, 2.0]]  # the whole curve, for the speed-up
  assert compare.summary(result)["final_val_loss"] == 2.0
  with pytest.raises(ValueError, match="no evaluation at step 7"):
    compare.summary(result, at_step=7)


def test_default_rates_are_the_committed_tune_result():
  """The default preset's rates are what `muonjax tune` chose on that preset, none on an edge."""
  import json
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[2]
  tuned = json.loads((root / "experiments/results/compare/tune/tune.json").read_text())
  preset = compare.get_preset("default")
  for field in ("model", "model_fields", "steps", "batch_size", "seq_len", "schedule",
                "warmup_steps", "eval_every", "eval_batches", "shared_adam", "baseline"):
    assert tuned["preset"][field] == getattr(preset, field), field
  assert set(tuned["results"]) == set(preset.optimizers)
  for name, entry in preset.optimizers.items():
    result = tuned["results"][name]
    assert entry["learning_rate"] == result["best_lr"], name
    assert result["edge"] is None and result["runs"] <= tuned["budget"], name


def test_the_table_shows_each_rate_and_marks_grid_edges():
  from muonjax import report, tune
  preset = compare.get_preset("smoke")
  tuned = {"results": {"adamw": {"best_lr": 1e-3, "edge": None},
                       "muon": {"best_lr": 0.1, "edge": "high"}}}
  tuned_preset = tune.tuned_preset(preset, tuned, "t/tune.json")
  assert tuned_preset.lr_edges == {"muon": "high"}
  assert tuned_preset.rate_source == "muonjax tune (t/tune.json)"
  assert tuned_preset.optimizers["muon"]["learning_rate"] == 0.1
  rows = [dict(optimizer=name, seeds=1, diverged=0, val_loss=3.0, val_loss_std=0.0,
               time_per_step_ms=1.0, time_ratio=1.0, learning_rate=lr, lr_edge=edge)
          for name, lr, edge in (("adamw", 1e-3, None), ("muon", 0.1, "high"))]
  table = report.markdown_table(rows)
  assert table.splitlines()[0].startswith("| optimizer | lr | final val loss |")
  assert "| adamw | 0.001 | 3.0000 |" in table
  assert "| muon | 0.1 (grid edge: high) | 3.0000 |" in table


def test_flags_that_change_a_tuned_preset_say_so():
  from muonjax import cli
  args = cli.build_parser().parse_args(["compare", "--lr", "muon=0.03", "--steps", "50"])
  preset = cli._comparison_preset(args)
  assert preset.rate_source.startswith(compare.get_preset("default").rate_source)
  assert "this run changes learning rates / optimizers, steps" in preset.rate_source
  untouched = cli._comparison_preset(cli.build_parser().parse_args(["compare"]))
  assert untouched.rate_source == compare.get_preset("default").rate_source
