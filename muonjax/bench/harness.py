"""Timing harness: AOT compilation, interleaved A/B timing, medians and their ratios.

Method (``docs/performance.md#measurement-method``): AOT compile
(``jit(f).lower(*args).compile()``, lower and compile times recorded apart),
warm-up calls, individually timed calls ending in ``block_until_ready``, cases
alternated in one loop (A B A B …) with a few input buffers rotating, the whole
loop repeated, and ratios of medians. Absolute CPU times do not transfer
between machines: read the ratios.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

# --quick only: XLA backend optimization level 0 cuts compile time ~3× for the
# smoke test; its timings are meaningless anyway. Full runs use the defaults.
QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass
class Compiled:
  """An AOT-compiled function and what it cost to build."""

  fn: Callable[..., Any]
  lower_s: float
  compile_s: float

  def as_dict(self) -> dict:
    return {"lower_s": self.lower_s, "compile_s": self.compile_s}


def aot_compile(f: Callable[..., Any], *args,
                compiler_options: Optional[dict] = None) -> Compiled:
  """``jax.jit(f).lower(*args).compile()``, timing lower and compile apart."""
  t0 = time.perf_counter()
  lowered = jax.jit(f).lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
  t2 = time.perf_counter()
  return Compiled(compiled, t1 - t0, t2 - t1)


def summarize(samples: Sequence[float]) -> dict:
  """Median, quartiles, IQR, min, max and count of a list of samples."""
  a = np.asarray(samples, dtype=np.float64)
  if a.size == 0:
    return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"),
            "iqr": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
  q1, med, q3 = np.percentile(a, [25, 50, 75])
  return {"median": float(med), "q1": float(q1), "q3": float(q3),
          "iqr": float(q3 - q1), "min": float(a.min()), "max": float(a.max()),
          "n": int(a.size)}


def _timed_call(fn: Callable[..., Any], args: tuple) -> float:
  t0 = time.perf_counter()
  out = fn(*args)
  jax.block_until_ready(out)
  dt = time.perf_counter() - t0
  del out
  return dt


def interleaved(cases: dict[str, tuple[Callable[..., Any], Sequence[tuple]]],
                repeats: int = 20, *, warmup: int = 3, rounds: int = 2,
                budget_s: Optional[float] = None, min_repeats: int = 5) -> dict:
  """Time several functions alternately (A B C A B C …) in one loop.

  Args:
    cases: ``name -> (fn, argsets)``; call ``i`` uses ``argsets[i % len]`` so
      that a few input buffers rotate (``docs/performance.md#measurement-method``).
    repeats: timed calls per case and round.
    warmup: untimed calls per case before the first round (1 before later
      rounds: the executables are already warm).
    rounds: how many times the whole measurement is repeated.
    budget_s: optional wall-time budget per round; the repeat count drops to
      what fits, but never below ``min(min_repeats, repeats)``.
    min_repeats: floor of the timed calls per case and round under a budget
      (5 per round: at least 10 timed calls per case over the 2 rounds).

  Returns:
    ``{"n_per_round", "stats" (all rounds pooled), "round_stats", "samples"}``;
    times in seconds.
  """
  names = list(cases)
  samples = {n: [] for n in names}
  n_per_round = []
  for r in range(rounds):
    last = {}
    for n in names:
      fn, argsets = cases[n]
      for i in range(warmup if r == 0 else 1):
        last[n] = _timed_call(fn, argsets[i % len(argsets)])
    nrep = repeats
    if budget_s is not None:
      cost = max(sum(last.values()), 1e-9)
      nrep = min(repeats, max(min(min_repeats, repeats), int(budget_s / cost)))
    per = {n: [] for n in names}
    for i in range(nrep):
      for n in names:
        fn, argsets = cases[n]
        per[n].append(_timed_call(fn, argsets[i % len(argsets)]))
    for n in names:
      samples[n].append(per[n])
    n_per_round.append(nrep)
  return {
      "n_per_round": n_per_round,
      "warmup": warmup,
      "stats": {n: summarize([t for rr in samples[n] for t in rr]) for n in names},
      "round_stats": [{n: summarize(samples[n][r]) for n in names}
                      for r in range(rounds)],
      "samples": samples,
  }


def ratio_of_medians(result: dict, a: str, b: str) -> dict:
  """t(a) / t(b): pooled ratio of medians, per-round ratios, paired ratios."""
  overall = result["stats"][a]["median"] / result["stats"][b]["median"]
  per_round = [rs[a]["median"] / rs[b]["median"] for rs in result["round_stats"]]
  paired = [ta / tb for ra, rb in zip(result["samples"][a], result["samples"][b])
            for ta, tb in zip(ra, rb)]
  return {"ratio": float(overall), "rounds": [float(x) for x in per_round],
          "paired": summarize(paired)}
