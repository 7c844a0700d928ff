"""Research studies: campaigns of comparisons over seeds, learning-rate tuning, one report.

A study (``experiments/study_*.py``) is a sequence of *campaigns*. A campaign
is a :class:`muonjax.compare.ComparePreset`: one model, several entries
(optimizer settings), every entry trained on the same seeds and data by
:func:`muonjax.compare.run_comparison`, which writes the campaign's
``results.json``, ``table.md`` and ``curves.png``. This module adds what
studies share on top of that:

* :func:`run_campaign`: a campaign in ``<root>/<name>/``; a finished campaign
  is read back instead of rerun, so an interrupted study resumes where it
  stopped (delete the folder to redo one);
* :func:`lr_grid` / :func:`lr_curves`: the same entries at several learning
  rates in one campaign, the final loss against the learning rate (mean ± std
  over seeds, diverged runs counted), the best rate and the band of rates
  within 2 % of the best (:func:`muonjax.sweep.lr_band`);
* :func:`tuned_campaign`: a campaign whose learning rates come from
  :func:`muonjax.tune.tune_preset` run first (equal budget per entry, on a seed
  the comparison does not evaluate on, so the chosen rate's own lucky run is
  not one of the compared ones);
* :func:`interior_lr_grid`: a multi-seed learning-rate grid extended, one
  point at a time past the edge, until every entry's best rate is interior;
* :func:`write_report`: ``report.md`` (every campaign's table under its
  heading, with the facts of the runs, and a runtime table per campaign) and
  ``study.json`` (the summary).

Nothing here trains by itself: every run is :func:`muonjax.train.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from muonjax import compare, report, sweep, tune
from muonjax.compare import ComparePreset
from muonjax.tune import use_compilation_cache  # re-exported: the study scripts call it

# The seed the studies tune on: none of the evaluation seeds (0, 1, 2, ...).
TUNE_SEED = 100


def run_campaign(root: str, name: str, preset: ComparePreset, *,
                 log: Optional[Callable[[str], None]] = print) -> dict:
  """Runs (or reads back) the campaign ``name`` of a study into ``<root>/<name>/``.

  Args:
    root: the study's results folder.
    name: the campaign's folder name.
    preset: what every run shares and the entries to compare.
    log: called with one line per finished run (``None``: silent).

  Returns:
    The campaign's ``results.json`` dict (:func:`muonjax.compare.run_comparison`).
  """
  folder = os.path.join(root, name)
  path = os.path.join(folder, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      payload = json.load(f)
    if payload["preset"] != _preset_json(preset):
      raise ValueError(f"{path} holds another campaign {name!r} (its preset differs); "
                       "delete that folder to rerun it")
    if log:
      log(f"[{name}] already done: {path}")
    # The tables with this version's code.
    return dict(compare.write_report(payload, folder), campaign=name)
  return dict(compare.run_comparison(preset, folder, on_run=_progress(name, preset.steps, log,
                                                                      "seed")),
              campaign=name)


def _progress(name: str, steps: int, log: Optional[Callable[[str], None]], what: str):
  """``on_run(entry, value)`` logging one line per finished run (``what``: "seed" or "lr",
  the value that tells the entry's runs apart); ``None`` without ``log``."""
  if not log:
    return None

  def on_run(entry: str, value):
    start = time.perf_counter()

    def on_step(step, record):
      if step == steps:
        loss = record.get("eval_loss")
        log(f"[{name}] {entry} {what} {value:g}: val loss "
            f"{'n/a' if loss is None else format(loss, '.4f')} "
            f"({time.perf_counter() - start:.0f} s)")
    return on_step
  return on_run


def tune_campaign(root: str, name: str, preset: ComparePreset, *, budget: int,
                  seed: int = TUNE_SEED, first_points: int = 3, log: Optional[Callable[[str], None]] = print) -> dict:
  """Runs (or reads back) :func:`muonjax.tune.tune_preset` of ``preset`` into ``<root>/<name>/``.

  Every entry gets the same ``budget`` of one-seed runs on ``seed``, the first
  ``first_points`` of them a half-decade grid around its ``learning_rate``.

  Returns:
    The ``tune.json`` dict, with ``campaign`` set to ``name``.

  A finished search of the same preset and seed with a smaller budget is
  continued: its runs are reused (:func:`muonjax.tune.tune_preset`'s
  ``known``), the old ``tune.json`` is kept as ``tune-budget-<n>.json``.

  Raises:
    ValueError: the folder holds a search of another preset or seed, or a
      larger budget.
  """
  folder = os.path.join(root, name)
  path = os.path.join(folder, "tune.json")
  known, earlier_wall = None, 0.0
  if os.path.exists(path):
    with open(path) as f:
      payload = json.load(f)
    same = (payload["preset"], payload["seed"], payload.get("first_points", 3)) == \
        (tune.preset_json(preset), seed, first_points)
    if same and payload["budget"] == budget:
      if log:
        log(f"[{name}] already done: {path}")
      return dict(payload, campaign=name)
    if not same or payload["budget"] > budget:
      raise ValueError(f"{path} holds another search {name!r} (its preset, budget or seed "
                       "differs); delete that folder to rerun it")
    # A larger budget continues the finished search: its runs are reused, not rerun.
    known = {entry: {lr: loss for lr, loss in r["points"]}
             for entry, r in payload["results"].items()}
    earlier_wall = float(payload.get("wall_time") or 0.0)
    os.replace(path, os.path.join(folder, f"tune-budget-{payload['budget']}.json"))
    if log:
      log(f"[{name}] budget {payload['budget']} → {budget}: continuing the finished search")
  result = tune.tune_preset(preset, folder, budget=budget, seed=seed, first_points=first_points,
                            known=known, known_wall_time=earlier_wall,
                            on_run=_progress(name, preset.steps, log, "lr"))
  return dict(result, campaign=name)


def tuned_campaign(root: str, name: str, preset: ComparePreset, *, budget: int,
                   seed: int = TUNE_SEED, first_points: int = 3,
                   log: Optional[Callable[[str], None]] = print) -> tuple[dict, dict]:
  """Tunes every entry's learning rate, then runs the campaign at the tuned rates.

  The search (:func:`tune_campaign`) goes to ``<root>/<name>/tune/``, starting
  from each entry's ``learning_rate``; the comparison (:func:`run_campaign`,
  every seed of ``preset``) to ``<root>/<name>/``. Its table's lr column marks
  a tuned rate left on a grid edge.

  Returns:
    ``(search, campaign)``: the ``tune.json`` dict and the ``results.json`` dict.
  """
  search = tune_campaign(root, os.path.join(name, "tune"), preset, budget=budget, seed=seed,
                         first_points=first_points, log=log)
  tuned = tune.tuned_preset(
      preset, search, f"budget {budget} runs per entry on seed {seed}, {name}/tune/")
  return search, run_campaign(root, name, tuned, log=log)


def tuned_rates(search: Mapping[str, Any]) -> dict[str, float]:
  """entry → its tuned learning rate in a :func:`tune_campaign` result."""
  return {name: r["best_lr"] for name, r in search["results"].items()}


def edge_entries(search: Mapping[str, Any]) -> list[str]:
  """The entries of a :func:`tune_campaign` result whose best rate is on a grid edge."""
  return [name for name, r in search["results"].items() if r.get("edge")]


def search_markdown(search: Mapping[str, Any], heading: str, *, note: str = "",
                    level: str = "###") -> str:
  """A learning-rate search's table (every tried rate, the chosen one) under ``heading``."""
  p = search["preset"]
  facts = (f"*{p['model']}, {p['steps']} steps of {p['batch_size']}×{p['seq_len']} tokens, "
           f"{p['schedule']} schedule; budget {search['budget']} runs per entry, seed "
           f"{search['seed']}; a first grid of {search.get('first_points', 3)} half-decade steps "
           "around each entry's start, extended past an "
           "edge while the best sits on it, then the quarter-decade neighbours of the best.*")
  parts = [f"{level} {heading}", "", facts, ""]
  if note:
    parts += [note, ""]
  parts += [search["table"], ""]
  return "\n".join(parts)


def _preset_json(preset: ComparePreset) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(preset) | {"seeds": list(preset.seeds)},
                               default=str))


