"""Learning-rate search (muonjax.tune): edge extension, refinement, equal budgets, one compilation."""

import math

import jax
import pytest

import helpers
from muonjax import compare, tune


def bowl(optimum, floor=1.0):
  """A synthetic loss curve: quadratic in log10(lr) around ``optimum``; records calls."""
  calls = []

  def evaluate(lr):
    calls.append(lr)
    return floor + (math.log10(lr) - math.log10(optimum)) ** 2
  return evaluate, calls


def test_interior_optimum_is_refined_at_quarter_decades():
  evaluate, calls = bowl(0.01)
  r = tune.search_learning_rate(evaluate, 0.01, budget=7)
  assert r["best_lr"] == pytest.approx(0.01) and r["edge"] is None
  assert sorted(calls) == pytest.approx(sorted(
      [0.01 * 10 ** (k / 4) for k in (-2, -1, 0, 1, 2)]), rel=1e-5)
  assert r["runs"] == 5 == len(r["points"])


def test_edge_is_extended_until_interior():
  evaluate, calls = bowl(1.0)  # two decades above the start
  r = tune.search_learning_rate(evaluate, 0.01, budget=12)
  assert r["edge"] is None and r["best_lr"] == pytest.approx(1.0)
  lrs = [p[0] for p in r["points"]]
  assert max(lrs) > 1.0 > min(lrs)  # the optimum sits inside the tried range


def test_budget_exhausted_on_an_edge_is_marked():
  evaluate, _ = bowl(1e-6)
  r = tune.search_learning_rate(evaluate, 0.01, budget=4)
  assert r["runs"] == 4 and r["edge"] == "low"
  assert r["best_lr"] == pytest.approx(min(p[0] for p in r["points"]))
  assert "(grid edge: low)" in tune.lr_cell(r)


def test_equal_budgets_whatever_the_curve():
  for optimum in (1e-5, 3e-3, 0.01, 10.0):
    evaluate, calls = bowl(optimum)
    r = tune.search_learning_rate(evaluate, 0.01, budget=6)
    assert len(calls) == r["runs"] <= 6
    if r["edge"] is not None:  # stopped on an edge only when the budget was spent
      assert r["runs"] == 6


def test_diverged_runs_push_towards_smaller_rates():
  def evaluate(lr):
    return None if lr > 2e-3 else 3.0 - lr * 100
  r = tune.search_learning_rate(evaluate, 0.1, budget=8)
  assert r["best_lr"] is not None and r["best_lr"] <= 2e-3
  assert any(loss is None for _, loss in r["points"])
  everything_diverges = tune.search_learning_rate(lambda lr: float("nan"), 0.1, budget=3)
  assert everything_diverges["best_lr"] is None
  assert tune.lr_cell(everything_diverges) == "every run diverged"


def test_five_point_first_grid_spans_two_decades():
  evaluate, calls = bowl(3e-3)
  r = tune.search_learning_rate(evaluate, 3e-3, budget=7, first_points=5)
  # The first five runs: half-decade steps from c/10 to c·10, then the refinement.
  assert calls[:5] == pytest.approx([3e-4, 3e-3 / 10 ** 0.5, 3e-3, 3e-3 * 10 ** 0.5, 3e-2],
                                    rel=1e-5)
  assert r["runs"] == 7 and r["edge"] is None and r["best_lr"] == pytest.approx(3e-3)
  assert sorted(calls[5:]) == pytest.approx([3e-3 / 10 ** 0.25, 3e-3 * 10 ** 0.25], rel=1e-5)


def test_a_larger_budget_continues_a_search_without_rerunning_it():
  evaluate, calls = bowl(1e-5)  # far below the start: the first search ends on the edge
  first = tune.search_learning_rate(evaluate, 3e-3, budget=6, first_points=5)
  assert first["edge"] == "low"
  known = {lr: loss for lr, loss in first["points"]}
  evaluate_again, new_calls = bowl(1e-5)
  more = tune.search_learning_rate(evaluate_again, 3e-3, budget=9, first_points=5, known=known)
  full_evaluate, _ = bowl(1e-5)
  full = tune.search_learning_rate(full_evaluate, 3e-3, budget=9, first_points=5)
  assert more == full  # the same search as one made with the larger budget from the start
  assert not set(new_calls) & set(known) and len(new_calls) == more["runs"] - 6


def test_bad_arguments():
  with pytest.raises(ValueError, match="start"):
    tune.search_learning_rate(lambda lr: 1.0, -1.0)
  with pytest.raises(ValueError, match="budget"):
    tune.search_learning_rate(lambda lr: 1.0, 0.1, budget=2)
  with pytest.raises(ValueError, match="budget must be an integer >= 5"):
    tune.search_learning_rate(lambda lr: 1.0, 0.1, budget=4, first_points=5)
  for bad in (4, 1, True, 3.0):
    with pytest.raises(ValueError, match="first_points"):
      tune.search_learning_rate(lambda lr: 1.0, 0.1, budget=7, first_points=bad)


def test_tuned_optimizers_replaces_rates_and_names_missing_entries():
  entries = {"adamw": {"learning_rate": 1e-3}, "muon": {"learning_rate": 0.02, "beta": 0.9}}
  results = {"adamw": {"best_lr": 3e-3}, "muon": {"best_lr": 0.05}}
  out = tune.tuned_optimizers(entries, {"results": results})
  assert out == {"adamw": {"learning_rate": 3e-3}, "muon": {"learning_rate": 0.05, "beta": 0.9}}
  with pytest.raises(ValueError, match="'muon'"):
    tune.tuned_optimizers(entries, {"adamw": {"best_lr": 3e-3}})


@pytest.fixture
def compilation_cache(tmp_path):
  yield from helpers.persistent_compilation_cache(str(tmp_path / "xla"))


@pytest.mark.e2e  # six short training runs end to end (~20 s): CI's second tier
def test_tune_preset_compiles_once_per_optimizer(tmp_path, compilation_cache):
  misses = []

  def listener(event, **kwargs):
    if event == "/jax/compilation_cache/cache_misses":
      misses.append(event)

  jax.monitoring.register_event_listener(listener)
  per_run = []

  def on_run(name, lr):
    per_run.append([name, len(misses)])
    return None

  preset = compare.get_preset("smoke")
  try:
    payload = tune.tune_preset(preset, str(tmp_path / "tune"), budget=3, on_run=on_run)
  finally:
    jax.monitoring.unregister_event_listener(listener)
  per_run.append(["end", len(misses)])
  counts = [b[1] - a[1] for a, b in zip(per_run, per_run[1:])]
  names = [name for name, _ in per_run[:-1]]
  # The first run of each optimizer compiles; its later runs (other lrs) load every program.
  for i, name in enumerate(names):
    if i > 0 and names[i - 1] == name:
      assert counts[i] == 0, (name, counts)
  assert counts[0] > 0
  assert set(payload["results"]) == set(preset.optimizers)
  for r in payload["results"].values():
    assert r["runs"] == 3 and len(r["points"]) == 3
  table = (tmp_path / "tune" / "tune.md").read_text()
  assert table.startswith("| entry | tuned lr") and "unigram" in table
  refs = payload["references"]
  assert refs["bigram"] < refs["unigram"] and payload["wall_time"] > 0
  assert payload["first_points"] == 3
  with pytest.raises(ValueError, match="already exists"):
    tune.tune_preset(preset, str(tmp_path / "tune"), budget=3)
