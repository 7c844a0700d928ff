"""``muonjax bench`` / ``python -m muonjax.bench``: run the suite, write JSON + Markdown.

Results go to ``experiments/results/bench/orthogonalize.{json,md}`` by default
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import jax.numpy as jnp

from muonjax.bench.report import format_markdown, to_jsonable
from muonjax.bench.suites import GPT2_SMALL_SHAPES, run_orthogonalize_bench


def main(argv: Optional[Sequence[str]] = None) -> int:
  """CLI: run the benchmark, write JSON + Markdown to ``--out``, print the Markdown."""
  parser = argparse.ArgumentParser(
      description="muonjax orthogonalization benchmark (Tier 1, docs/performance.md#benchmark-tiers)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny shapes and 3 repeats (smoke test)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed calls per case and round (default 20; 3 with --quick)")
  parser.add_argument("--out", default="experiments/results/bench",
                      help="output directory for orthogonalize.json / .md")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="input / parameter dtype")
  parser.add_argument("--budget", type=float, default=25.0,
                      help="seconds per measurement round before the repeat count is "
                           "reduced (never below 5 per round, 10 per case in all); "
                           "<= 0 disables the cap")
  parser.add_argument("--layers", type=int, default=None,
                      help="transformer layers in the section-c tree (default 2)")
  args = parser.parse_args(argv)
  repeats = args.repeats if args.repeats is not None else (3 if args.quick else 20)
  if repeats < 1:
    parser.error("--repeats must be >= 1")
  results = run_orthogonalize_bench(
      GPT2_SMALL_SHAPES, repeats=repeats, dtype=jnp.dtype(args.dtype), quick=args.quick,
      budget_s=args.budget if args.budget > 0 else None, tree_layers=args.layers)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  md = format_markdown(results)
  (out / "orthogonalize.json").write_text(json.dumps(to_jsonable(results), indent=1))
  (out / "orthogonalize.md").write_text(md)
  print(md)
  print(f"wrote {out / 'orthogonalize.json'} and {out / 'orthogonalize.md'}")
  return 0
