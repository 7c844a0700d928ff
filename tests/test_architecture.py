"""Import floors: the optimizer core imports no flax and nothing above it (floors below).

Floors: orthogonalization, kernels (0) → transforms (1) → optimizers, routing
(2, the optimizer core) → nnx glue (2') → models (3) → data, train (4) → apps.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "muonjax"
CORE = ("muonjax.orthogonalization", "muonjax.kernels", "muonjax.transforms",
        "muonjax.optimizers", "muonjax.routing")
ABOVE_CORE = ("flax", "muonjax.nnx", "muonjax.models", "muonjax.train", "muonjax.data",
              "muonjax.distributed", "muonjax.sharding", "muonjax.cli", "muonjax.study",
              "muonjax.compare", "muonjax.sweep", "muonjax.report", "muonjax.demo",
              "muonjax.bench")


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path):
  """``(module, names)`` of every import statement in the file."""
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, []
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.module, [a.name for a in node.names]


def within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downwards(path):
  mod = module_name(path)
  for target, names in imports(path):
    assert not target.startswith("optax._src"), (mod, target)
    if within(mod, CORE):
      assert not within(target, ABOVE_CORE), f"{mod} (core) imports {target}"
      for name in names:  # `from muonjax import models` and the like
        assert not within(f"{target}.{name}", ABOVE_CORE), f"{mod} imports {target}.{name}"
    if target.startswith("muonjax") and target != mod:
      for name in names:
        assert not (name.startswith("_") and not name.startswith("__")), (
            f"{mod} imports private {name} from {target}")


@pytest.mark.parametrize("module", ["muonjax.optimizers", "muonjax.transforms",
                                    "muonjax.orthogonalization", "muonjax.routing"])
def test_core_import_leaves_flax_out(module):
  code = f"import sys, {module}; assert 'flax' not in sys.modules, sorted(sys.modules)"
  subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_glue_still_reachable_from_top_level():
  code = ("import sys, muonjax as mj; assert 'flax' not in sys.modules; "
          "mj.muon_dimension_numbers; assert 'flax' in sys.modules; mj.models.build")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
