"""Tier 2 kernel benchmark (docs/performance.md#benchmark-tiers): Pallas symmetric kernels vs XLA.

On one GPU (or TPU), for bf16 X of shape 1024²…8192² and (768, 3072), times
side by side in one process:

* ``gram``: Pallas lower-tile ``X Xᵀ`` vs XLA ``X @ X.T`` (bound 2×, goal ≥ 1.6×
  at 4096²);
* ``poly``: Pallas ``b A + c A A`` vs XLA (bound 2×);
* ``step``: one full NS iteration ``X ← a X + (b A + c A A) X``, Pallas vs XLA
  (bound (4e + 2)/(3e + 1): 1.5× square, 1.38× at e = 4; goal ≥ 1.3× at 4096²);
* the XLA bf16 matmul rate at 8192³ on the same device and run, the
  denominator of every "% of matmul rate" figure (plus the nominal datasheet
  peak where the device kind is known).

TFLOP/s use the dense analytic FLOP count (2m²n, 2m³, 4m²n + 2m³;
docs/performance.md#cost-model, ``muonjax.bench.flops``)
for both backends, so a symmetric kernel's advantage shows as a higher
"effective" rate. Timing follows docs/performance.md#measurement-method
(``muonjax.bench.harness``): AOT compile, warm-up, cases
interleaved round by round, medians and IQR, two rounds. On GPU the device time
comes from CUPTI (``jax.experimental.mosaic.gpu.profiler.measure``) when it is
available, else wall time around ``block_until_ready``; wall time is always
recorded as a cross-check.

The script prints ``suggested PALLAS_MIN_SHORT_EDGE``: the smallest measured
short edge from which one NS iteration is faster with Pallas for every larger
shape measured. That number (with the device kind and jax version) is what goes
into ``muonjax/kernels/dispatch.py`` so that ``backend="auto"`` uses Pallas.

Without a GPU or TPU it prints why and exits 0. ``--smoke`` runs tiny shapes in
Pallas interpret mode on any machine: a correctness and plumbing check whose
timings mean nothing.

Usage:
  python experiments/bench_kernels.py [--repeats N] [--out DIR]
  python experiments/bench_kernels.py --smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

# Make the repository importable when run as a script without an install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from muonjax.bench import harness, machine  # noqa: E402
from muonjax.kernels import dispatch, symmetric  # noqa: E402

FULL_SHAPES = ((1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192), (768, 3072))
SMOKE_SHAPES = ((24, 40),)
SMOKE_BLOCKS = {"block": 16, "block_k": 16}
KELLER = (3.4445, -4.7750, 2.0315)
PEAK_SHAPE = 8192
SMOKE_PEAK_SHAPE = 64
# Nominal dense bf16 tensor-core peaks (NVIDIA datasheets, without sparsity),
# matched by substring of ``device.device_kind``; others report only the
# measured matmul rate.
NOMINAL_BF16_PEAK = {"H100 80GB HBM3": 989e12, "H200": 989e12}
# Smoke-mode agreement (Pallas vs XLA, relative Frobenius) per dtype.
SMOKE_TOL = {"float32": 1e-5, "bfloat16": 2e-2}


def _flops(kind: str, m: int, n: int) -> float:
  return {"gram": 2.0 * m * m * n, "poly": 2.0 * m ** 3,
          "step": 4.0 * m * m * n + 2.0 * m ** 3}[kind]


def _bound(kind: str, m: int, n: int) -> float:
  e = n / m
  return {"gram": 2.0, "poly": 2.0, "step": (4 * e + 2) / (3 * e + 1)}[kind]


def _nominal_peak(device_kind: str) -> Optional[float]:
  for key, peak in NOMINAL_BF16_PEAK.items():
    if key in device_kind:
      return peak
  return None


def _cases(kw: dict) -> dict[str, tuple[Callable, str]]:
  """``name -> (fn, input)``; input ``"x"`` is X (m, n), ``"a"`` is A = X Xᵀ."""
  a_, b_, c_ = (jnp.float32(v) for v in KELLER)

  def xla_gram(x):
    return jnp.einsum("ik,jk->ij", x, x)

  def xla_poly(a):
    return (b_ * a + c_ * (a @ a)).astype(a.dtype)

  def xla_step(x):
    g = xla_gram(x)
    return (a_ * x + xla_poly(g) @ x).astype(x.dtype)

  return {
      "xla_gram": (xla_gram, "x"),
      "pallas_gram": (lambda x: symmetric.gram(x, **kw), "x"),
      "xla_poly": (xla_poly, "a"),
      "pallas_poly": (lambda a: symmetric.symmetric_poly(a, b_, c_, **kw), "a"),
      "xla_step": (xla_step, "x"),
      "pallas_step": (lambda x: symmetric.newton_schulz_step(x, a_, b_, c_, **kw), "x"),
  }


def _cupti_times(fn, args, iterations: int) -> Optional[list[float]]:
  """Per-iteration device times (s) from CUPTI, or None where unavailable."""
  try:
    from jax.experimental.mosaic.gpu import profiler
    _, times = profiler.measure(fn, iterations=iterations)(*args)
  except Exception:  # noqa: BLE001 - any failure falls back to wall time
    return None
  if not times:
    return None
  return [t / 1e3 for t in times]  # ms -> s


def _device_timed(cases: dict, repeats: int, rounds: int = 2) -> Optional[dict]:
  """CUPTI timings, cases interleaved round by round; None if CUPTI fails."""
  samples = {n: [] for n in cases}
  for _ in range(rounds):
    for name, (fn, argsets) in cases.items():
      got = _cupti_times(fn, argsets[0], repeats)
      if got is None:
        return None
      samples[name].extend(got)
  return {n: harness.summarize(s) for n, s in samples.items()}


def _rel_err(out, ref) -> float:
  out = np.asarray(out, np.float64)
  ref = np.asarray(ref, np.float64)
  return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def bench_shape(m: int, n: int, *, dtype, kw: dict, repeats: int, smoke: bool,
                use_cupti: bool, seed: int = 0) -> dict:
  rng = np.random.default_rng([seed, m, n])
  xs = [jnp.asarray(rng.standard_normal((m, n), dtype=np.float32) / np.sqrt(n),
                    dtype) for _ in range(2)]
  gram_xla = jax.jit(lambda x: jnp.einsum("ik,jk->ij", x, x))
  inputs = {"x": [(x,) for x in xs], "a": [(gram_xla(x),) for x in xs]}
  jax.block_until_ready(inputs)
  compiled, outputs = {}, {}
  for name, (fn, kind) in _cases(kw).items():
    c = harness.aot_compile(fn, *inputs[kind][0], compiler_options=(
        harness.QUICK_COMPILER_OPTIONS if smoke else None))
    compiled[name] = (c.fn, inputs[kind])
    outputs[name] = c.fn(*inputs[kind][0])
  result: dict[str, Any] = {"m": m, "n": n, "dtype": jnp.dtype(dtype).name, "ops": {}}
  for op in ("gram", "poly", "step"):
    result["ops"][op] = {"rel_err_pallas_vs_xla": _rel_err(
        outputs[f"pallas_{op}"], outputs[f"xla_{op}"])}
  wall = harness.interleaved(compiled, repeats=repeats, warmup=1 if smoke else 3)
  device = _device_timed(compiled, repeats) if use_cupti else None
  stats = device if device is not None else wall["stats"]
  result["timing"] = "cupti" if device is not None else "wall"
  for op in ("gram", "poly", "step"):
    t_x, t_p = stats[f"xla_{op}"]["median"], stats[f"pallas_{op}"]["median"]
    fl = _flops(op, m, n)
    result["ops"][op].update({
        "xla": stats[f"xla_{op}"], "pallas": stats[f"pallas_{op}"],
        "xla_wall": wall["stats"][f"xla_{op}"],
        "pallas_wall": wall["stats"][f"pallas_{op}"],
        "speedup": t_x / t_p, "bound": _bound(op, m, n),
        "xla_tflops": fl / t_x / 1e12, "pallas_tflops_effective": fl / t_p / 1e12,
    })
  return result


def matmul_rate(size: int, dtype, repeats: int, use_cupti: bool) -> dict:
  """XLA bf16 ``size³`` matmul rate on random data (the % denominator)."""
  rng = np.random.default_rng(1)
  x, y = (jnp.asarray(rng.standard_normal((size, size), dtype=np.float32), dtype)
          for _ in range(2))
  c = harness.aot_compile(jnp.matmul, x, y)
  cases = {"matmul": (c.fn, [(x, y)])}
  device = _device_timed(cases, repeats) if use_cupti else None
  stats = device if device is not None else harness.interleaved(cases, repeats=repeats)["stats"]
  return {"size": size, "median_s": stats["matmul"]["median"],
          "tflops": 2.0 * size ** 3 / stats["matmul"]["median"] / 1e12}


def suggest_threshold(rows: list[dict]) -> Optional[int]:
  """Smallest short edge m from which the step speed-up is > 1 at every m' >= m."""
  by_m: dict[int, list[float]] = {}
  for r in rows:
    by_m.setdefault(min(r["m"], r["n"]), []).append(r["ops"]["step"]["speedup"])
  best = None
  for m in sorted(by_m, reverse=True):
    if min(by_m[m]) > 1.0:
      best = m
    else:
      break
  return best


