"""Which backend runs the Newton–Schulz products: ``"auto"``, ``"xla"`` or ``"pallas"``.

``"xla"`` is the pure-XLA path (always correct, the default everywhere today).
``"pallas"`` runs the symmetric kernels of :mod:`muonjax.kernels.symmetric`:
compiled (Triton lowering) on a GPU, compiled (Mosaic TPU) on a TPU, and in
interpret mode on a CPU (correct but slow: use it for tests only).
``"auto"`` picks Pallas only on an accelerator and only where it was measured
to win, from :data:`PALLAS_MIN_SHORT_EDGE`.
"""

from __future__ import annotations

from typing import Optional

import jax

BACKENDS = ("auto", "xla", "pallas")

# Smallest short edge m (rows of the wide matrix X, m <= n) from which
# backend="auto" runs an NS iteration with the Pallas kernels, per platform.
#
# None means "not measured yet": "auto" then uses XLA for every shape. Every
# entry is None because no accelerator has run the kernels yet; the values
# must come from a measurement, never a guess (the published crossover of
# comparable kernels, a short edge of about 1024 (PaddleFormers #4963), is a
# starting point for the search only).
#
# How to fill an entry: on the device, run
#     python experiments/bench_kernels.py --out experiments/results/bench
# (Tier 2 of `muonjax bench`, docs/performance.md#benchmark-tiers). It times one full NS
# iteration Pallas vs XLA, interleaved, on square and (768, 3072)-like shapes
# and prints `suggested PALLAS_MIN_SHORT_EDGE`: the smallest measured m from
# which the Pallas/XLA speed-up stays above 1 for every larger shape measured.
# Commit that number here together with the results file, the device kind and
# the jax version in this comment.
PALLAS_MIN_SHORT_EDGE: dict[str, Optional[int]] = {
    "gpu": None,  # not measured (no GPU run yet)
    "tpu": None,  # not measured (no TPU run yet)
}


def platform() -> str:
  """``"cpu"``, ``"gpu"`` (CUDA or ROCm) or ``"tpu"``: the default backend."""
  p = jax.default_backend()
  return "gpu" if p in ("gpu", "cuda", "rocm") else p


def check_backend(backend: str) -> None:
  """Raise ``ValueError`` naming ``backend`` unless it is one of :data:`BACKENDS`."""
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


def resolve_backend(backend: str, m: int, n: Optional[int] = None, *,
                    on: Optional[str] = None) -> str:
  """Turn ``"auto"`` into ``"xla"`` or ``"pallas"`` for a wide ``(m, n)`` matrix.

  Args:
    backend: ``"auto"``, ``"xla"`` or ``"pallas"``.
    m: short edge of the wide matrix the iteration runs on.
    n: long edge (unused until a measurement shows the aspect ratio matters).
    on: platform to decide for; defaults to :func:`platform`.

  Returns:
    ``"xla"`` or ``"pallas"``. ``"auto"`` gives ``"xla"`` on a CPU and
    wherever :data:`PALLAS_MIN_SHORT_EDGE` has no measured threshold.

  Raises:
    ValueError: ``backend`` is not one of :data:`BACKENDS`.
  """
  del n
  check_backend(backend)
  if backend != "auto":
    return backend
  threshold = PALLAS_MIN_SHORT_EDGE.get(on or platform())
  if threshold is None:
    return "xla"
  return "pallas" if m >= threshold else "xla"
