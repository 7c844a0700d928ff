"""Markdown and JSON renderings of :func:`muonjax.bench.suites.run_orthogonalize_bench` results.

The goals quoted in the headings (R2 ≥ 0.9, R4 ≤ 0.8, R3 ≤ 1) are those of
``docs/performance.md#benchmark-tiers``.
"""

from __future__ import annotations

import numpy as np


def _ms(st: dict) -> str:
  return f"{st['median'] * 1e3:.2f} (±{st['iqr'] * 1e3:.2f})"


def _shape(s) -> str:
  return "×".join(str(d) for d in s)


def _ratio(r: dict) -> str:
  rounds = "/".join(f"{x:.3f}" for x in r["rounds"])
  return f"**{r['ratio']:.3f}** ({rounds})"


def format_markdown(results: dict) -> str:
  """Render :func:`run_orthogonalize_bench` results as a Markdown report."""
  m, c = results["machine"], results["config"]
  lines = [
      "# Orthogonalization benchmark (muonjax vs optax, Tier 1)", "",
      f"* date (UTC): {c['date_utc']}; total wall {c.get('total_wall_s', float('nan')):.0f} s",
      f"* machine: {m['platform']}; CPU {m['cpu_model']} × {m['cpu_count']} cores; "
      f"backend {m['backend']} ({m['device_kind']}), lowering {m['lowering']}",
      f"* versions: jax {m['jax']}, jaxlib {m['jaxlib']}, optax {m['optax']}, "
      f"flax {m['flax']}, numpy {m['numpy']}; XLA_FLAGS='{m['xla_flags']}'; "
      f"matmul precision {m['matmul_precision']}",
      f"* dtype {c['dtype']}; NS = Keller ×{c['ns']['steps']}, eps {c['ns']['eps']}, "
      "no compute-dtype cast, on both sides",
      f"* timing: AOT-compiled, {c['warmup']} warm-up calls, up to {c['repeats']} "
      f"interleaved timed calls per case and round (fewer when a round would exceed "
      f"{c['budget_s_per_round']} s, never < 5 per round = 10 per case in all), "
      f"{c['rounds']} rounds; times are "
      "median (±IQR) in ms over both rounds; ratios are ratios of medians, **pooled** "
      "(round 1/round 2)",
      f"* load average (1/5/15 min) at start {c['loadavg_start']}, at end "
      f"{c.get('loadavg_end')} (other processes share the CPU: expect ±10–20 % noise)",
      *([f"* **--quick smoke run**: tiny shapes, compiler options {c['compiler_options']}; "
         "the timings mean nothing"] if c.get("quick") else []),
      "",
      "## a. NS5: muonjax vs optax (R4; goal ≤ 0.8)", "",
      "| shape (in×out) | n/round | ours ms | optax ms | ours/optax | max abs diff | "
      "compile s ours / optax |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in results["ns_vs_optax"]:
    lines.append(
        f"| {_shape(r['shape'])} | {'/'.join(map(str, r['n_per_round']))} | "
        f"{_ms(r['ours_s'])} | {_ms(r['optax_s'])} | {_ratio(r['ratio_ours_over_optax'])} | "
        f"{r['max_abs_diff']:.1e} | {r['compile_s']['ours']['compile_s']:.2f} / "
        f"{r['compile_s']['optax']['compile_s']:.2f} |")
  for r in results.get("batched_vs_single", []):
    cross = (f"; against {r['shape'][0]} × the 2-D shape's own loop: "
             f"{r['r3_cross_loop']:.3f}" if "r3_cross_loop" in r else "")
    lines.append(f"\n* R3 = t(batched NS on {_shape(r['shape'])}) / t({r['shape'][0]} "
                 f"separate NS calls in one executable, {_ms(r['per_matrix_s'])} ms) = "
                 f"{_ratio(r['r3'])} (same loop; goal ≤ 1{cross})")
  lines += [
      "", "## b. NS5 throughput vs plain matmul (R2 goal ≥ 0.9; R1 → T·(2 + 1/e))", "",
      "NS FLOPs = T·(4m²n + 2m³) (m ≤ n); dot = (m×n)·(n×m), 2m²n FLOPs; "
      "X Xᵀ also 2m²n.", "",
      "| shape | m×n (batch) | NS GFLOP | NS GFLOP/s | dot GFLOP/s | R2 = NS/dot | "
      "X Xᵀ ms | R1 = t(NS)/t(XXᵀ) | FLOP ratio T(2+1/e) |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results["ns_vs_dot"]:
    lines.append(
        f"| {_shape(r['shape'])} | {r['m']}×{r['n']} ({r['batch']}) | {r['ns_gflop']:.3g} | "
        f"{r['ns_gflops']['median']:.1f} (±{r['ns_gflops']['iqr']:.1f}) | "
        f"{r['dot_gflops']['median']:.1f} (±{r['dot_gflops']['iqr']:.1f}) | "
        f"**{r['r2_ns_over_dot']:.3f}** | {_ms(r['xxt_s'])} | {_ratio(r['r1'])} | "
        f"{r['r1_flop_ratio']:.2f} |")
  bwd = results["bandwidth"]
  t = results["tree_step"]
  p = t["prediction"]
  lines += [
      "", "## c. One optimizer step on a GPT-2-small-like tree (R6)", "",
      f"* tree: {t['tree']['note']}; Muon params {t['tree']['params_muon']:,}, "
      f"AdamW params {t['tree']['params_adamw']:,}",
      f"* memory bandwidth ({bwd['op']}, {bwd['elements']:,} elements): "
      f"{bwd['gb_per_s']['median']:.1f} GB/s (±{bwd['gb_per_s']['iqr']:.1f}); AdamW step "
      f"achieved {t['adamw_achieved_gbs']:.1f} GB/s at 28 B/param",
      f"* prediction: NS {p['ns_gflop']:.0f} GFLOP → {p['t_ns_s'] * 1e3:.0f} ms at the "
      f"measured dot rates; Muon step {p['t_muon_s'] * 1e3:.0f} ms, AdamW "
      f"{p['t_adamw_s'] * 1e3:.1f} ms → **predicted Muon/AdamW {p['muon_over_adamw']:.0f}×**",
      "",
      "| optimizer | n/round | step ms | / AdamW (measured) | / AdamW (predicted) | "
      "compile s |",
      "|---|---|---|---|---|---|",
  ]
  st = t["timing"]["stats"]
  npr = "/".join(map(str, t["timing"]["n_per_round"]))
  labels = {"muon": "mj.muon (grouped by shape)",
            "muon_ungrouped": "mj.muon(group_by_shape=False)",
            "optax_muon": "optax.contrib.muon (same routing)", "adamw": "optax.adamw"}
  for name, label in labels.items():
    ratio = ("1" if name == "adamw" else _ratio(t["ratios"][f"{name}_over_adamw"]))
    pred = f"{p['muon_over_adamw']:.0f}" if name != "adamw" else "1"
    lines.append(f"| {label} | {npr} | {_ms(st[name])} | {ratio} | {pred} | "
                 f"{t['compile'][name]['compile_s']:.2f} |")
  lines += [
      "",
      f"* mj.muon / optax.contrib.muon: {_ratio(t['ratios']['muon_over_optax_muon'])}; "
      f"grouped / per-leaf: {_ratio(t['ratios']['muon_grouped_over_ungrouped'])}",
  ]
  acc = results["accuracy"]
  lo, hi = acc["normalized_input_sigma_range"]
  lines += [
      "", f"## d. Accuracy vs float64 SVD polar factor ({_shape(acc['shape'])} N(0,1) input; "
      f"σ/‖X‖_F ∈ [{lo:.3f}, {hi:.3f}])", "",
      "| coefficients | steps | compute | max \\|σ−1\\| | σ min | σ max | "
      "‖O−polar‖_F/‖polar‖_F | expected σ range (composed polynomial, σ ∈ [0.01, 1]) |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in acc["rows"]:
    exp = r.get("expected_sigma_range")
    exp_s = f"[{exp[0]:.3f}, {exp[1]:.3f}]" if exp else "—"
    lines.append(
        f"| {r['coeffs']} | {r['steps']} | {r['compute_dtype']} | "
        f"{r['max_abs_sigma_minus_1']:.2e} | {r['sigma_min']:.4f} | {r['sigma_max']:.4f} | "
        f"{r['rel_fro_err_vs_polar']:.2e} | {exp_s} |")
  lines.append("")
  return "\n".join(lines)


def to_jsonable(obj):
  """``obj`` with NumPy scalars as Python numbers and every dict key a string."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (np.floating, np.integer)):
    return obj.item()
  return obj
