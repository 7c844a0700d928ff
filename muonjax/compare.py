"""``muonjax compare``: one model, several optimizers, the same data and seeds, one table.

A comparison is a :class:`ComparePreset` (model, its fields, the data stream
and schedule shared by every run) plus, per optimizer, its learning rate and
hyperparameters. :func:`run_comparison` trains every optimizer on every seed
with :func:`muonjax.train.train` and writes into a run folder:

* ``results.json``: the preset, every run's result (losses, eval history,
  time per step, versions, machine, corpus hash) and the table's rows;
* ``table.md``: the comparison table (:func:`muonjax.report.markdown_table`);
* ``curves.png``: validation loss against step for every optimizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from muonjax import report

# The default comparison: a small GPT (2 layers, d_model 64, 131k parameters) on
# the Python standard library's source, six optimizers, three seeds. Learning
# rates: the best of `muonjax tune` on this preset (equal budgets, every best
# rate interior; committed in experiments/results/compare/tune/, reproduced by
# `muonjax tune --out <folder>`, whose grids are centred on AdamW 3e-3 and
# 0.02 for the others); a test checks they are the rates that result chose. The non-matrix leaves (embeddings,
# head, norms) train with SHARED_ADAM in every arm.
DEFAULT_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adamw": {"learning_rate": 0.003},
    "muon": {"learning_rate": 0.02},
    "normuon": {"learning_rate": 0.02},
    "adamuon": {"learning_rate": 0.0112468},
    "mano": {"learning_rate": 0.00632456},
    "newton_muon": {"learning_rate": 0.02},
}

# The AdamW of the non-matrix leaves, the same in every arm (symmetric arms:
# the arms differ only in the matrix update). Betas and eps of the common
# small-GPT AdamW (nanoGPT: b2 0.95); the AdamW baseline's matrices use the
# same betas and eps.
SHARED_ADAM: dict[str, float] = {"learning_rate": 3e-3, "b1": 0.9, "b2": 0.95, "eps": 1e-8,
                                 "weight_decay": 0.0}


@dataclasses.dataclass(frozen=True)
class ComparePreset:
  """What every run of a comparison shares (see :class:`muonjax.train.TrainConfig`)."""

  model: str = "gpt"
  model_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  optimizers: Mapping[str, Mapping[str, Any]] = dataclasses.field(
      default_factory=lambda: {k: dict(v) for k, v in DEFAULT_OPTIMIZERS.items()})
  steps: int = 200
  batch_size: int = 8
  seq_len: int = 64
  schedule: str = "cosine"
  warmup_steps: int = 10
  eval_every: int = 25
  eval_batches: int = 4
  seeds: Sequence[int] = (0,)
  data: Optional[str] = None
  baseline: str = "adamw"
  mesh: Optional[Mapping[str, int]] = None  # TrainConfig.mesh of every run
  # AdamW of the non-matrix leaves in every arm (None: each optimizer's own defaults).
  shared_adam: Optional[Mapping[str, float]] = dataclasses.field(
      default_factory=lambda: dict(SHARED_ADAM))
  # The baseline trains baseline_length × steps, so that "the baseline's steps to
  # reach an arm's final loss" is interpolated on its curve, not extrapolated.
  # Above 1 this needs the "constant" schedule (see check_preset).
  baseline_length: float = 1.0
  # Timed steps per arm and round of the interleaved timing (0: no timing).
  timing_repeats: int = 20
  # Where the learning rates come from (printed in the header), and the entries
  # whose tuned rate sits on an edge of its grid (marked in the lr column).
  rate_source: str = "set by hand (not tuned)"
  lr_edges: Mapping[str, str] = dataclasses.field(default_factory=dict)


def check_preset(preset: ComparePreset) -> ComparePreset:
  """``preset`` if its comparison is well posed, else ``ValueError`` naming the field.

  A baseline longer than the arms (``baseline_length > 1``) needs a schedule
  whose rate at a step does not depend on the run's length (``"constant"``,
  after its warm-up), so that the baseline's curve up to ``steps`` is the run
  it would have had at the arms' length; and an evaluation at ``steps``
  (``eval_every`` dividing it), where its loss is compared with the arms'.
  """
  if preset.baseline not in preset.optimizers:
    raise ValueError(f"ComparePreset.baseline={preset.baseline!r} is not one of the optimizers "
                     f"{list(preset.optimizers)}")
  length = preset.baseline_length
  if isinstance(length, bool) or not isinstance(length, (int, float)) or not length >= 1:
    raise ValueError(f"ComparePreset.baseline_length must be a number >= 1; got {length!r}")
  if length > 1:
    if preset.schedule != "constant":
      raise ValueError(f"ComparePreset.baseline_length={length} needs schedule='constant' "
                       f"(got {preset.schedule!r}): with a schedule that depends on the run's "
                       "length the longer baseline's curve is not its run at the arms' length")
    if not preset.eval_every or preset.steps % preset.eval_every:
      raise ValueError(f"ComparePreset.baseline_length={length} needs eval_every to divide "
                       f"steps={preset.steps} (got {preset.eval_every}): the baseline is "
                       "compared at the arms' last step")
  if isinstance(preset.timing_repeats, bool) or not isinstance(preset.timing_repeats, int) \
      or preset.timing_repeats < 0:
    raise ValueError(f"ComparePreset.timing_repeats must be an integer >= 0; got "
                     f"{preset.timing_repeats!r}")
  return preset


def steps_of(preset: ComparePreset, optimizer: str) -> int:
  """How many steps ``optimizer``'s runs train (the baseline: ``baseline_length`` × steps)."""
  if optimizer == preset.baseline:
    return int(round(preset.steps * preset.baseline_length))
  return preset.steps


