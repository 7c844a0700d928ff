"""Study 1 (experiments/study_looped.py): its smoke preset end to end, and its pure helpers
(depth use, gap intervals, claim verdicts) on hand-made payloads."""

import json
import math
import os
import subprocess
import sys

import pytest

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "experiments", "study_looped.py")


looped = helpers.load_experiment("study_looped")


def _runs(losses, **terms):
  """One entry's runs: a final loss per seed, optional final_terms lists per term."""
  out = []
  for i, loss in enumerate(losses):
    run = {"final_val_loss": loss, "diverged": loss is None}
    if terms:
      run["final_terms"] = {k: v[i] for k, v in terms.items()}
    out.append(run)
  return out


def _payload(losses, *, timing=None, steps=50, unigram=3.2, bigram=2.5):
  return {"runs": {e: _runs(v) for e, v in losses.items()},
          "references": {"unigram": unigram, "bigram": bigram, "tokens": 16384},
          "timing": None if timing is None else {"arms": timing},
          "preset": {"steps": steps}}


# --- pure helpers ---------------------------------------------------------------


def test_depth_use_pairs_ce_short_with_ce_per_seed():
  payload = {"runs": {"adamw": _runs([3.0, 3.1, 3.2], ce=[2.0, 2.1, 2.2],
                                     ce_short=[2.5, 2.6, 2.8], consistency=[0.1, 0.2, 0.3])}}
  d = looped.depth_use(payload)["adamw"]
  assert d["gain"]["n"] == 3
  assert d["gain"]["mean"] == pytest.approx((0.5 + 0.5 + 0.6) / 3)
  assert d["gain"]["lo"] > 0  # the second loop helps on every seed
  assert d["consistency"] == pytest.approx(0.2)
  assert d["consistency_std"] == pytest.approx(0.1)
  text = looped.depth_markdown(looped.depth_use(payload), "LoopFormer")
  assert "| adamw | +0.5333 [" in text and "0.2000 ± 0.1000" in text


def test_depth_use_skips_diverged_runs():
  payload = {"runs": {"muon": [{"diverged": True}] + _runs([3.0, 3.0], ce=[2.0, 2.0],
                                                           ce_short=[2.1, 2.3],
                                                           consistency=[0.1, 0.1])}}
  d = looped.depth_use(payload)["muon"]
  assert d["gain"]["n"] == 2 and d["consistency"] == pytest.approx(0.1)


def test_gap_interval_is_the_difference_of_paired_gaps():
  a = _payload({"adamw": [3.0, 3.1, 3.2], "muon": [2.0, 2.1, 2.2]})  # gap 1.0 every seed
  b = _payload({"adamw": [2.5, 2.6, 2.75], "muon": [2.4, 2.5, 2.6]})  # gap 0.1, 0.1, 0.15
  iv = looped.gap_interval(a, b, "adamw", "muon")
  assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.9 - 0.05 / 3)
  assert iv["lo"] > 0


def test_reference_claim_against_the_bigram_loss():
  payload = _payload({"adamw": [2.8, 2.9, 2.85]}, bigram=2.5)
  c = looped.reference_claim(payload, ["adamw"], "bigram", "positive", claim="stall",
                             published="x")
  assert c.verdict == "reproduced" and "adamw − bigram: +0.3500" in c.ours
  c = looped.reference_claim(payload, ["adamw"], "bigram", "negative", claim="below",
                             published="x")
  assert c.verdict == "contradicted"


