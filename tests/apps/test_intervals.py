"""Paired intervals, verdicts and the baseline-token speed-up (muonjax.intervals)."""

import math

import numpy as np
import pytest
from scipy import stats

from muonjax import intervals


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 30, 31, 60, 200])
def test_t_quantile_matches_scipy(df):
  assert intervals.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-4)


def test_paired_interval_equals_the_paired_t_interval():
  rng = np.random.default_rng(0)
  base = rng.normal(3.0, 0.1, size=5)
  vals = base - 0.05 + rng.normal(0, 0.01, size=5)
  got = intervals.paired_interval(list(vals), list(base))
  d = vals - base
  lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
  assert got["n"] == 5
  assert got["mean"] == pytest.approx(d.mean(), abs=1e-12)
  assert got["lo"] == pytest.approx(lo, rel=1e-6) and got["hi"] == pytest.approx(hi, rel=1e-6)
  assert intervals.verdict(got) == "better"


def test_pairing_cancels_shared_seed_noise():
  # Seeds differ by a lot, the gap is constant: paired interval is tight, unpaired would not be.
  base = [2.0, 3.0, 4.0]
  vals = [1.9, 2.9, 3.9]
  got = intervals.paired_interval(vals, base)
  assert got["hi"] < 0 and intervals.verdict(got) == "better"


def test_verdicts_and_diverged_runs():
  assert intervals.verdict(intervals.paired_interval([1.0, 1.2], [1.1, 1.1])) == "tie"
  assert intervals.verdict(intervals.paired_interval([2.0, 2.1, 2.2], [1.0, 1.1, 1.2])) == "worse"
  one = intervals.paired_interval([1.0, None, float("nan")], [2.0, 2.0, 2.0])
  assert one == {"n": 1, "mean": -1.0, "lo": None, "hi": None}
  assert intervals.verdict(one) == "inconclusive"
  assert intervals.paired_interval([None], [1.0])["n"] == 0
  with pytest.raises(ValueError, match="one value per seed"):
    intervals.paired_interval([1.0], [1.0, 2.0])


def test_tokens_to_reach_interpolates_and_never_extrapolates():
  curve = [(0, 5.0), (10, 4.0), (20, 3.0), (30, 2.5)]
  assert intervals.tokens_to_reach(curve, 3.5) == pytest.approx(15.0)
  assert intervals.tokens_to_reach(curve, 3.0) == pytest.approx(20.0)
  assert intervals.tokens_to_reach(curve, 6.0) == 0.0
  assert intervals.tokens_to_reach(curve, 2.0) is None


def test_speedup_ratio_and_lower_bound():
  baseline = [(0, 5.0), (10, 4.0), (20, 3.0), (40, 2.0)]
  run = [(0, 5.0), (10, 3.0)]
  s = intervals.speedup(run, baseline)
  assert s["ratio"] == pytest.approx(2.0) and s["baseline_steps"] == pytest.approx(20.0)
  better = intervals.speedup([(0, 5.0), (10, 1.0)], baseline)
  assert better["ratio"] is None and better["at_least"] == pytest.approx(4.0)


def test_log_interval_is_geometric():
  got = intervals.log_interval([2.0, 2.0, 2.0])
  assert got["mean"] == pytest.approx(2.0) and got["lo"] == pytest.approx(2.0)
  spread = intervals.log_interval([1.5, 2.0, 2.5, None])
  assert spread["n"] == 3 and spread["lo"] < spread["mean"] < spread["hi"]
  assert spread["mean"] == pytest.approx(math.exp(np.mean(np.log([1.5, 2.0, 2.5]))))