# --- learning-rate grids ---------------------------------------------------


def lr_label(entry: str, learning_rate: float) -> str:
  return f"{entry} @ {learning_rate:g}"


def lr_grid(preset: ComparePreset, entries: Mapping[str, Mapping[str, Any]],
            learning_rates: Mapping[str, Sequence[float]], *,
            baseline: Optional[str] = None) -> ComparePreset:
  """``preset`` whose entries are every ``entries[e]`` at every ``learning_rates[e]``.

  Args:
    preset: the shared settings (its own entries are replaced).
    entries: entry name → hyperparameters (``optimizer`` names the registry
      entry when it differs from the entry's name; ``learning_rate`` is set
      from the grid).
    learning_rates: entry name → its learning rates.
    baseline: the entry label the comparison table refers to (default: the
      first label).

  Returns:
    A :class:`ComparePreset` with entries labelled :func:`lr_label`.
  """
  missing = sorted(set(entries) - set(learning_rates))
  if missing:
    raise ValueError(f"lr_grid: no learning rates for {missing}")
  optimizers = {}
  for entry, hparams in entries.items():
    for lr in learning_rates[entry]:
      optimizers[lr_label(entry, lr)] = dict(hparams, optimizer=hparams.get("optimizer", entry),
                                              learning_rate=lr)
  return dataclasses.replace(preset, optimizers=optimizers,
                             baseline=baseline or next(iter(optimizers)))