PRESETS: dict[str, ComparePreset] = {
    # A small GPT (131k parameters): three seeds, 200 steps of 16×64 tokens per
    # arm, the AdamW baseline twice as long; linear warm-up then a constant
    # rate (a rate that does not depend on the run's length, so the longer
    # baseline's curve holds its run at every shorter length); an evaluation
    # every 10 steps on 16 × 16 × 64 = 16,384 held-out tokens.
    "default": ComparePreset(
        model="gpt", model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256),
        steps=200, batch_size=16, seq_len=64, schedule="constant", warmup_steps=10,
        eval_every=10, eval_batches=16, seeds=(0, 1, 2), baseline_length=2.0,
        rate_source="muonjax tune on this preset (experiments/results/compare/tune/; every "
        "best rate interior)"),
    # The default before the GPT one: the same six optimizers on a tiny LoopFormer
    # (2 shared blocks looped 4 times), untuned rates, one seed. AdamW and AdaMuon
    # stall between the unigram and bigram losses there while Muon escapes
    # (experiments/results/compare/loopformer/): kept as a finding, not a benchmark.
    "loopformer": ComparePreset(
        model="loopformer", model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256,
                                              n_loops=4, freq_dim=32),
        steps=200, batch_size=8, seq_len=64, schedule="cosine", warmup_steps=10, eval_every=25,
        eval_batches=4, seeds=(0,)),
    # Its two controls (same data, steps, rates and evaluation): LoopFormer with its
    # gates opened at 1 instead of near 0, and the same two blocks as a plain,
    # non-looped GPT (131k parameters: LoopFormer's minus its conditioning path).
    "loopformer-open": ComparePreset(
        model="loopformer", model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256,
                                              n_loops=4, freq_dim=32, adaln_init="open"),
        steps=200, batch_size=8, seq_len=64, schedule="cosine", warmup_steps=10, eval_every=25,
        eval_batches=4, seeds=(0,)),
    "loopformer-gpt": ComparePreset(
        model="gpt", model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256),
        steps=200, batch_size=8, seq_len=64, schedule="cosine", warmup_steps=10, eval_every=25,
        eval_batches=4, seeds=(0,)),
    # Seconds, not minutes: the CI test of the whole command.
    "smoke": ComparePreset(
        model="gpt", model_fields=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32),
        optimizers={"adamw": {"learning_rate": 3e-3}, "muon": {"learning_rate": 0.02}},
        steps=5, batch_size=4, seq_len=16, schedule="constant", warmup_steps=0, eval_every=5,
        eval_batches=1, seeds=(0,), baseline_length=2.0, timing_repeats=3),
}


