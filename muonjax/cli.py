"""The ``muonjax`` command.

Sub-commands: ``demo`` (train a small MLP with mj.muon and optax.adamw and
print both losses) and ``bench`` (the orthogonalization benchmark). Bad input
prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


class UsageError(Exception):
  """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line instead of usage + message
    raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
  return value


def _demo(args) -> int:
  from muonjax import demo
  cfg = demo.DemoConfig(steps=args.steps, seed=args.seed, muon_lr=args.muon_lr,
                        adamw_lr=args.adamw_lr)
  demo.run(cfg)
  return 0


def _bench(args, rest) -> int:
  from muonjax import bench
  return bench.main(rest)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="muonjax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", parser_class=_Parser)
  demo = sub.add_parser("demo", help="train a small MLP with mj.muon and optax.adamw")
  demo.add_argument("--steps", type=_positive_int, default=300)
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--muon-lr", type=_positive_float, default=0.02)
  demo.add_argument("--adamw-lr", type=_positive_float, default=1e-2)
  sub.add_parser("bench", help="orthogonalization benchmark (see `muonjax bench --help`)",
                 add_help=False)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    if argv[:1] == ["bench"]:
      return _bench(None, argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
      parser.print_help()
      return 2
    return _demo(args)
  except UsageError as e:
    print(str(e), file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"muonjax: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  raise SystemExit(main())