def lr_curves(payload: Mapping[str, Any], entries: Sequence[str],
              learning_rates: Mapping[str, Sequence[float]], *,
              tolerance: float = 0.02) -> dict:
  """Final loss against learning rate for every entry of an :func:`lr_grid` campaign.

  Returns:
    entry → ``points`` (``[lr, mean, std, finished, diverged]`` per rate) and
    ``band`` (:func:`muonjax.sweep.lr_band` of the means: best rate and loss,
    the lowest and highest rate within ``tolerance`` of the best, its width in
    decades; a rate where any seed diverged is left out of the band).
  """
  rows = {r["optimizer"]: r for r in payload["rows"]}
  curves = {}
  for entry in entries:
    points = []
    for lr in learning_rates[entry]:
      row = rows[lr_label(entry, lr)]
      points.append([lr, row["val_loss"], row["val_loss_std"], row["seeds"], row["diverged"]])
    band = sweep.lr_band([(lr, None if diverged else loss)
                          for lr, loss, _, _, diverged in points], tolerance)
    curves[entry] = {"points": points, "band": band}
  return curves


def interior_lr_grid(root: str, name: str, preset: ComparePreset,
                     entries: Mapping[str, Mapping[str, Any]],
                     learning_rates: Mapping[str, Sequence[float]], *,
                     factor: float = 10 ** 0.25, max_rounds: int = 6,
                     log: Optional[Callable[[str], None]] = print) -> tuple[list[dict], dict, dict]:
  """An :func:`lr_grid` campaign extended until every entry's best rate is interior.

  After the campaign ``name``, every entry whose best mean loss sits at the
  smallest (largest) rate of its grid gets one more rate, ``factor`` beyond
  that edge, in a campaign ``name/extend-<k>``; this repeats (at most
  ``max_rounds`` times) until no best rate is on an edge. A rate where a
  seed diverged counts as worse than any finished one.

  Returns:
    ``(payloads, curves, grids)``: every campaign's ``results.json`` dict,
    :func:`lr_curves` over all of them, and entry → its final grid (sorted).
  """
  grids = {e: sorted(float(lr) for lr in learning_rates[e]) for e in entries}
  payloads = [run_campaign(root, name, lr_grid(preset, entries, grids), log=log)]
  for k in range(1, max_rounds + 1):
    curves = lr_curves({"rows": [r for p in payloads for r in p["rows"]]}, list(entries), grids)
    extra = {}
    for entry, curve in curves.items():
      best, grid = curve["band"]["best_lr"], grids[entry]
      if best is None or best == grid[0]:
        extra[entry] = [float(f"{grid[0] / factor:.6g}")]
      elif best == grid[-1]:
        extra[entry] = [float(f"{grid[-1] * factor:.6g}")]
    if not extra:
      break
    payloads.append(run_campaign(root, os.path.join(name, f"extend-{k}"),
                                 lr_grid(preset, {e: entries[e] for e in extra}, extra), log=log))
    for entry, rates in extra.items():
      grids[entry] = sorted(grids[entry] + rates)
  curves = lr_curves({"rows": [r for p in payloads for r in p["rows"]]}, list(entries), grids)
  return payloads, curves, grids