def get_preset(name: str) -> ComparePreset:
  if name not in PRESETS:
    raise ValueError(f"unknown compare preset {name!r}; available: {sorted(PRESETS)}")
  return PRESETS[name]


def train_config(preset: ComparePreset, optimizer: str, seed: int, *,
                 log_path: Optional[str] = None):
  """The :class:`muonjax.train.TrainConfig` of one run of the comparison.

  ``preset.optimizers[optimizer]`` holds ``learning_rate`` and the optimizer's
  hyperparameters. Two keys are not hyperparameters, so one table can hold
  several settings of one optimizer or model:

  * ``"optimizer"``: the registry name (default: the entry's own name), e.g.
    ``{"muon (NS only)": {"optimizer": "muon", "momentum": 0.0, ...}}``;
  * ``"model_fields"``: model fields replacing the preset's for this entry,
    e.g. ``{"attention": "mhla"}``, or the sphere stage of an nGPT run
    (``{"sphere_update": "geodesic", "sphere_theta": "norm"}``,
    ``{"sphere_every": 4}``: :class:`~muonjax.models.NGPTConfig` fields, which
    belong to the setting being compared).

  Raises:
    ValueError: no ``learning_rate``, or a top-level key that is a field of the
      preset's model config (it belongs in ``"model_fields"``).
  """
  from muonjax import models
  from muonjax.train import TrainConfig

  hparams = dict(preset.optimizers[optimizer])
  if "learning_rate" not in hparams:
    raise ValueError(f"compare entry {optimizer!r} needs a learning_rate")
  learning_rate = hparams.pop("learning_rate")
  name = hparams.pop("optimizer", optimizer)
  fields = dict(preset.model_fields, **hparams.pop("model_fields", {}))
  if preset.model in models.CONFIGS:  # an unknown model: TrainConfig names it
    misplaced = sorted(set(hparams) & {f.name for f in dataclasses.fields(
        models.CONFIGS[preset.model])})
    if misplaced:
      raise ValueError(f"compare entry {optimizer!r}: {misplaced} are {preset.model} model "
                       "fields; put them in the entry's 'model_fields'")
  hparams.update(_shared_adam(preset, name, hparams))
  return TrainConfig(
      model=preset.model, model_fields=fields,
      optimizer=name, optimizer_hparams=hparams, learning_rate=learning_rate,
      schedule=preset.schedule, warmup_steps=preset.warmup_steps,
      steps=steps_of(preset, optimizer),
      batch_size=preset.batch_size, seq_len=preset.seq_len, eval_every=preset.eval_every,
      eval_batches=preset.eval_batches, seed=seed, data=preset.data, log_path=log_path,
      mesh=None if preset.mesh is None else dict(preset.mesh))


def _shared_adam(preset: ComparePreset, optimizer: str, hparams: Mapping[str, Any]) -> dict:
  """The shared AdamW settings in ``optimizer``'s own hyperparameter names, minus those the
  entry sets itself (an asymmetric arm, see :func:`asymmetries`)."""
  from muonjax.optimizers import get_spec

  spec = get_spec(optimizer)
  if not preset.shared_adam or spec.shared_adam is None:
    return {}
  return {spec.shared_adam[k]: v for k, v in preset.shared_adam.items()
          if spec.shared_adam[k] not in hparams}


def asymmetries(preset: ComparePreset) -> dict[str, str]:
  """Entries whose non-matrix leaves do not train with the shared AdamW, and why.

  An entry is asymmetric when it sets one of the shared AdamW hyperparameters
  itself, or when its optimizer has no separate AdamW for those leaves
  (Scion's LMOs, MuonAdam's one learning rate). Comparison headers print these.
  """
  from muonjax.optimizers import get_spec

  if not preset.shared_adam:
    return {}
  out = {}
  for entry, raw in preset.optimizers.items():
    hparams = dict(raw)
    spec = get_spec(hparams.get("optimizer", entry))
    if spec.shared_adam is None:
      out[entry] = "no separate AdamW for the non-matrix leaves"
      continue
    own = sorted(spec.shared_adam[k] for k in preset.shared_adam
                 if spec.shared_adam[k] in hparams)
    if own:
      out[entry] = "sets " + ", ".join(f"{k}={hparams[k]}" for k in own)
  return out


