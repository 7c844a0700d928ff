"""Comparisons over seeds: paired intervals, verdicts, and the baseline's token speed-up.

A comparison of optimizer ``A`` against a baseline ``B`` trains both on the
same seeds (same data order, same initialization per seed), so the per-seed
differences ``d_s = loss_A(s) − loss_B(s)`` are paired: the seed's shared luck
cancels. :func:`paired_interval` gives the mean difference with a two-sided
Student-t confidence interval over those differences, and :func:`verdict` calls
the row ``better`` / ``worse`` only when the whole interval lies on one side of
zero, ``tie`` otherwise (a gap inside the interval is not a result).

:func:`tokens_to_reach` and :func:`speedup` measure speed the way Wen et al.
2025 ("Fantastic Pretraining Optimizers and Where to Find Them",
arXiv 2509.02046) and MLCommons AlgoPerf do: how many steps (tokens) the
baseline needs to reach the loss a run ends at, read off the baseline's own
evaluation curve by linear interpolation — never extrapolated: a loss the
baseline never reaches gives a lower bound, not a number.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

# Two-sided 95 % quantiles t_{0.975, df} of Student's t distribution, df = 1..30
# (standard table values; checked against scipy.stats.t.ppf in the tests).
_T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836,
         2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
         2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546,
         2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
         2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553,
         2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)
_Z975 = 1.959963985

VERDICTS = ("better", "worse", "tie", "inconclusive")


def t_quantile_975(df: int) -> float:
  """``t_{0.975}`` for ``df`` degrees of freedom (normal quantile past 30, within 0.04)."""
  if df < 1:
    raise ValueError(f"degrees of freedom must be >= 1; got {df}")
  if df <= len(_T975):
    return _T975[df - 1]
  # Cornish-Fisher expansion of the t quantile around the normal one.
  z = _Z975
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_interval(values: Sequence[Optional[float]],
                    baseline: Sequence[Optional[float]]) -> dict:
  """Mean paired difference ``values − baseline`` with its 95 % t interval.

  Args:
    values: one final loss per seed (``None`` or non-finite: a diverged run).
    baseline: the baseline's loss on the same seeds, in the same order.

  Returns:
    ``{"n", "mean", "lo", "hi"}``: the number of seeds where both runs
    finished, the mean difference and the interval's ends (``None`` when
    fewer than two pairs; ``lo == hi == mean`` is never claimed from one seed).

  Raises:
    ValueError: the two sequences have different lengths.
  """
  if len(values) != len(baseline):
    raise ValueError(f"paired_interval needs one value per seed on both sides; got "
                     f"{len(values)} and {len(baseline)}")
  diffs = [a - b for a, b in zip(values, baseline)
           if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
  n = len(diffs)
  if n == 0:
    return {"n": 0, "mean": None, "lo": None, "hi": None}
  mean = sum(diffs) / n
  if n == 1:
    return {"n": 1, "mean": mean, "lo": None, "hi": None}
  sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
  half = t_quantile_975(n - 1) * sd / math.sqrt(n)
  return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half}


def verdict(interval: Mapping, *, lower_is_better: bool = True) -> str:
  """``better`` / ``worse`` when the interval excludes 0, ``tie`` when it straddles it.

  ``inconclusive`` when there is no interval (fewer than two paired seeds).
  """
  lo, hi = interval.get("lo"), interval.get("hi")
  if lo is None or hi is None:
    return "inconclusive"
  if hi < 0:
    return "better" if lower_is_better else "worse"
  if lo > 0:
    return "worse" if lower_is_better else "better"
  return "tie"


def tokens_to_reach(curve: Sequence[Sequence[float]], target: float) -> Optional[float]:
  """The first step at which the evaluation ``curve`` reaches ``target``, interpolated.

  Args:
    curve: ``(step, loss)`` pairs in step order.
    target: the loss to reach.

  Returns:
    The step (fractional: linear interpolation between the two evaluations
    around the first crossing), or ``None`` if the curve never gets down to
    ``target`` (no extrapolation).
  """
  points = [(float(s), float(l)) for s, l in curve if l is not None and math.isfinite(l)]
  for i, (step, loss) in enumerate(points):
    if loss <= target:
      if i == 0:
        return step
      s0, l0 = points[i - 1]
      return s0 + (step - s0) * (l0 - target) / (l0 - loss)
  return None


def speedup(run_curve: Sequence[Sequence[float]],
            baseline_curve: Sequence[Sequence[float]]) -> dict:
  """How many times fewer steps a run needs than the baseline for the run's final loss.

  ``ratio = tokens_to_reach(baseline, final loss of run) / last step of run``
  (equal batch sizes: steps are tokens). When the baseline never reaches the
  run's final loss, ``ratio`` is ``None`` and ``at_least`` is the baseline's
  last step over the run's: the baseline must run longer to measure it.

  Returns:
    ``{"ratio", "at_least", "baseline_steps", "run_steps"}``.
  """
  points = [(s, l) for s, l in run_curve if l is not None and math.isfinite(l)]
  if not points:
    return {"ratio": None, "at_least": None, "baseline_steps": None, "run_steps": None}
  run_steps, final = points[-1]
  needed = tokens_to_reach(baseline_curve, final)
  if needed is None:
    last = max((s for s, _ in baseline_curve), default=None)
    return {"ratio": None, "at_least": None if last is None else last / run_steps,
            "baseline_steps": None, "run_steps": run_steps}
  return {"ratio": needed / run_steps, "at_least": None, "baseline_steps": needed,
          "run_steps": run_steps}


def log_interval(ratios: Sequence[Optional[float]]) -> dict:
  """Geometric mean of positive ratios with a 95 % t interval on their logs.

  Returns ``{"n", "mean", "lo", "hi"}`` on the ratio scale (``None`` ends with
  fewer than two ratios).
  """
  logs = [math.log(r) for r in ratios if r is not None and r > 0 and math.isfinite(r)]
  interval = paired_interval(logs, [0.0] * len(logs))
  return {k: (v if k == "n" or v is None else math.exp(v)) for k, v in interval.items()}
