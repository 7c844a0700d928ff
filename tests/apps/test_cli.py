"""The `muonjax` command: the demo job and one-line errors with exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from muonjax import cli, demo


@pytest.mark.training
def test_demo_trains_both_optimizers():
  cfg = demo.DemoConfig(steps=60, batch=64, hidden=32)
  lines = []
  results = demo.run(cfg, print_fn=lines.append)
  assert len(results) == 2
  for name, r in results.items():
    losses = np.asarray(r["losses"])
    assert losses.shape == (60,)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], name
  # Same initial weights and batches: identical first loss.
  first = [float(r["losses"][0]) for r in results.values()]
  assert first[0] == pytest.approx(first[1], rel=1e-6)
  assert any(line.startswith("muon") for line in lines)
  assert any(line.startswith("adamw") for line in lines)


@pytest.mark.parametrize("argv, fragment", [
    (["demo", "--steps", "0"], "must be > 0"),
    (["demo", "--muon-lr", "abc"], "expected a number"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert fragment in err
  assert len(err.splitlines()) == 1


@pytest.mark.e2e
def test_module_entry_point():
  proc = subprocess.run([sys.executable, "-m", "muonjax", "demo", "--steps", "-3"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- engine commands

TINY_FLAGS = ["--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
              "--set", "d_ff=32", "--batch-size", "4", "--seq-len", "16"]


@pytest.mark.e2e
def test_compare_smoke_preset_writes_a_consistent_report(tmp_path, capsys):
  import json
  out = tmp_path / "cmp"
  assert cli.main(["compare", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
  printed = capsys.readouterr().out
  payload = json.loads((out / "results.json").read_text())
  assert payload["table"] in printed
  assert (out / "table.md").read_text().strip().endswith(payload["table"])
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
  rows = {r["optimizer"]: r for r in payload["rows"]}
  assert set(rows) == {"adamw", "muon"}
  steps = payload["preset"]["steps"]
  assert [r["steps"] for r in payload["runs"]["adamw"]] == [2 * steps]  # baseline_length 2
  assert [r["steps"] for r in payload["runs"]["muon"]] == [steps]
  timing = payload["timing"]["arms"]
  for name, runs in payload["runs"].items():
    at_steps = next(h for h in runs[0]["eval_history"] if h["step"] == steps)["eval_loss"]
    assert rows[name]["val_loss"] == pytest.approx(at_steps)  # the baseline at the arms' step
    # time columns: the interleaved measurement, not the runs' own medians
    assert rows[name]["time_per_step_ms"] == pytest.approx(timing[name]["median_ms"])
    assert rows[name]["update_share"] == pytest.approx(timing[name]["update_share"])
    assert np.isfinite(runs[0]["final_val_loss"])
  assert "interleaved in one process" in payload["header"]
  assert rows["muon"]["delta"] == pytest.approx(rows["muon"]["val_loss"] - rows["adamw"]["val_loss"])
  refs = payload["references"]
  assert refs["tokens"] > 0 and 0 < refs["bigram"] < refs["unigram"] < np.log(256)
  assert f"unigram {refs['unigram']:.4f}" in payload["table"]
  # Never overwrite a finished comparison.
  assert cli.main(["compare", "--preset", "smoke", "--out", str(out), "--quiet"]) == 2
  assert "already exists" in capsys.readouterr().err


@pytest.mark.e2e
def test_train_then_resume_in_the_run_folder(tmp_path, capsys):
  import json
  out = tmp_path / "run"
  args = ["train", "--model", "gpt", "--optimizer", "adamw", "--lr", "0.003", "--steps", "3",
          "--eval-every", "3", "--out", str(out), "--quiet", *TINY_FLAGS]
  assert cli.main(args) == 0
  result = json.loads((out / "result.json").read_text())
  assert result["steps"] == 3 and np.isfinite(result["final_val_loss"])
  lines = (out / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3]
  # Same folder without --resume: refused, nothing overwritten.
  assert cli.main(args) == 2
  assert "checkpoint" in capsys.readouterr().err
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_models_lists_parameter_counts(capsys):
  assert cli.main(["models", "--list"]) == 0
  out = capsys.readouterr().out
  assert "| gpt-124m | gpt | 123,551,232 |" in out


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--model", "nope"], "unknown model"),
    (["train", "--optimizer", "nope"], "nope"),
    (["train", "--steps", "0"], "must be > 0"),
    (["train", "--lr", "-1"], "must be > 0"),
    (["train", "--data", "/nonexistent/corpus.txt", "--steps", "1"], "/nonexistent/corpus.txt"),
    (["train", "--set", "d_model"], "key=value"),
    (["train", "--set", "colour=3"], "colour"),
    (["compare", "--optimizers", "muon,nope"], "nope"),
    (["compare", "--lr", "sgd=0.1", "--optimizers", "muon"], "sgd"),
    (["sweep", "--lrs", "abc"], "expected a number"),
    (["sweep", "--lrs", "0.1,-2"], "must be > 0"),
])
def test_engine_bad_input_is_one_line_and_exit_2(argv, fragment, capsys, tmp_path):
  assert cli.main(argv + ["--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err.strip()
  assert fragment in err, err
  assert len(err.splitlines()) == 1


@pytest.mark.e2e
def test_compare_tune_then_compare_at_the_tuned_rates(tmp_path, capsys):
  import json
  import helpers
  out = tmp_path / "cmp"
  cache = helpers.persistent_compilation_cache(str(tmp_path / "xla"))  # restored afterwards
  next(cache)
  try:
    assert cli.main(["compare", "--preset", "smoke", "--tune", "--budget", "3", "--out", str(out),
                     "--cache", str(tmp_path / "xla"), "--quiet"]) == 0
  finally:
    next(cache, None)
  tuned = json.loads((out / "tune" / "tune.json").read_text())
  payload = json.loads((out / "results.json").read_text())
  for name, entry in payload["preset"]["optimizers"].items():
    assert entry["learning_rate"] == tuned["results"][name]["best_lr"]
    assert tuned["results"][name]["runs"] == 3
  assert "| entry | tuned lr |" in capsys.readouterr().out


def test_tune_from_a_result_without_the_optimizer_is_exit_2(tmp_path, capsys):
  import json
  path = tmp_path / "tune.json"
  path.write_text(json.dumps({"results": {"adamw": {"best_lr": 1e-3}}}))
  assert cli.main(["compare", "--preset", "smoke", "--tune-from", str(path),
                   "--out", str(tmp_path / "c")]) == 2
  err = capsys.readouterr().err
  assert "no tuned learning rate for 'muon'" in err and len(err.strip().splitlines()) == 1
  assert cli.main(["tune", "--preset", "smoke", "--budget", "2", "--out", str(tmp_path / "t")]) == 2
  assert "budget must be an integer >= 3" in capsys.readouterr().err
  assert not (tmp_path / "t").exists()
