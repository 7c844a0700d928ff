"""Side-by-side reports of training runs: the comparison table, results JSON and loss curves.

The table has the columns of the LoopFormer-study table (seeds/looped-muon):
final validation loss, its difference to the baseline (AdamW), time per step,
time per step relative to the baseline, and the number of steps each run took
to first reach the baseline's final validation loss.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence


def steps_to_reach(eval_history: Sequence[tuple[int, float]], target: float) -> Optional[int]:
  """The first evaluated step whose validation loss is ``<= target`` (``None``: never)."""
  for step, loss in eval_history:
    if loss <= target:
      return int(step)
  return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  values = [float(v) for v in values]
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var)


def comparison_rows(runs: Mapping[str, Sequence[Mapping]], baseline: str = "adamw") -> list[dict]:
  """One row per optimizer, in the order of ``runs``.

  Args:
    runs: optimizer name → the results of its runs (one per seed), each a
      mapping with ``final_val_loss``, ``time_per_step`` (seconds) and
      ``eval_history`` (a list of ``[step, val_loss]``), or ``diverged: True``.
    baseline: the name the Δ, ratio and steps-to-target columns refer to; when
      absent those columns are ``None``.

  Returns:
    Rows with ``optimizer``, ``seeds`` (finished runs), ``diverged`` (runs
    stopped by a non-finite loss, left out of every mean; an optimizer whose
    runs all diverged has ``None`` numbers), ``val_loss`` (mean), ``val_loss_std``,
    ``val_accuracy`` and ``val_accuracy_std`` (when the results have
    ``final_val_accuracy``), ``perplexity`` (exp of the mean loss),
    ``delta`` (vs the baseline's mean), ``time_per_step_ms``, ``time_ratio``,
    and ``steps_to_baseline`` (lower median over seeds of the first step reaching the
    baseline's mean final loss; ``None`` when fewer than half of the seeds reach
    it; the baseline's own row has its last evaluated step).
  """
  def finished(results):
    return [r for r in results if not r.get("diverged")]

  base = finished(runs.get(baseline, []))
  base_loss = _mean_std([r["final_val_loss"] for r in base])[0] if base else None
  base_time = _mean_std([r["time_per_step"] for r in base])[0] if base else None
  rows = []
  for name, all_results in runs.items():
    results = finished(all_results)
    diverged = len(all_results) - len(results)
    if not results:
      rows.append({"optimizer": name, "seeds": len(all_results), "diverged": diverged,
                   "val_loss": None, "val_loss_std": None, "val_accuracy": None,
                   "val_accuracy_std": None, "perplexity": None, "delta": None,
                   "time_per_step_ms": None, "time_ratio": None, "steps_to_baseline": None})
      continue
    loss, loss_std = _mean_std([r["final_val_loss"] for r in results])
    time_per_step = _mean_std([r["time_per_step"] for r in results])[0]
    reach = None
    if name == baseline:  # the target is its own mean final loss: reached at the end
      reach = max((int(r["eval_history"][-1][0]) for r in results if r["eval_history"]),
                  default=None)
    elif base_loss is not None:
      steps = [steps_to_reach(r["eval_history"], base_loss) for r in all_results]
      reached = sorted(s for s in steps if s is not None)
      if 2 * len(reached) >= len(steps) and reached:
        reach = reached[(len(reached) - 1) // 2]
    accuracies = [r["final_val_accuracy"] for r in results
                  if r.get("final_val_accuracy") is not None]
    accuracy, accuracy_std = _mean_std(accuracies) if accuracies else (None, None)
    rows.append({
        "optimizer": name,
        "seeds": len(results),
        "diverged": diverged,
        "val_loss": loss,
        "val_loss_std": loss_std,
        "val_accuracy": accuracy,
        "val_accuracy_std": accuracy_std,
        "perplexity": math.exp(loss),
        "delta": None if base_loss is None else loss - base_loss,
        "time_per_step_ms": 1e3 * time_per_step,
        "time_ratio": None if base_time is None else time_per_step / base_time,
        "steps_to_baseline": reach,
    })
  return rows


def _fmt(value, spec: str, none: str = "—") -> str:
  return none if value is None else format(value, spec)


def _diverged_note(row: Mapping) -> str:
  return f" ({row['diverged']} diverged)" if row.get("diverged") else ""


def _pm(mean, std, seeds: int, spec: str) -> str:
  if mean is None:
    return "—"
  return format(mean, spec) + (f" ± {format(std, spec)}" if seeds > 1 else "")


def markdown_table(rows: Sequence[Mapping], baseline: str = "adamw", *,
                   accuracy: bool = False) -> str:
  """The rows of :func:`comparison_rows` as a Markdown table.

  ``accuracy=True`` adds the validation accuracy and perplexity columns.
  """
  extra = " val accuracy | perplexity |" if accuracy else ""
  lines = [
      f"| optimizer | final val loss | Δ vs {baseline} |{extra} time/step (ms) "
      f"| ratio vs {baseline} | steps to {baseline}'s final loss |",
      "|---|---|---|" + ("---|---|" if accuracy else "") + "---|---|---|",
  ]
  for r in rows:
    if r["val_loss"] is None:
      lines.append(f"| {r['optimizer']} | diverged ({r['diverged']} of {r['seeds']} runs) |"
                   + " — |" * (6 if accuracy else 4))
      continue
    cells = ""
    if accuracy:
      cells = (f" {_pm(r.get('val_accuracy'), r.get('val_accuracy_std'), r['seeds'], '.4f')} "
               f"| {r['perplexity']:.2f} |")
    lines.append(
        f"| {r['optimizer']} | {_pm(r['val_loss'], r['val_loss_std'], r['seeds'], '.4f')}"
        f"{_diverged_note(r)} "
        f"| {_fmt(r['delta'], '+.4f')} |{cells} {r['time_per_step_ms']:.1f} "
        f"| {_fmt(r['time_ratio'], '.2f')}× "
        f"| {_fmt(r['steps_to_baseline'], 'd', 'not reached')} |")
  return "\n".join(lines)


def plot_curves(runs: Mapping[str, Sequence[Mapping]], path: str, *, title: str = "") -> str:
  """Writes validation-loss curves (mean over seeds) of every run to the PNG ``path``.

  Returns ``path``.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  for name, results in runs.items():
    results = [r for r in results if not r.get("diverged") and r["eval_history"]]
    if not results:
      continue
    steps = [s for s, _ in results[0]["eval_history"]]
    curves = [[loss for _, loss in r["eval_history"]] for r in results]
    n = min(len(c) for c in curves)
    mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
    ax.plot(steps[:n], mean, marker="o", markersize=2.5, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("validation loss")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(runs) <= 16:  # a learning-rate grid's dozens of lines get no legend
    ax.legend(fontsize=7 if len(runs) > 8 else None)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