def best_learning_rates(curves: Mapping[str, Mapping]) -> dict[str, float]:
  """entry → the learning rate of its lowest mean final loss in :func:`lr_curves`."""
  best = {}
  for entry, curve in curves.items():
    if curve["band"]["best_lr"] is None:
      raise ValueError(f"every learning rate of {entry!r} diverged; widen its grid")
    best[entry] = curve["band"]["best_lr"]
  return best


def lr_table(curves: Mapping[str, Mapping], *, references: Optional[Mapping] = None) -> str:
  """Markdown: per entry, the loss at every rate, the best rate and the 2 % band.

  A best rate at either end of its grid is marked "(grid edge)": the optimum
  may lie outside the grid. ``references`` (a campaign's unigram/bigram
  losses) adds their line under the table.
  """
  rates = sorted({p[0] for c in curves.values() for p in c["points"]})
  head = "| method | " + " | ".join(f"{lr:g}" for lr in rates) + \
         " | best lr | best loss | band within 2 % | width (decades) |"
  lines = [head, "|---|" + "---|" * (len(rates) + 4)]
  for entry, curve in curves.items():
    by_lr = {p[0]: p for p in curve["points"]}
    cells = []
    for lr in rates:
      p = by_lr.get(lr)
      if p is None:
        cells.append("")
      elif p[1] is None:
        cells.append("diverged")
      else:
        cells.append(f"{p[1]:.3f} ± {p[2]:.3f}" + (f" ({p[4]} div.)" if p[4] else ""))
    b = curve["band"]
    if b["best_lr"] is None:
      tail = "— | — | — | — |"
    else:
      grid = [p[0] for p in curve["points"]]
      edge = " (grid edge)" if len(grid) > 1 and b["best_lr"] in (min(grid), max(grid)) else ""
      tail = (f"{b['best_lr']:g}{edge} | {b['best_loss']:.4f} | [{b['lo']:g}, {b['hi']:g}] | "
              f"{b['decades']:.2f} |")
    lines.append(f"| {entry} | " + " | ".join(cells) + " | " + tail)
  note = report.reference_note(references)
  return "\n".join(lines) + (f"\n\n{note}" if note else "")


def plot_lr_curves(curves: Mapping[str, Mapping], path: str, *, title: str = "",
                   xlabel: str = "learning rate", log_x: bool = True) -> str:
  """Final loss (mean ± std over seeds) against the learning rate, one line per entry."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  for entry, curve in curves.items():
    pts = [(p[0], p[1], p[2]) for p in curve["points"] if p[1] is not None]
    if pts:
      x, y, err = zip(*pts)
      ax.errorbar(x, y, yerr=err, marker="o", markersize=3, capsize=2, label=entry)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("final validation loss")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


# --- the report ---------------------------------------------------------------


def campaign_markdown(payload: Mapping[str, Any], heading: str, *, note: str = "",
                      accuracy: bool = False, baseline: Optional[str] = None,
                      level: str = "##") -> str:
  """A campaign's table under ``heading``: the facts line, an optional note, the table."""
  rows = payload["rows"]
  table = report.markdown_table(rows, baseline=baseline or payload["preset"]["baseline"],
                                accuracy=accuracy, references=payload.get("references"))
  parts = [f"{level} {heading}", "", f"*{payload['header']}*", ""]
  if note:
    parts += [note, ""]
  parts += [table, ""]
  return "\n".join(parts)


