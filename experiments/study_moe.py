"""Study 2: Muon on a small Mixture-of-Experts transformer with latent attention.

Reproduces the four experiments of the blueberry-llm Muon analysis
(docs/models.md#moe-with-latent-attention): a MoE transformer (8 experts, top-2,
load-balance loss) with multi-head self-attention (MHSA) or multi-head latent
attention (MHLA):

(c) ``sensitivity_*``: Muon's learning rate, momentum β and Newton–Schulz steps T;
(a) ``hybrid``: Muon on the hidden matrices + AdamW on embeddings/norms vs
    AdamW everywhere, both at their best learning rate from a grid;
(b) ``ablation``: full Muon, momentum only, NS only, SGD-like (optimizers
    docs/optimizers.md#ablation-chains), each at its own best learning rate;
(d) ``activations``: SiLU/GELU/ReLU/Tanh × MHSA/MHLA with Muon.

Usage::

    python experiments/study_moe.py                  # CPU preset (2 cores)
    python experiments/study_moe.py --preset smoke   # seconds: the test's preset
    python experiments/study_moe.py --preset paper --data /path/to/smollm_bin  # GPU, 384d × 6
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax import study  # noqa: E402
from muonjax.compare import ComparePreset  # noqa: E402

# docs/optimizers.md#ablation-chains: embeddings and norms stay on AdamW in every row.
ABLATIONS = {
    "full Muon": dict(optimizer="muon"),
    "momentum only": dict(optimizer="muon", method=None),
    "NS only": dict(optimizer="muon", beta=0.0),
    "SGD-like": dict(optimizer="muon", beta=0.0, method=None),
}
ADAM_BRANCH_LR = 3e-3

PUBLISHED = """Published (blueberry-llm, 384d × 6 layers, 8 experts top-2, SmolLM 500k tokens, 1000 steps, one run
each): (a) Muon 0.0476 vs AdamW 0.0547 validation loss (−13.2 %), accuracy +0.26 %, perplexity 1.05 vs 1.06,
training time 13.3 vs 11.8 min (+12.7 %); (b) full Muon lowest (2.5347), removing momentum raises the loss by
114.4 %; (c) best lr 0.05 (loss 0.3277; "high sensitivity"), momentum 0.95, NS steps 7 (weak effect);
(d) 500 steps: MHSA-ReLU best (4.6883, PPL 108.67, accuracy 0.2560), MHLA-ReLU 4.7078 (PPL 110.80)."""


@dataclasses.dataclass(frozen=True)
class Preset:
  model_fields: dict
  steps: int
  activation_steps: int
  batch_size: int
  seq_len: int
  seeds: int
  eval_every: int
  eval_batches: int
  lrs: tuple = (0.001, 0.005, 0.01, 0.02, 0.05)
  betas: tuple = (0.9, 0.95, 0.99)
  ns_steps: tuple = (3, 5, 7)
  adamw_lrs: tuple = (1e-3, 3e-3, 1e-2)
  ablation_lrs: dict = dataclasses.field(default_factory=lambda: {
      "full Muon": (0.01, 0.02, 0.05), "NS only": (0.01, 0.02, 0.05),
      "momentum only": (0.1, 0.3, 1.0), "SGD-like": (0.1, 0.3, 1.0)})
  activations: tuple = ("silu", "gelu", "relu", "tanh")
  attentions: tuple = ("mhsa", "mhla")
  warmup_steps: int = 10


PRESETS = {
    "cpu": Preset(
        model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, n_experts=8, top_k=2,
                          kv_lora_rank=16, qk_nope_dim=16, qk_rope_dim=8, v_dim=16, dropout=0.0),
        steps=80, activation_steps=80, batch_size=8, seq_len=64, seeds=3, eval_every=20,
        eval_batches=4),
    "smoke": Preset(
        model_fields=dict(d_model=16, n_layers=1, n_heads=2, d_ff=16, n_experts=4, top_k=2,
                          kv_lora_rank=8, qk_nope_dim=8, qk_rope_dim=4, v_dim=8, dropout=0.0),
        steps=2, activation_steps=2, batch_size=2, seq_len=8, seeds=1, eval_every=0,
        eval_batches=1, lrs=(0.01, 0.02), betas=(0.95,), ns_steps=(5,), adamw_lrs=(3e-3,),
        ablation_lrs={"full Muon": (0.02,), "NS only": (0.02,), "momentum only": (0.3,),
                      "SGD-like": (0.3,)},
        activations=("silu",), attentions=("mhsa", "mhla"), warmup_steps=0),
    # GPU: the published model (moe_study_config: 384d, 6 layers, 8 heads, FF 1536,
    # 8 experts top-2, MLA with 64 latents, SmolLM vocabulary) and step counts.
    "paper": Preset(
        model_fields=dict(vocab_size=49152, d_model=384, n_layers=6, n_heads=8, d_ff=1536,
                          n_experts=8, top_k=2, kv_lora_rank=64, qk_nope_dim=128, qk_rope_dim=32,
                          v_dim=128, dropout=0.1),
        steps=1000, activation_steps=500, batch_size=16, seq_len=512, seeds=3, eval_every=100,
        eval_batches=20, warmup_steps=50),
}


def run(args, log) -> dict:
  p = PRESETS[args.preset]
  seeds = args.seeds or p.seeds
  root = args.out

  def base(steps, n_seeds=seeds, **fields):
    return ComparePreset(model="moe", model_fields=dict(p.model_fields, **fields), optimizers={},
                         steps=steps, batch_size=p.batch_size, seq_len=p.seq_len,
                         schedule="cosine", warmup_steps=min(p.warmup_steps, steps - 1),
                         eval_every=p.eval_every, eval_batches=p.eval_batches,
                         seeds=tuple(range(n_seeds)), data=args.data)

  def muon(**extra):
    return dict(optimizer="muon", adam_learning_rate=ADAM_BRANCH_LR, **extra)

  # (c) sensitivity: learning rate (β 0.95, T 5), then β and T at the best rate.
  lr_grid = {"Muon": p.lrs, "AdamW": p.adamw_lrs}
  lr_payload = study.run_campaign(root, "sensitivity_lr", study.lr_grid(
      base(p.steps), {"Muon": muon(), "AdamW": dict(optimizer="adamw")}, lr_grid), log=log)
  lr_curves = study.lr_curves(lr_payload, ["Muon", "AdamW"], lr_grid)
  best = study.best_learning_rates(lr_curves)
  study.plot_lr_curves(lr_curves, os.path.join(root, "sensitivity_lr", "lr.png"),
                       title="MoE (MHSA), Muon vs AdamW")
  beta_payload = study.run_campaign(root, "sensitivity_beta", dataclasses.replace(
      base(p.steps), optimizers={f"β = {b}": muon(learning_rate=best["Muon"], beta=b)
                                 for b in p.betas}, baseline=f"β = {p.betas[0]}"), log=log)
  ns_payload = study.run_campaign(root, "sensitivity_ns_steps", dataclasses.replace(
      base(p.steps), optimizers={f"T = {t}": muon(learning_rate=best["Muon"], steps=t)
                                 for t in p.ns_steps}, baseline=f"T = {p.ns_steps[0]}"), log=log)

  # (a) hybrid Muon + AdamW vs AdamW, each at its best rate.
  hybrid = study.run_campaign(root, "hybrid", dataclasses.replace(
      base(p.steps), optimizers={"adamw": dict(learning_rate=best["AdamW"]),
                                 "muon (hybrid)": muon(learning_rate=best["Muon"])}), log=log)

  # (b) ablation: each row's learning rate from a one-seed grid, then all seeds.
  rows = {name: dict(hparams, adam_learning_rate=ADAM_BRANCH_LR)
          for name, hparams in ABLATIONS.items()}
  ablation_tune = study.run_campaign(root, "ablation_tune", study.lr_grid(
      base(p.steps, 1), rows, p.ablation_lrs), log=log)
  ablation_curves = study.lr_curves(ablation_tune, list(rows), p.ablation_lrs)
  ablation_lrs = study.best_learning_rates(ablation_curves)
  ablation = study.run_campaign(root, "ablation", dataclasses.replace(
      base(p.steps), optimizers={name: dict(rows[name], learning_rate=ablation_lrs[name])
                                 for name in rows}, baseline="full Muon"), log=log)

  # (d) activations × attention, Muon at its best rate.
  cells = {f"{att.upper()}-{act}": muon(learning_rate=best["Muon"],
                                        model_fields=dict(activation=act, attention=att))
           for att in p.attentions for act in p.activations}
  activations = study.run_campaign(root, "activations", dataclasses.replace(
      base(p.activation_steps), optimizers=cells, baseline=next(iter(cells))), log=log)

  sections = [
      "## (c) Sensitivity: learning rate", "", f"*{lr_payload['header']}*", "",
      "Muon (β 0.95, T 5) and AdamW over their grids; plot `sensitivity_lr/lr.png`.", "",
      study.lr_table(lr_curves), "",
      study.campaign_markdown(beta_payload, f"(c) Sensitivity: momentum β (lr {best['Muon']:g})"),
      study.campaign_markdown(ns_payload, f"(c) Sensitivity: Newton–Schulz steps T "
                              f"(lr {best['Muon']:g})"),
      study.campaign_markdown(hybrid, "(a) Hybrid Muon + AdamW vs AdamW", accuracy=True,
                              note=f"Learning rates: AdamW {best['AdamW']:g}, Muon "
                                   f"{best['Muon']:g} (AdamW branch {ADAM_BRANCH_LR:g})."),
      "## (b) Ablation: learning rate of each row (1 seed)", "",
      "Definitions (docs/optimizers.md#ablation-chains): full Muon = momentum 0.95 (Nesterov) → NS5 → Keller "
      "scale; momentum only = no NS; NS only = β 0 (U = G); SGD-like = neither. Embeddings, "
      "norms and routers stay on AdamW in every row.", "",
      study.lr_table(ablation_curves), "",
      study.campaign_markdown(ablation, "(b) Ablation at each row's best learning rate"),
      study.campaign_markdown(activations, "(d) Activations × attention (Muon)", accuracy=True),
      "## Against the published claims", "", PUBLISHED, "",
      claims(lr_curves, beta_payload, ns_payload, hybrid, ablation, activations), "",
  ]
  summary = dict(preset=args.preset, seeds=seeds, best_learning_rates=best,
                 ablation_learning_rates=ablation_lrs, lr_curves=lr_curves,
                 ablation_curves=ablation_curves,
                 tables={n: c["rows"] for n, c in (("sensitivity_beta", beta_payload),
                                                   ("sensitivity_ns_steps", ns_payload),
                                                   ("hybrid", hybrid), ("ablation", ablation),
                                                   ("activations", activations))})
  study.write_report(root, "Study 2: Muon on a small MoE with latent attention", sections,
                     summary, intro=INTRO, campaigns=[lr_payload, beta_payload, ns_payload, hybrid, ablation_tune, ablation, activations])
  return summary


INTRO = """Question: does Muon (hybrid with AdamW) beat AdamW on a small Mixture-of-Experts transformer,
which of its parts matter, how sensitive is it to its hyperparameters, and does the attention type
(MHSA vs MHLA) or activation change the picture? Every cell is run on several seeds (mean ± sample
std); learning rates come from grids, not guesses."""


def _best(payload):
  finished = [r for r in payload["rows"] if r["val_loss"] is not None]
  return min(finished, key=lambda r: r["val_loss"]) if finished else None


def claims(lr_curves, beta_payload, ns_payload, hybrid, ablation, activations) -> str:
  """Plain sentences: where our numbers agree or disagree with the published ones."""
  lines = []
  muon, adamw = study.row(hybrid, "muon (hybrid)"), study.row(hybrid, "adamw")
  if muon["val_loss"] is not None and adamw["val_loss"] is not None:
    rel = 100 * (muon["val_loss"] - adamw["val_loss"]) / adamw["val_loss"]
    verdict = {"lower": "agrees in direction", "higher": "disagrees",
               "tie": "inconclusive (within the seeds' spread)"}[study.versus(muon, adamw)]
    lines.append(f"- (a) Muon vs AdamW: {muon['val_loss']:.4f} vs {adamw['val_loss']:.4f} "
                 f"({rel:+.1f} %; published −13.2 %) — {verdict}; time/step ratio "
                 f"{muon['time_ratio']:.2f}× (published +12.7 % training time).")
  full = study.row(ablation, "full Muon")
  best_ablation = _best(ablation)
  if best_ablation is not None:
    if best_ablation["optimizer"] == "full Muon":
      verdict = "agrees"
    elif study.versus(full, best_ablation) == "tie":
      verdict = "full Muon is within the seeds' spread of it"
    else:
      verdict = "disagrees"
    lines.append(f"- (b) Lowest loss: {best_ablation['optimizer']} "
                 f"({best_ablation['val_loss']:.4f}); published: full Muon — {verdict}.")
  ns_only = study.row(ablation, "NS only")
  if full["val_loss"] is not None and ns_only["val_loss"] is not None:
    rel = 100 * (ns_only["val_loss"] - full["val_loss"]) / full["val_loss"]
    lines.append(f"- (b) Removing momentum (NS only vs full Muon): {rel:+.1f} % loss "
                 "(published +114.4 %).")
  band = lr_curves["Muon"]["band"]
  if band["best_lr"] is not None:
    lines.append(f"- (c) Best Muon lr {band['best_lr']:g} (published 0.05); lrs within 2 % of "
                 f"the best: [{band['lo']:g}, {band['hi']:g}] ({band['decades']:.2f} decades).")
  for payload, what, published in ((beta_payload, "momentum", "β = 0.95"),
                                    (ns_payload, "NS steps", "T = 7")):
    b = _best(payload)
    if b is not None:
      spread = max(r["val_loss"] for r in payload["rows"] if r["val_loss"] is not None) \
          - b["val_loss"]
      lines.append(f"- (c) Best {what}: {b['optimizer']} (published {published}); spread of "
                   f"the means {spread:.4f}.")
  b = _best(activations)
  if b is not None:
    relu = [r for r in activations["rows"] if r["optimizer"] == "MHSA-relu"]
    if b["optimizer"] == "MHSA-relu":
      verdict = "agrees"
    elif relu and study.versus(relu[0], b) == "tie":
      verdict = "MHSA-relu is within the seeds' spread of it"
    else:
      verdict = "disagrees"
    lines.append(f"- (d) Best cell: {b['optimizer']} ({b['val_loss']:.4f}); published MHSA-relu "
                 f"— {verdict}.")
  return "\n".join(lines)


if __name__ == "__main__":
  raise SystemExit(study.main(run, __doc__.splitlines()[0], list(PRESETS),
                              os.path.join("experiments", "results", "moe")))
