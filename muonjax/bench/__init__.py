"""Orthogonalization benchmark (Tier 1 ratios on one device; ``docs/performance.md#benchmark-tiers``,
which defines the goals R1–R6 the report and the code name).

* :mod:`~muonjax.bench.harness`: AOT compilation, interleaved timing, medians;
* :mod:`~muonjax.bench.machine`: machine and version record;
* :mod:`~muonjax.bench.flops`: analytic FLOP counts;
* :mod:`~muonjax.bench.suites`: the NS / tree-step / accuracy measurements;
* :mod:`~muonjax.bench.report`: Markdown and JSON output;
* :mod:`~muonjax.bench.cli`: ``muonjax bench`` and ``python -m muonjax.bench``.

Run ``python experiments/bench_orthogonalize.py`` (or ``--quick`` for a smoke
run). Results go to ``experiments/results/bench/orthogonalize.{json,md}``.
"""

from __future__ import annotations

from muonjax.bench.cli import main
from muonjax.bench.flops import NS_STEPS, dot_flops, ns_flops, r1_flop_ratio, wide_dims
from muonjax.bench.harness import (
    QUICK_COMPILER_OPTIONS,
    Compiled,
    aot_compile,
    interleaved,
    ratio_of_medians,
    summarize,
)
from muonjax.bench.machine import cpu_model, loadavg, machine_info
from muonjax.bench.report import format_markdown, to_jsonable
from muonjax.bench.suites import (
    ACCURACY_CONFIGS,
    EXPECTED_SIGMA_RANGE,
    GPT2_SMALL_SHAPES,
    KELLER,
    NS_EPS,
    QUICK_SHAPES,
    accuracy,
    bench_shape,
    bench_tree,
    gpt2_like_params,
    measure_bandwidth,
    run_orthogonalize_bench,
)

__all__ = [
    "main", "NS_STEPS", "dot_flops", "ns_flops", "r1_flop_ratio", "wide_dims",
    "QUICK_COMPILER_OPTIONS", "Compiled", "aot_compile", "interleaved", "ratio_of_medians",
    "summarize", "cpu_model", "loadavg", "machine_info", "format_markdown", "to_jsonable",
    "ACCURACY_CONFIGS", "EXPECTED_SIGMA_RANGE", "GPT2_SMALL_SHAPES", "KELLER", "NS_EPS",
    "QUICK_SHAPES", "accuracy", "bench_shape", "bench_tree", "gpt2_like_params",
    "measure_bandwidth", "run_orthogonalize_bench",
]
