"""Tests for muonjax.report: the comparison table, steps-to-target and the plot."""

import math

import pytest

from muonjax import report


def run(final, time, history):
  return {"final_val_loss": final, "time_per_step": time, "eval_history": history}


def test_steps_to_reach():
  history = [[0, 5.0], [10, 4.0], [20, 3.0], [30, 2.5]]
  assert report.steps_to_reach(history, 3.0) == 20
  assert report.steps_to_reach(history, 4.5) == 10
  assert report.steps_to_reach(history, 1.0) is None


def test_comparison_rows_against_hand_computed_values():
  runs = {
      "adamw": [run(3.0, 0.010, [[0, 5.0], [10, 3.5], [20, 3.0]]),
                run(3.2, 0.012, [[0, 5.0], [10, 3.6], [20, 3.2]])],
      "muon": [run(2.8, 0.030, [[0, 5.0], [10, 3.0], [20, 2.8]]),
               run(2.9, 0.026, [[0, 5.0], [10, 3.2], [20, 2.9]])],
      "slow": [run(3.5, 0.011, [[0, 5.0], [10, 4.0], [20, 3.5]])],
  }
  rows = {r["optimizer"]: r for r in report.comparison_rows(runs)}
  assert rows["adamw"]["val_loss"] == pytest.approx(3.1)
  assert rows["adamw"]["val_loss_std"] == pytest.approx(0.1414213, rel=1e-6)
  assert rows["adamw"]["delta"] == pytest.approx(0.0)
  assert rows["adamw"]["time_ratio"] == pytest.approx(1.0)
  assert rows["adamw"]["steps_to_baseline"] == 20  # seed 0 reaches 3.1 at 20; seed 1 never
  assert rows["muon"]["delta"] == pytest.approx(-0.25)
  assert rows["muon"]["time_per_step_ms"] == pytest.approx(28.0)
  assert rows["muon"]["time_ratio"] == pytest.approx(28.0 / 11.0)
  assert rows["muon"]["steps_to_baseline"] == 10  # seeds reach it at 10 and 20: lower median
  assert rows["slow"]["steps_to_baseline"] is None
  assert rows["slow"]["seeds"] == 1 and rows["slow"]["val_loss_std"] == 0.0


def test_no_baseline_gives_empty_relative_columns():
  rows = report.comparison_rows({"muon": [run(2.0, 0.01, [[0, 3.0], [5, 2.0]])]})
  assert rows[0]["delta"] is None and rows[0]["time_ratio"] is None
  assert rows[0]["steps_to_baseline"] is None
  table = report.markdown_table(rows)
  assert "| muon | 2.0000 | — | — | — | 10.0 | —× |" in table


def test_markdown_table_and_plot(tmp_path):
  runs = {"adamw": [run(3.0, 0.01, [[0, 4.0], [10, 3.0]])],
          "muon": [run(2.5, 0.02, [[0, 4.0], [10, 2.5]])]}
  table = report.markdown_table(report.comparison_rows(runs))
  assert table.splitlines()[2] == "| adamw | 3.0000 | baseline | — | 1× | 10.0 | 1.00× |"
  assert table.splitlines()[3] == ("| muon | 2.5000 | -0.5000 (1 seed) | inconclusive | "
                                   "≥ 1.00× (baseline never reached it) | 20.0 | 2.00× |")
  path = report.plot_curves(runs, str(tmp_path / "curves.png"), title="t")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_paired_interval_verdict_and_speedup_columns():
  base_curves = [[[0, 4.0], [10, 3.4], [20, 3.0], [40, 2.6]],
                 [[0, 4.1], [10, 3.5], [20, 3.1], [40, 2.7]],
                 [[0, 3.9], [10, 3.3], [20, 2.9], [40, 2.5]]]
  runs = {"adamw": [run(c[-1][1], 0.01, c) for c in base_curves],
          # reaches in 20 steps about what the baseline reaches in 40, on every seed
          "muon": [run(c[-1][1] + 0.01 * i, 0.012, [[0, 4.0], [10, 3.0], [20, c[-1][1] + 0.01 * i]])
                   for i, c in enumerate(base_curves)]}
  rows = {r["optimizer"]: r for r in report.comparison_rows(runs)}
  muon = rows["muon"]
  assert muon["delta_interval"]["n"] == 3
  assert muon["delta_interval"]["mean"] == pytest.approx(0.01)
  half = 4.302652730 * 0.01 / math.sqrt(3)  # t_{0.975, 2} · sd / sqrt(n), sd of (0, .01, .02)
  assert muon["delta_interval"]["lo"] == pytest.approx(0.01 - half)
  assert muon["delta_interval"]["hi"] == pytest.approx(0.01 + half)
  assert muon["verdict"] == "tie"
  expected = [40.0 / 20, (20 + 20 * (3.1 - 2.71) / 0.4) / 20, (20 + 20 * (2.9 - 2.52) / 0.4) / 20]
  assert muon["speedup"]["n"] == 3
  assert muon["speedup"]["mean"] == pytest.approx(
      math.exp(sum(math.log(e) for e in expected) / 3), rel=1e-6)
  assert rows["adamw"]["verdict"] is None
  refs = {"unigram": 2.8, "bigram": 2.0, "tokens": 16384}
  table = report.markdown_table(list(rows.values()), references=refs)
  assert "unigram 2.8000, bigram 2.0000" in table
  assert "| adamw | 2.6000 ± 0.1000 | baseline |" in table
  flagged = report.markdown_table(report.comparison_rows(
      {"adamw": [run(3.0, 0.01, [[0, 4.0], [10, 3.0]])]}), references=refs)
  assert "learned only token frequencies" in flagged