def test_worst_claim_verdicts():
  clear = _payload({"mano": [3.0, 3.1, 3.2], "newton_muon": [3.5, 3.6, 3.7],
                    "normuon": [2.9, 3.0, 3.1]})
  assert looped.worst_claim(clear, "newton_muon", ["mano", "newton_muon", "normuon"],
                            claim="c", published="p").verdict == "reproduced"
  beaten = _payload({"mano": [3.0, 3.1, 3.2], "newton_muon": [2.5, 2.6, 2.7]})
  c = looped.worst_claim(beaten, "newton_muon", ["mano", "newton_muon"], claim="c",
                         published="p", reasons={"contradicted": "why"})
  assert c.verdict == "contradicted" and c.reason == "why"
  noisy = _payload({"mano": [3.0, 3.5, 2.6], "newton_muon": [3.1, 3.1, 3.1]})
  assert looped.worst_claim(noisy, "newton_muon", ["mano", "newton_muon"], claim="c",
                            published="p").verdict == "inconclusive"


def _arm(ratio, q1, q3):
  return {"ratio": ratio, "ratio_q1": q1, "ratio_q3": q3}


def test_timing_claims_use_the_quartile_ranges():
  timing = {"adamw": _arm(1.0, 1.0, 1.0), "mano": _arm(1.02, 0.98, 1.05),
            "normuon": _arm(1.3, 1.2, 1.4), "adamuon": _arm(1.25, 1.1, 1.35)}
  payload = _payload({k: [3.0, 3.0] for k in timing}, timing=timing)
  fast = looped.fastest_claim(payload, "mano", ["mano", "normuon", "adamuon"], claim="c",
                              published="p")
  assert fast.verdict == "reproduced" and "mano 1.02× [0.98, 1.05]" in fast.ours
  slow = looped.slower_claim(payload, ["mano", "normuon", "adamuon"], claim="c", published="p")
  assert slow.verdict == "inconclusive"  # Mano's range includes 1×
  timing["mano"] = _arm(1.5, 1.45, 1.55)  # now slower than AdaMuon beyond the quartiles
  assert looped.fastest_claim(payload, "mano", ["mano", "normuon", "adamuon"], claim="c",
                              published="p").verdict == "contradicted"
  assert looped.slower_claim(payload, ["mano", "normuon", "adamuon"], claim="c",
                             published="p").verdict == "reproduced"
  untimed = _payload({"adamw": [3.0], "mano": [3.0]})
  assert looped.fastest_claim(untimed, "mano", ["mano"], claim="c",
                              published="p").verdict == "inconclusive"


def test_on_edge_withholds_a_verdict():
  c = looped.Claim("c", "p", "o", "reproduced", "r")
  assert looped.on_edge(c, ["adamw", "muon"], []) == c
  assert looped.on_edge(c, ["adamw", "muon"], ["mano"]) == c
  held = looped.on_edge(c, ["adamw", "muon"], ["muon"])
  assert held.verdict == "inconclusive" and "muon on a grid edge" in held.reason
  assert "would be reproduced" in held.reason


def test_published_claims_on_hand_made_campaigns():
  names = ("adamw", "muon", "normuon", "adamuon", "mano", "newton_muon")
  losses = {"adamw": [3.5, 3.55, 3.52], "muon": [2.8, 2.85, 2.83], "normuon": [2.81, 2.84, 2.86],
            "adamuon": [3.1, 3.2, 3.15], "mano": [3.0, 3.05, 3.02],
            "newton_muon": [2.84, 2.82, 2.85]}
  timing = {n: _arm(1.0 + 0.1 * i, 0.95 + 0.1 * i, 1.05 + 0.1 * i) for i, n in enumerate(names)}
  short = _payload(losses, timing=timing)
  long = _payload({"adamw": [2.7, 2.72, 2.71], "muon": [2.28, 2.29, 2.3]}, steps=150)
  edges = {"short": [], "long": []}
  rows = {r.claim: r for r in looped.published_claims(short, long, edges)}
  assert rows["No variant beats AdamW at 50 steps (AdamW lowest)"].verdict == "contradicted"
  assert rows["Mano is the best variant at 50 steps"].verdict == "contradicted"
  assert rows["Newton-Muon ends highest of the variants (\"needs tuning\")"].verdict \
      == "contradicted"
  assert rows["Mano has the cheapest step of the variants"].verdict == "contradicted"
  long_row = rows["Muon's advantage shows with longer training (Muon < AdamW at 150 steps)"]
  assert long_row.verdict == "reproduced"
  # AdamW left on a grid edge: no verdict on the claims that rest on it.
  held = looped.published_claims(short, long, {"short": ["adamw"], "long": ["adamw"]})
  assert {r.claim: r for r in held}[long_row.claim].verdict == "inconclusive"
  # The comparison table: our intervals next to the published numbers, with its caveat.
  short["rows"] = [{"optimizer": n, "val_loss": sum(v) / 3, "val_loss_std": 0.02,
                    "delta": sum(v) / 3 - 3.523, "time_ratio": 1.0,
                    "delta_interval": None if n == "adamw" else
                    {"n": 3, "mean": -0.5, "lo": -0.6, "hi": -0.4}}
                   for n, v in losses.items()]
  text = looped.published_comparison(short)
  assert "| mano | 10.8393 | +0.0269 | 1.4× |" in text
  assert "-0.5000 [-0.6000, -0.4000] (3 seeds)" in text and "ln 50257 = 10.825" in text


