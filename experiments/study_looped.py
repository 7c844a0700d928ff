"""Study 1: Muon variants × looped transformers (LoopFormer, Mixture-of-Recursions, Hyperloop).

Reproduces and extends the "Muon Optimizer Variants × Looped Transformers"
table of that research note (LoopFormer 1 layer × 2 loops, 50 steps):

1. ``tune``: every variant's learning rate from a small grid (1 seed, the
   long setting's length), on LoopFormer;
2. ``newton_tune``: Newton-Muon's refresh interval × ridge at its tuned rate;
3. ``loopformer_short``: the published setting's length (50 steps), tuned rates, seeds;
4. ``loopformer_long``: a longer run, where Muon's advantage should show;
5. ``mor_long``: AdamW, Muon and Newton-Muon on Mixture-of-Recursions;
6. ``hyperloop_long``: every variant on Hyperloop.

Usage::

    python experiments/study_looped.py                  # CPU preset (2 cores: see experiments/README.md)
    python experiments/study_looped.py --preset smoke   # seconds: the test's preset
    python experiments/study_looped.py --preset paper --data /path/to/fineweb_bin  # GPU

Every campaign folder under ``experiments/results/looped/`` holds the
comparison's results.json, table.md and curves.png; ``report.md`` puts the
tables together with the published one.
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax import study  # noqa: E402
from muonjax.compare import ComparePreset  # noqa: E402

VARIANTS = ("adamw", "muon", "normuon", "adamuon", "mano", "newton_muon")

# The published table (seeds/000: 6.8M parameters, 1 layer × 2 loops, 50 steps,
# one run each): final loss and time per step relative to AdamW. Muon itself
# was not in it.
PUBLISHED = {
    "adamw": (10.8124, 1.0),
    "mano": (10.8393, 1.4),
    "normuon": (10.8647, 5.6),
    "adamuon": (10.9948, 6.0),
    "newton_muon": (11.1217, 5.2),
}

# The Muon variants' AdamW branch (embeddings, head, norms, LoopFormer's
# conditioning) runs at AdamW's usual small-model rate in every campaign.
ADAM_BRANCH_LR = 3e-3

LR_GRID = {
    "adamw": (1e-3, 3e-3, 1e-2),
    "muon": (0.01, 0.02, 0.05),
    "normuon": (0.01, 0.02, 0.05),
    "adamuon": (3e-3, 0.01, 0.03),   # RMS-matched update (0.2·sqrt(mn)/‖O‖): Adam-like rates
    "mano": (1e-3, 3e-3, 1e-2),      # RMS-matched as well (0.2·sqrt(len))
    "newton_muon": (0.01, 0.02, 0.05),
}
NEWTON_GRID = {"refresh_every": (4, 16), "ridge": (0.05, 0.2)}


@dataclasses.dataclass(frozen=True)
class Preset:
  loopformer: dict
  mor: dict
  hyperloop: dict
  short_steps: int
  long_steps: int
  batch_size: int
  seq_len: int
  seeds: int
  eval_every: int
  eval_batches: int
  variants: tuple = VARIANTS
  lr_grid: dict = dataclasses.field(default_factory=lambda: dict(LR_GRID))
  newton_grid: dict = dataclasses.field(default_factory=lambda: dict(NEWTON_GRID))
  warmup_steps: int = 5


PRESETS = {
    # 2-core CPU, the committed results.
    "cpu": Preset(
        loopformer=dict(d_model=64, n_layers=1, n_heads=4, d_ff=256, n_loops=2, freq_dim=32),
        mor=dict(d_model=64, n_layers=1, n_heads=4, d_ff=256, n_recursions=2),
        hyperloop=dict(d_model=64, n_layers=1, n_heads=4, d_ff=256, n_begin=1, n_end=1,
                       n_loops=2, n_streams=2),
        short_steps=50, long_steps=400, batch_size=8, seq_len=64, seeds=3,
        eval_every=25, eval_batches=4),
    # Seconds: what the test runs (two variants, one learning rate each).
    "smoke": Preset(
        loopformer=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_loops=2, freq_dim=8),
        mor=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_recursions=2),
        hyperloop=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_begin=1, n_end=1,
                       n_loops=2, n_streams=2),
        short_steps=2, long_steps=3, batch_size=2, seq_len=8, seeds=1, eval_every=0,
        eval_batches=1, variants=("adamw", "newton_muon"),
        lr_grid={"adamw": (3e-3,), "newton_muon": (0.02, 0.05)},
        newton_grid={"refresh_every": (2,), "ridge": (0.2,)}, warmup_steps=0),
    # GPU: the published model (GPT-2 vocabulary, 1 layer × 2 loops at width 768
    # is ~6.8M non-embedding-dominated parameters) and a 2000-step long run.
    "paper": Preset(
        loopformer=dict(d_model=768, n_layers=1, n_heads=12, d_ff=3072, n_loops=2, freq_dim=256),
        mor=dict(d_model=768, n_layers=1, n_heads=12, d_ff=3072, n_recursions=2),
        hyperloop=dict(d_model=768, n_layers=1, n_heads=12, d_ff=3072, n_begin=1, n_end=1,
                       n_loops=2, n_streams=4),
        short_steps=50, long_steps=2000, batch_size=16, seq_len=512, seeds=3,
        eval_every=100, eval_batches=20, warmup_steps=20),
}


def _entry(name: str, lr: float, **extra) -> dict:
  entry = dict(learning_rate=lr, **extra)
  if name != "adamw":
    entry["adam_learning_rate"] = ADAM_BRANCH_LR
  return entry


def _base(p: Preset, model: str, steps: int, seeds: int, data) -> ComparePreset:
  fields = {"loopformer": p.loopformer, "mor": p.mor, "hyperloop": p.hyperloop}[model]
  return ComparePreset(model=model, model_fields=fields, optimizers={}, steps=steps,
                       batch_size=p.batch_size, seq_len=p.seq_len, schedule="cosine",
                       warmup_steps=min(p.warmup_steps, steps - 1), eval_every=p.eval_every,
                       eval_batches=p.eval_batches, seeds=tuple(range(seeds)), data=data)


def run(args, log) -> dict:
  p = PRESETS[args.preset]
  seeds = args.seeds or p.seeds
  root = args.out

  # 1. Learning rates: one seed per grid point, the long setting's length.
  entries = {v: _entry(v, 0.0) for v in p.variants}
  grid = {v: p.lr_grid[v] for v in p.variants}
  tune = study.run_campaign(root, "tune", study.lr_grid(
      _base(p, "loopformer", p.long_steps, 1, args.data), entries, grid), log=log)
  curves = study.lr_curves(tune, list(p.variants), grid)
  lrs = study.best_learning_rates(curves)
  study.plot_lr_curves(curves, os.path.join(root, "tune", "lr.png"),
                       title=f"LoopFormer, {p.long_steps} steps, 1 seed")

  # 2. Newton-Muon's refresh interval and ridge at its tuned rate.
  newton = {f"refresh {k}, ridge {g}": _entry("newton_muon", lrs["newton_muon"],
                                              optimizer="newton_muon", refresh_every=k, ridge=g)
            for k in p.newton_grid["refresh_every"] for g in p.newton_grid["ridge"]}
  newton_tune = study.run_campaign(root, "newton_tune", dataclasses.replace(
      _base(p, "loopformer", p.long_steps, 1, args.data), optimizers=newton,
      baseline=next(iter(newton))), log=log)
  best_newton = min(newton_tune["rows"], key=lambda r: r["val_loss"] if r["val_loss"] is not None
                    else float("inf"))["optimizer"]
  newton_hparams = {k: v for k, v in newton[best_newton].items()
                    if k in ("refresh_every", "ridge")}

  tuned = {v: _entry(v, lrs[v], **(newton_hparams if v == "newton_muon" else {}))
           for v in p.variants}

  def campaign(name, model, steps, variants):
    return study.run_campaign(root, name, dataclasses.replace(
        _base(p, model, steps, seeds, args.data),
        optimizers={v: tuned[v] for v in variants}), log=log)

  short = campaign("loopformer_short", "loopformer", p.short_steps, p.variants)
  long = campaign("loopformer_long", "loopformer", p.long_steps, p.variants)
  mor = campaign("mor_long", "mor", p.long_steps,
                 [v for v in ("adamw", "muon", "newton_muon") if v in p.variants])
  hyper = campaign("hyperloop_long", "hyperloop", p.long_steps, p.variants)

  sections = [
      "## Tuned learning rates (LoopFormer, 1 seed, long setting)", "",
      f"*{tune['header']}*", "",
      "Every Muon variant's AdamW branch (embeddings, head, norms, conditioning) runs at "
      f"{ADAM_BRANCH_LR:g}. Plot: `tune/lr.png`.", "",
      study.lr_table(curves), "",
      study.campaign_markdown(newton_tune, "Newton-Muon refresh interval × ridge (LoopFormer, "
                              "tuned lr, 1 seed)", note=f"Chosen: {best_newton}."),
      published_comparison(short),
      study.campaign_markdown(short, f"LoopFormer, short setting ({p.short_steps} steps)"),
      study.campaign_markdown(long, f"LoopFormer, long setting ({p.long_steps} steps)"),
      study.campaign_markdown(mor, f"Mixture-of-Recursions, long setting ({p.long_steps} steps)"),
      study.campaign_markdown(hyper, f"Hyperloop, long setting ({p.long_steps} steps)"),
  ]
  summary = dict(preset=args.preset, seeds=seeds, learning_rates=lrs, newton=newton_hparams,
                 lr_curves=curves,
                 tables={name: c["rows"] for name, c in (("loopformer_short", short),
                                                         ("loopformer_long", long),
                                                         ("mor_long", mor),
                                                         ("hyperloop_long", hyper))})
  study.write_report(root, "Study 1: Muon variants × looped transformers", sections, summary,
                     intro=INTRO, campaigns=[tune, newton_tune, short, long, mor, hyper])
  return summary


INTRO = """Question: do Muon variants train looped transformers (shared blocks applied several times) as
well as AdamW, and at what cost per step? Published reference: the "Muon Optimizer Variants × Looped
Transformers" table (1 layer × 2 loops LoopFormer, 6.8M parameters, 50 steps, one run each). Every
variant's learning rate is tuned on a small grid (not guessed), then each cell is run on several seeds
(mean ± sample std). Time per step is the median step time on this machine; the published ratios came
from a GPU and other implementations, so only the ordering is comparable."""


def published_comparison(short: dict) -> str:
  """The published table next to ours, row by row."""
  ours = {r["optimizer"]: r for r in short["rows"]}
  lines = ["## Published table next to ours (short setting)", "",
           "| optimizer | published loss | published Δ vs AdamW | published time ratio | our loss "
           "| our Δ vs AdamW | our time ratio |", "|---|---|---|---|---|---|---|"]
  base = PUBLISHED["adamw"][0]
  for name in ("adamw", "mano", "normuon", "adamuon", "newton_muon", "muon"):
    pub = PUBLISHED.get(name)
    r = ours.get(name)
    pub_cells = ("not in the table | — | —" if pub is None else
                 f"{pub[0]:.4f} | {pub[0] - base:+.4f} | {pub[1]:.1f}×")
    if r is None:
      our_cells = "not run | — | —"
    elif r["val_loss"] is None:
      our_cells = "diverged | — | —"
    else:
      our_cells = (f"{r['val_loss']:.4f} ± {r['val_loss_std']:.4f} | {r['delta']:+.4f} | "
                   f"{r['time_ratio']:.2f}×")
    lines.append(f"| {name} | {pub_cells} | {our_cells} |")
  published_order = sorted(PUBLISHED, key=lambda n: PUBLISHED[n][0])
  finished = [n for n in published_order if ours.get(n) and ours[n]["val_loss"] is not None]
  our_order = sorted(finished, key=lambda n: ours[n]["val_loss"])
  lines += ["", f"Ordering by final loss — published: {' < '.join(published_order)}; ours (same "
            f"optimizers): {' < '.join(our_order)}. "
            + ("The orderings agree." if our_order == [n for n in published_order if n in finished]
               else "The orderings disagree.")]
  if ours.get("adamw") and ours["adamw"]["val_loss"] is not None:
    better = [n for n in finished if n != "adamw"
              and study.versus(ours[n], ours["adamw"]) == "lower"]
    lines.append(f"Published: no variant beat AdamW at 50 steps. Ours: "
                 + (f"{', '.join(better)} beat AdamW beyond the seeds' spread."
                    if better else "no variant beat AdamW beyond the seeds' spread."))
  ratios = {n: ours[n]["time_ratio"] for n in finished if n != "adamw"}
  if ratios:
    lines.append("Time per step relative to AdamW — published: "
                 + ", ".join(f"{n} {PUBLISHED[n][1]:.1f}×" for n in published_order if n != "adamw")
                 + "; ours: " + ", ".join(f"{n} {ratios[n]:.2f}×" for n in ratios) + ".")
  lines += ["", "Losses are not comparable across the two columns in absolute terms (published: GPT-2 "
            "vocabulary of 50,257 tokens, where 10.8 ≈ ln 50257 is barely below the uniform "
            "loss; ours: a byte-level vocabulary on the stdlib corpus); the Δ ordering and the time "
            "ratios are what can agree or disagree.", ""]
  return "\n".join(lines)


if __name__ == "__main__":
  raise SystemExit(study.main(run, __doc__.splitlines()[0], list(PRESETS),
                              os.path.join("experiments", "results", "looped")))
