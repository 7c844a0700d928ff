"""Study 3: Muon on nGPT (normalized transformer, weights on the unit hypersphere).

The campaigns of the "Muon Optimizer Optimization for nGPT" plan (seeds/002 in
the spec folder):

1. ``lr_sweep``: Muon with the post-step projection at lr ∈ {0.001, 0.003,
   0.01, 0.023, 0.05, 0.1} and the Adam baseline on its own grid (campaign 1,
   "simple Muon", is the best Muon row against the best Adam row);
2. ``gated``: the same comparison on gated nGPT;
3. ``geodesic``: projection baseline vs geodesic updates with θ = lr and
   θ = lr·‖U‖;
4. ``features``: Polar Express, NorMuon variance reduction and cautious weight
   decay, alone and combined;
5. ``lazy``: lazy projection every k ∈ {1, 3, 5, 7, 10, 15, 20} steps for Muon
   and for Adam.

Usage::

    python experiments/study_ngpt.py                  # CPU preset (2 cores)
    python experiments/study_ngpt.py --preset smoke   # seconds: the test's preset
    python experiments/study_ngpt.py --preset paper --data /path/to/fineweb_bin  # GPU, gated 155M
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax import study  # noqa: E402
from muonjax.compare import ComparePreset  # noqa: E402

ADAM_BRANCH_LR = 3e-3

PUBLISHED = """Published plan (gated nGPT 155M, FineWeb, 400 steps × batch 32): the Adam baseline
(lr 5e-4, lazy projection every 7 steps) reaches validation loss 6.775; the hypotheses are that Muon beats
it, that Muon's best lr is higher than a standard GPT's (modded-nanogpt: 0.023), that geodesic updates gain
1–3 % over projection, that NorMuon + Polar Express is the best combination, and that Muon tolerates less
frequent projection than Adam (whose best frequency was 7). The plan reports no Muon results."""


@dataclasses.dataclass(frozen=True)
class Preset:
  model_fields: dict
  steps: int
  batch_size: int
  seq_len: int
  seeds: int
  eval_every: int
  eval_batches: int
  muon_lrs: tuple = (0.001, 0.003, 0.01, 0.023, 0.05, 0.1)
  adam_lrs: tuple = (1e-3, 3e-3, 1e-2)
  lazy_every: tuple = (1, 3, 5, 7, 10, 15, 20)
  cautious_weight_decay: float = 0.1
  features: tuple = ("Muon (NS5)", "Polar Express", "NorMuon", "cautious WD",
                     "Polar Express + NorMuon", "Polar Express + NorMuon + cautious WD")
  warmup_steps: int = 10


PRESETS = {
    "cpu": Preset(model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256),
                  steps=200, batch_size=8, seq_len=64, seeds=3, eval_every=25, eval_batches=4),
    "smoke": Preset(model_fields=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32),
                    steps=2, batch_size=2, seq_len=8, seeds=1, eval_every=0, eval_batches=1,
                    muon_lrs=(0.01, 0.023), adam_lrs=(3e-3,), lazy_every=(1, 3),
                    features=("Muon (NS5)", "Polar Express + NorMuon + cautious WD"),
                    warmup_steps=0),
    # GPU: the plan's gated nGPT (11 layers, 768 wide) at 400 steps × 32 sequences.
    "paper": Preset(model_fields=dict(vocab_size=50257, d_model=768, n_layers=11, n_heads=6,
                                      d_ff=2048),
                    steps=400, batch_size=32, seq_len=1024, seeds=3, eval_every=50,
                    eval_batches=20, adam_lrs=(2.5e-4, 5e-4, 1e-3)),
}


def run(args, log) -> dict:
  p = PRESETS[args.preset]
  seeds = args.seeds or p.seeds
  root = args.out
  gated_paper = args.preset == "paper"

  def base(**fields):
    model_fields = dict(p.model_fields, **fields)
    return ComparePreset(model="ngpt", model_fields=model_fields, optimizers={}, steps=p.steps,
                         batch_size=p.batch_size, seq_len=p.seq_len, schedule="cosine",
                         warmup_steps=min(p.warmup_steps, p.steps - 1), eval_every=p.eval_every,
                         eval_batches=p.eval_batches, seeds=tuple(range(seeds)), data=args.data)

  def muon(optimizer="muon", **extra):
    return dict(optimizer=optimizer, adam_learning_rate=ADAM_BRANCH_LR, **extra)

  adam = dict(optimizer="adamw", weight_decay=0.0)

  # 1. learning rates (plain nGPT; the paper preset runs the gated model throughout).
  grid = {"Muon": p.muon_lrs, "Adam": p.adam_lrs}
  sweep = study.run_campaign(root, "lr_sweep", study.lr_grid(
      base(gated=gated_paper), {"Muon": muon(), "Adam": adam}, grid), log=log)
  curves = study.lr_curves(sweep, ["Muon", "Adam"], grid)
  best = study.best_learning_rates(curves)
  study.plot_lr_curves(curves, os.path.join(root, "lr_sweep", "lr.png"),
                       title="nGPT: Muon vs Adam, post-step projection")
  muon_default_branch = muon(learning_rate=best["Muon"])
  # Campaigns 2-5 run Muon's AdamW branch at Adam's tuned rate (campaign 1b shows why).
  muon_best = dict(muon_default_branch, adam_learning_rate=best["Adam"])

  # 1b. is Muon held back by its AdamW branch (eigen-rates, scales, embeddings)?
  branch = study.run_campaign(root, "adam_branch", dataclasses.replace(
      base(gated=gated_paper), optimizers={
          "adam": dict(adam, learning_rate=best["Adam"]),
          f"muon, AdamW branch {ADAM_BRANCH_LR:g}": muon_default_branch,
          f"muon, AdamW branch {best['Adam']:g} (Adam's best)": muon_best},
      baseline="adam"), log=log)

  # 2. gated nGPT at the tuned rates.
  gated = study.run_campaign(root, "gated", dataclasses.replace(
      base(gated=True), optimizers={"adam": dict(adam, learning_rate=best["Adam"]),
                                    "muon": muon_best}, baseline="adam"), log=log)

  # 3. geodesic updates.
  geodesic = study.run_campaign(root, "geodesic", dataclasses.replace(
      base(gated=gated_paper), optimizers={
          "projection": muon_best,
          "geodesic θ = lr": dict(muon_best, model_fields=dict(sphere_update="geodesic",
                                                               sphere_theta="lr")),
          "geodesic θ = lr·‖U‖": dict(muon_best, model_fields=dict(sphere_update="geodesic",
                                                                    sphere_theta="norm"))},
      baseline="projection"), log=log)

  # 4. modded-nanogpt features, alone and combined.
  cwd = dict(weight_decay=p.cautious_weight_decay, weight_decay_mode="cautious")
  pe = dict(method="polar_express")
  feature_entries = {
      "Muon (NS5)": muon_best,
      "Polar Express": dict(muon_best, **pe),
      "NorMuon": dict(muon_best, optimizer="normuon"),
      "cautious WD": dict(muon_best, **cwd),
      "Polar Express + NorMuon": dict(muon_best, optimizer="normuon", **pe),
      "Polar Express + NorMuon + cautious WD": dict(muon_best, optimizer="normuon", **pe, **cwd),
  }
  features = study.run_campaign(root, "features", dataclasses.replace(
      base(gated=gated_paper), optimizers={k: feature_entries[k] for k in p.features},
      baseline="Muon (NS5)"), log=log)

  # 5. lazy projection frequency, Muon vs Adam.
  lazy_entries = {}
  for name, entry in (("Muon", muon_best), ("Adam", dict(adam, learning_rate=best["Adam"]))):
    for k in p.lazy_every:
      lazy_entries[f"{name}, every {k}"] = dict(entry, model_fields=dict(sphere_every=k))
  lazy = study.run_campaign(root, "lazy", dataclasses.replace(
      base(gated=gated_paper), optimizers=lazy_entries,
      baseline=f"Adam, every {p.lazy_every[0]}"), log=log)
  lazy_curves = {name: {"points": [[k] + _cell(lazy, f"{name}, every {k}")
                                   for k in p.lazy_every]} for name in ("Muon", "Adam")}
  for curve in lazy_curves.values():
    finished = [pt for pt in curve["points"] if pt[1] is not None]
    curve["band"] = {"best_lr": min(finished, key=lambda pt: pt[1])[0] if finished else None}
  study.plot_lr_curves(lazy_curves, os.path.join(root, "lazy", "frequency.png"),
                       title="nGPT: lazy projection", xlabel="projection every k steps",
                       log_x=False)

  sections = [
      "## 1. Learning-rate sweep (post-step projection)", "", f"*{sweep['header']}*", "",
      f"Muon's AdamW branch (embeddings, eigen-rates, scales) runs at {ADAM_BRANCH_LR:g}; Adam "
      "has no weight decay (nGPT). Plot: `lr_sweep/lr.png`.", "",
      study.lr_table(curves), "",
      study.campaign_markdown(branch, "1b. Muon's AdamW branch at Adam's tuned rate",
                              note="nGPT's eigen-learning-rates, scaling vectors and embeddings "
                                   "are in Muon's AdamW branch; this checks whether its rate, "
                                   "not Muon, explains the gap to Adam."),
      f"Campaigns 2–5 run Muon at lr {best['Muon']:g} with its AdamW branch at Adam's tuned "
      f"rate {best['Adam']:g}.", "",
      study.campaign_markdown(gated, "2. Gated nGPT at the tuned rates"),
      study.campaign_markdown(geodesic, "3. Geodesic updates (Muon, tuned lr)",
                              note="The sphere stage acts on every constrained vector, the "
                                   "AdamW-branch embeddings included."),
      study.campaign_markdown(features, "4. modded-nanogpt features (tuned lr)",
                              note=f"cautious WD: λ = {p.cautious_weight_decay:g}, decay only "
                                   "where sign(update) = sign(W); Polar Express: 5-step table."),
      study.campaign_markdown(lazy, "5. Lazy projection frequency",
                              note="Plot: `lazy/frequency.png`. Baseline: Adam projected "
                                   "every step."),
      "## Against the published plan", "", PUBLISHED, "",
      claims(curves, branch, gated, geodesic, features, lazy, p.lazy_every), "",
  ]
  summary = dict(preset=args.preset, seeds=seeds, best_learning_rates=best, lr_curves=curves,
                 lazy=lazy_curves,
                 tables={n: c["rows"] for n, c in (("adam_branch", branch), ("gated", gated),
                                                   ("geodesic", geodesic),
                                                   ("features", features), ("lazy", lazy))})
  study.write_report(root, "Study 3: Muon on nGPT", sections, summary, intro=INTRO,
                     campaigns=[sweep, branch, gated, geodesic, features, lazy])
  return summary


INTRO = """Question: does Muon suit nGPT, whose weight vectors live on the unit hypersphere, and
which Muon refinements help there? The model is nGPT (arXiv 2410.01131) with its eigen-learning-rates
and scaling parameters; after every optimizer step the constrained vectors are projected back to the sphere
(or moved along a great circle, or projected lazily). Several seeds per cell (mean ± sample std)."""


def _cell(payload, entry):
  r = study.row(payload, entry)
  return [r["val_loss"], r["val_loss_std"], r["seeds"], r["diverged"]]


def claims(curves, branch, gated, geodesic, features, lazy, lazy_every) -> str:
  lines = []
  spread = {"lower": "better", "higher": "worse", "tie": "within the seeds' spread"}
  muon, adam = curves["Muon"]["band"], curves["Adam"]["band"]
  if muon["best_loss"] is not None and adam["best_loss"] is not None:
    def at_best(name):
      point = next(pt for pt in curves[name]["points"] if pt[0] == curves[name]["band"]["best_lr"])
      return {"val_loss": point[1], "val_loss_std": point[2]}
    verdict = {"lower": "agrees", "higher": "disagrees",
               "tie": "inconclusive (within the seeds' spread)"}[
                   study.versus(at_best("Muon"), at_best("Adam"))]
    lines.append(f"- Muon beats Adam (nGPT), lr sweep with Muon's AdamW branch at "
                 f"{ADAM_BRANCH_LR:g}: best {muon['best_loss']:.4f} (lr {muon['best_lr']:g}) "
                 f"vs {adam['best_loss']:.4f} (lr {adam['best_lr']:g}) — {verdict}; with the "
                 "branch at Adam's rate (1b):")
  adam_row = study.row(branch, "adam")
  for r in branch["rows"]:
    if r["optimizer"] != "adam" and r["val_loss"] is not None:
      lines.append(f"- {r['optimizer']}: {r['val_loss']:.4f} ± {r['val_loss_std']:.4f} vs Adam "
                   f"{adam_row['val_loss']:.4f} — {spread[study.versus(r, adam_row)]}.")
  g_muon, g_adam = study.row(gated, "muon"), study.row(gated, "adam")
  if g_muon["val_loss"] is not None and g_adam["val_loss"] is not None:
    lines.append(f"- Gated nGPT: Muon {g_muon['val_loss']:.4f} ± {g_muon['val_loss_std']:.4f} vs "
                 f"Adam {g_adam['val_loss']:.4f} ± {g_adam['val_loss_std']:.4f} — Muon "
                 f"{spread[study.versus(g_muon, g_adam)]}.")
  if muon["best_lr"] is not None:
    lines.append(f"- Muon's best lr {muon['best_lr']:g} vs modded-nanogpt's 0.023 — the plan "
                 f"expected higher: {'agrees' if muon['best_lr'] > 0.023 else 'disagrees'}.")
  projection = study.row(geodesic, "projection")
  for name in ("geodesic θ = lr", "geodesic θ = lr·‖U‖"):
    r = study.row(geodesic, name)
    if projection["val_loss"] is not None and r["val_loss"] is not None:
      rel = 100 * (r["val_loss"] - projection["val_loss"]) / projection["val_loss"]
      lines.append(f"- {name}: {rel:+.2f} % vs projection, {spread[study.versus(r, projection)]} "
                   "(plan expected −1 to −3 %).")
  base = study.row(features, "Muon (NS5)")
  finished = [r for r in features["rows"] if r["val_loss"] is not None]
  if finished and base["val_loss"] is not None:
    b = min(finished, key=lambda r: r["val_loss"])
    lines.append(f"- Best feature set: {b['optimizer']} ({b['val_loss']:.4f}), "
                 f"{spread[study.versus(b, base)]} against plain Muon; the plan expected "
                 "NorMuon + Polar Express to be best.")
  for name in ("Muon", "Adam"):
    rows = [study.row(lazy, f"{name}, every {k}") for k in lazy_every]
    rows = [r for r in rows if r["val_loss"] is not None]
    if rows:
      b = min(rows, key=lambda r: r["val_loss"])
      every = study.row(lazy, f"{name}, every {lazy_every[0]}")
      lines.append(f"- Best projection period for {name}: {b['optimizer'].split(', ')[1]} "
                   f"({spread[study.versus(b, every)]} against every {lazy_every[0]}; the plan's "
                   "Adam optimum: every 7).")
  return "\n".join(lines)


if __name__ == "__main__":
  raise SystemExit(study.main(run, __doc__.splitlines()[0], list(PRESETS),
                              os.path.join("experiments", "results", "ngpt")))
