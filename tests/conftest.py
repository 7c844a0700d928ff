"""Shared test configuration.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so test files
import the shared code as ``import references`` (NumPy float64 oracles) and
``import helpers`` (utilities and the common alias checks).
"""

import jax
import pytest

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
  import os
  if not os.environ.get("MJ_CACHE"):
    yield
    return
  import helpers
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / "xla_cache"
  path.mkdir(exist_ok=True)
  from jax.experimental.compilation_cache import compilation_cache
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  compilation_cache.reset_cache()
  for name, value in zip(names, (str(path), float(os.environ["MJ_CACHE"]), 0)):
    jax.config.update(name, value)
  yield
