"""The `muonjax` command: the demo job and one-line errors with exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from muonjax import cli, demo


def test_demo_trains_both_optimizers():
  cfg = demo.DemoConfig(steps=60, batch=64, hidden=32)
  lines = []
  results = demo.run(cfg, print_fn=lines.append)
  assert len(results) == 2
  for name, r in results.items():
    losses = np.asarray(r["losses"])
    assert losses.shape == (60,)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], name
  # Same initial weights and batches: identical first loss.
  first = [float(r["losses"][0]) for r in results.values()]
  assert first[0] == pytest.approx(first[1], rel=1e-6)
  assert any(line.startswith("muon") for line in lines)
  assert any(line.startswith("adamw") for line in lines)


@pytest.mark.parametrize("argv, fragment", [
    (["demo", "--steps", "0"], "must be > 0"),
    (["demo", "--muon-lr", "abc"], "expected a number"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert fragment in err
  assert len(err.splitlines()) == 1


def test_module_entry_point():
  proc = subprocess.run([sys.executable, "-m", "muonjax", "demo", "--steps", "-3"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
