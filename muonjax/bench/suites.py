"""The orthogonalization benchmark suite (Tier 1 ratios on one device).

Tiers: ``docs/performance.md#benchmark-tiers``. Measures, each in one process
with interleaved A/B timing (:mod:`muonjax.bench.harness`):

a. ``mj.newton_schulz`` (Keller ×5, no bf16 cast) against optax's
   ``orthogonalize_via_newton_schulz`` on GPT-2-small shapes (R4), plus the max
   abs difference of their outputs;
b. the NS GFLOP/s (analytic FLOPs, :mod:`muonjax.bench.flops`) against a plain
   ``jnp.dot`` of the same ``m, n`` (R2), and R1 = t(NS5) / t(X Xᵀ) next to its
   FLOP ratio ``T·(2 + 1/e)``;
c. one ``jax.jit(tx.update)`` step on a GPT-2-small-like tree for ``mj.muon``
   (shape-grouped and per-leaf), ``optax.contrib.muon`` routed the same way and
   ``optax.adamw`` (R6), next to an analytic prediction from the measured matmul
   rate and memory bandwidth;
d. accuracy of every coefficient set against a float64 NumPy SVD polar factor.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import MuonDimensionNumbers
# optax's Newton–Schulz is the baseline of sections a and d, and optax exposes it
# only in its private module (optax.contrib's public names are muon,
# scale_by_muon, MuonDimensionNumbers and MuonState, optax 0.2.8): this is the
# one private optax import in muonjax, kept here, outside the optimizer.
from optax.contrib import _muon as optax_contrib_muon

from muonjax import routing
from muonjax.bench.flops import NS_STEPS, dot_flops, ns_flops, r1_flop_ratio, wide_dims
from muonjax.bench.harness import (
    QUICK_COMPILER_OPTIONS,
    aot_compile,
    interleaved,
    ratio_of_medians,
)
from muonjax.bench.machine import loadavg, machine_info
from muonjax.optimizers import muon as mj_muon
from muonjax.orthogonalization.coefficients import get_coefficients
from muonjax.orthogonalization.newton_schulz import newton_schulz
from muonjax.transforms.dimensions import matrix_view

GPT2_SMALL_SHAPES: tuple[tuple[int, ...], ...] = (
    (768, 768), (768, 2304), (768, 3072), (3072, 768), (12, 768, 3072))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((16, 48), (64, 16), (2, 16, 64))
KELLER = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-8  # optax's default, so both sides normalize identically.

# Accuracy configurations: (preset, steps); steps None = the set's own.
ACCURACY_CONFIGS = (
    ("keller", 5), ("dion", 5), ("polar_express", 5), ("polar_express", 8),
    ("polar_express_modded", 5), ("exact_cubic", None),
)
# Expected output-sigma ranges, keyed by (preset, steps): the min and max of the
# composed scalar polynomial p_T∘…∘p_1(σ) over normalized σ ∈ [1e-2, 1]
# (``muonjax.composed_polynomial`` with the set's default safety), to 3 decimals.
EXPECTED_SIGMA_RANGE = {
    ("keller", 5): (0.682, 1.134),
    ("dion", 5): (0.978, 1.032),
    ("polar_express", 5): (0.870, 1.124),
    ("polar_express", 8): (1.000, 1.000),
    ("polar_express_modded", 5): (0.859, 1.141),
    ("exact_cubic", 12): (1.000, 1.000),
}


def _ours_ns(x):
  return newton_schulz(x, "keller", NS_STEPS, eps=NS_EPS, compute_dtype=None)


def _optax_ns_fn(ndim: int) -> Callable[[jax.Array], jax.Array]:
  dn = None if ndim == 2 else MuonDimensionNumbers(ndim - 2, ndim - 1)

  def f(x):
    return optax_contrib_muon.orthogonalize_via_newton_schulz(
        x, jnp.asarray(KELLER, dtype=x.dtype), NS_STEPS, eps=NS_EPS,
        dimension_numbers=dn)
  return f


def _dot(x, y):
  return jnp.matmul(x, y)


def _xxt(x):
  return jnp.einsum("...ik,...jk->...ij", x, x)


def _rng(*seed: int) -> np.random.Generator:
  return np.random.default_rng(list(seed))


def _normal(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> np.ndarray:
  """N(0, scale²) float32 samples from a seeded NumPy generator, cast to ``dtype``.

  Generated on the host, so no per-shape XLA compilation (``jax.random`` would
  compile one sampler per shape, which dominates the quick run).
  """
  x = rng.standard_normal(tuple(shape), dtype=np.float32)
  if scale != 1.0:
    x *= np.float32(scale)
  return x.astype(jnp.dtype(dtype))


def bench_shape(shape: Sequence[int], *, dtype, repeats: int, seed: int,
                budget_s: Optional[float], n_buffers: int = 2,
                compiler_options: Optional[dict] = None) -> dict:
  """One interleaved loop over ours NS, optax NS, (m×n)·(n×m) and X Xᵀ.

  ``n_buffers`` input buffers (N(0,1), fixed seed) rotate between calls.
  """
  shape = tuple(shape)
  batch, m, n = wide_dims(shape)
  rng = _rng(seed)
  xs_np = [_normal(rng, shape, dtype) for _ in range(n_buffers)]
  tall = shape[-2] > shape[-1]
  wides_np = [np.ascontiguousarray(np.swapaxes(x, -1, -2)) if tall else x for x in xs_np]
  ys_np = [np.ascontiguousarray(np.swapaxes(_normal(rng, w.shape, dtype), -1, -2))
           for w in wides_np]
  xs = [jnp.asarray(x) for x in xs_np]
  wides = [jnp.asarray(w) for w in wides_np]
  ys = [jnp.asarray(y) for y in ys_np]
  del xs_np, wides_np, ys_np
  jax.block_until_ready((xs, wides, ys))

  opts = dict(compiler_options=compiler_options)
  ours = aot_compile(_ours_ns, xs[0], **opts)
  theirs = aot_compile(_optax_ns_fn(len(shape)), xs[0], **opts)
  dot = aot_compile(_dot, wides[0], ys[0], **opts)
  xxt = aot_compile(_xxt, wides[0], **opts)

  o1 = np.asarray(ours.fn(xs[0]), dtype=np.float64)
  o2 = np.asarray(theirs.fn(xs[0]), dtype=np.float64)
  max_abs_diff = float(np.max(np.abs(o1 - o2)))
  del o1, o2

  cases = {
      "ours_ns": (ours.fn, [(x,) for x in xs]),
      "optax_ns": (theirs.fn, [(x,) for x in xs]),
      "dot": (dot.fn, list(zip(wides, ys))),
      "xxt": (xxt.fn, [(w,) for w in wides]),
  }
  compile_info = {"ours_ns": ours.as_dict(), "optax_ns": theirs.as_dict(),
                  "dot": dot.as_dict(), "xxt": xxt.as_dict()}
  if len(shape) > 2:
    # R3 in the same loop: the same matrices as separate arrays, one NS call
    # per matrix inside one executable (what per-leaf orthogonalization does).
    per_matrix = [tuple(jnp.asarray(m) for m in np.asarray(x).reshape((-1,) + shape[-2:]))
                  for x in xs]
    sep = aot_compile(lambda *mats: tuple(_ours_ns(m) for m in mats), *per_matrix[0],
                      **opts)
    cases["ours_ns_per_matrix"] = (sep.fn, per_matrix)
    compile_info["ours_ns_per_matrix"] = sep.as_dict()
  res = interleaved(cases, repeats, budget_s=budget_s)

  def gflops(name, flops):
    st = res["stats"][name]
    return {"median": flops / st["median"] / 1e9,
            "q1": flops / st["q3"] / 1e9, "q3": flops / st["q1"] / 1e9,
            "iqr": flops / st["q1"] / 1e9 - flops / st["q3"] / 1e9}

  f_ns, f_dot = ns_flops(shape), dot_flops(shape)
  return {
      "shape": list(shape), "batch": batch, "m": m, "n": n, "aspect": n / m,
      "ns_gflop": f_ns / 1e9, "dot_gflop": f_dot / 1e9,
      "compile": compile_info,
      "timing": res,
      "r3_batched_over_per_matrix": (ratio_of_medians(res, "ours_ns", "ours_ns_per_matrix")
                                     if "ours_ns_per_matrix" in cases else None),
      "max_abs_diff_ours_vs_optax": max_abs_diff,
      "ratio_ours_over_optax": ratio_of_medians(res, "ours_ns", "optax_ns"),
      "gflops": {"ours_ns": gflops("ours_ns", f_ns), "optax_ns": gflops("optax_ns", f_ns),
                 "dot": gflops("dot", f_dot), "xxt": gflops("xxt", f_dot)},
      # R2: NS GFLOP/s over dot GFLOP/s = (f_ns/t_ns)/(f_dot/t_dot).
      "r2_ns_over_dot_gflops": (f_ns / f_dot) / ratio_of_medians(res, "ours_ns", "dot")["ratio"],
      "r1": ratio_of_medians(res, "ours_ns", "xxt"),
      "r1_flop_ratio": r1_flop_ratio(shape),
  }


def run_orthogonalize_bench(shapes: Sequence[Sequence[int]] = GPT2_SMALL_SHAPES,
                            repeats: int = 20, dtype=jnp.float32, quick: bool = False,
                            *, budget_s: Optional[float] = 25.0,
                            tree_layers: Optional[int] = None,
                            seed: int = 0) -> dict:
  """Run sections a–d and return everything as a JSON-able dict.

  Args:
    shapes: Flax ``(in, out)`` shapes; a leading axis is a stack of matrices.
    repeats: timed calls per case and round (2 rounds); reduced to what fits
      ``budget_s`` per round, but never below 5 per round, i.e. 10 per case
      over both rounds (or ``repeats`` if smaller).
    dtype: input / parameter dtype (NS runs in it: no cast).
    quick: tiny shapes, tree and matrices, for smoke tests.
    budget_s: wall-time budget per measurement round (None: no cap).
    tree_layers: transformer layers in the section-c tree (default 2, 1 quick).
    seed: PRNG seed of every input.
  """
  dtype = jnp.dtype(dtype)
  if quick and tuple(map(tuple, shapes)) == GPT2_SMALL_SHAPES:
    shapes = QUICK_SHAPES
  out: dict[str, Any] = {
      "machine": machine_info(),
      "config": {"date_utc": datetime.datetime.now(datetime.timezone.utc)
                 .strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "dtype": dtype.name, "repeats": repeats, "rounds": 2, "warmup": 3,
                 "budget_s_per_round": budget_s, "min_repeats_per_round": 5, "quick": quick, "seed": seed,
                 "inputs": "N(0,1) float32 from numpy.random.default_rng(fixed seed), "
                           "cast to dtype; 2 buffers rotate per NS case",
                 "ns": {"coeffs": "keller", "steps": NS_STEPS, "eps": NS_EPS,
                        "compute_dtype": "input dtype (no cast)"},
                 "loadavg_start": loadavg()},
  }
  t_start = time.perf_counter()

  copts = QUICK_COMPILER_OPTIONS if quick else None
  out["config"]["compiler_options"] = copts or {}
  section_s = {}
  t0 = time.perf_counter()
  per_shape = [bench_shape(s, dtype=dtype, repeats=repeats, budget_s=budget_s,
                           seed=seed * 1000 + i, compiler_options=copts)
               for i, s in enumerate(shapes)]
  section_s["ns_shapes"] = time.perf_counter() - t0
  out["ns_vs_optax"] = [{
      "shape": r["shape"],
      "ours_s": r["timing"]["stats"]["ours_ns"],
      "optax_s": r["timing"]["stats"]["optax_ns"],
      "ratio_ours_over_optax": r["ratio_ours_over_optax"],
      "max_abs_diff": r["max_abs_diff_ours_vs_optax"],
      "compile_s": {"ours": r["compile"]["ours_ns"], "optax": r["compile"]["optax_ns"]},
      "n_per_round": r["timing"]["n_per_round"],
  } for r in per_shape]
  out["ns_vs_dot"] = [{
      "shape": r["shape"], "m": r["m"], "n": r["n"], "batch": r["batch"],
      "ns_gflop": r["ns_gflop"], "ns_gflops": r["gflops"]["ours_ns"],
      "dot_gflops": r["gflops"]["dot"], "xxt_gflops": r["gflops"]["xxt"],
      "r2_ns_over_dot": r["r2_ns_over_dot_gflops"],
      "xxt_s": r["timing"]["stats"]["xxt"], "dot_s": r["timing"]["stats"]["dot"],
      "r1": r["r1"], "r1_flop_ratio": r["r1_flop_ratio"],
  } for r in per_shape]
  out["batched_vs_single"] = _batched_vs_single(per_shape)
  out["raw_per_shape"] = per_shape

  t0 = time.perf_counter()
  out["bandwidth"] = measure_bandwidth(seed * 1000 + 101, quick=quick, repeats=repeats,
                                       budget_s=budget_s, compiler_options=copts)
  section_s["bandwidth"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  # Matmul rate per wide (m, n), preferring the unbatched measurement.
  rates = {}
  for r in sorted(per_shape, key=lambda r: r["batch"] == 1):
    rates[(r["m"], r["n"])] = r["gflops"]["dot"]["median"]
  out["tree_step"] = bench_tree(
      seed * 1000 + 102, dtype=dtype, repeats=repeats, budget_s=budget_s, quick=quick,
      layers=tree_layers if tree_layers is not None else (1 if quick else 2),
      dot_rates_gflops=rates, bandwidth_gbs=out["bandwidth"]["gb_per_s"]["median"],
      compiler_options=copts)
  section_s["tree_step"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  out["accuracy"] = accuracy(seed * 1000 + 103, quick=quick, compiler_options=copts)
  section_s["accuracy"] = time.perf_counter() - t0

  out["config"]["loadavg_end"] = loadavg()
  out["config"]["section_wall_s"] = section_s
  out["config"]["total_wall_s"] = time.perf_counter() - t_start
  return out


def _batched_vs_single(per_shape: list[dict]) -> list[dict]:
  """R3 = t(NS on (L, m, n)) / t(L separate NS calls), both in one loop.

  ``r3_cross_loop`` divides by ``L ×`` the 2-D shape's time from its own loop
  (noisier: the load can change between loops).
  """
  single = {(r["m"], r["n"]): r for r in per_shape if r["batch"] == 1}
  rows = []
  for r in per_shape:
    if r["batch"] == 1 or r.get("r3_batched_over_per_matrix") is None:
      continue
    row = {"shape": r["shape"], "r3": r["r3_batched_over_per_matrix"],
           "per_matrix_s": r["timing"]["stats"]["ours_ns_per_matrix"]}
    base = single.get((r["m"], r["n"]))
    if base is not None:
      row["r3_cross_loop"] = (r["timing"]["stats"]["ours_ns"]["median"]
                              / (r["batch"] * base["timing"]["stats"]["ours_ns"]["median"]))
    rows.append(row)
  return rows




def measure_bandwidth(seed: int, *, quick: bool, repeats: int,
                      budget_s: Optional[float],
                      compiler_options: Optional[dict] = None) -> dict:
  """GB/s of ``a * s + b`` on large float32 arrays (read 2, write 1)."""
  size = 1 << (16 if quick else 25)
  rng = _rng(seed)
  a = jnp.asarray(_normal(rng, (size,), jnp.float32))
  b = jnp.asarray(_normal(rng, (size,), jnp.float32))
  fn = aot_compile(lambda a, b: a * 1.0001 + b, a, b, compiler_options=compiler_options)
  res = interleaved({"axpy": (fn.fn, [(a, b)])}, repeats, budget_s=budget_s)
  st = res["stats"]["axpy"]
  nbytes = 3 * 4 * size
  return {"op": "a * 1.0001 + b, float32", "elements": size, "bytes": nbytes,
          "time_s": st,
          "gb_per_s": {"median": nbytes / st["median"] / 1e9,
                       "q1": nbytes / st["q3"] / 1e9, "q3": nbytes / st["q1"] / 1e9,
                       "iqr": nbytes / st["q1"] / 1e9 - nbytes / st["q3"] / 1e9}}


def gpt2_like_params(seed: int, *, vocab: int = 8192, d: int = 768,
                     layers: int = 12, ctx: int = 1024, dtype=jnp.float32) -> dict:
  """A GPT-2-small-like Flax ``(in, out)`` parameter tree.

  ``wte``/``wpe`` embeddings, norms and biases route to AdamW; the per-layer
  ``attn/qkv``, ``attn/out``, ``mlp/up`` and ``mlp/down`` kernels to Muon.
  """
  rng = _rng(seed)

  def normal(shape, scale=0.02):
    return jnp.asarray(_normal(rng, shape, dtype, scale))

  def ln():
    return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}

  def dense(n_in, n_out):
    return {"kernel": normal((n_in, n_out)), "bias": jnp.zeros((n_out,), dtype)}

  params = {"wte": {"embedding": normal((vocab, d))},
            "wpe": {"embedding": normal((ctx, d))}}
  for i in range(layers):
    params[f"h_{i}"] = {
        "ln_1": ln(),
        "attn": {"qkv": dense(d, 3 * d), "out": dense(d, d)},
        "ln_2": ln(),
        "mlp": {"up": dense(d, 4 * d), "down": dense(4 * d, d)},
    }
  params["ln_f"] = ln()
  return params


def bench_tree(seed: int, *, dtype, repeats: int, budget_s: Optional[float],
               quick: bool, layers: int, dot_rates_gflops: dict,
               bandwidth_gbs: float, compiler_options: Optional[dict] = None) -> dict:
  """Time ``jit(tx.update)`` for Muon variants and AdamW on one tree (R6)."""
  if quick:
    cfg = dict(vocab=64, d=16, layers=layers, ctx=16)
  else:
    cfg = dict(vocab=8192, d=768, layers=layers, ctx=1024)
  params = gpt2_like_params(seed, dtype=dtype, **cfg)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = _rng(seed, 1)
  grads = treedef.unflatten([jnp.asarray(_normal(rng, l.shape, l.dtype)) for l in leaves])

  dims = routing.muon_dimension_numbers(params)
  dn_leaves = jax.tree_util.tree_leaves(
      dims, is_leaf=lambda x: x is None or isinstance(x, MuonDimensionNumbers))
  p_muon = p_adam = 0
  flops = 0.0
  t_ns_pred = 0.0
  fallback_rate = float(np.median(list(dot_rates_gflops.values())))
  muon_shapes = []
  for leaf, dn in zip(leaves, dn_leaves):
    if dn is None:
      p_adam += leaf.size
      continue
    p_muon += leaf.size
    view = matrix_view(leaf.shape, dn)
    wide = (view.batch,) + tuple(sorted((view.n_in, view.n_out)))
    f = ns_flops(wide)
    flops += f
    rate = dot_rates_gflops.get(wide[1:], fallback_rate)
    t_ns_pred += f / (rate * 1e9)
    muon_shapes.append(list(leaf.shape))

  bw = bandwidth_gbs * 1e9
  # AdamW: read p, g, m, v; write m, v, update = 7 × 4 B = 28 B/param (fp32).
  t_adamw_pred = 28 * (p_muon + p_adam) / bw
  # Muon leaves: read g, mu; write mu, update (elementwise part) = 16 B/param.
  t_muon_pred = t_ns_pred + (16 * p_muon + 28 * p_adam) / bw

  txs = {
      "muon": mj_muon(0.02, compute_dtype=None),
      "muon_ungrouped": mj_muon(0.02, compute_dtype=None, group_by_shape=False),
      "optax_muon": optax.contrib.muon(
          0.02, adam_learning_rate=3e-4,
          muon_weight_dimension_numbers=routing.muon_dimension_numbers),
      "adamw": optax.adamw(3e-4),
  }
  compiled, cases = {}, {}
  for name, tx in txs.items():
    state = tx.init(params)
    c = aot_compile(tx.update, grads, state, params, compiler_options=compiler_options)
    compiled[name] = c.as_dict()
    cases[name] = (c.fn, [(grads, state, params)])
  res = interleaved(cases, repeats, budget_s=budget_s)
  ratios = {f"{n}_over_adamw": ratio_of_medians(res, n, "adamw")
            for n in ("muon", "muon_ungrouped", "optax_muon")}
  ratios["muon_over_optax_muon"] = ratio_of_medians(res, "muon", "optax_muon")
  ratios["muon_grouped_over_ungrouped"] = ratio_of_medians(res, "muon", "muon_ungrouped")
  return {
      "tree": {**cfg, "params_muon": int(p_muon), "params_adamw": int(p_adam),
               "muon_leaf_shapes": muon_shapes,
               "note": (f"GPT-2-small-like with vocab {cfg['vocab']} (not 50257) and "
                        f"{layers} of 12 layers to keep 2-core CPU time sane")
               if not quick else "quick smoke tree"},
      "compile": compiled,
      "timing": res,
      "ratios": ratios,
      "prediction": {
          "ns_gflop": flops / 1e9,
          "matmul_rate_gflops_used": {f"{k[0]}x{k[1]}": v for k, v in dot_rates_gflops.items()},
          "bandwidth_gbs": bandwidth_gbs,
          "t_ns_s": t_ns_pred, "t_muon_s": t_muon_pred, "t_adamw_s": t_adamw_pred,
          "muon_over_adamw": t_muon_pred / t_adamw_pred,
          "assumptions": ("NS FLOPs T(4m²n+2m³) at the plain-dot rate measured for "
                          "that (m, n); AdamW 28 B/param; Muon elementwise 16 B/param "
                          "plus AdamW bytes on its Adam-routed leaves"),
      },
      "adamw_achieved_gbs": 28 * (p_muon + p_adam) / res["stats"]["adamw"]["median"] / 1e9,
  }




def _accuracy_row(o: np.ndarray, polar: np.ndarray) -> dict:
  o = np.asarray(o, dtype=np.float64)
  s = np.linalg.svd(o, compute_uv=False)
  return {"max_abs_sigma_minus_1": float(np.max(np.abs(s - 1))),
          "sigma_min": float(s.min()), "sigma_max": float(s.max()),
          "rel_fro_err_vs_polar": float(np.linalg.norm(o - polar) / np.linalg.norm(polar))}


def accuracy(seed: int, *, quick: bool, compiler_options: Optional[dict] = None) -> dict:
  """Every coefficient set vs a float64 NumPy SVD polar factor (fp32/bf16 compute)."""
  shape = (32, 96) if quick else (256, 768)
  x_np = _normal(_rng(seed), shape, jnp.float32)
  x = jnp.asarray(x_np)
  x64 = x_np.astype(np.float64)
  u, s_in, vt = np.linalg.svd(x64, full_matrices=False)
  polar = u @ vt
  norm_sigma = s_in / np.linalg.norm(x64)
  rows = []
  for preset, steps in ACCURACY_CONFIGS:
    # Quick mode compiles bf16 for Keller's set only (smoke-test time).
    dtypes = (None,) if quick and preset != "keller" else (None, jnp.bfloat16)
    for cdt in dtypes:
      f = aot_compile(lambda a, preset=preset, steps=steps, cdt=cdt:
                      newton_schulz(a, preset, steps, compute_dtype=cdt),
                      x, compiler_options=compiler_options).fn
      eff_steps = steps if steps is not None else get_coefficients(preset).steps
      rows.append({"coeffs": preset, "steps": eff_steps,
                   "compute_dtype": "float32" if cdt is None else "bfloat16",
                   **_accuracy_row(f(x), polar),
                   "expected_sigma_range": EXPECTED_SIGMA_RANGE.get((preset, eff_steps))})
  optax_o = aot_compile(_optax_ns_fn(2), x, compiler_options=compiler_options).fn(x)
  rows.append({"coeffs": "optax keller", "steps": NS_STEPS, "compute_dtype": "float32",
               **_accuracy_row(optax_o, polar),
               "expected_sigma_range": EXPECTED_SIGMA_RANGE[("keller", 5)]})
  return {"shape": list(shape), "input": "N(0,1) float32",
          "normalized_input_sigma_range": [float(norm_sigma.min()), float(norm_sigma.max())],
          "reference": "float64 numpy SVD, U V^T", "rows": rows}
