"""The machine and software a benchmark ran on, recorded next to its numbers."""

from __future__ import annotations

import os
import platform
from typing import Optional

import jax
import numpy as np
import optax


def cpu_model() -> str:
  """The CPU model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def loadavg() -> Optional[list[float]]:
  """The 1/5/15-minute load average (``None`` where the OS has none)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def machine_info() -> dict:
  """Platform, CPU, versions, backend and settings to record with the numbers."""
  import flax
  import jaxlib
  dev = jax.devices()[0]
  return {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "jax": jax.__version__,
      "jaxlib": getattr(jaxlib, "__version__", None) or jaxlib.version.__version__,
      "optax": optax.__version__,
      "flax": flax.__version__,
      "numpy": np.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "matmul_precision": str(jax.config.jax_default_matmul_precision),
      "lowering": "XLA",
  }
