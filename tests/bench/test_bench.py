"""Smoke test of the orthogonalization benchmark (no timing assertions)."""

import json
import math

import pytest

from muonjax import bench


def _positive_finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.e2e  # the whole `muonjax bench --quick` command (~25 s): CI's second tier
def test_bench_quick_writes_every_section(tmp_path, capsys):
  assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
  results = json.loads((tmp_path / "orthogonalize.json").read_text())
  md = (tmp_path / "orthogonalize.md").read_text()
  assert "## a." in capsys.readouterr().out

  for section in ("machine", "config", "ns_vs_optax", "ns_vs_dot", "bandwidth",
                  "tree_step", "accuracy"):
    assert section in results, section
  for key in ("platform", "cpu_model", "cpu_count", "jax", "jaxlib", "optax", "flax",
              "backend"):
    assert results["machine"][key], key
  for key in ("date_utc", "dtype", "repeats", "loadavg_start"):
    assert key in results["config"], key
  for heading in ("## a.", "## b.", "## c.", "## d."):
    assert heading in md

  assert len(results["ns_vs_optax"]) == len(bench.QUICK_SHAPES)
  for row in results["ns_vs_optax"]:
    ratio = row["ratio_ours_over_optax"]
    assert _positive_finite(ratio["ratio"])
    assert all(_positive_finite(r) for r in ratio["rounds"])
    assert _positive_finite(row["ours_s"]["median"]) and row["ours_s"]["iqr"] >= 0
    assert row["max_abs_diff"] < 1e-4, row  # our NS agrees with optax's
  for row in results["ns_vs_dot"]:
    for key in ("r2_ns_over_dot", "r1_flop_ratio"):
      assert _positive_finite(row[key]), (key, row)
    assert _positive_finite(row["r1"]["ratio"])
    assert _positive_finite(row["ns_gflops"]["median"])
    assert _positive_finite(row["dot_gflops"]["median"])

  assert results["batched_vs_single"], "the stacked quick shape must give R3"
  for row in results["batched_vs_single"]:
    assert _positive_finite(row["r3"]["ratio"])

  assert _positive_finite(results["bandwidth"]["gb_per_s"]["median"])
  tree = results["tree_step"]
  for name in ("muon_over_adamw", "muon_ungrouped_over_adamw", "optax_muon_over_adamw",
               "muon_over_optax_muon", "muon_grouped_over_ungrouped"):
    assert _positive_finite(tree["ratios"][name]["ratio"]), name
  assert _positive_finite(tree["prediction"]["muon_over_adamw"])

  rows = results["accuracy"]["rows"]
  assert {r["coeffs"] for r in rows} >= {"keller", "dion", "polar_express",
                                         "polar_express_modded", "exact_cubic"}
  assert {r["compute_dtype"] for r in rows} == {"float32", "bfloat16"}
  for r in rows:
    assert math.isfinite(r["max_abs_sigma_minus_1"]) and math.isfinite(r["rel_fro_err_vs_polar"])
  # Converged sets reach the polar factor in float32.
  exact = [r for r in rows if r["coeffs"] == "exact_cubic" and r["compute_dtype"] == "float32"]
  assert exact[0]["rel_fro_err_vs_polar"] < 1e-4


def test_expected_sigma_ranges_are_the_composed_polynomials():
  """EXPECTED_SIGMA_RANGE is min/max of the composed polynomial on σ ∈ [1e-2, 1]."""
  import numpy as np

  import muonjax as mj
  sigma = np.linspace(1e-2, 1.0, 200_001)
  for (preset, steps), (lo, hi) in bench.EXPECTED_SIGMA_RANGE.items():
    out = np.asarray(mj.composed_polynomial(sigma, preset, steps), dtype=np.float64)
    assert round(float(out.min()), 3) == lo and round(float(out.max()), 3) == hi, preset


def test_flop_formulas():
  assert bench.wide_dims((3072, 768)) == (1, 768, 3072)
  assert bench.ns_flops((2, 16, 64), steps=5) == 2 * 5 * (4 * 16 * 16 * 64 + 2 * 16 ** 3)
  assert bench.dot_flops((64, 16)) == 2 * 16 * 16 * 64
  assert bench.r1_flop_ratio((768, 3072)) == 5 * (2 + 768 / 3072)


def test_python_m_entry_point_parses_arguments():
  import os
  import subprocess
  import sys
  from pathlib import Path
  root = Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
  proc = subprocess.run([sys.executable, "-m", "muonjax.bench", "--help"], env=env,
                        capture_output=True, text=True, timeout=120, cwd=root)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--quick" in proc.stdout
