"""``muonjax tune``: the learning rate of every optimizer of a comparison, searched with equal budgets.

The search (:func:`search_learning_rate`) works on a log grid in
quarter-decade units around a starting rate:

1. three half-decade points ``c/√10, c, c·√10`` (``first_points=5``: five,
   ``c/10 … c·10``, a grid spanning two decades);
2. while the best rate is the smallest or the largest tried, one more
   half-decade point beyond that edge (a best rate on the edge of its grid is
   not a result);
3. once the best is interior, its two quarter-decade neighbours (refinement);
4. stop when the budget (runs per optimizer, the same for every optimizer)
   is spent. A best rate still on an edge then is marked ``edge`` in every
   table.

A run that diverges counts as an infinitely bad loss (so an all-diverged
grid extends towards smaller rates). The search uses one seed; the
comparison then trains its own seeds at the chosen rates.

:func:`tune_preset` runs the search for every entry of a
:class:`muonjax.compare.ComparePreset` with :func:`muonjax.train.train`.
Runs of one optimizer differ only in the learning rate, which lives in the
optimizer state (``optax.inject_hyperparams``), so they lower to the same
program: with JAX's persistent compilation cache on (:func:`use_compilation_cache`)
every optimizer compiles once. The result (every tried point, best rate, edge
flag, runs used) is written to ``tune.json`` and ``tune.md`` and can be fed to
``muonjax compare --tune-from``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Optional

# Grid positions are integers in quarter decades: lr = start · 10^(k/4).
HALF_DECADE = 2
QUARTER_DECADE = 1
DEFAULT_BUDGET = 7


def _lr(start: float, k: int) -> float:
  return float(f"{start * 10 ** (k / 4):.6g}")


def _loss_key(loss: Optional[float]) -> float:
  return math.inf if loss is None or not math.isfinite(loss) else loss


def check_budget(budget, first_points: int = 3) -> int:
  """``budget`` if it is a whole number of runs >= ``first_points`` (the first grid), else
  ``ValueError``; ``first_points`` must be an odd integer >= 3."""
  if isinstance(first_points, bool) or not isinstance(first_points, int) or first_points < 3 \
      or first_points % 2 == 0:
    raise ValueError(f"first_points must be an odd integer >= 3; got {first_points!r}")
  if isinstance(budget, bool) or not isinstance(budget, int) or budget < first_points:
    raise ValueError(f"budget must be an integer >= {first_points} (the first grid); "
                     f"got {budget!r}")
  return budget


def search_learning_rate(evaluate: Callable[[float], Optional[float]], start: float, *,
                         budget: int = DEFAULT_BUDGET, first_points: int = 3,
                         known: Optional[Mapping[float, Optional[float]]] = None) -> dict:
  """Searches the learning rate minimizing ``evaluate`` (see the module doc).

  Args:
    evaluate: ``lr -> final loss`` (``None``/NaN/Inf for a diverged run).
    start: the centre of the first grid.
    budget: the most runs this search may use (≥ ``first_points``).
    first_points: the size of the first grid (odd; half-decade steps centred on
      ``start``).
    known: lr → loss of runs already made (an earlier search with the same
      start and a smaller budget): the search takes their losses instead of
      running them again, so a larger budget continues where that search stopped.

  Returns:
    ``{"points": [[lr, loss], ...] sorted by lr, "best_lr", "best_loss",
    "edge": "low" | "high" | None, "runs"}``; ``edge`` says the best rate is
    the smallest/largest tried (the budget ran out before it became interior).

  Raises:
    ValueError: ``start`` not a positive finite number, ``first_points`` not an
      odd integer >= 3, or ``budget`` < ``first_points``.
  """
  if not (isinstance(start, (int, float)) and math.isfinite(start) and start > 0):
    raise ValueError(f"start must be a positive finite learning rate; got {start!r}")
  check_budget(budget, first_points)
  tried: dict[int, Optional[float]] = {}

  def run(k: int) -> None:
    if k not in tried and len(tried) < budget:
      lr = _lr(start, k)
      loss = known[lr] if known and lr in known else evaluate(lr)
      tried[k] = None if loss is None or not math.isfinite(loss) else float(loss)

  def best() -> int:  # ties go to the smaller rate
    return min(tried, key=lambda k: (_loss_key(tried[k]), k))

  half = first_points // 2
  for k in range(-half * HALF_DECADE, half * HALF_DECADE + 1, HALF_DECADE):
    run(k)
  while len(tried) < budget:
    b = best()
    if b == min(tried):
      run(b - HALF_DECADE)
    elif b == max(tried):
      run(b + HALF_DECADE)
    else:
      break
  b = best()
  if min(tried) < b < max(tried):
    run(b - QUARTER_DECADE)
    run(b + QUARTER_DECADE)
  b = best()
  edge = "low" if b == min(tried) else "high" if b == max(tried) else None
  return {"points": [[_lr(start, k), tried[k]] for k in sorted(tried)],
          "best_lr": None if tried[b] is None else _lr(start, b),
          "best_loss": tried[b], "edge": edge, "runs": len(tried)}


def use_compilation_cache(path: Optional[str] = None) -> str:
  """Turns on JAX's persistent compilation cache (default ``~/.cache/muonjax/xla``; without
  ``path``, a cache folder already configured is kept).

  Runs that differ only in their learning rates or seed lower to the same
  program and load it from the cache instead of compiling again. Returns the
  folder.
  """
  import jax

  if path is None and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir  # the caller's (or JAX_COMPILATION_CACHE_DIR)
  path = path or os.path.join(os.path.expanduser("~"), ".cache", "muonjax", "xla")
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def tune_preset(preset, out_dir: str, *, budget: int = DEFAULT_BUDGET, seed: Optional[int] = None,
                first_points: int = 3, known: Optional[Mapping[str, Mapping[float, Any]]] = None,
                known_wall_time: float = 0.0, on_run: Optional[Callable[[str, float], Optional[Callable]]] = None) -> dict:
  """Tunes ``learning_rate`` of every entry of ``preset`` (a ``ComparePreset``), one seed each.

  Each entry's own ``learning_rate`` is the centre of its first grid. Writes
  ``tune.json`` and ``tune.md`` into ``out_dir`` (an existing ``tune.json``
  is never overwritten: a ``ValueError`` says so).

  Args:
    preset: the comparison whose entries are tuned.
    out_dir: the folder of the results.
    budget: runs per entry (equal for every entry).
    seed: the search seed (default: the preset's first seed).
    first_points: the size of every entry's first grid (see the module doc).
    known: entry → {lr: loss} of runs an earlier search of this preset and seed
      made (:func:`search_learning_rate`'s ``known``); ``reused`` in the result
      counts them.
    known_wall_time: the seconds those runs took (added to ``wall_time``).
    on_run: ``on_run(entry, lr)`` returns the ``on_step`` callback of a run.

  Returns:
    The dict written to ``tune.json``: ``{"preset", "budget", "seed",
    "results": {entry: search result}, "table"}``.
  """
  from muonjax import compare, data
  from muonjax.train import NonFiniteLossError, train

  check_budget(budget, first_points)
  path = os.path.join(out_dir, "tune.json")
  if os.path.exists(path):
    raise ValueError(f"{path} already exists; choose another --out")
  seed = preset.seeds[0] if seed is None else seed
  compare.check_preset(preset)
  for name in preset.optimizers:  # validate every entry before the first run
    compare.train_config(preset, name, seed)
  os.makedirs(out_dir, exist_ok=True)
  corpus = data.load_corpus(preset.data)
  start = time.perf_counter()
  results = {}
  for name, entry in preset.optimizers.items():
    def evaluate(lr: float, name=name, entry=entry) -> Optional[float]:
      # The baseline is tuned at the arms' length (baseline_length=1): under the
      # constant schedule a longer baseline's curve up to `steps` is this run.
      trial = dataclasses.replace(
          preset, optimizers={name: dict(entry, learning_rate=lr)}, seeds=(seed,),
          baseline_length=1.0)
      config = compare.train_config(trial, name, seed)
      try:
        result = train(config, on_step=on_run(name, lr) if on_run else None, corpus=corpus)
      except NonFiniteLossError:
        return None
      return result["final_val_loss"]
    results[name] = search_learning_rate(evaluate, float(entry["learning_rate"]), budget=budget,
                                         first_points=first_points,
                                         known=(known or {}).get(name))
  payload = {"preset": preset_json(preset),
             "budget": budget, "seed": seed, "first_points": first_points, "results": results,
             "reused": sum(len([lr for lr, _ in r["points"] if lr in (known or {}).get(n, {})])
                           for n, r in results.items()),
             "references": compare.comparison_references(preset, corpus),
             "wall_time": known_wall_time + time.perf_counter() - start}
  payload["table"] = markdown_table(results, references=payload["references"])
  with open(os.path.join(out_dir, "tune.md"), "w") as f:
    f.write(payload["table"] + "\n")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1)
  os.replace(tmp, path)
  return payload


def preset_json(preset) -> dict:
  """A ``ComparePreset`` as ``tune.json`` records it (and as a read-back compares it)."""
  return json.loads(json.dumps(dataclasses.asdict(preset), default=str))


def lr_cell(result: Mapping[str, Any]) -> str:
  """The tuned rate as a table shows it: ``0.01`` or ``0.01 (grid edge: high)``."""
  from muonjax import report

  if result.get("best_lr") is None:
    return "every run diverged"
  return report.rate_cell(result["best_lr"], result.get("edge"))


def markdown_table(results: Mapping[str, Mapping[str, Any]], *,
                   references: Optional[Mapping[str, Any]] = None) -> str:
  """One row per entry: tuned rate (edge-marked), its loss, runs, every tried point;
  ``references`` (unigram/bigram losses) adds their line under the table."""
  from muonjax import report

  lines = ["| entry | tuned lr | loss at tuned lr | runs | tried (lr: loss) |",
           "|---|---|---|---|---|"]
  for name, r in results.items():
    tried = ", ".join(f"{lr:g}: " + ("diverged" if loss is None else f"{loss:.4f}")
                      for lr, loss in r["points"])
    loss = "—" if r["best_loss"] is None else f"{r['best_loss']:.4f}"
    lines.append(f"| {name} | {lr_cell(r)} | {loss} | {r['runs']} | {tried} |")
  note = report.reference_note(references)
  return "\n".join(lines) + (f"\n\n{note}" if note else "")


def tuned_preset(preset, tuned: Mapping[str, Any], source: str):
  """``preset`` (a ``ComparePreset``) at the tuned rates of ``tuned`` (a ``tune.json`` dict),
  with ``rate_source`` and the grid edges of the rates recorded (the lr column marks them)."""
  results = tuned.get("results", tuned)
  edges = {name: results[name]["edge"] for name in preset.optimizers
           if name in results and results[name].get("edge")}
  return dataclasses.replace(
      preset, optimizers=tuned_optimizers(preset.optimizers, tuned),
      rate_source=f"muonjax tune ({source})", lr_edges=edges)


def tuned_optimizers(optimizers: Mapping[str, Mapping[str, Any]],
                     tuned: Mapping[str, Any]) -> dict:
  """``optimizers`` with each entry's ``learning_rate`` replaced by its tuned rate.

  Args:
    optimizers: a preset's entries.
    tuned: a ``tune.json`` dict (or its ``results``).

  Raises:
    ValueError: an entry without a tuned rate (not tuned, or every run diverged).
  """
  results = tuned.get("results", tuned)
  out = {}
  for name, entry in optimizers.items():
    r = results.get(name)
    if r is None or r.get("best_lr") is None:
      raise ValueError(f"no tuned learning rate for {name!r} in the tune results "
                       f"(tuned: {sorted(results)})")
    out[name] = dict(entry, learning_rate=r["best_lr"])
  return out
