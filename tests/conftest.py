"""Shared test configuration.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so test files
import the shared code as ``import references`` (NumPy float64 oracles) and
``import helpers`` (utilities and the common alias checks).
"""

import jax
import pytest

# The in-process tests check numerics and program properties, not speed, and spend
# most of their CPU time in XLA's optimizing passes: they compile with most of those
# passes off (about a third less CPU for the suite). The subprocess runs of the e2e
# tier (CLI, studies, multi-process training) compile with the full pipeline users get.
jax.config.update("jax_disable_most_optimizations", True)

# Plain `assert`s inside the shared checks get pytest's detailed failure messages.
pytest.register_assert_rewrite("helpers", "references")


@pytest.fixture
def fp32_matmuls():
  """GPUs default to TF32 matmuls; the float64 references need full fp32 products.

  Use with ``pytestmark = pytest.mark.usefixtures("fp32_matmuls")``.
  """
  with jax.default_matmul_precision("highest"):
    yield



@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """JAX's persistent compilation cache in this run's temporary folder, shared by the
  xdist workers: a program compiled by one test (or worker) is loaded, not recompiled,
  by the next test that builds the same program. A fresh folder every run, so nothing
  carries over between runs. Files that install their own cache
  (``helpers.persistent_compilation_cache``) get this one back afterwards.
  """
  import os

  import helpers
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # .../pytest-N/popen-gwK -> .../pytest-N, common to the workers
  path = root / "xla_cache"
  path.mkdir(exist_ok=True)
  yield from helpers.persistent_compilation_cache(str(path))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """chex's ``without_jit`` variants (the same checks as their ``with_jit`` twins, run op
  by op, each op compiled on its own) are marked ``eager``: CI's second tier runs them,
  the default tier keeps the jitted twins (jit/no-jit agreement of every registered
  optimizer stays in the default tier: tests/optimizers/test_registry_battery.py)."""
  del config
  for item in items:
    if "__without_jit" in item.name:
      item.add_marker(pytest.mark.eager)

