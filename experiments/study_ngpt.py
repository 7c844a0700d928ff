"""Study 3: Muon on nGPT (normalized transformer, weights on the unit hypersphere).

The campaigns of the "Muon Optimizer Optimization for nGPT" plan (seeds/002 in
the spec folder), on the fair-comparison harness (equal tuning budgets, paired
intervals over seeds, a claim table):

1. ``joint``: a 2-D search. nGPT's eigen-learning-rates, scales and embeddings
   train in Muon's AdamW branch, whose rate alone moved Muon by 0.59 nats in
   the first version of this study, so Muon's lr is tuned (``muonjax tune``,
   equal budget) at each of several branch rates, and Adam (β₂ 0.95) the same
   way: its matrix lr at each rate of its non-matrix leaves. Same runs per
   family; the branch grid grows past an edge while the best sits on it.
2. ``sphere``: at the tuned pairs, Muon vs Adam, geodesic updates (θ = lr and
   θ = lr·‖U‖, each with its own tuned rate), lazy projection every k steps
   for both, and Muon at modded-nanogpt's 0.023; several seeds, paired.
3. ``features``: Polar Express, NorMuon, cautious weight decay and the pair
   Polar Express + NorMuon, each with its own tuned rate.

Usage::

    python experiments/study_ngpt.py                  # CPU preset (2 cores)
    python experiments/study_ngpt.py --preset smoke   # seconds: the test's preset
    python experiments/study_ngpt.py --preset paper --data /path/to/fineweb_bin  # GPU, gated 155M
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax import claims, intervals, study, tune  # noqa: E402
from muonjax.compare import DEFAULT_OPTIMIZERS, ComparePreset  # noqa: E402

# The plan's numbers (seeds/002): gated nGPT 155M, FineWeb, 400 steps × 32 sequences.
PLAN_ADAM_LOSS = 6.775       # Adam, lr 5e-4, lazy projection every 7 steps
MODDED_MUON_LR = 0.023       # modded-nanogpt's Muon lr ("a standard GPT's")
PLAN_GEODESIC_GAIN = (1, 3)  # % lower loss than projection, expected
PLAN_ADAM_BEST_K = 7         # Adam's best lazy-projection period

PUBLISHED = f"""Published plan (gated nGPT 155M, FineWeb, 400 steps × batch 32): the Adam baseline
(lr 5e-4, lazy projection every {PLAN_ADAM_BEST_K} steps) reaches validation loss {PLAN_ADAM_LOSS}; its
hypotheses are that Muon beats it, that Muon's best lr is higher than a standard GPT's (modded-nanogpt:
{MODDED_MUON_LR}), that geodesic updates gain {PLAN_GEODESIC_GAIN[0]}–{PLAN_GEODESIC_GAIN[1]} % over
projection, that NorMuon + Polar Express is the best combination, and that Muon tolerates less frequent
projection than Adam (whose best period was {PLAN_ADAM_BEST_K}). The plan reports no Muon result: every
row below tests a hypothesis, not a published measurement."""

GEODESIC_SCOPE = """Both geodesic arms move only the blocks' matrices (trained by Muon) along great
circles: the model field `sphere_scope="blocks"` projects the embedding and head (trained by the AdamW
branch) as the projection baseline does, and every leaf without a sphere axis (eigen learning rates,
scalings, gates) takes its own AdamW update. θ = lr turns each vector by the scheduled Muon rate η; θ =
lr·‖U‖ by the length of its own step. The first run of this study found the geodesic stage scaling
the unconstrained leaves' update by η under θ = lr and turning the AdamW-branch embedding and head by
Muon's η; both are fixed in the library (`hypersphere(angle=…)`, `NGPTConfig.sphere_scope`) and these
arms were rerun after the fix."""


@dataclasses.dataclass(frozen=True)
class Preset:
  model_fields: dict
  steps: int
  batch_size: int
  seq_len: int
  seeds: int
  eval_every: int
  eval_batches: int
  budget: int = 6                           # tune runs per entry (every entry, every family)
  branch_rates: tuple = (3e-3, 1e-2, 3e-2)  # Muon's AdamW branch / Adam's non-matrix lr
  branch_rounds: int = 2                    # extensions of the branch grid past an edge
  muon_start: float = 0.1                   # centres of the first lr grids
  adam_start: float = 0.01
  theta_start: float = 0.01                 # geodesic θ = lr: θ is the rate itself
  lazy_every: tuple = (1, 7, 20)
  features: tuple = ("Polar Express", "NorMuon", "cautious WD", "Polar Express + NorMuon")
  cautious_weight_decay: float = 0.1
  warmup_steps: int = 10
  timing_repeats: int = 20


PRESETS = {
    # Evaluation on 32 × 8 × 64 = 16,384 held-out tokens every 50 steps.
    "cpu": Preset(model_fields=dict(d_model=64, n_layers=2, n_heads=4, d_ff=256, gated=True),
                  steps=200, batch_size=8, seq_len=64, seeds=5, eval_every=50, eval_batches=32),
    "smoke": Preset(model_fields=dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, gated=True),
                    steps=3, batch_size=2, seq_len=8, seeds=2, eval_every=3, eval_batches=1,
                    budget=3, branch_rates=(3e-3, 1e-2), branch_rounds=0, lazy_every=(1, 7),
                    features=("Polar Express + NorMuon",), warmup_steps=0, timing_repeats=0),
    # GPU: the plan's gated nGPT (11 layers, 768 wide) at 400 steps × 32 sequences.
    "paper": Preset(model_fields=dict(vocab_size=50257, d_model=768, n_layers=11, n_heads=6,
                                      d_ff=2048, gated=True),
                    steps=400, batch_size=32, seq_len=1024, seeds=3, eval_every=50,
                    eval_batches=20, branch_rates=(3e-4, 1e-3, 3e-3), muon_start=0.023,
                    adam_start=5e-4, theta_start=3e-3, lazy_every=(1, 7, 20)),
}

FAMILIES = ("Muon", "Adam")
MUON_K1 = "Muon, project every 1"
ADAM_K1 = "Adam, project every 1"
GEO_LR = "Muon, geodesic θ = lr"
GEO_NORM = "Muon, geodesic θ = lr·‖U‖"
MUON_MODDED = f"Muon @ {MODDED_MUON_LR:g}"
PAIR = "Polar Express + NorMuon"


def family_entry(family: str, branch_rate: float, start: float) -> dict:
  """A family's entry at one branch rate: Muon (NS5) or AdamW (no weight decay: nGPT)."""
  entry = dict(optimizer="muon") if family == "Muon" else dict(optimizer="adamw", weight_decay=0.0)
  return dict(entry, adam_learning_rate=branch_rate, learning_rate=start)


