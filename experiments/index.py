"""Writes experiments/README.md: every study's command, runtime and headline table.

The numbers are read from the committed results (``results/<study>/study.json``
and ``report.md``, written by the study scripts); nothing is typed in by hand.

Usage: python experiments/index.py
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# (folder, script, title, headline sections of report.md by heading prefix)
STUDIES = [
    ("looped", "study_looped.py", "1. Muon variants × looped transformers",
     ("Published table next to ours", "Controls: is there a plateau")),
    ("moe", "study_moe.py", "2. Muon on a small MoE with latent attention",
     ("(a) Hybrid", "Against the published claims")),
    ("ngpt", "study_ngpt.py", "3. Muon on nGPT",
     ("2. Muon vs Adam", "Against the published plan")),
    ("lr_sensitivity", "study_lr_sensitivity.py", "4. Learning-rate sensitivity of Muon designs",
     ("Robustness", "Against the published claims")),
]

INTRO = """# Studies

Each study is a thin script over `muonjax.study` / `muonjax.compare` / `muonjax.claims` (every run is
`muonjax.train.train`). `--preset cpu` (the default) is what is committed here and is sized for a 2-core
CPU; `--preset smoke` runs every campaign in seconds to minutes (`tests/apps/test_study_<name>.py` run it);
`--preset paper` scales to the published model sizes for a GPU (pass `--data` with real token shards).
Results land in `experiments/results/<study>/`: one folder per campaign (`results.json` with every run,
`table.md`, `curves.png`; a learning-rate search's `tune.json`/`tune.md`; the per-step JSONL logs are
written there too but not committed, for size), the study's `report.md` (every table, the claim table,
the runtime per campaign) and `study.json` (the summary). A rerun reads finished campaigns back, so an
interrupted study resumes; delete a campaign folder to redo it. This page is written by
`python experiments/index.py` from those files.

How the comparisons are made fair: every arm's learning rate comes from `muonjax tune`'s search with the
same budget of one-seed runs per arm, on seed 100, which no comparison evaluates on; a rate left on an
edge of its search is marked, and a claim resting on one gets no verdict. The non-matrix leaves
(embeddings, head, norms) train with the same AdamW in every arm unless the study is about them (study 3
tunes that branch jointly; study 4's methods have one rate for the whole network by design). Every
comparison runs 3 or more seeds and reports paired 95 % intervals against its baseline; a gap inside its
interval is a tie. Every table prints the unigram/bigram losses of its 16,384 evaluation tokens. Each
published claim gets a verdict (reproduced / contradicted / inconclusive) from such an interval, with the
likely reason where ours differs.

Runtimes are the scripts' own wall-clock measurements on this project's 2-core CPU machine. The four
studies ran at the same time (load average ≈ 10 on 2 cores), so their measured times are several times
what an idle machine needs; each report says so and estimates the idle time from its run count.
"""


def _sections(report: str, prefixes) -> list[str]:
  parts = report.split("\n## ")
  out = []
  for prefix in prefixes:
    for part in parts[1:]:
      if part.startswith(prefix):
        out.append("### " + part.strip())
        break
  return out


def _claim_tally(report: str) -> str:
  """The "N reproduced, M contradicted, K inconclusive of T claims." lines of a report, summed."""
  import re

  totals = [0, 0, 0, 0]
  for m in re.finditer(r"(\d+) reproduced, (\d+) contradicted, (\d+) inconclusive of (\d+) "
                       r"claims\.", report):
    totals = [t + int(x) for t, x in zip(totals, m.groups())]
  if not totals[3]:
    return ""
  return (f"{totals[0]} reproduced, {totals[1]} contradicted, {totals[2]} inconclusive of "
          f"{totals[3]}.")


def main() -> str:
  lines = [INTRO]
  for folder, script, title, prefixes in STUDIES:
    root = os.path.join(HERE, "results", folder)
    lines += [f"## {title}", "", f"`python experiments/{script}` → `experiments/results/{folder}/` "
              f"([report](results/{folder}/report.md))", ""]
    summary_path = os.path.join(root, "study.json")
    if not os.path.exists(summary_path):
      lines += ["Not run yet.", ""]
      continue
    with open(summary_path) as f:
      summary = json.load(f)
    with open(os.path.join(root, "report.md")) as f:
      report = f.read()
    wall = summary.get("wall_time_s")
    runtime = "not recorded" if wall is None else f"{wall / 60:.1f} min"
    tally = _claim_tally(report)
    lines += [f"Preset `{summary.get('preset')}`, {summary.get('seeds')} seeds per cell; "
              f"{summary.get('runs')} training runs, measured wall time {runtime} (shared "
              f"machine, see above)." + (f" Claims: {tally}" if tally else ""), ""]
    for section in _sections(report, prefixes):
      lines += [section.replace("\n### ", "\n#### "), ""]
  text = "\n".join(lines).rstrip() + "\n"
  with open(os.path.join(HERE, "README.md"), "w") as f:
    f.write(text)
  return text


if __name__ == "__main__":
  main()
