"""``muonjax sweep``: one model × one optimizer over a grid of learning rates (and other hyperparameters).

Every grid point is a :func:`muonjax.train.train` run of the same base
:class:`~muonjax.train.TrainConfig` with some fields replaced: ``learning_rate``
and other ``TrainConfig`` fields replace the config's own, anything else is an
optimizer hyperparameter. The run folder gets ``results.json``, ``table.md``
and ``sweep.png`` (final validation loss against learning rate, one line per
combination of the other hyperparameters).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Every combination of the grid's values, learning rate varying fastest."""
  for name, values in grid.items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"sweep grid {name!r} needs a non-empty list of values; got {values!r}")
  names = [n for n in grid if n != "learning_rate"] + (["learning_rate"] if "learning_rate" in grid else [])
  return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def apply_point(base, point: Mapping[str, Any]):
  """``base`` with the point's values put in the config or its optimizer hyperparameters."""
  config_fields = {f.name for f in dataclasses.fields(base)}
  direct = {k: v for k, v in point.items() if k in config_fields}
  hparams = dict(base.optimizer_hparams, **{k: v for k, v in point.items()
                                            if k not in config_fields})
  return dataclasses.replace(base, optimizer_hparams=hparams, **direct)


def lr_band(points: Sequence[tuple[float, float]], tolerance: float = 0.02, *,
            reference: Optional[float] = None) -> dict:
  """Learning rates whose final loss is within ``tolerance`` (relative) of a reference loss.

  Args:
    points: ``(learning_rate, final_loss)`` pairs; non-finite losses count as failures.
    tolerance: relative distance to the reference (0.02: within 2 %).
    reference: the loss the band is measured from (default: the best of
      ``points``; e.g. the best loss of every method, so that a uniformly poor
      method gets an empty band instead of a wide one).

  Returns:
    ``best_lr``, ``best_loss``, ``lo``/``hi`` (smallest and largest lr in the
    band) and ``decades`` = log10(hi/lo): the width of the band in the grid's
    resolution (0 when a single grid point qualifies; ``lo``/``hi``/``decades``
    are ``None`` when no point is within the band of ``reference``).
  """
  finite = [(lr, loss) for lr, loss in points if loss is not None and math.isfinite(loss)]
  if not finite:
    return {"best_lr": None, "best_loss": None, "lo": None, "hi": None, "decades": None}
  best_lr, best_loss = min(finite, key=lambda p: p[1])
  limit = (best_loss if reference is None else reference) * (1 + tolerance)
  band = [lr for lr, loss in finite if loss <= limit]
  if not band:
    return {"best_lr": best_lr, "best_loss": best_loss, "lo": None, "hi": None, "decades": None}
  lo, hi = min(band), max(band)
  return {"best_lr": best_lr, "best_loss": best_loss, "lo": lo, "hi": hi,
          "decades": math.log10(hi / lo)}


def _label(point: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in point.items())


def run_sweep(base, grid: Mapping[str, Sequence[Any]], out_dir: str, *,
              on_run: Optional[Callable[[str], Callable]] = None) -> dict:
  """Runs every grid point and writes ``results.json``, ``table.md`` and ``sweep.png``.

  Returns:
    The dict written to ``results.json`` (``points``: one entry per run with
    its values, ``final_val_loss``, ``final_train_loss``, ``time_per_step``;
    ``bands``: :func:`lr_band` per combination of the other hyperparameters).
  """
  from muonjax import data
  from muonjax.train import NonFiniteLossError, train

  results_path = os.path.join(out_dir, "results.json")
  if os.path.exists(results_path):
    raise ValueError(f"{results_path} already exists; choose another --out")
  points = grid_points(grid)
  configs = [apply_point(base, p) for p in points]  # validates every point first
  os.makedirs(out_dir, exist_ok=True)
  corpus = data.load_corpus(base.data)
  rows = []
  for i, (point, config) in enumerate(zip(points, configs)):
    config = dataclasses.replace(config, log_path=os.path.join(out_dir, f"run{i:03d}.jsonl"))
    try:
      result = train(config, on_step=on_run(_label(point)) if on_run else None, corpus=corpus)
      rows.append(dict(point=point, final_val_loss=result["final_val_loss"],
                       final_train_loss=result["final_train_loss"],
                       time_per_step=result["time_per_step"], diverged=False))
    except NonFiniteLossError as e:
      rows.append(dict(point=point, final_val_loss=None, final_train_loss=None,
                       time_per_step=None, diverged=True, error=str(e)))
  groups: dict[str, list] = {}
  for row in rows:
    others = {k: v for k, v in row["point"].items() if k != "learning_rate"}
    groups.setdefault(_label(others) or "all", []).append(row)
  bands = {name: lr_band([(r["point"].get("learning_rate", base.learning_rate), r["final_val_loss"])
                          for r in group]) for name, group in groups.items()}
  table = _table(rows, bands)
  _plot(groups, os.path.join(out_dir, "sweep.png"), f"{base.model} × {base.optimizer}")
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(table + "\n")
  payload = {"base": json.loads(json.dumps(dataclasses.asdict(base), default=str)),
             "grid": {k: list(v) for k, v in grid.items()}, "points": rows, "bands": bands,
             "table": table}
  tmp = results_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=str)
  os.replace(tmp, results_path)
  return payload


def _table(rows, bands) -> str:
  lines = ["| point | final val loss | final train loss | time/step (ms) |", "|---|---|---|---|"]
  for r in rows:
    if r["diverged"]:
      lines.append(f"| {_label(r['point'])} | diverged | diverged | — |")
    else:
      lines.append(f"| {_label(r['point'])} | {r['final_val_loss']:.4f} | "
                   f"{r['final_train_loss']:.4f} | {1e3 * r['time_per_step']:.1f} |")
  lines += ["", "| group | best lr | best val loss | lrs within 2 % of best | width (decades) |",
            "|---|---|---|---|---|"]
  for name, b in bands.items():
    if b["best_lr"] is None:
      lines.append(f"| {name} | — | every run diverged | — | — |")
    else:
      lines.append(f"| {name} | {b['best_lr']:g} | {b['best_loss']:.4f} | "
                   f"[{b['lo']:g}, {b['hi']:g}] | {b['decades']:.2f} |")
  return "\n".join(lines)


def _plot(groups, path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  for name, group in groups.items():
    pts = [(r["point"].get("learning_rate"), r["final_val_loss"]) for r in group
           if not r["diverged"] and r["point"].get("learning_rate") is not None]
    if pts:
      ax.plot(*zip(*sorted(pts)), marker="o", label=name)
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("final validation loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(groups) > 1:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
