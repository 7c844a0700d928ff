"""Orthogonalization benchmark (Tier 1, docs/performance.md#benchmark-tiers): see muonjax/bench/.

Usage: python experiments/bench_orthogonalize.py [--quick] [--repeats N] [--out DIR]
"""
import os
import sys

# Make the repository importable when run as a script without an install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muonjax.bench.cli import main  # noqa: E402

raise SystemExit(main())
