"""Study 3 (Muon on nGPT): the script's smoke preset end to end, and its pure helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "experiments", "study_ngpt.py")


ngpt = helpers.load_experiment("study_ngpt")


def _run_script(tmp_path):
  out = tmp_path / "study_ngpt"
  cmd = [sys.executable, SCRIPT, "--preset", "smoke", "--out", str(out),
         "--cache", str(tmp_path / "xla"), "--quiet"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  return out, (out / "report.md").read_text(), json.loads((out / "study.json").read_text())


def _payload(losses: dict) -> dict:
  """A hand-made campaign payload: entry → per-seed final losses."""
  return {"runs": {e: [{"final_val_loss": v, "diverged": v is None} for v in vs]
                   for e, vs in losses.items()}}


def _search(best_loss) -> dict:
  """A hand-made search result with its loss at the tuned rate."""
  return {"best_loss": best_loss, "best_lr": 0.1, "edge": None, "runs": 6, "points": []}


# --- pure helpers -----------------------------------------------------------------------


def test_best_branch_picks_lowest_tune_loss_and_marks_edges():
  label = ngpt.branch_label
  results = {label("Muon", 3e-3): _search(3.0), label("Muon", 1e-2): _search(2.5),
             label("Muon", 3e-2): _search(2.7)}
  assert ngpt.best_branch(results, "Muon", [3e-3, 1e-2, 3e-2]) == (1e-2, label("Muon", 1e-2),
                                                                    None)
  results[label("Muon", 3e-2)] = _search(2.0)
  assert ngpt.best_branch(results, "Muon", [3e-2, 3e-3, 1e-2])[2] == "high"
  results[label("Muon", 3e-3)] = _search(1.0)
  assert ngpt.best_branch(results, "Muon", [3e-3, 1e-2, 3e-2])[2] == "low"
  results[label("Muon", 3e-3)] = _search(None)  # diverged: never the best
  assert ngpt.best_branch(results, "Muon", [3e-3, 1e-2, 3e-2])[0] == 3e-2
  with pytest.raises(ValueError, match="diverged"):
    ngpt.best_branch({label("Adam", 1e-2): _search(None)}, "Adam", [1e-2])


def test_tolerance_interval_is_the_difference_of_paired_costs():
  payload = _payload({
      "Muon, project every 1": [2.0, 2.1, 2.2], "Muon, project every 20": [2.01, 2.11, 2.21],
      "Adam, project every 1": [2.5, 2.6, 2.7], "Adam, project every 20": [2.7, 2.81, 2.9]})
  iv = ngpt.tolerance_interval(payload, 20)
  assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.01 - 0.2033333, abs=1e-6)
  assert iv["hi"] < 0  # lazy projection costs Muon less than Adam: the claim's side
  payload["runs"]["Adam, project every 20"][0] = {"final_val_loss": None, "diverged": True}
  assert ngpt.tolerance_interval(payload, 20)["n"] == 2


def test_guard_makes_edge_claims_inconclusive():
  c = ngpt.claims.Claim("x", "y", "z", "reproduced", "why")
  assert ngpt.guard(c, []) is c
  g = ngpt.guard(c, ["Muon lr"])
  assert g.verdict == "inconclusive" and "Muon lr" in g.reason and "reproduced" in g.reason


def test_lr_claim_direction():
  def sphere(tuned, modded):
    return _payload({ngpt.MUON_K1: tuned, ngpt.MUON_MODDED: modded})
  better = sphere([2.0, 2.1, 2.2], [2.3, 2.41, 2.5])
  assert ngpt.lr_claim(better, 0.1, None).verdict == "reproduced"
  assert ngpt.lr_claim(better, 0.01, None).verdict == "contradicted"
  assert ngpt.lr_claim(better, 0.1, "low").verdict == "inconclusive"
  assert ngpt.lr_claim(better, 0.1, "high").verdict == "reproduced"  # higher still: same side
  tie = sphere([2.0, 2.1, 2.2], [2.1, 2.0, 2.2])
  assert ngpt.lr_claim(tie, 0.1, None).verdict == "inconclusive"


def test_percent_and_geodesic_claims():
  assert ngpt.percent({"mean": -0.02, "lo": -0.03, "hi": -0.01}, 2.0) == \
      "-1.00 % [-1.50, -0.50]"
  assert ngpt.percent({"mean": 0.1, "lo": None, "hi": None}, 2.0) == "—"
  sphere = _payload({ngpt.MUON_K1: [2.0, 2.1, 2.2], ngpt.GEO_NORM: [1.9, 2.0, 2.11],
                     ngpt.GEO_LR: [1.5, 1.6, 1.7]})
  sphere["preset"] = {"lr_edges": {}}
  norm, lr = ngpt.geodesic_claims(sphere)
  assert norm.verdict == "reproduced"
  assert lr.verdict == "reproduced" and "blocks' matrices only" in lr.reason
  sphere["preset"]["lr_edges"] = {ngpt.GEO_NORM: "high"}
  assert ngpt.geodesic_claims(sphere)[0].verdict == "inconclusive"  # its rate on an edge
  assert ngpt.geodesic_claims(sphere)[1].verdict == "reproduced"


def test_presets_keep_budgets_and_evaluation_size():
  cpu = ngpt.PRESETS["cpu"]
  assert cpu.eval_batches * cpu.batch_size * cpu.seq_len >= 16384
  assert cpu.seeds >= 3 and ngpt.PLAN_ADAM_BEST_K in cpu.lazy_every
  assert ngpt.PAIR in cpu.features
  assert set(ngpt.PRESETS) == {"cpu", "smoke", "paper"}


# --- the script --------------------------------------------------------------------------


@pytest.mark.slow  # a whole study script end to end (minutes with compilation): -m slow
def test_study_ngpt_smoke(tmp_path):
  out, text, summary = _run_script(tmp_path)
  for folder in ("joint/tune", "sphere/tune", "features/tune"):
    assert (out / folder / "tune.json").exists()
  for folder in ("sphere", "features"):
    assert (out / folder / "results.json").exists()
  assert (out / "joint" / "lr.png").stat().st_size > 0
  # Equal budgets: both families searched the same number of runs.
  assert summary["joint_runs"]["Muon"] == summary["joint_runs"]["Adam"] > 0
  assert set(summary["best_pairs"]) == {"Muon", "Adam"}
  sphere = {r["optimizer"] for r in summary["tables"]["sphere"]}
  assert {ngpt.MUON_K1, ngpt.ADAM_K1, ngpt.GEO_LR, ngpt.GEO_NORM, ngpt.MUON_MODDED,
          "Adam, project every 7", "Muon, project every 7"} == sphere
  assert {r["optimizer"] for r in summary["tables"]["features"]} == {"Muon (NS5)", ngpt.PAIR}
  for rows in summary["tables"].values():
    assert all(r["val_loss"] is None or math.isfinite(r["val_loss"]) for r in rows)
  # The claim table: one row per hypothesis, verdict words from the interval rules.
  assert [c["claim"].split(" (")[0] for c in summary["claims"]] == [
      "Muon beats Adam on", "Muon's best lr on nGPT is higher than a standard GPT's",
      "geodesic updates beat projection", "geodesic updates beat projection",
      "NorMuon + Polar Express is the best combination", "Adam's best projection period is 7",
      "Muon tolerates less frequent projection than Adam"]
  assert all(c["verdict"] in ("reproduced", "contradicted", "inconclusive")
             for c in summary["claims"])
  assert "| published claim |" in text and "of 7 claims." in text
  for heading in ("## 1. Learning-rate sweep", "## 2. Muon vs Adam", "## 3. modded-nanogpt",
                  "## Against the published plan", "## Runtime per campaign"):
    assert heading in text
  # Every tuned rate is interior or marked, and the edges are listed.
  assert "Rates left on a grid edge:" in text
  for s in ("joint/tune", "sphere/tune", "features/tune"):
    tuned = json.loads((out / s / "tune.json").read_text())
    for name, r in tuned["results"].items():
      assert r["edge"] is None or f"{name} (lr {r['best_lr']:g}, {r['edge']}" in text
  assert "Reference losses" in text


def test_lazy_table_pairs_each_family_with_its_own_every_1():
  sphere = _payload({"Muon, project every 1": [2.0, 2.1, 2.2],
                     "Muon, project every 7": [2.1, 2.2, 2.31],
                     "Adam, project every 1": [2.5, 2.6, 2.7],
                     "Adam, project every 7": [2.5, 2.61, 2.69]})
  table = ngpt.lazy_table(sphere, (1, 7))
  assert "| Muon | 7 | 2.2033 | +0.1033 [" in table and "| worse |" in table
  assert "| Adam | 7 | 2.6000 | " in table and "(3 seeds) | tie |" in table