def to_markdown(res: dict) -> str:
  info = res["machine"]
  peak = res["matmul_rate"]["tflops"]
  lines = [
      f"# Pallas symmetric kernels vs XLA ({res['date']})", "",
      f"device {info['device_kind']} ({info['backend']}), jax {info['jax']}, "
      f"lowering {res['lowering']}, timing {res['rows'][0]['timing'] if res['rows'] else '-'}, "
      f"dtype {res['dtype']}, blocks {res['blocks']}", "",
      f"XLA matmul {res['matmul_rate']['size']}³: {peak:.1f} TFLOP/s"
      + (f" ({100 * peak * 1e12 / res['nominal_peak']:.0f} % of nominal "
         f"{res['nominal_peak'] / 1e12:.0f})" if res["nominal_peak"] else ""), "",
      "| shape | op | XLA ms | Pallas ms | speed-up | bound | XLA TF/s (% matmul) "
      "| Pallas eff. TF/s (% matmul) | rel. err |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in res["rows"]:
    for op, o in r["ops"].items():
      lines.append(
          f"| {r['m']}×{r['n']} | {op} | {1e3 * o['xla']['median']:.3f} | "
          f"{1e3 * o['pallas']['median']:.3f} | {o['speedup']:.2f} | {o['bound']:.2f} | "
          f"{o['xla_tflops']:.1f} ({100 * o['xla_tflops'] / peak:.0f} %) | "
          f"{o['pallas_tflops_effective']:.1f} "
          f"({100 * o['pallas_tflops_effective'] / peak:.0f} %) | "
          f"{o['rel_err_pallas_vs_xla']:.1e} |")
  lines += ["", f"suggested PALLAS_MIN_SHORT_EDGE: {res['suggested_min_short_edge']}"]
  return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true",
                  help="tiny shapes in Pallas interpret mode (any machine; timings meaningless)")
  ap.add_argument("--repeats", type=int, default=None,
                  help="timed calls per case and round (default 20; smoke 2)")
  ap.add_argument("--block", type=int, default=None, help="output tile edge")
  ap.add_argument("--block-k", type=int, default=None, help="reduction chunk")
  ap.add_argument("--out", type=Path, default=None,
                  help="directory for kernels.json / kernels.md (default: print only)")
  args = ap.parse_args(argv)

  plat = dispatch.platform()
  if not args.smoke and plat not in ("gpu", "tpu"):
    print(f"bench_kernels: no GPU or TPU present (default backend {plat!r}); the "
          "Tier 2 kernel benchmark needs one and was skipped. Run with --smoke "
          "for a CPU interpret-mode check of the plumbing.")
    return 0

  smoke = args.smoke
  repeats = args.repeats or (2 if smoke else 20)
  kw: dict[str, Any] = dict(SMOKE_BLOCKS) if smoke else {}
  if args.block:
    kw["block"] = args.block
  if args.block_k:
    kw["block_k"] = args.block_k
  if smoke:
    kw["interpret"] = True
  dtype = jnp.bfloat16
  shapes = SMOKE_SHAPES if smoke else FULL_SHAPES
  use_cupti = plat == "gpu" and not smoke
  lowering = symmetric.plan(1, *shapes[0], **kw).lowering
  info = machine.machine_info()
  info["lowering"] = lowering

  rows = []
  for m, n in shapes:
    t0 = time.perf_counter()
    rows.append(bench_shape(m, n, dtype=dtype, kw=kw, repeats=repeats, smoke=smoke,
                            use_cupti=use_cupti))
    step = rows[-1]["ops"]["step"]
    print(f"{m}×{n}: step speed-up {step['speedup']:.2f} (bound {step['bound']:.2f}), "
          f"gram {rows[-1]['ops']['gram']['speedup']:.2f}, "
          f"poly {rows[-1]['ops']['poly']['speedup']:.2f}  "
          f"[{time.perf_counter() - t0:.1f} s]", flush=True)
  res = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "smoke": smoke, "machine": info, "lowering": lowering,
      "dtype": jnp.dtype(dtype).name,
      "blocks": {k: kw.get(k) for k in ("block", "block_k")},
      "matmul_rate": matmul_rate(SMOKE_PEAK_SHAPE if smoke else PEAK_SHAPE, dtype,
                                 repeats, use_cupti),
      "nominal_peak": _nominal_peak(info["device_kind"]),
      "rows": rows,
  }
  res["suggested_min_short_edge"] = None if smoke else suggest_threshold(rows)
  print(to_markdown(res))

  status = 0
  tol = SMOKE_TOL[res["dtype"]]
  for r in rows:
    for op, o in r["ops"].items():
      if not o["rel_err_pallas_vs_xla"] <= tol:
        print(f"MISMATCH {r['m']}×{r['n']} {op}: relative error "
              f"{o['rel_err_pallas_vs_xla']:.2e} > {tol}")
        status = 1
  if smoke:
    print("smoke mode: Pallas ran in interpret mode; the timings above mean nothing.")
  if args.out is not None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(res, indent=1, default=str))
    (args.out / "kernels.md").write_text(to_markdown(res))
    print(f"wrote {args.out / 'kernels.json'} and {args.out / 'kernels.md'}")
  return status


if __name__ == "__main__":
  raise SystemExit(main())
