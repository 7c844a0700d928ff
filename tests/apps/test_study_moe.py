"""Study 2 (experiments/study_moe.py): the claim helpers on hand-made intervals, and the
whole script's smoke preset end to end."""

import json
import math
import os
import subprocess
import sys

import pytest

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


moe = helpers.load_experiment("study_moe")


def iv(lo, hi, n=3):
  return {"n": n, "mean": None if lo is None else (lo + hi) / 2, "lo": lo, "hi": hi}


def test_relative_scales_every_end_to_percent():
  r = moe.relative({"n": 3, "mean": -0.1, "lo": -0.2, "hi": 0.05}, 2.0)
  assert (r["mean"], r["lo"], r["hi"], r["n"]) == (-5.0, -10.0, 2.5, 3)
  assert moe.relative({"n": 1, "mean": 0.1, "lo": None, "hi": None}, 2.0)["lo"] is None


@pytest.mark.parametrize("interval,published,verdict", [
    (iv(-15.0, -10.0), -13.2, "reproduced"),    # holds the value, excludes 0
    (iv(-4.0, -1.0), -13.2, "contradicted"),    # right direction, wrong size
    (iv(1.0, 4.0), 114.4, "contradicted"),
    (iv(-20.0, 5.0), -13.2, "inconclusive"),    # holds both 0 and the value
    (iv(None, None, 1), -13.2, "inconclusive"),  # one seed: no interval
])
def test_magnitude_verdict(interval, published, verdict):
  assert moe.magnitude_verdict(interval, published) == verdict


@pytest.mark.parametrize("intervals,verdict", [
    ([iv(-0.5, 0.4), iv(-0.2, 0.9)], "reproduced"),   # narrow: within ±1 %
    ([iv(0.2, 0.8)], "reproduced"),                   # significant but small
    ([iv(-0.5, 0.4), iv(1.5, 3.0)], "contradicted"),  # one effect beyond the margin
    ([iv(-2.0, 1.5)], "inconclusive"),                # straddles 0 but wide: no proof of no effect
    ([iv(0.5, 1.5)], "inconclusive"),                 # partly beyond the margin
    ([iv(None, None, 1)], "inconclusive"),
    ([], "inconclusive"),
])
def test_weak_effect_verdict(intervals, verdict):
  assert moe.weak_effect_verdict(intervals, 1.0) == verdict


@pytest.mark.parametrize("interval,verdict", [
    (iv(6.0, 9.0), "reproduced"), (iv(1.0, 3.0), "contradicted"), (iv(3.0, 8.0), "inconclusive"),
    (iv(None, None, 1), "inconclusive")])
def test_threshold_verdict(interval, verdict):
  assert moe.threshold_verdict(interval, 5.0) == verdict


def test_pct_text():
  assert moe.pct_text(iv(-4.0, -2.0)) == "-3.00 [-4.00, -2.00] % (3 seeds)"


def _payload(losses):
  """A campaign payload with ``entry -> per-seed losses`` (what the claim code reads)."""
  runs = {e: [{"final_val_loss": x} for x in xs] for e, xs in losses.items()}
  rows = [{"optimizer": e, "val_loss": sum(xs) / len(xs)} for e, xs in losses.items()]
  return {"runs": runs, "rows": rows, "references": {"unigram": 5.0, "bigram": 3.0}}


