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
     ("Published table next to ours", "LoopFormer, long setting")),
    ("moe", "study_moe.py", "2. Muon on a small MoE with latent attention",
     ("(a) Hybrid", "Against the published claims")),
    ("ngpt", "study_ngpt.py", "3. Muon on nGPT",
     ("1. Learning-rate sweep", "Against the published plan")),
    ("lr_sensitivity", "study_lr_sensitivity.py", "4. Learning-rate sensitivity of Muon designs",
     ("Final validation loss against learning rate", "Against the published claims")),
]

INTRO = """# Studies

Each study is a thin script over `muonjax.study` / `muonjax.compare` (every run is
`muonjax.train.train`). `--preset cpu` (the default) is what is committed here and is sized for a 2-core
CPU; `--preset smoke` runs every campaign in seconds (the tests run it); `--preset paper` scales to the
published model sizes for a GPU (pass `--data` with real token shards). Results land in
`experiments/results/<study>/`: one folder per campaign (`results.json` with every run, `table.md`,
`curves.png`; the per-step JSONL logs are written there too but not committed, for size), the study's
`report.md` (all tables, the facts of the runs, the comparison with the
published claims) and `study.json` (the summary). A rerun reads finished campaigns back, so an interrupted
study resumes; delete a campaign folder to redo it. This page is written by `python experiments/index.py`
from those files.

Runtimes are the scripts' own wall-clock measurements on this project's 2-core CPU machine (shared with
other work while they ran, so they are upper bounds). Seeds: 3 per cell (mean ± sample standard
deviation) except the one-seed learning-rate tuning grids, which say so.
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
    lines += [f"Preset `{summary.get('preset')}`, {summary.get('seeds')} seeds per cell; runtime "
              f"on 2 cores: {runtime}.", ""]
    for section in _sections(report, prefixes):
      lines += [section.replace("\n### ", "\n#### "), ""]
  text = "\n".join(lines).rstrip() + "\n"
  with open(os.path.join(HERE, "README.md"), "w") as f:
    f.write(text)
  return text


if __name__ == "__main__":
  main()