def branch_label(family: str, rate: float) -> str:
  return f"{family}, {'AdamW branch' if family == 'Muon' else 'non-matrix'} lr {rate:g}"


def best_branch(results: dict, family: str, rates) -> tuple:
  """``(rate, label, edge)``: the branch rate whose tuned loss is lowest (seed 100, not an
  evaluation seed), and ``"low"``/``"high"`` when it is the end of the family's grid."""
  rates = sorted(rates)
  loss = lambda r: results[branch_label(family, r)]["best_loss"]
  finished = [r for r in rates if loss(r) is not None and math.isfinite(loss(r))]
  if not finished:
    raise ValueError(f"every {family} run of the joint search diverged")
  best = min(finished, key=loss)
  edge = None if len(rates) < 2 else "low" if best == rates[0] else "high" if best == rates[-1] \
      else None
  return best, branch_label(family, best), edge


def joint_search(root, base, p, log):
  """Muon's lr tuned at every AdamW-branch rate, Adam's at every non-matrix rate (equal
  budget per pair); a family whose best pair sits on the branch grid's edge gets one more
  branch rate (half a decade out) per round. Returns ``(searches, results, grids)``."""
  grids = {f: sorted(p.branch_rates) for f in FAMILIES}
  start = {"Muon": p.muon_start, "Adam": p.adam_start}

  def search(name, rates):
    entries = {branch_label(f, r): family_entry(f, r, start[f]) for f in rates for r in rates[f]}
    preset = dataclasses.replace(base, optimizers=entries, baseline=next(iter(entries)),
                                 timing_repeats=0)
    return study.tune_campaign(root, name, preset, budget=p.budget, log=log)

  searches = [search("joint/tune", grids)]
  for k in range(1, p.branch_rounds + 1):
    results = {n: r for s in searches for n, r in s["results"].items()}
    extra = {}
    for f in FAMILIES:
      _, _, edge = best_branch(results, f, grids[f])
      if edge:
        g = grids[f]
        extra[f] = [float(f"{g[0] / 10 ** 0.5:.3g}") if edge == "low"
                    else float(f"{g[-1] * 10 ** 0.5:.3g}")]
    if not extra:
      break
    searches.append(search(f"joint/tune-extend-{k}", extra))
    for f, rates in extra.items():
      grids[f] = sorted(grids[f] + rates)
  results = {n: r for s in searches for n, r in s["results"].items()}
  return searches, results, grids


