"""Side-by-side reports of training runs: the comparison table, results JSON and loss curves.

The table gives, per optimizer: the final validation loss (mean ± std over
seeds), its paired difference to the baseline with a 95 % interval and a
verdict (better / worse / tie by the interval, :mod:`muonjax.intervals`), the
speed-up over the baseline measured in the baseline's own steps (how many
steps the baseline needs to reach this run's final loss, per seed, geometric
mean with its interval), time per step and its ratio to the baseline (from
:mod:`muonjax.step_timing`'s interleaved measurement when given, with the
optimizer update's share of the step). With
reference losses (the unigram and bigram cross-entropy of the evaluation
tokens, :func:`muonjax.data.reference_losses`) a run that ends above the
unigram loss is flagged: it learned only token frequencies.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from muonjax import intervals


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


def comparison_rows(runs: Mapping[str, Sequence[Mapping]], baseline: str = "adamw", *,
                    timing: Optional[Mapping[str, Mapping]] = None) -> list[dict]:
  """One row per optimizer, in the order of ``runs``.

  Args:
    runs: optimizer name → the results of its runs (one per seed), each a
      mapping with ``final_val_loss``, ``time_per_step`` (seconds) and
      ``eval_history`` (a list of ``[step, val_loss]``), or ``diverged: True``.
    baseline: the name the Δ, ratio and steps-to-target columns refer to; when
      absent those columns are ``None``.
    timing: ``time_arms(...)["arms"]`` (:func:`muonjax.step_timing.time_arms`):
      when given, the time columns come from it (interleaved in one process)
      instead of the runs' own ``time_per_step``, and rows get
      ``update_share`` and the quartiles ``time_ratio_q1``/``time_ratio_q3``.

  Returns:
    Rows with ``optimizer``, ``seeds`` (finished runs), ``diverged`` (runs
    stopped by a non-finite loss, left out of every mean; an optimizer whose
    runs all diverged has ``None`` numbers), ``val_loss`` (mean), ``val_loss_std``,
    ``val_accuracy`` and ``val_accuracy_std`` (when the results have
    ``final_val_accuracy``), ``perplexity`` (exp of the mean loss),
    ``delta`` (vs the baseline's mean), ``time_per_step_ms``, ``time_ratio``,
    ``steps_to_baseline`` (lower median over seeds of the first step reaching the
    baseline's mean final loss; ``None`` when fewer than half of the seeds reach
    it; the baseline's own row has its last evaluated step), ``delta_interval``
    (:func:`muonjax.intervals.paired_interval` of the per-seed losses against
    the baseline's on the same seed: runs are paired by position, i.e. both
    lists are in seed order), ``verdict`` and ``speedup``
    (:func:`muonjax.intervals.log_interval` of the per-seed ratios of
    :func:`muonjax.intervals.speedup`, plus ``at_least`` when the baseline
    never reached a seed's final loss).
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
                   "time_per_step_ms": None, "time_ratio": None, "steps_to_baseline": None,
                   "delta_interval": None, "verdict": None, "speedup": None})
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
        **_paired(all_results, runs.get(baseline), is_baseline=name == baseline),
    })
    if timing is not None and name in timing:
      t = timing[name]
      rows[-1].update(time_per_step_ms=t["median_ms"], time_ratio=t["ratio"],
                      time_ratio_q1=t["ratio_q1"], time_ratio_q3=t["ratio_q3"],
                      update_share=t["update_share"])
  return rows


def _paired(results: Sequence[Mapping], base: Optional[Sequence[Mapping]], *,
            is_baseline: bool) -> dict:
  """The paired-by-seed columns of one row (see :func:`comparison_rows`)."""
  if is_baseline or not base or len(base) != len(results):
    return {"delta_interval": None, "verdict": None, "speedup": None}
  loss = lambda r: None if r.get("diverged") else r["final_val_loss"]
  interval = intervals.paired_interval([loss(r) for r in results], [loss(b) for b in base])
  ratios, bounds = [], []
  for r, b in zip(results, base):
    if r.get("diverged") or b.get("diverged") or not r["eval_history"]:
      continue
    s = intervals.speedup(r["eval_history"], b["eval_history"])
    ratios.append(s["ratio"])
    if s["at_least"] is not None:
      bounds.append(s["at_least"])
  speed = intervals.log_interval(ratios)
  speed["at_least"] = min(bounds) if bounds else None
  return {"delta_interval": interval, "verdict": intervals.verdict(interval), "speedup": speed}


def _fmt(value, spec: str, none: str = "—") -> str:
  return none if value is None else format(value, spec)


def _diverged_note(row: Mapping) -> str:
  return f" ({row['diverged']} diverged)" if row.get("diverged") else ""


def _pm(mean, std, seeds: int, spec: str) -> str:
  if mean is None:
    return "—"
  return format(mean, spec) + (f" ± {format(std, spec)}" if seeds > 1 else "")