def test_control_claims_on_hand_made_campaigns():
  lf = _payload({"adamw": [2.9, 2.95, 2.92], "muon": [2.4, 2.42, 2.41],
                 "adamuon": [3.0, 3.1, 3.05]}, bigram=2.5)
  open_ = _payload({"adamw": [2.6, 2.62, 2.61], "muon": [2.4, 2.41, 2.42]}, bigram=2.5)
  gpt = _payload({"adamw": [2.35, 2.36, 2.34], "muon": [2.3, 2.31, 2.3]}, bigram=2.5)
  edges = {"long": [], "open": [], "gpt": []}
  rows = looped.control_claims(lf, open_, gpt, edges)
  verdicts = {r.claim: r.verdict for r in rows}
  assert verdicts["On LoopFormer AdamW stalls above the bigram loss"] == "reproduced"
  assert verdicts["Opening the gates does not shrink AdamW's gap to Muon"] == "contradicted"
  assert verdicts["Without the loop (the same block, plain GPT) AdamW gets below the bigram "
                  "loss"] == "reproduced"
  assert verdicts["The loop widens AdamW's gap to Muon (LoopFormer vs the plain GPT)"] \
      == "reproduced"
  assert len(rows) == 7


def test_presets_give_every_arm_the_same_budget_and_the_adamw_grid_two_decades():
  cpu = looped.PRESETS["cpu"]
  assert cpu.first_points == 5 and cpu.seeds == 3
  assert cpu.eval_batches * cpu.batch_size * cpu.seq_len >= 16384
  assert looped.CENTRES["adamw"] == 3e-3  # first grid 3e-4 … 3e-2
  names = [c[0] for c in looped.campaigns(cpu)]
  assert names == ["loopformer_short", "loopformer_long", "loopformer_open_long", "gpt_long",
                   "mor_long", "hyperloop_long"]
  gpt = looped.campaigns(cpu)[3]
  assert gpt[1] == "gpt" and gpt[2]["n_layers"] == cpu.loopformer["n_layers"]
  assert looped.campaigns(cpu)[2][2]["adaln_init"] == "open"
  short = looped.compare_preset(cpu, "loopformer", cpu.loopformer, "short", cpu.variants, 3, None)
  assert short.steps == 50 and short.seeds == (0, 1, 2) and short.timing_repeats > 0
  assert all(set(e) == {"learning_rate"} for e in short.optimizers.values())  # no asymmetry


# --- the script end to end ------------------------------------------------------------


