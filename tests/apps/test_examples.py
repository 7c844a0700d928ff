"""The scripts in ``examples/`` run as users run them: a subprocess, outside the package.

Each script is started with ``sys.executable examples/<name>.py --steps N`` and
``PYTHONPATH`` set to the repository root; it must exit 0 and print every
``initial loss`` / ``final loss`` pair with the final loss the lower one.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOSS = r"([-+0-9.eE]+|nan|inf)"


# Each example runs as a subprocess, as a user runs it: CI's second tier.
pytestmark = pytest.mark.e2e


def run_example(name: str, *args: str) -> str:
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
  return proc.stdout


def assert_losses_decreased(out: str, pairs: int) -> None:
  initial = [float(v) for v in re.findall(rf"initial loss: {LOSS}", out)]
  final = [float(v) for v in re.findall(rf"final loss: {LOSS}", out)]
  assert len(initial) == len(final) == pairs, out
  for a, b in zip(initial, final):
    assert b < a, out


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_nnx_mlp(optimizer):
  out = run_example("nnx_mlp.py", "--steps", "60", "--optimizer", optimizer)
  assert_losses_decreased(out, 1)


def test_pytree_chain():
  assert_losses_decreased(run_example("pytree_chain.py", "--steps", "60"), 1)


def test_optax_wrappers():
  out = run_example("optax_wrappers.py", "--steps", "60")
  assert_losses_decreased(out, 4)
  assert "muon steps taken: 15 of 60" in out
  assert "non-finite steps skipped: 1" in out
  assert "learning rate at the end: 0.01" in out
