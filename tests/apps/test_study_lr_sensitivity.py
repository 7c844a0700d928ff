"""Study 4 (experiments/study_lr_sensitivity.py): its band and claim helpers on hand-made
grids, and the script's smoke preset end to end."""

import json
import math
import os
import subprocess
import sys

import pytest

import helpers

from muonjax import study, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


S = helpers.load_experiment("study_lr_sensitivity")


def _grid(method_losses):
  """method → {lr: [loss per seed]} → (runs payload, curves, grids) as the study builds them."""
  runs, curves, grids = {}, {}, {}
  for method, by_lr in method_losses.items():
    grids[method] = sorted(by_lr)
    points = []
    for lr in grids[method]:
      seeds = by_lr[lr]
      runs[study.lr_label(method, lr)] = [
          {"final_val_loss": x, "diverged": x is None} for x in seeds]
      finished = [x for x in seeds if x is not None]
      mean = sum(finished) / len(finished)
      std = math.sqrt(sum((x - mean) ** 2 for x in finished) / (len(finished) - 1))
      points.append([lr, mean, std, len(finished), len(seeds) - len(finished)])
    curves[method] = {"points": points,
                      "band": sweep.lr_band([(p[0], p[1]) for p in points], 0.02)}
  return {"runs": runs}, curves, grids


R = S.quarter_grid(-12, -6)  # 1e-3 … 0.0316: 7 rates


def _shift(values, delta):
  return [v + delta for v in values]


# A wide flat method, a narrow one, and a uniformly poor one (flat but 20 % worse).
WIDE = {lr: _shift([2.00, 2.01, 2.02], d) for lr, d in zip(R, (0.4, 0.05, 0.0, 0.0, 0.0, 0.05, 0.4))}
NARROW = {lr: _shift([2.00, 2.02, 2.01], d) for lr, d in zip(R, (0.9, 0.6, 0.3, 0.0, 0.3, 0.6, 0.9))}
POOR = {lr: _shift([2.40, 2.41, 2.42], d) for lr, d in zip(R, (0.3, 0.1, 0.0, 0.0, 0.0, 0.1, 0.3))}


def test_quarter_grid_matches_interior_lr_grid_extensions():
  assert S.quarter_grid(-8, -4) == (0.01, 0.0177828, 0.0316228, 0.0562341, 0.1)
  # interior_lr_grid writes an extension as float(f"{edge * factor:.6g}").
  assert float(f"{S.quarter_grid(-4, -4)[0] * S.STEP:.6g}") == S.quarter_grid(-3, -3)[0]


def test_a_uniformly_poor_method_gets_an_empty_band_not_a_wide_one():
  _, curves, _ = _grid({"wide": WIDE, "poor": POOR})
  ref = S.best_of_all(curves)
  assert ref == pytest.approx(2.01)
  poor_all = S.band(curves["poor"]["points"], 0.10, ref)
  poor_own = S.band(curves["poor"]["points"], 0.10)
  assert poor_all["decades"] is None and S.band_text(poor_all) == "empty"
  assert poor_own["decades"] == pytest.approx(1.0)  # flat around its own (poor) best
  wide = S.band(curves["wide"]["points"], 0.05, ref)
  assert (wide["lo"], wide["hi"]) == (R[1], R[5]) and not wide["edge"]
  assert S.band_text(wide) == f"[{R[1]:g}, {R[5]:g}] 1.00"


def test_a_band_reaching_the_grid_end_is_a_lower_bound():
  _, curves, _ = _grid({"flat": {lr: [2.0, 2.01, 2.02] for lr in R}})
  b = S.band(curves["flat"]["points"], 0.05)
  assert b["edge"] and S.band_text(b).endswith("≥ 1.50")


def test_a_diverged_seed_keeps_its_rate_out_of_the_band():
  losses = dict(WIDE)
  losses[R[3]] = [2.0, None, 2.0]
  _, curves, _ = _grid({"m": losses})
  b = S.band(curves["m"]["points"], 0.05, 2.01)
  assert b["lo"] == R[1] and b["hi"] == R[5]  # R[3] is out, but the ends are unchanged
  runs, _, grids = _grid({"m": losses})
  assert S.seed_measures(runs, "m", grids["m"], 2.01 * 1.05) == [1.25, 1.0, 1.25]


def test_band_rows_and_table_order_by_the_band_of_all():
  _, curves, _ = _grid({"narrow": NARROW, "wide": WIDE, "poor": POOR})
  rows = S.band_rows(curves, S.best_of_all(curves))
  text = S.band_table(rows, S.best_of_all(curves))
  assert text.index("| wide |") < text.index("| narrow |") < text.index("| poor |")
  assert "empty" in text.split("| poor |")[1].splitlines()[0]