def _interval_cell(interval: Optional[Mapping], spec: str, suffix: str = "") -> str:
  if not interval or interval.get("lo") is None:
    return "—" if not interval or interval.get("mean") is None else (
        format(interval["mean"], spec) + suffix + " (1 seed)")
  return (f"{format(interval['mean'], spec)}{suffix} "
          f"[{format(interval['lo'], spec)}, {format(interval['hi'], spec)}]")


def _speedup_cell(row: Mapping) -> str:
  speed = row.get("speedup")
  if not speed:
    return "—"
  cell = _interval_cell(speed, ".2f", "×") if speed.get("mean") is not None else "—"
  if speed.get("at_least") is not None:
    note = f"≥ {speed['at_least']:.2f}× (baseline never reached it)"
    cell = note if cell == "—" else f"{cell}; {note}"
  return cell


def rate_cell(learning_rate: float, edge: Optional[str] = None) -> str:
  """A learning rate as tables show it: ``0.01`` or ``0.01 (grid edge: high)``."""
  return f"{learning_rate:g}" + (f" (grid edge: {edge})" if edge else "")


def _lr_cell(row: Mapping) -> str:
  if row.get("learning_rate") is None:
    return "—"
  return rate_cell(row["learning_rate"], row.get("lr_edge"))


def _time_ratio_cell(row: Mapping, own: bool) -> str:
  if own or row.get("time_ratio_q1") is None:
    return _fmt(row["time_ratio"], ".2f") + "×"
  return f"{row['time_ratio']:.2f}× [{row['time_ratio_q1']:.2f}, {row['time_ratio_q3']:.2f}]"


def reference_note(references: Optional[Mapping]) -> str:
  """The line under a table naming the reference losses (empty without references)."""
  if not references:
    return ""
  return (f"Reference losses of the evaluation tokens ({references['tokens']:,} tokens): "
          f"unigram {references['unigram']:.4f}, bigram {references['bigram']:.4f} "
          f"(token frequencies / token pairs of the training split, smoothed).")


def markdown_table(rows: Sequence[Mapping], baseline: str = "adamw", *,
                   accuracy: bool = False, references: Optional[Mapping] = None,
                   timing: Optional[Mapping] = None) -> str:
  """The rows of :func:`comparison_rows` as a Markdown table.

  ``accuracy=True`` adds the validation accuracy and perplexity columns;
  ``references`` (:func:`muonjax.data.reference_losses`) adds a line with the
  unigram/bigram losses and flags every row whose loss is above the unigram's;
  ``timing`` (:func:`muonjax.step_timing.time_arms`, the rows built with its
  ``"arms"``) labels the time columns as interleaved, adds the paired ratio's
  quartiles and the update-share column. Rows with a ``learning_rate`` get an
  lr column (``lr_edge``: the tuning grid's edge the rate sits on, marked).
  """
  extra = " val accuracy | perplexity |" if accuracy else ""
  with_lr = any(r.get("learning_rate") is not None for r in rows)
  time_head = ("time/step (ms, interleaved) | ratio vs " + baseline + " [quartiles] | "
               "update share |" if timing else f"time/step (ms) | ratio vs {baseline} |")
  lines = [
      f"| optimizer |{' lr |' if with_lr else ''} final val loss | Δ vs {baseline} [95 % CI] | verdict |{extra} "
      f"speed-up vs {baseline} [95 % CI] | {time_head}",
      "|---|---|---|---|" + ("---|" if with_lr else "") + ("---|---|" if accuracy else "") + "---|---|---|"
      + ("---|" if timing else ""),
  ]
  unigram = references.get("unigram") if references else None
  for r in rows:
    lr_cell = f" {_lr_cell(r)} |" if with_lr else ""
    if r["val_loss"] is None:
      lines.append(f"| {r['optimizer']} |{lr_cell} diverged ({r['diverged']} of {r['seeds']} runs) |"
                   + " — |" * ((7 if accuracy else 5) + (1 if timing else 0)))
      continue
    cells = ""
    if accuracy:
      cells = (f" {_pm(r.get('val_accuracy'), r.get('val_accuracy_std'), r['seeds'], '.4f')} "
               f"| {r['perplexity']:.2f} |")
    flag = (" (above the unigram loss: learned only token frequencies)"
            if unigram is not None and r["val_loss"] > unigram else "")
    own = r["optimizer"] == baseline
    lines.append(
        f"| {r['optimizer']} |{lr_cell} {_pm(r['val_loss'], r['val_loss_std'], r['seeds'], '.4f')}"
        f"{_diverged_note(r)}{flag} "
        f"| {'baseline' if own else _interval_cell(r.get('delta_interval'), '+.4f')} "
        f"| {'—' if own else r.get('verdict') or '—'} |{cells} "
        f"{'1×' if own else _speedup_cell(r)} | {r['time_per_step_ms']:.1f} "
        f"| {_time_ratio_cell(r, own) if timing else _fmt(r['time_ratio'], '.2f') + '×'} |"
        + (f" {_fmt(r.get('update_share'), '.0%')} |" if timing else ""))
  note = reference_note(references)
  return "\n".join(lines) + (f"\n\n{note}" if note else "")


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
