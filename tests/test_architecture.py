"""Import floors: every module imports only its own floor and the floors below, with no
cycles; the optimizer core imports no flax.

Floors (``FLOORS``): orthogonalization, kernels (0) → transforms (1) → optimizers,
routing (2; floors 0–2 are the optimizer core) → the Flax glue, distributed
Newton–Schulz and test helpers (3) → models (4) → data (5) → train (6) → the apps
(7: CLI, compare, tune, sweep, study, report, bench, demo). The package's own
``__init__`` is the façade over every floor and is not on one.
"""

from __future__ import annotations

import ast
import functools
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
MODULES = {module_name(p) for p in FILES}

FLOORS = {
    "muonjax.orthogonalization": 0, "muonjax.kernels": 0,
    "muonjax.transforms": 1,
    "muonjax.routing": 2, "muonjax.optimizers": 2,
    "muonjax.nnx": 3, "muonjax.distributed": 3, "muonjax.testing": 3,
    "muonjax.models": 4,
    "muonjax.data": 5,
    "muonjax.train": 6,
    "muonjax.cli": 7, "muonjax.__main__": 7, "muonjax.compare": 7, "muonjax.tune": 7,
    "muonjax.sweep": 7, "muonjax.study": 7, "muonjax.report": 7, "muonjax.intervals": 7,
    "muonjax.bench": 7, "muonjax.demo": 7, "muonjax.step_timing": 7, "muonjax.claims": 7,
}


def floor(mod: str):
  """The floor of a module of the package (``None`` for the top-level façade)."""
  for prefix, level in FLOORS.items():
    if within(mod, (prefix,)):
      return level
  return None


def resolve(target: str, names) -> list[str]:
  """The package modules an import statement reaches: ``from a.b import c`` reaches the
  module ``a.b.c`` when there is one, else ``a.b``. ``from muonjax import __version__``
  reaches no floor."""
  if not within(target, ("muonjax",)):
    return []
  if target == "muonjax" and names and all(n.startswith("__") for n in names):
    return []
  out = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
  if len(out) < len(names) or not names:
    out.append(target)
  return out


@functools.cache
def graph() -> dict[str, set[str]]:
  """Module → the package modules it imports (module level and inside functions)."""
  edges = {}
  for path in FILES:
    mod = module_name(path)
    edges[mod] = {t for target, names in imports(path) for t in resolve(target, names)
                  if t != mod}
  return edges


def test_every_module_is_on_a_floor():
  missing = sorted(m for m in MODULES if m != "muonjax" and floor(m) is None)
  assert not missing, f"modules on no floor (add them to FLOORS): {missing}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_reaches_a_higher_floor(path):
  mod = module_name(path)
  if mod == "muonjax":
    return  # the façade re-exports every floor
  for target in graph()[mod]:
    assert target != "muonjax", f"{mod} imports the top-level package (import the module)"
    assert floor(target) <= floor(mod), (
        f"{mod} (floor {floor(mod)}) imports {target} (floor {floor(target)})")


def test_no_import_cycles():
  edges = graph()
  edges.pop("muonjax")  # the façade
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == 1:
        cycle = path[path.index(nxt):] + [nxt]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if nxt in edges and nxt not in state:
        visit(nxt)
    path.pop()
    state[node] = 2

  for node in sorted(edges):
    if node not in state:
      visit(node)


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


def test_core_import_leaves_flax_out():
  # One fresh interpreter imports the core's packages one by one and checks after
  # each: if flax is absent after importing all of them, each alone leaves it out.
  code = ("import importlib, sys\n"
          "for module in ('muonjax.orthogonalization', 'muonjax.transforms', 'muonjax.routing',"
          " 'muonjax.optimizers'):\n"
          "  importlib.import_module(module)\n"
          "  assert 'flax' not in sys.modules, (module, sorted(sys.modules))\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_glue_still_reachable_from_top_level():
  code = ("import sys, muonjax as mj; assert 'flax' not in sys.modules; "
          "mj.muon_dimension_numbers; assert 'flax' in sys.modules; mj.models.build")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
