"""Study 4: learning-rate sensitivity of Muon designs (Crawshaw, Modi, Liu, Gower, arXiv 2510.09827).

MuonAdam (the modded-nanogpt form of Muon), MuonMax, their Momo-truncated
forms, Scion (constrained and unconstrained, and two other per-layer norm
choices) and AdamW, each trained on a quarter-decade grid of learning rates
around its optimum (extended past an edge until the optimum is interior) on
three seeds. Robustness is the width of the band of rates whose mean final
loss is within 5 % / 10 % of the best loss of ALL methods (a uniformly poor
method gets an empty band, not a wide one), and of the method's own best.

Usage::

    python experiments/study_lr_sensitivity.py                  # CPU preset
    python experiments/study_lr_sensitivity.py --preset smoke   # seconds: the test's preset
    python experiments/study_lr_sensitivity.py --preset paper --data /path/to/fineweb_bin
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax import claims, intervals, study, sweep  # noqa: E402
from muonjax.compare import ComparePreset  # noqa: E402

# Method label → optimizer hyperparameters (every lr comes from the grid).
METHODS = {
    # nanoGPT's AdamW betas (b2 0.95, as compare.SHARED_ADAM); one lr for every leaf.
    "AdamW": dict(optimizer="adamw", b2=0.95),
    "MuonAdam": dict(optimizer="muon_adam"),
    "MuonMax": dict(optimizer="muon_max"),
    "MuonAdam-Momo": dict(optimizer="momo", base="muon_adam"),
    "MuonMax-Momo": dict(optimizer="momo", base="muon_max"),
    # Scion's per-layer norms (Pethick et al., arXiv 2502.07529; LIONS-EPFL/scion): the
    # default is Spectral hidden matrices, Sign head, ColNorm embeddings, BiasRMS vectors.
    "Scion (constrained)": dict(optimizer="scion", constrained=True),
    "Scion (unconstrained)": dict(optimizer="scion", constrained=False),
    "Scion (constrained, Sign embeddings)": dict(optimizer="scion", constrained=True,
                                                 overrides={"embed": "sign"}),
    "Scion (constrained, ColNorm hidden)": dict(optimizer="scion", constrained=True,
                                                overrides={"blocks/(attn|mlp)/": "colnorm"}),
}

STEP = 10 ** 0.25  # a quarter decade: the grid's spacing
RESOLUTION = 0.25  # decades: a band's width is known to one grid step
TOLERANCES = (0.05, 0.10)


def quarter_grid(lo: int, hi: int) -> tuple:
  """Rates 10^(k/4) for k = lo..hi (quarter-decade exponents; 6 significant digits, as
  study.interior_lr_grid writes its extensions)."""
  return tuple(float(f"{10 ** (k / 4):.6g}") for k in range(lo, hi + 1))


# Starting grids, from the committed half-decade results of the previous run
# (experiments/results/lr_sensitivity/ at 2e1f3f7): each brackets that run's
# optimum and the rates within ~10 % of it, with a point or two past the band.
# MuonMax-Momo's old best was on the top edge (0.1): its grid goes to 1.
CPU_GRIDS = {
    "AdamW": quarter_grid(-12, -5),              # 1e-3 … 0.056 (old best 0.01)
    "MuonAdam": quarter_grid(-13, -6),           # 5.6e-4 … 0.032 (old best 0.003)
    "MuonMax": quarter_grid(-15, -8),            # 1.8e-4 … 0.01 (old best 0.001)
    "MuonAdam-Momo": quarter_grid(-12, -4),      # 1e-3 … 0.1 (old best 0.003, flat above)
    "MuonMax-Momo": quarter_grid(-12, 0),        # 1e-3 … 1 (old best 0.1, on the edge)
    "Scion (constrained)": quarter_grid(-10, -4),            # 3.2e-3 … 0.1 (old best 0.01)
    "Scion (unconstrained)": quarter_grid(-10, -3),          # 3.2e-3 … 0.18 (old best 0.03)
    "Scion (constrained, Sign embeddings)": quarter_grid(-10, -5),  # (old best 0.01)
    "Scion (constrained, ColNorm hidden)": quarter_grid(-11, -6),   # (old best 0.01)
}


@dataclasses.dataclass(frozen=True)
class Preset:
  model: str
  model_fields: dict
  steps: int
  batch_size: int
  seq_len: int
  seeds: int
  eval_batches: int
  grids: dict
  warmup_steps: int = 10
  max_rounds: int = 6
  band_rounds: int = 2  # campaigns closing the bands within 10 % of the best of all


PRESETS = {
    # 73 grid points × 3 seeds = 219 runs (≈ 4.5 s each on an idle 2-core machine) plus
    # the extensions; evaluation on 32 × 8 × 64 = 16,384 held-out tokens after the last step.
    "cpu": Preset(model="gpt", model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256),
                  steps=200, batch_size=8, seq_len=64, seeds=3, eval_batches=32,
                  grids=CPU_GRIDS),
    # Seconds: the three methods of the MuonMax/MuonAdam/Momo claims, two rates each, two
    # seeds (a pair needs two), one extension round.
    "smoke": Preset(model="gpt", model_fields=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32),
                    steps=3, batch_size=2, seq_len=8, seeds=2, eval_batches=1,
                    grids={"MuonAdam": (1e-3, 1e-2), "MuonMax": (1e-3, 1e-2),
                           "MuonMax-Momo": (1e-2, 0.1)},
                    warmup_steps=0, max_rounds=1, band_rounds=0),
    # GPU: GPT-2 small (124M) as in the paper's smaller runs; the CPU grids as a start.
    "paper": Preset(model="gpt", model_fields=dict(d_model=768, n_layers=12, n_heads=12,
                                                   d_ff=3072),
                    steps=5000, batch_size=32, seq_len=1024, seeds=3, eval_batches=20,
                    grids=CPU_GRIDS, warmup_steps=200),
}


# --- bands -------------------------------------------------------------------------


def best_of_all(curves) -> float:
  """The lowest mean final loss of any method at any rate (the common reference)."""
  return min(c["band"]["best_loss"] for c in curves.values() if c["band"]["best_loss"] is not None)


def band(points, tolerance: float, reference=None) -> dict:
  """sweep.lr_band of ``[lr, mean, std, seeds, diverged]`` points (a rate where a seed
  diverged is out), plus ``edge``: the band reaches the lowest or highest rate of the grid,
  so its width is a lower bound."""
  b = sweep.lr_band([(p[0], None if p[4] else p[1]) for p in points], tolerance,
                    reference=reference)
  grid = [p[0] for p in points]
  b["edge"] = b["lo"] is not None and (b["lo"] == min(grid) or b["hi"] == max(grid))
  return b


def band_text(b) -> str:
  """``[0.001, 0.01] 1.00`` (``≥`` when the band reaches the grid's edge), or ``empty``."""
  if b["decades"] is None:
    return "empty"
  return f"[{b['lo']:g}, {b['hi']:g}] {'≥ ' if b['edge'] else ''}{b['decades']:.2f}"


def seed_losses(runs, method: str, grid) -> list[list]:
  """Per seed, the final loss at every rate of ``method``'s grid (None: diverged)."""
  per_rate = [claims.losses(runs, study.lr_label(method, lr)) for lr in grid]
  return [list(seed) for seed in zip(*per_rate)]


def seed_measures(runs, method: str, grid, limit: float) -> list[float]:
  """Per seed, RESOLUTION (0.25 decade) × the number of grid rates whose loss is ≤ ``limit``.

  An empty band measures 0, one rate 0.25, a contiguous band its width + 0.25:
  a number for every seed, so two methods' bands can be paired over seeds.
  """
  return [RESOLUTION * sum(loss is not None and loss <= limit for loss in seed)
          for seed in seed_losses(runs, method, grid)]


def band_rows(curves, reference: float) -> list[dict]:
  """Per method: its best rate and loss and its four bands (5 %/10 % of all, of its own)."""
  rows = []
  for method, curve in curves.items():
    pts = curve["points"]
    row = dict(method=method, best_lr=curve["band"]["best_lr"],
               best_loss=curve["band"]["best_loss"])
    for tol in TOLERANCES:
      row[f"all_{tol:g}"] = band(pts, tol, reference)
      row[f"own_{tol:g}"] = band(pts, tol)
    rows.append(row)
  return rows


def band_table(rows, reference: float) -> str:
  """Markdown: the four bands of every method, widest (10 % of all) first."""
  head = ("| method | best lr | best loss | within 5 % of all | within 10 % of all | "
          "within 5 % of own best | within 10 % of own best |")
  lines = [head, "|---|---|---|---|---|---|---|"]
  order = sorted(rows, key=lambda r: (r["all_0.1"]["decades"] is None,
                                      -(r["all_0.1"]["decades"] or 0.0), r["best_loss"]))
  for r in order:
    cells = [band_text(r[k]) for k in ("all_0.05", "all_0.1", "own_0.05", "own_0.1")]
    lines.append(f"| {r['method']} | {r['best_lr']:g} | {r['best_loss']:.4f} | "
                 + " | ".join(cells) + " |")
  return (f"Reference (best loss of all methods): {reference:.4f}; 5 % → ≤ "
          f"{reference * 1.05:.4f}, 10 % → ≤ {reference * 1.10:.4f}.\n\n" + "\n".join(lines))


# --- claims ------------------------------------------------------------------------


def wider_claim(runs, curves, grids, a: str, b: str, *, claim: str, published: str,
                reference: float, tolerance: float = 0.10) -> claims.Claim:
  """"``a``'s band (within ``tolerance`` of ``reference``) is wider than ``b``'s".

  Paired 95 % interval over seeds of the per-seed band measures (seed_measures).
  reproduced: the interval lies above 0 AND the mean curves' bands differ by more
  than the grid's resolution (one quarter decade) the same way; contradicted: the
  mirror image; inconclusive otherwise, or when the verdict could flip because the
  band that would have to grow reaches the edge of its grid (a lower bound).
  """
  limit = reference * (1 + tolerance)
  iv = intervals.paired_interval(seed_measures(runs, a, grids[a], limit),
                                 seed_measures(runs, b, grids[b], limit))
  ba, bb = (band(curves[m]["points"], tolerance, reference) for m in (a, b))
  # An empty band counts one grid step below a band of one rate (width 0).
  wa, wb = (-RESOLUTION if x["decades"] is None else x["decades"] for x in (ba, bb))
  side = intervals.verdict(iv)  # "worse": a's measure above b's
  verdict, reason = "inconclusive", "the seeds do not separate the two bands"
  if side == "worse" and wa - wb > RESOLUTION + 1e-9:
    verdict, reason = "reproduced", ""
    if bb["edge"]:
      verdict, reason = "inconclusive", f"{b}'s band reaches its grid's edge (a lower bound)"
  elif side == "better" and wb - wa > RESOLUTION + 1e-9:
    verdict, reason = "contradicted", ""
    if ba["edge"]:
      verdict, reason = "inconclusive", f"{a}'s band reaches its grid's edge (a lower bound)"
  elif side in ("worse", "better"):
    reason = "the mean curves' bands differ by no more than the grid's 0.25-decade resolution"
  ours = (f"band within {tolerance * 100:g} % of all: {a} {band_text(ba)} vs {b} {band_text(bb)} "
          f"decades; per-seed measure {a} − {b}: {claims.interval_text(iv, '+.2f')}")
  return claims.Claim(claim, published, ours, verdict, reason)


def not_worse_claim(runs, a: str, b: str, *, claim: str, published: str,
                    reasons=None) -> claims.Claim:
  """"``a`` ends no worse than ``b``" (labels at their best rates), paired over seeds:
  contradicted when the interval of a − b lies above 0, reproduced below, else inconclusive."""
  iv = claims.paired(runs, a, b)
  side = intervals.verdict(iv)
  verdict = {"worse": "contradicted", "better": "reproduced"}.get(side, "inconclusive")
  return claims.Claim(claim, published, f"{a} − {b}: {claims.interval_text(iv)}", verdict,
                      (reasons or {}).get(verdict, ""))


SHORT_RUN = ("200 steps of a 131k-parameter GPT on 100k tokens, against the paper's GPT-2 "
             "models on 1B+ tokens; too short for a rate's late instability to show")


def at_best(curves, method: str) -> str:
  return study.lr_label(method, curves[method]["band"]["best_lr"])


def claim_rows(runs, curves, grids, reference: float) -> list[claims.Claim]:
  """The paper's claims (arXiv 2510.09827: abstract and Fig. 1) on our grid."""
  have = set(curves)
  abstract = "qualitative (abstract; GPT-2 on FineWeb / SlimPajama)"
  fig1 = "qualitative (Fig. 1: GPT2-Large, SlimPajama, 1B tokens)"
  rows = []

  def wider(a, b, claim, published):
    if {a, b} <= have:
      rows.append(wider_claim(runs, curves, grids, a, b, claim=claim, published=published,
                              reference=reference))
      if rows[-1].verdict == "contradicted" and not rows[-1].reason:
        rows[-1] = dataclasses.replace(rows[-1], reason="likely: " + SHORT_RUN)

  wider("MuonMax", "MuonAdam", "MuonMax is significantly more robust to the lr than "
        "MuonAdam", abstract)
  if {"MuonMax", "MuonAdam"} <= have:
    rows.append(not_worse_claim(
        runs, at_best(curves, "MuonMax"), at_best(curves, "MuonAdam"),
        claim="MuonMax, tuned, works as well as MuonAdam, tuned", published=abstract,
        reasons={"contradicted": "MuonMax loses at its best rate; likely: " + SHORT_RUN}))
  wider("MuonAdam-Momo", "MuonAdam", "Momo truncation makes MuonAdam more robust to the lr",
        abstract)
  wider("MuonMax-Momo", "MuonMax", "Momo truncation makes MuonMax more robust to the lr",
        abstract)
  for base in ("MuonAdam", "MuonMax"):
    if {base, f"{base}-Momo"} <= have:
      rows.append(claims.lower_claim(
          runs, at_best(curves, f"{base}-Momo"), at_best(curves, base),
          claim=f"{base}-Momo often achieves a better validation loss than {base} (each tuned)",
          published=abstract,
          reasons={"inconclusive": "a tie at the best rates: truncation only changes the "
                   "steps that would overshoot", "contradicted": "likely: " + SHORT_RUN}))
  wider("MuonMax-Momo", "Scion (constrained)", "Scion requires precise tuning, "
        "MuonMax-Momo achieves low loss over a wide range of rates", fig1)
  scion = [m for m in curves if m.startswith("Scion (constrained")]
  if len(scion) > 1 and "Scion (constrained)" in scion:
    rows.append(claims.best_claim(
        runs, at_best(curves, "Scion (constrained)"),
        entries=[at_best(curves, m) for m in scion],
        claim="Scion's default norms (Spectral hidden, ColNorm embeddings, Sign head) beat the "
              "other constrained norm choices, each tuned",
        published="their choice for GPT (Pethick et al., arXiv 2502.07529)",
        reasons={"contradicted": "likely: the norms' radii were set for longer runs started "
                 "from scion_init; here 200 steps from the models' usual initialisation"}))
  return rows


def merged_runs(payloads) -> dict:
  """Every campaign's runs in one dict: the grid campaigns share the seeds (same order),
  so entries from different campaigns pair seed by seed."""
  seeds = {tuple(p["preset"]["seeds"]) for p in payloads}
  if len(seeds) != 1:
    raise ValueError(f"the grid campaigns ran different seeds: {sorted(seeds)}")
  return {"runs": {k: v for p in payloads for k, v in p["runs"].items()}}


# --- the study -----------------------------------------------------------------------


def band_extensions(curves, grids, reference: float, tolerance: float = 0.10) -> dict:
  """method → the rates one STEP past each end of its grid that its band within
  ``tolerance`` of ``reference`` reaches (an open band: its width is only a lower bound)."""
  extra = {}
  for method, curve in curves.items():
    b, grid = band(curve["points"], tolerance, reference), grids[method]
    rates = []
    if b["lo"] is not None and b["lo"] == grid[0]:
      rates.append(float(f"{grid[0] / STEP:.6g}"))
    if b["hi"] is not None and b["hi"] == grid[-1]:
      rates.append(float(f"{grid[-1] * STEP:.6g}"))
    if rates:
      extra[method] = rates
  return extra


def close_bands(root, base, entries, payloads, grids, rounds: int, log):
  """Campaigns ``grid/band-<k>``: a rate past every end that a band within 10 % of the best
  of all reaches, until every such band is closed or ``rounds`` are spent (a band left open
  is marked ``≥`` in the tables). Returns (payloads, curves, grids) over every campaign."""
  payloads, grids = list(payloads), {m: list(g) for m, g in grids.items()}

  def curves_now():
    return study.lr_curves({"rows": [r for p in payloads for r in p["rows"]]}, list(entries),
                           grids)
  for k in range(1, rounds + 1):
    curves = curves_now()
    extra = band_extensions(curves, grids, best_of_all(curves))
    if not extra:
      break
    payloads.append(study.run_campaign(
        root, os.path.join("grid", f"band-{k}"),
        study.lr_grid(base, {m: entries[m] for m in extra}, extra), log=log))
    for method, rates in extra.items():
      grids[method] = sorted(grids[method] + rates)
  return payloads, curves_now(), grids


def base_preset(p: Preset, seeds: int, data) -> ComparePreset:
  """What every grid run shares. shared_adam=None: every method's ONE learning rate
  drives every leaf (the paper's setting; MuonAdam/MuonMax/Momo and Scion have no separate
  AdamW, so a shared one would leave AdamW the only arm with a fixed-rate part)."""
  return ComparePreset(model=p.model, model_fields=p.model_fields, optimizers={},
                       steps=p.steps, batch_size=p.batch_size, seq_len=p.seq_len,
                       schedule="cosine", warmup_steps=p.warmup_steps, eval_every=0,
                       eval_batches=p.eval_batches, seeds=tuple(range(seeds)), data=data,
                       shared_adam=None, timing_repeats=0,
                       rate_source="a quarter-decade grid per method, extended past an edge "
                       "until the best is interior")


def plain_loss_sentence(runs, curves) -> str:
  """Where MuonMax loses to MuonAdam: the paired gap at each method's best rate, and the
  two bands against the best of all and against each one's own best."""
  if not {"MuonMax", "MuonAdam"} <= set(curves):
    return ""
  a, b = at_best(curves, "MuonMax"), at_best(curves, "MuonAdam")
  iv = claims.paired(runs, a, b)
  side = intervals.verdict(iv)
  word = {"worse": "loses to", "better": "beats", "tie": "ties with"}.get(side, "cannot be "
                                                                        "separated from")
  ref = best_of_all(curves)
  bands = {m: (band(curves[m]["points"], 0.10, ref), band(curves[m]["points"], 0.10))
           for m in ("MuonMax", "MuonAdam")}
  return (f"**MuonMax against MuonAdam, each at its best rate**: {a} {word} {b}: "
          f"loss difference {claims.interval_text(iv)} (paired over seeds, 95 % interval). "
          "Within 10 % of the best of all methods MuonMax's band is "
          f"{band_text(bands['MuonMax'][0])}, MuonAdam's {band_text(bands['MuonAdam'][0])}; "
          "within 10 % of each one's own best: MuonMax "
          f"{band_text(bands['MuonMax'][1])}, MuonAdam {band_text(bands['MuonAdam'][1])} "
          "decades. A band around a method's own best says how flat its curve is, not whether "
          "any of it is competitive: a flat curve around a poor optimum is not robustness.")


def run(args, log) -> dict:
  p = PRESETS[args.preset]
  seeds = args.seeds or p.seeds
  root = args.out
  entries = {m: METHODS[m] for m in p.grids}
  base = base_preset(p, seeds, args.data)
  payloads, curves, grids = study.interior_lr_grid(
      root, "grid", base, entries, p.grids, factor=STEP, max_rounds=p.max_rounds, log=log)
  extended = len(payloads) - 1
  payloads, curves, grids = close_bands(root, base, entries, payloads, grids, p.band_rounds,
                                        log)
  runs = merged_runs(payloads)
  reference = best_of_all(curves)
  edges = [m for m, c in curves.items() if c["band"]["best_lr"] in (grids[m][0], grids[m][-1])]
  rows = band_rows(curves, reference)
  claim_list = claim_rows(runs, curves, grids, reference)
  study.plot_lr_curves(curves, os.path.join(root, "lr.png"),
                       title=f"{p.model}, {p.steps} steps, {seeds} seeds")
  sections = [
      "## Final validation loss against learning rate", "",
      f"*{payloads[0]['header']}*", "",
      "Each cell: mean ± sample std over seeds of the final validation loss; a rate where a "
      "seed diverged is marked and kept out of every band. The grid is quarter-decade "
      f"(×{STEP:.3f}) per method, extended one rate past an edge while the best sat on it "
      f"({extended} extension campaigns), then one rate past every end that a band within "
      f"10 % of the best of all reached ({len(payloads) - 1 - extended} campaigns "
      "`grid/band-*`). Best rates left on a grid edge: "
      f"{', '.join(edges) if edges else 'none'}. Plot: `lr.png`; every run: "
      "`grid/results.json`, `grid/extend-*/` and `grid/band-*/results.json`. The table's "
      "last columns are the harness's band within 2 % of the method's own best.", "",
      study.lr_table(curves, references=payloads[0].get("references")), "",
      "## Robustness: bands of learning rates", "",
      "Width in decades of the band of rates whose mean loss is within 5 % / 10 % of the best "
      "loss of ALL methods (a uniformly poor method has an empty band, which is not 0: no "
      "rate is competitive), and within 5 % / 10 % of the method's own best. On a "
      "quarter-decade grid a width is known to 0.25 decade (a band of one rate: 0.00). "
      "`≥`: the band reaches the grid's end, so its width is a lower bound.", "",
      band_table(rows, reference), "",
      plain_loss_sentence(runs, curves), "",
      "## Against the published claims", "",
      "Band claims: per seed, 0.25 decade × the number of grid rates within 10 % of the best "
      "loss of all methods (empty = 0); the paired 95 % interval of the difference over seeds "
      "must exclude 0 and the mean curves' bands must differ by more than one grid step. "
      "Loss claims: paired intervals at each method's best rate (all grid campaigns share "
      "the seeds).", "",
      claims.claim_table(claim_list), "",
      f"Runtime: the wall times below were measured while other studies shared the machine's "
      f"CPUs; on an idle 2-core machine a run of this preset takes ≈ 4.5 s, i.e. "
      f"≈ {sum(study.campaign_runs(pl) for pl in payloads) * 4.5 / 60:.0f} min for these "
      "runs.", "",
  ]
  summary = dict(preset=args.preset, seeds=seeds, grids=grids, curves=curves,
                 reference=reference, bands=rows, edges=edges,
                 claims=[dataclasses.asdict(c) for c in claim_list])
  study.write_report(root, "Study 4: learning-rate sensitivity of Muon designs", sections,
                     summary, intro=INTRO, campaigns=payloads)
  return summary


INTRO = """Question: how wide is the range of learning rates over which each Muon design trains well?
Crawshaw, Modi, Liu and Gower (arXiv 2510.09827, https://github.com/modichirag/GPT-opt) report that
MuonAdam (Muon as used in modded-nanogpt) is sensitive to the learning rate, that MuonMax is much more
robust, and that Momo truncation makes both more robust still (their Fig. 1: MuonAdam and Scion need
precise tuning, the Momo variants do not). Every method has ONE learning rate for the whole network:
MuonAdam/MuonMax/Momo share it between the Muon and Adam branches (Muon branch ×10, as GPT-opt), Scion
takes one LMO step per leaf, and AdamW (b2 0.95) uses it on every leaf: no arm trains its non-matrix
leaves with a separate shared AdamW here, because the methods under study have none (the deviation
from the harness's default symmetric arms is deliberate: the learning rate of the whole method is the
object of the study). Scion starts from the models' usual initialisation, not `scion_init`. All nine
methods of the previous run are kept."""


if __name__ == "__main__":
  raise SystemExit(study.main(run, __doc__.splitlines()[0], list(PRESETS),
                              os.path.join("experiments", "results", "lr_sensitivity")))