def joint_table(results: dict, grids: dict) -> str:
  """Markdown: per family and branch rate, the tuned lr (edge-marked) and its loss."""
  rates = sorted({r for g in grids.values() for r in g})
  lines = ["| family | " + " | ".join(f"branch {r:g}" for r in rates) + " | best pair |",
           "|---|" + "---|" * (len(rates) + 1)]
  for f in FAMILIES:
    cells = []
    for r in rates:
      res = results.get(branch_label(f, r)) if r in grids[f] else None
      cells.append("" if res is None else
                   f"{tune.lr_cell(res)}: " + ("—" if res["best_loss"] is None
                                               else f"{res['best_loss']:.4f}"))
    rate, label, edge = best_branch(results, f, grids[f])
    cells.append(f"lr {tune.lr_cell(results[label])}, branch {rate:g}"
                 + (f" (branch grid edge: {edge})" if edge else ""))
    lines.append(f"| {f} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_joint(results: dict, grids: dict, path: str) -> str:
  """Tune loss against lr, one line per (family, branch rate)."""
  curves = {branch_label(f, r): {"points": [[lr, loss, 0.0] for lr, loss in
                                            results[branch_label(f, r)]["points"]]}
            for f in FAMILIES for r in grids[f]}
  return study.plot_lr_curves(curves, path, title="nGPT: lr × branch lr (seed 100)")


def extension_text(searches) -> str:
  """Which branch rates the extension rounds added, and for which family (or nothing)."""
  added = [f"{n} (`{s['campaign']}`, {r['runs']} runs)" for s in searches[1:]
           for n, r in s["results"].items()]
  return f": {', '.join(added)}, the difference in runs" if added else ""


def run_budget(searches) -> dict:
  """family → runs its joint search used."""
  return {f: sum(r["runs"] for s in searches for n, r in s["results"].items()
                 if n.startswith(f + ",")) for f in FAMILIES}


def sphere_campaign(root, base, p, best, results, log):
  """Muon vs Adam, geodesic arms (own tuned rates), lazy projection, Muon at 0.023."""
  muon_pair = dict(results[best["Muon"]["label"]], entry=best["Muon"]["entry"])
  adam_pair = dict(results[best["Adam"]["label"]], entry=best["Adam"]["entry"])
  muon = muon_pair["entry"]
  geodesic = {GEO_LR: dict(muon, learning_rate=p.theta_start,
                           model_fields=dict(sphere_update="geodesic", sphere_theta="lr",
                                             sphere_scope="blocks")),
              GEO_NORM: dict(muon, model_fields=dict(sphere_update="geodesic",
                                                     sphere_theta="norm", sphere_scope="blocks"))}
  geo_search = study.tune_campaign(root, "sphere/tune", dataclasses.replace(
      base, optimizers=geodesic, baseline=GEO_LR, timing_repeats=0), budget=p.budget, log=log)
  entries, rates = {}, dict(geo_search["results"])
  for family, pair in (("Muon", muon_pair), ("Adam", adam_pair)):
    for k in p.lazy_every:
      name = f"{family}, project every {k}"
      entries[name] = dict(pair["entry"], model_fields=dict(sphere_every=k))
      rates[name] = pair
    if family == "Muon":
      entries.update(geodesic)
  preset = tune.tuned_preset(dataclasses.replace(base, optimizers=entries, baseline=ADAM_K1),
                             {"results": rates},
                             f"joint/ (Muon and Adam arms, budget {p.budget} per pair) and "
                             f"sphere/tune/ (geodesic arms, budget {p.budget} each), seed "
                             f"{study.TUNE_SEED}; {MUON_MODDED} set by hand")
  preset = dataclasses.replace(preset, optimizers=dict(
      preset.optimizers, **{MUON_MODDED: dict(muon, learning_rate=MODDED_MUON_LR)}))
  return geo_search, study.run_campaign(root, "sphere", preset, log=log)


def feature_entries(muon: dict, p) -> dict:
  """modded-nanogpt's refinements on the tuned Muon pair (projection every step)."""
  cwd = dict(weight_decay=p.cautious_weight_decay, weight_decay_mode="cautious")
  pe = dict(method="polar_express")
  every = {"Polar Express": dict(muon, **pe), "NorMuon": dict(muon, optimizer="normuon"),
           "cautious WD": dict(muon, **cwd), PAIR: dict(muon, optimizer="normuon", **pe)}
  return {k: every[k] for k in p.features}


def features_campaign(root, base, p, best, results, log):
  """Each feature tuned with the same budget, then all at the tuned rates with Muon (NS5)."""
  muon = best["Muon"]["entry"]
  entries = feature_entries(muon, p)
  search = study.tune_campaign(root, "features/tune", dataclasses.replace(
      base, optimizers=entries, baseline=next(iter(entries)), timing_repeats=0),
      budget=p.budget, log=log)
  rates = dict(search["results"], **{"Muon (NS5)": results[best["Muon"]["label"]]})
  preset = tune.tuned_preset(dataclasses.replace(
      base, optimizers={"Muon (NS5)": muon, **entries}, baseline="Muon (NS5)"),
      {"results": rates}, f"features/tune/ (budget {p.budget} each) and joint/ (Muon), seed "
                          f"{study.TUNE_SEED}")
  return search, dict(study.run_campaign(root, "features", preset, log=log), campaign="features")


# --- claims -------------------------------------------------------------------------


def guard(claim: claims.Claim, edges) -> claims.Claim:
  """``claim`` made inconclusive when a rate it rests on sat on a grid edge."""
  if not edges:
    return claim
  return dataclasses.replace(
      claim, verdict="inconclusive",
      reason=f"not claimed: {'; '.join(edges)} on a grid edge (the interval alone: "
             f"{claim.verdict}). " + claim.reason)


def percent(interval: dict, reference: float) -> str:
  """A paired interval in % of ``reference``."""
  if interval.get("lo") is None or not reference:
    return "—"
  f = lambda x: f"{100 * x / reference:+.2f}"
  return f"{f(interval['mean'])} % [{f(interval['lo'])}, {f(interval['hi'])}]"


def mean_loss(payload: dict, entry: str) -> float:
  values = [v for v in claims.losses(payload, entry) if v is not None]
  return sum(values) / len(values) if values else float("nan")


def tolerance_interval(payload: dict, k: int) -> dict:
  """Paired interval of [L_Muon(k) − L_Muon(1)] − [L_Adam(k) − L_Adam(1)] (L(k): every k)
  over seeds: below 0 when lazy projection costs Muon less than Adam."""
  cost = lambda f: [None if a is None or b is None else a - b for a, b in zip(
      claims.losses(payload, f"{f}, project every {k}"),
      claims.losses(payload, f"{f}, project every 1"))]
  return intervals.paired_interval(cost("Muon"), cost("Adam"))


def lazy_table(sphere: dict, lazy_every) -> str:
  """Markdown: each family's lazy-projection arms against its own every-1 arm (paired)."""
  lines = ["| family | every k | final val loss (mean) | Δ vs every 1 [95 % CI] | verdict |",
           "|---|---|---|---|---|"]
  for f in FAMILIES:
    for k in lazy_every:
      arm = f"{f}, project every {k}"
      if k == 1:
        lines.append(f"| {f} | 1 | {mean_loss(sphere, arm):.4f} | baseline | — |")
        continue
      iv = claims.paired(sphere, arm, f"{f}, project every 1")
      lines.append(f"| {f} | {k} | {mean_loss(sphere, arm):.4f} | {claims.interval_text(iv)} "
                   f"| {intervals.verdict(iv)} |")
  return "\n".join(lines)


def p_runs(budget: dict) -> str:
  """The joint search's runs per family, and which family had more."""
  text = ", ".join(f"{f} {n} runs" for f, n in budget.items())
  if budget["Adam"] > budget["Muon"]:
    text += "; Adam's search was the larger one"
  elif budget["Muon"] > budget["Adam"]:
    text += "; Muon's search was the larger one"
  return text


def lr_claim(sphere: dict, tuned_lr: float, edge) -> claims.Claim:
  """Muon's best lr > 0.023: the tuned rate's loss against 0.023's, paired over seeds."""
  iv = claims.paired(sphere, MUON_K1, MUON_MODDED)
  better = claims.direction_verdict(iv, "negative")  # tuned rate below 0.023's loss
  if tuned_lr == MODDED_MUON_LR or better != "reproduced":
    verdict = "inconclusive"
  else:
    verdict = "reproduced" if tuned_lr > MODDED_MUON_LR else "contradicted"
  claim = claims.Claim(
      "Muon's best lr on nGPT is higher than a standard GPT's",
      f"modded-nanogpt {MODDED_MUON_LR}; muonjax's tuned GPT d64: "
      f"{DEFAULT_OPTIMIZERS['muon']['learning_rate']:g}",
      f"tuned {tuned_lr:g}; L(tuned) − L({MODDED_MUON_LR:g}): {claims.interval_text(iv)}",
      verdict, "the verdict needs the tuned rate to beat 0.023 beyond the interval"
      + ("; the tuned rate sits on the high grid edge (the optimum may be higher still)"
         if edge == "high" else ""))
  return guard(claim, [f"Muon lr {tuned_lr:g}"] if edge == "low" and tuned_lr > MODDED_MUON_LR
               else [])


def geodesic_claims(sphere: dict) -> list:
  """Each geodesic arm (its own tuned rate, the blocks' matrices only) against projection."""
  reference, edges = mean_loss(sphere, MUON_K1), sphere["preset"]["lr_edges"]
  rows = []
  for arm in (GEO_NORM, GEO_LR):
    iv = claims.paired(sphere, arm, MUON_K1)
    c = claims.lower_claim(
        sphere, arm, MUON_K1, claim=f"geodesic updates beat projection ({arm.split(', ')[1]})",
        published=f"{PLAN_GEODESIC_GAIN[0]}–{PLAN_GEODESIC_GAIN[1]} % lower loss (expected)")
    c = dataclasses.replace(c, ours=c.ours + f"; {percent(iv, reference)} of projection's loss",
                            reason="own tuned rate; geodesic moves on the blocks' matrices only, "
                                   "the embedding and head projected (see the note)")
    rows.append(guard(c, [f"{arm} rate"] if edges.get(arm) else []))
  return rows


def claim_rows(sphere, features, best, results, lazy_every, budget) -> list:
  """One row per hypothesis of the plan (``budget``: family → runs of its joint search)."""
  m, a = results[best["Muon"]["label"]], results[best["Adam"]["label"]]
  edges = ([f"{f} lr" for f, r in (("Muon", m), ("Adam", a)) if r.get("edge")]
           + [f"{f} branch lr" for f in FAMILIES if best[f]["edge"]])
  rows = [guard(claims.lower_claim(
      sphere, MUON_K1, ADAM_K1, claim="Muon beats Adam on (gated) nGPT",
      published=f"Adam {PLAN_ADAM_LOSS} (target for Muon; no Muon number)",
      reasons={v: f"both tuned jointly with their branch rate ({p_runs(budget)})"
               + ("" if v != "inconclusive" else "; the seeds do not separate them")
               for v in claims.VERDICTS}), edges),
      lr_claim(sphere, m["best_lr"], m.get("edge"))]
  rows += geodesic_claims(sphere)
  if PAIR in features["runs"]:
    tuned_edges = [n for n, e in features["preset"]["lr_edges"].items() if e]
    rows.append(guard(claims.best_claim(
        features, PAIR, claim="NorMuon + Polar Express is the best combination",
        published="expected (no number)",
        reasons={"inconclusive": "every arm at its own tuned rate; the seeds do not separate "
                                 "the pair from the closest rival"}), tuned_edges))
  adam_arms = [f"Adam, project every {k}" for k in lazy_every]
  best_k = f"Adam, project every {PLAN_ADAM_BEST_K}"
  if best_k in adam_arms:
    rows.append(claims.best_claim(
        sphere, best_k, entries=adam_arms, claim=f"Adam's best projection period is "
        f"{PLAN_ADAM_BEST_K} (of {', '.join(map(str, lazy_every))})",
        published=f"every {PLAN_ADAM_BEST_K} (measured in the plan's earlier study)",
        reasons={"inconclusive": "Adam's rate tuned at every 1 and kept for every k"}))
  k = max(lazy_every)
  if k > 1:
    iv = tolerance_interval(sphere, k)
    rows.append(claims.Claim(
        "Muon tolerates less frequent projection than Adam",
        "hypothesis (no number)",
        f"[L(every {k}) − L(every 1)]_Muon − [same]_Adam: {claims.interval_text(iv)}",
        claims.direction_verdict(iv, "negative"),
        "difference of the two paired costs of lazy projection, both at rates tuned at "
        "every 1"))
  return rows


def edge_list(searches, best) -> list:
  """Every tuned rate left on a grid edge, and every family whose best branch rate is."""
  return ([f"{n} (lr {r['best_lr']:g}, {r['edge']}, `{s['campaign']}`)" for s in searches
           for n, r in s["results"].items() if r.get("edge") and r.get("best_lr") is not None]
          + [f"{f}'s branch rate {b['rate']:g} ({b['edge']} end of its branch grid)"
             for f, b in best.items() if b["edge"]])


# --- the study --------------------------------------------------------------------


def run(args, log) -> dict:
  p = PRESETS[args.preset]
  seeds = args.seeds or p.seeds
  root = args.out
  base = ComparePreset(model="ngpt", model_fields=dict(p.model_fields), optimizers={},
                       steps=p.steps, batch_size=p.batch_size, seq_len=p.seq_len,
                       schedule="cosine", warmup_steps=min(p.warmup_steps, p.steps - 1),
                       eval_every=p.eval_every, eval_batches=p.eval_batches,
                       seeds=tuple(range(seeds)), data=args.data,
                       timing_repeats=p.timing_repeats)

  searches, results, grids = joint_search(root, base, p, log)
  best = {}
  for f in FAMILIES:
    rate, label, edge = best_branch(results, f, grids[f])
    start = p.muon_start if f == "Muon" else p.adam_start
    best[f] = dict(rate=rate, label=label, edge=edge, lr=results[label]["best_lr"],
                   entry=dict(family_entry(f, rate, start),
                              learning_rate=results[label]["best_lr"]))
  plot_joint(results, grids, os.path.join(root, "joint", "lr.png"))
  geo_search, sphere = sphere_campaign(root, base, p, best, results, log)
  feat_search, features = features_campaign(root, base, p, best, results, log)
  budget = run_budget(searches)
  rows = claim_rows(sphere, features, best, results, p.lazy_every, budget)

  sections = [
      "## 1. Learning-rate sweep (joint: Muon's lr × its AdamW-branch lr, Adam's lr × its "
      "non-matrix lr)", "",
      f"Each cell: the tuned lr (`muonjax tune`, at most {p.budget} runs, seed "
      f"{study.TUNE_SEED}) at one rate of the AdamW branch (Muon: embeddings, head, eigen-rates, scales, gates) or, for "
      "Adam (β₂ 0.95, no weight decay), of the same non-matrix leaves; loss at the tuned lr. "
      f"Runs: Muon {budget['Muon']}, Adam {budget['Adam']} (each search stops once its best "
      f"rate is interior and refined, so a pair may use fewer than {p.budget}; the branch grid "
      f"grows past an edge for a family whose best pair sits there{extension_text(searches)}). "
      "The best pair of each family (lowest tune "
      "loss, on the held-out tuning seed) is used from here on. Plot: `joint/lr.png`.", "",
      joint_table(results, grids), "",
      *[study.search_markdown(s, f"1.{i + 1} Search `{s['campaign']}`")
        for i, s in enumerate(searches)],
      study.search_markdown(geo_search, "2a. Geodesic θ search (θ = lr: θ is the rate)"),
      study.campaign_markdown(
          sphere, "2. Muon vs Adam, geodesic updates and lazy projection (tuned pairs)",
          note=f"Muon at lr {best['Muon']['lr']:g} with its AdamW branch at "
               f"{best['Muon']['rate']:g}; Adam at {best['Adam']['lr']:g} with its non-matrix "
               f"leaves at {best['Adam']['rate']:g}; lazy arms keep the rate tuned at every 1. "
               + GEODESIC_SCOPE),
      "### 2b. Lazy projection: each family against its own projection every step", "",
      "Paired over the evaluation seeds; the rate stays the one tuned at every 1.", "",
      lazy_table(sphere, p.lazy_every), "",
      study.search_markdown(feat_search, "3a. Feature searches"),
      study.campaign_markdown(
          features, "3. modded-nanogpt features (each at its own tuned rate)",
          note=f"On the tuned Muon pair, projection every step. Cautious WD: λ = "
               f"{p.cautious_weight_decay:g}, decay only where sign(update) = sign(W); Polar "
               "Express: its 5-step table."),
      "## Against the published plan", "", PUBLISHED, "", claims.claim_table(rows), "",
      "Rates left on a grid edge: " + (", ".join(edge_list(
          [*searches, geo_search, feat_search], best)) or "none") + ".", "",
  ]
  summary = dict(preset=args.preset, seeds=seeds, budget_per_entry=p.budget, joint_runs=budget,
                 branch_grids=grids, best_pairs={f: {k: v for k, v in b.items() if k != "entry"}
                                                 for f, b in best.items()},
                 claims=[dataclasses.asdict(r) for r in rows],
                 tables={"sphere": sphere["rows"], "features": features["rows"]})
  study.write_report(root, "Study 3: Muon on nGPT", sections, summary, intro=INTRO,
                     campaigns=[*searches, geo_search, sphere, feat_search, features])
  return summary


INTRO = """Question: does Muon suit nGPT (arXiv 2410.01131; here its gated variant), whose weight
vectors live on the unit hypersphere, and which Muon refinements help there? After every optimizer step
the constrained vectors are projected back to the sphere (or moved along a great circle, or projected
lazily). nGPT's eigen-learning-rates, scales and embeddings train in Muon's AdamW branch, so the branch
rate is tuned jointly with Muon's (and Adam's non-matrix rate with its own): the arms set
`adam_learning_rate` on purpose (the headers list them as asymmetric). Comparisons: paired 95 % intervals
over the evaluation seeds; tuning on a separate seed."""


if __name__ == "__main__":
  raise SystemExit(study.main(run, __doc__.splitlines()[0], list(PRESETS),
                              os.path.join("experiments", "results", "ngpt")))