def row(payload: Mapping[str, Any], entry: str) -> dict:
  """The comparison row of ``entry`` in a campaign's payload."""
  for r in payload["rows"]:
    if r["optimizer"] == entry:
      return r
  raise KeyError(f"no entry {entry!r} in the campaign; entries: "
                 f"{[r['optimizer'] for r in payload['rows']]}")


def versus(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
  """``"lower"``, ``"higher"`` or ``"tie"``: ``a``'s mean loss against ``b``'s (comparison rows).

  A difference no larger than the sum of the two sample standard deviations
  over seeds is a tie: the seeds do not separate the two.
  """
  if a["val_loss"] is None or b["val_loss"] is None:
    return "tie"
  gap = a["val_loss"] - b["val_loss"]
  if abs(gap) <= (a["val_loss_std"] or 0.0) + (b["val_loss_std"] or 0.0):
    return "tie"
  return "lower" if gap < 0 else "higher"


def write_report(root: str, title: str, sections: Sequence[str], summary: Mapping[str, Any], *,
                 campaigns: Sequence[Mapping[str, Any]], intro: str = "") -> str:
  """Writes ``<root>/report.md`` (title, intro, runtime, sections) and ``<root>/study.json``.

  The runtime is the sum of the ``campaigns``' own wall times (as recorded when
  each ran, so a report regenerated from finished campaigns keeps it).
  ``summary`` (JSON values) goes into ``study.json`` with ``wall_time_s`` and
  ``runs``. Returns the report's path.
  """
  os.makedirs(root, exist_ok=True)
  wall = sum(float(c.get("wall_time") or 0.0) for c in campaigns)
  runs = sum(campaign_runs(c) for c in campaigns)
  text = [f"# {title}", ""]
  if intro:
    text += [intro.strip(), ""]
  text += [f"Compute: {runs} training runs in {len(campaigns)} campaigns, {wall / 60:.1f} min "
           "of wall time (the sum of the campaigns' own measurements; per campaign at the end).",
           ""]
  text += list(sections)
  text += ["## Runtime per campaign", "", "| campaign | runs | wall time (min) |", "|---|---|---|"]
  text += [f"| {c.get('campaign', '?')} | {campaign_runs(c)} | "
           f"{float(c.get('wall_time') or 0.0) / 60:.1f} |" for c in campaigns]
  text += [""]
  path = os.path.join(root, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(text).rstrip() + "\n")
  payload = dict(summary, title=title, wall_time_s=wall, runs=runs)
  tmp = os.path.join(root, "study.json.tmp")
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=str)
  os.replace(tmp, os.path.join(root, "study.json"))
  return path


def campaign_runs(payload: Mapping[str, Any]) -> int:
  """Training runs of a campaign (``results.json``) or a search (``tune.json``)."""
  if "runs" in payload and isinstance(payload["runs"], Mapping):
    return sum(len(results) for results in payload["runs"].values())
  return sum(int(r["runs"]) for r in payload["results"].values())


# --- the scripts' command line ---------------------------------------------------


def parser(description: str, presets: Sequence[str], default_out: str) -> argparse.ArgumentParser:
  """The arguments every study script takes."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--preset", choices=list(presets), default=presets[0],
                 help="size of the study (default %(default)s)")
  p.add_argument("--out", default=default_out, help="results folder (default %(default)s)")
  p.add_argument("--seeds", type=int, default=None,
                 help="seeds per cell (default: the preset's, at least 3 for committed results)")
  p.add_argument("--data", default=None,
                 help="corpus for muonjax.data.load_corpus (default: the Python stdlib source)")
  p.add_argument("--cache", default=None,
                 help="persistent compilation cache folder (default ~/.cache/muonjax/xla)")
  p.add_argument("--quiet", action="store_true", help="no line per finished run")
  return p


def main(run: Callable[[argparse.Namespace, Callable], Any], description: str,
         presets: Sequence[str], default_out: str, argv: Optional[Sequence[str]] = None) -> int:
  """Parses the study's arguments and calls ``run(args, log)``; bad input exits with 2."""
  args = parser(description, presets, default_out).parse_args(argv)
  use_compilation_cache(args.cache)
  log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
  try:
    run(args, log)
  except ValueError as e:
    print(f"error: {e}", flush=True)
    return 2
  return 0