@pytest.mark.slow  # a whole study script end to end (minutes with compilation): -m slow
def test_study_looped_smoke(tmp_path):
  out = tmp_path / "looped"
  cmd = [sys.executable, SCRIPT, "--preset", "smoke", "--out", str(out), "--cache",
         str(tmp_path / "xla"), "--quiet"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  text = (out / "report.md").read_text()
  summary = json.loads((out / "study.json").read_text())
  campaigns = {"loopformer_short", "loopformer_long", "loopformer_open_long", "gpt_long"}
  assert set(summary["tables"]) == campaigns
  for rows in summary["tables"].values():
    assert rows and all(r["val_loss"] is not None and math.isfinite(r["val_loss"]) for r in rows)
  for name in campaigns:
    assert (out / name / "results.json").exists() and (out / name / "tune" / "tune.json").exists()
    rates = summary["learning_rates"][name]
    assert set(rates) == {"adamw", "muon"} and all(r > 0 for r in rates.values())
  # Every rate on a grid edge is named in the report and marked in its table.
  for name, edged in summary["edges"].items():
    for entry in edged:
      assert f"{name}: " in text and entry in text
  if any(summary["edges"].values()):
    assert "(grid edge" in text
  assert "## Published table next to ours" in text and "## LoopFormer, long setting" in text
  assert "| published claim |" in text and "ln 50257" in text
  assert any(w in text for w in ("**reproduced**", "**contradicted**", "**inconclusive**"))
  assert len(summary["claims"]) >= 1 and len(summary["control_claims"]) == 6
  assert all(c["verdict"] in ("reproduced", "contradicted", "inconclusive")
             for c in summary["claims"] + summary["control_claims"])
  assert set(summary["depth"]) == {"loopformer_short", "loopformer_long", "loopformer_open_long"}
  assert "ce_short − ce [95 % CI]" in text and "## Runtime per campaign" in text


def test_plateau_points_and_edge_text():
  search = {"references": {"unigram": 3.2, "bigram": 2.5, "tokens": 16384},
            "results": {"adamw": {"points": [[1e-4, 2.9], [3e-3, 3.18], [1e-2, 3.3], [3e-2, None]],
                                  "best_lr": 1e-4, "best_loss": 2.9, "edge": "low"},
                        "muon": {"points": [[0.02, 2.3]], "best_lr": 0.02, "best_loss": 2.3,
                                 "edge": None}}}
  assert looped.plateau_points(search) == {"adamw": [[3e-3, 3.18]], "muon": []}
  text = looped.plateau_markdown({"lf": search}, {"lf": "LoopFormer"})
  assert "| LoopFormer | 3.200 | 2.500 | adamw 0.003: 3.180 |" in text
  assert "adamw 0.0001 (edge: low): 2.900; muon 0.02: 2.300" in text
  assert looped.edge_text({"lf": search}) == "lf: adamw (low edge, 0.0001)"
  assert looped.edge_text({"lf": {"results": {}}}) == "none"


def test_report_only_trains_nothing_and_names_the_missing_campaigns(tmp_path):
  assert not looped.finished(str(tmp_path), "loopformer_short")
  assert looped.main(["--report-only", "--out", str(tmp_path), "--quiet"]) == 0
  summary = json.loads((tmp_path / "study.json").read_text())
  assert summary["missing"] == [c[0] for c in looped.campaigns(looped.PRESETS["cpu"])]
  assert summary["runs"] == 0 and summary["tables"] == {}
  assert "## Not finished" in (tmp_path / "report.md").read_text()


def test_frozen_edges_are_flat_low_edges_at_tiny_rates():
  search = {"results": {
      "flat": {"edge": "low", "points": [[3e-6, 2.8865], [9.5e-6, 2.8872], [3e-5, 2.89]]},
      "steep": {"edge": "low", "points": [[3e-6, 2.80], [9.5e-6, 2.85]]},
      "large": {"edge": "low", "points": [[1e-3, 2.8865], [3e-3, 2.8866]]},
      "high": {"edge": "high", "points": [[1e-6, 2.9], [1e-5, 2.9]]},
      "inside": {"edge": None, "points": [[1e-6, 2.9], [1e-5, 2.8], [1e-4, 2.9]]}}}
  assert looped.frozen_edges(search) == ["flat"]