def _history_pairs(result: Mapping[str, Any]) -> list[list[float]]:
  return [[h["step"], h["eval_loss"]] for h in result["eval_history"]]


def summary(result: Mapping[str, Any], at_step: Optional[int] = None) -> dict:
  """What the report keeps of one :func:`muonjax.train.train` result (or diverged run).

  ``at_step``: the step whose evaluation is the run's "final" loss (a longer
  baseline is compared at the arms' last step); its whole curve is kept.
  """
  if result.get("diverged"):
    return dict(final_val_loss=None, final_val_accuracy=None, time_per_step=None,
                eval_history=[], diverged=True)
  final = dict(eval_loss=result["final_val_loss"], eval_accuracy=result.get("final_val_accuracy"))
  if at_step is not None:
    final = next((h for h in result["eval_history"] if h["step"] == at_step), None)
    if final is None:
      raise ValueError(f"the run has no evaluation at step {at_step}")
  return dict(final_val_loss=final["eval_loss"], final_val_accuracy=final.get("eval_accuracy"),
              time_per_step=result["time_per_step"], eval_history=_history_pairs(result),
              final_terms=result.get("final_terms") or {})


def run_comparison(preset: ComparePreset, out_dir: str, *,
                   on_run: Optional[Callable[[str, int], Callable]] = None) -> dict:
  """Trains every optimizer of ``preset`` on every seed and writes the report.

  Args:
    preset: the comparison.
    out_dir: the run folder (created; an existing ``results.json`` there is
      never overwritten: a ``ValueError`` says so).
    on_run: ``on_run(optimizer, seed)`` returns the ``on_step`` callback of
      that run (progress bars), or ``None``.

  Returns:
    The dict written to ``results.json``.
  """
  from muonjax import data, step_timing
  from muonjax.train import NonFiniteLossError, train

  check_preset(preset)
  results_path = os.path.join(out_dir, "results.json")
  if os.path.exists(results_path):
    raise ValueError(f"{results_path} already exists; choose another --out")
  configs = {(name, seed): train_config(preset, name, seed)
             for name in preset.optimizers for seed in preset.seeds}  # validates all first
  os.makedirs(out_dir, exist_ok=True)
  corpus = data.load_corpus(preset.data)
  runs: dict[str, list[dict]] = {name: [] for name in preset.optimizers}
  references = comparison_references(preset, corpus)
  start = time.perf_counter()
  for (name, seed), config in configs.items():
    config = dataclasses.replace(config, log_path=os.path.join(out_dir, f"{name}-seed{seed}.jsonl"))
    callback = on_run(name, seed) if on_run else None
    try:
      result = train(config, on_step=callback, corpus=corpus)
    except NonFiniteLossError as e:  # a finding (too high a learning rate), not a crash
      result = dict(diverged=True, error=str(e), step=e.step, final_val_loss=None,
                    final_val_accuracy=None, time_per_step=None, eval_history=[],
                    config=config.to_dict())
    runs[name].append(result)
  timing = None
  if preset.timing_repeats:
    seed = preset.seeds[0]
    timing = step_timing.time_arms(
        {name: configs[name, seed] for name in preset.optimizers}, corpus, preset.baseline,
        repeats=preset.timing_repeats)
  payload = {
      "preset": dataclasses.asdict(preset) | {"seeds": list(preset.seeds)},
      "wall_time": time.perf_counter() - start,
      "references": references,
      "asymmetric": asymmetries(preset),
      "timing": timing,
      "runs": runs,
  }
  return write_report(payload, out_dir)