def test_claim_rows_on_hand_made_payloads():
  p = moe.PRESETS["cpu"]
  tuned = _payload({"AdamW": [2.10, 2.12, 2.11], moe.MUON: [2.05, 2.06, 2.06],
                    "momentum only": [2.5, 2.52, 2.51], "NS only": [2.07, 2.09, 2.08],
                    "SGD-like": [2.6, 2.61, 2.6]})
  sensitivity = _payload({moe.BASE: [2.06, 2.07, 2.065], "β 0.9": [2.05, 2.07, 2.08],
                          "β 0.99": [2.2, 2.21, 2.2], "T 3": [2.061, 2.071, 2.067],
                          "T 7": [2.059, 2.071, 2.064], "lr 0.001": [2.6, 2.62, 2.61],
                          "lr 0.05": [2.08, 2.09, 2.095]})
  activations = _payload({"MHSA-relu": [2.05, 2.06, 2.06], "MHSA-silu": [2.06, 2.07, 2.065],
                          "MHLA-relu": [2.08, 2.09, 2.085]})
  rows = {r.claim: r for r in moe.claim_rows(tuned, sensitivity, activations, p)}
  get = lambda prefix: next(r for c, r in rows.items() if c.startswith(prefix))
  assert get("(a) hybrid Muon's validation loss is 13.2").verdict == "contradicted"
  assert get("(a) hybrid Muon ends below").verdict == "reproduced"
  assert get("(a) Muon reaches validation loss 0.0476").verdict == "contradicted"
  assert get("(b) full Muon is the best").verdict == "reproduced"
  assert get("(b) removing momentum").verdict == "contradicted"
  assert get("(c) Muon's best learning rate is 0.05").verdict == "contradicted"
  assert get("(c) high lr sensitivity").verdict == "reproduced"
  assert get("(c) momentum β 0.95").verdict == "inconclusive"  # β 0.9 ties it
  assert get("(c) 7 Newton–Schulz steps").verdict == "inconclusive"
  assert get("(c) the number of NS steps").verdict == "reproduced"
  assert get("(d) MHSA-ReLU is the best").verdict == "reproduced"
  assert get("(d) MHSA-ReLU ends below MHLA-ReLU").verdict == "reproduced"
  assert not any(c.startswith("(a) Muon's training is slower") for c in rows)  # no timing
  # A preset without activation cells: their claims stay in the table, marked not run.
  partial = moe.claim_rows(tuned, sensitivity, None, p)
  assert sorted(r.claim for r in partial) == sorted(rows)
  missing = [r for r in partial if r.ours.startswith("not run")]
  assert {r.claim[:3] for r in missing} == {"(d)"}
  assert all(r.verdict == "inconclusive" for r in missing)


@pytest.mark.slow  # dozens of tiny MoE runs, each its own compilation: minutes
def test_study_moe_smoke(tmp_path):
  out = tmp_path / "moe"
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "study_moe.py"), "--preset", "smoke",
         "--out", str(out), "--cache", str(tmp_path / "xla"), "--quiet"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  text = (out / "report.md").read_text()
  summary = json.loads((out / "study.json").read_text())
  assert set(summary["tables"]) == {"hybrid", "ablation", "sensitivity", "activations"}
  for rows in summary["tables"].values():
    assert rows and all(r["val_loss"] is None or math.isfinite(r["val_loss"]) for r in rows)
  assert {r["optimizer"] for r in summary["tables"]["ablation"]} == set(moe.ABLATION_ROWS)
  assert set(summary["tuned_rates"]) == {"AdamW", *moe.ABLATION_ROWS}
  assert {r["optimizer"] for r in summary["tables"]["sensitivity"]} == {
      moe.BASE, "β 0.9", "β 0.99", "T 3", "T 7", "lr 0.001", "lr 0.05"}
  assert {r["optimizer"] for r in summary["tables"]["activations"]} == {"MHSA-relu", "MHLA-relu"}
  # The search table, tuned rates on an edge named, and each headline heading present.
  for heading in ("## (a) Hybrid", "## Against the published claims", "(b) Ablation",
                  "(c) Momentum β", "(c) Newton–Schulz steps T", "(d) Activations",
                  "## Runtime per campaign", "unigram", "tried (lr: loss)"):
    assert heading in text, heading
  assert ("Every tuned rate is interior." in text) == (not summary["edges"])
  for name, edge in summary["edges"].items():
    assert name in text and edge in ("low", "high")
  # The claim table: every published claim group has rows, each with a verdict word.
  assert {c["claim"][:3] for c in summary["claims"]} == {"(a)", "(b)", "(c)", "(d)"}
  for c in summary["claims"]:
    assert c["verdict"] in ("reproduced", "contradicted", "inconclusive")
    assert f"**{c['verdict']}**" in text
  assert (out / "tuned" / "tune" / "tune.json").exists()
  assert (out / "sensitivity" / "results.json").exists()
  assert (out / "activations" / "results.json").exists()