def test_wider_claim_verdicts():
  runs, curves, grids = _grid({"wide": WIDE, "narrow": NARROW})
  ref = S.best_of_all(curves)
  kw = dict(claim="c", published="p", reference=ref)
  assert S.wider_claim(runs, curves, grids, "wide", "narrow", **kw).verdict == "reproduced"
  row = S.wider_claim(runs, curves, grids, "narrow", "wide", **kw)
  assert row.verdict == "contradicted" and "per-seed measure" in row.ours
  assert S.wider_claim(runs, curves, grids, "wide", "wide", **kw).verdict == "inconclusive"


def test_wider_claim_does_not_contradict_when_the_loser_band_is_cut_by_its_grid():
  # "narrow" measured on only three rates, all inside its band: its width is a lower bound.
  cut = {lr: WIDE[lr] for lr in R[2:5]}
  runs, curves, grids = _grid({"cut": cut, "wide": WIDE})
  row = S.wider_claim(runs, curves, grids, "cut", "wide", claim="c", published="p",
                      reference=S.best_of_all(curves))
  assert row.verdict == "inconclusive" and "edge" in row.reason


def test_not_worse_claim_and_the_plain_sentence():
  runs, curves, _ = _grid({"MuonAdam": WIDE, "MuonMax": POOR})
  a, b = S.at_best(curves, "MuonMax"), S.at_best(curves, "MuonAdam")
  row = S.not_worse_claim(runs, a, b, claim="c", published="p",
                          reasons={"contradicted": "why"})
  assert row.verdict == "contradicted" and row.reason == "why"
  assert "loses to" in S.plain_loss_sentence(runs, curves)
  assert S.not_worse_claim(runs, b, a, claim="c", published="p").verdict == "reproduced"


def test_claim_rows_cover_the_papers_claims_present():
  runs, curves, grids = _grid({"MuonAdam": NARROW, "MuonMax": POOR, "MuonAdam-Momo": WIDE,
                               "MuonMax-Momo": WIDE})
  rows = S.claim_rows(runs, curves, grids, S.best_of_all(curves))
  assert len(rows) == 6  # two MuonMax-vs-MuonAdam, two Momo bands, two Momo losses
  # MuonMax's band is empty, MuonAdam's one rate: one grid step apart, within the resolution.
  assert rows[0].verdict == "inconclusive" and "resolution" in rows[0].reason
  assert rows[1].verdict == "contradicted" and rows[1].reason
  assert rows[2].verdict == "reproduced" and rows[3].verdict == "reproduced"


def test_merged_runs_refuses_campaigns_of_other_seeds():
  a = {"preset": {"seeds": [0, 1, 2]}, "runs": {"x": []}}
  b = {"preset": {"seeds": [0, 1]}, "runs": {"y": []}}
  assert set(S.merged_runs([a, dict(a, runs={"y": []})])["runs"]) == {"x", "y"}
  with pytest.raises(ValueError):
    S.merged_runs([a, b])


@pytest.mark.slow  # a whole study script end to end (minutes with compilation): -m slow
def test_smoke_preset_end_to_end(tmp_path):
  out = tmp_path / "lr"
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "study_lr_sensitivity.py"),
         "--preset", "smoke", "--out", str(out), "--cache", str(tmp_path / "xla"), "--quiet"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  text = (out / "report.md").read_text()
  summary = json.loads((out / "study.json").read_text())
  assert set(summary["curves"]) == {"MuonAdam", "MuonMax", "MuonMax-Momo"}
  for method, curve in summary["curves"].items():
    rates = [p[0] for p in curve["points"]]
    assert rates == sorted(summary["grids"][method]) and len(rates) >= 2
    assert all(p[1] is None or math.isfinite(p[1]) for p in curve["points"])
    best = curve["band"]["best_lr"]
    on_edge = best in (rates[0], rates[-1])
    assert on_edge == (method in summary["edges"])  # interior, or named as on an edge
    if on_edge:
      assert f"| {method} |" in text and "(grid edge)" in text.split(f"| {method} |")[1]
  assert math.isfinite(summary["reference"])
  assert {r["method"] for r in summary["bands"]} == set(summary["curves"])
  for heading in ("## Final validation loss against learning rate",
                  "## Robustness: bands of learning rates", "## Against the published claims",
                  "## Runtime per campaign"):
    assert heading in text
  assert "unigram" in text and "MuonMax against MuonAdam, each at its best rate" in text
  assert len(summary["claims"]) == 4
  assert all(c["verdict"] in ("reproduced", "contradicted", "inconclusive")
             for c in summary["claims"])
  assert "of 4 claims." in text
  assert (out / "grid" / "results.json").exists() and (out / "lr.png").stat().st_size > 0


def test_band_extensions_name_the_open_ends_of_bands_within_10_percent_of_all():
  flat = {lr: [2.0, 2.01, 2.02] for lr in R}  # every rate in: both ends open
  _, curves, grids = _grid({"flat": flat, "wide": WIDE, "poor": POOR})
  extra = S.band_extensions(curves, grids, S.best_of_all(curves))
  assert extra == {"flat": [float(f"{R[0] / S.STEP:.6g}"), float(f"{R[-1] * S.STEP:.6g}")]}