def comparison_references(preset: ComparePreset, corpus) -> dict:
  """Unigram/bigram losses (:func:`muonjax.data.reference_losses`) of the comparison's
  evaluation tokens: the same validation batches every run is evaluated on."""
  from muonjax import data
  from muonjax.train import TrainConfig

  val_fraction = TrainConfig.__dataclass_fields__["val_fraction"].default
  train_tokens, val_tokens = data.split(corpus.tokens, val_fraction=val_fraction)
  batches = data.eval_batches(val_tokens, batch_size=preset.batch_size, seq_len=preset.seq_len,
                              n_batches=preset.eval_batches)
  inputs = [b["inputs"] for b in batches]
  targets = [b["targets"] for b in batches]
  return data.reference_losses(train_tokens, inputs, targets, corpus.vocab_size)


def write_report(payload: dict, out_dir: str) -> dict:
  """Fills ``rows``, ``table`` and ``header`` of a comparison from its ``runs`` and writes
  ``table.md``, ``curves.png`` and ``results.json`` into ``out_dir``.

  :func:`run_comparison` ends with it; calling it on a finished comparison's
  ``results.json`` dict redoes the report with this version's table code (no
  training). Returns the updated payload.
  """
  preset, runs = payload["preset"], payload["runs"]
  baseline, steps = preset["baseline"], preset["steps"]
  longer = preset.get("baseline_length", 1) > 1
  summaries = {name: [summary(r, at_step=steps if longer and name == baseline else None)
                      for r in results] for name, results in runs.items()}
  timing = (payload.get("timing") or {}).get("arms")
  rows = report.comparison_rows(summaries, baseline=baseline, timing=timing)
  edges = preset.get("lr_edges") or {}
  for row in rows:
    row["learning_rate"] = preset["optimizers"][row["optimizer"]].get("learning_rate")
    row["lr_edge"] = edges.get(row["optimizer"])
  table = report.markdown_table(rows, baseline=baseline, references=payload.get("references"),
                                timing=payload.get("timing"))
  first = next((r for results in runs.values() for r in results if not r.get("diverged")),
               None)
  if first is None:
    raise ValueError(f"every run of the comparison in {out_dir} diverged")
  machine, versions = first["machine"], first["versions"]
  tokens = steps * preset["batch_size"] * preset["seq_len"]
  header = (f"model {preset['model']} ({first['n_params']:,} params), {preset['steps']} steps × "
            f"{preset['batch_size']}×{preset['seq_len']} tokens = {tokens:,} tokens"
            + (f" (the baseline {baseline}: {int(round(steps * preset['baseline_length']))} "
               f"steps, compared at step {steps}, its whole curve for the speed-up)"
               if longer else "")
            + f", seeds {list(preset['seeds'])}, "
            f"data {first['data'].get('kind')} (sha256 {str(first['data'].get('sha256'))[:12]}), "
            f"{machine.get('device_kind', '')} × {machine.get('device_count', 1)} "
            f"({machine.get('cpu_count')} CPUs, {machine.get('platform', '')}), "
            f"jax {versions.get('jax')}, flax {versions.get('flax')}, optax {versions.get('optax')}")
  header += f"; learning rates: {preset.get('rate_source', 'not recorded')}"
  shared = preset.get("shared_adam")
  if shared:
    header += ("; non-matrix leaves: AdamW " + ", ".join(f"{k} {v}" for k, v in shared.items())
               + " in every arm")
    for entry, why in payload.get("asymmetric", {}).items():
      header += f"; asymmetric arm {entry}: {why}"
  timing = payload.get("timing")
  header += ("; time/step: " + (
      f"interleaved in one process ({timing['rounds']} rounds of "
      f"{'/'.join(map(str, timing['repeats']))} steps per arm, same batches), update share = 1 − t(forward+backward) / t(step)" if timing
      else "medians of each run's own steps, runs one after another (not comparable "
      "between machines or loads)"))
  report.plot_curves(summaries, os.path.join(out_dir, "curves.png"), title=f"{preset['model']}")
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(header + "\n\n" + table + "\n")
  payload = dict(payload, rows=rows, table=table, header=header)
  results_path = os.path.join(out_dir, "results.json")
  tmp = results_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=str)
  os.replace(tmp, results_path)
  return payload
