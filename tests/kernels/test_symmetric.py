"""Pallas symmetric kernels (muonjax/kernels) in interpret mode against the XLA path.

docs/performance.md#kernel-design: odd shapes (non-multiples of the block), stacks
and tall inputs; fp32 agrees to 1e-5, bf16 within the bf16 tolerance of
docs/optimizers.md#singular-value-ranges (±3e-2 on output singular values). Small blocks (8/16)
give several tiles per side on small matrices so the triangular tiling is
exercised. Timings are never asserted here (interpret mode is a scan over the
grid); ``experiments/bench_kernels.py --smoke`` is run as a plumbing check.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import muonjax as mj
from muonjax import kernels
from muonjax.kernels import dispatch, symmetric
from muonjax.orthogonalization import newton_schulz, polar_express
from muonjax.transforms.orthogonalize import make_orthogonalizer, orthogonalize

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

SMALL = {"block": 16, "block_k": 16}
KELLER = (3.4445, -4.7750, 2.0315)
REPO = Path(__file__).resolve().parents[2]


def _normal(shape, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng([seed, *shape])
  return jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dtype)


def _xla_gram(x):
  return jnp.einsum("...ik,...jk->...ij", x, x)


def _rel(out, ref):
  out = np.asarray(out, np.float64)
  ref = np.asarray(ref, np.float64)
  return np.linalg.norm(out - ref) / np.linalg.norm(ref)


def _pallas_grids(fn, *args):
  """Grids of every ``pallas_call`` in the jaxpr of ``fn(*args)`` (nested too)."""
  grids = []

  def subjaxprs(value):
    if hasattr(value, "eqns"):
      yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
      yield value.jaxpr
    elif isinstance(value, (tuple, list)):
      for v in value:
        yield from subjaxprs(v)

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "pallas_call":
        grids.append(tuple(eqn.params["grid_mapping"].grid))
        continue
      for value in eqn.params.values():
        for sub in subjaxprs(value):
          walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return grids


# ---------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tiles", [1, 2, 3, 5, 8, 13])
def test_triangular_index_visits_each_lower_tile_once(tiles):
  n = tiles * (tiles + 1) // 2
  i, j = jax.jit(jax.vmap(lambda t: symmetric._lower_tile(t, tiles)))(jnp.arange(n))
  got = list(zip(np.asarray(i).tolist(), np.asarray(j).tolist()))
  assert got == [(r, c) for r in range(tiles) for c in range(r + 1)]


@pytest.mark.parametrize("reduction", ["loop", "grid"])
@pytest.mark.parametrize("m,n", [(37, 53), (64, 40), (16, 100)])
def test_grid_has_only_lower_tiles(reduction, m, n):
  x = _normal((3, m, n))
  tiles = math.ceil(m / 16)
  k_steps = math.ceil(n / 16)
  expected = (3, tiles * (tiles + 1) // 2) + ((k_steps,) if reduction == "grid" else ())
  assert _pallas_grids(lambda v: kernels.gram(v, reduction=reduction, **SMALL), x) == [expected]
  a = _xla_gram(x)
  expected_poly = (3, tiles * (tiles + 1) // 2) + (
      (math.ceil(m / 16),) if reduction == "grid" else ())
  assert _pallas_grids(
      lambda v: kernels.symmetric_poly(v, -1.0, 2.0, reduction=reduction, **SMALL),
      a) == [expected_poly]


def test_upper_tiles_are_never_written():
  p = kernels.plan(1, 37, 53, **SMALL)
  assert (p.tiles_per_side, p.num_tiles, p.grid) == (3, 6, (1, 6))
  y = jnp.pad(_normal((1, 37, 53)), ((0, 0), (0, p.m_pad - 37), (0, p.k_pad - 53)))
  raw = np.asarray(jax.jit(kernels.syrk_lower_tiles, static_argnums=1)(y, p))
  # Interpret mode fills unwritten outputs with NaN: exactly the strict upper tiles.
  written = ~np.isnan(raw).reshape(3, 16, 3, 16).any(axis=(1, 3))
  np.testing.assert_array_equal(written, np.tril(np.ones((3, 3), bool)))
  full = kernels.mirror_lower_tiles(jnp.asarray(raw), p.block)
  np.testing.assert_allclose(full, _xla_gram(y), rtol=1e-5, atol=1e-5)


def test_plan_shrinks_blocks_and_pads():
  p = kernels.plan(2, 20, 30)
  assert (p.block, p.block_k, p.m_pad, p.k_pad, p.num_tiles) == (32, 32, 32, 32, 1)
  p = kernels.plan(1, 300, 1000)
  assert (p.block, p.m_pad, p.tiles_per_side, p.num_tiles) == (128, 384, 3, 6)
  assert p.k_pad % p.block_k == 0 and p.k_pad >= 1000
  assert p.lowering == "pallas-interpret"


# ---------------------------------------------------------------------------
# gram and symmetric_poly against XLA
# ---------------------------------------------------------------------------

SHAPES = [
    (37, 53),        # odd: neither dim a multiple of the block
    (48, 64),        # exact multiples
    (5, 7),          # smaller than one block
    (3, 37, 53),     # stack
    (2, 2, 20, 33),  # two leading axes
    (53, 37),        # tall: X Xᵀ on the long side
]


# The GPU layout ("loop") on every shape; the TPU layout ("grid") on the odd
# single matrix and the stack.
GRAM_CASES = ([(shape, "loop") for shape in SHAPES]
              + [(SHAPES[0], "grid"), (SHAPES[3], "grid")])


@pytest.mark.parametrize("shape,reduction", GRAM_CASES)
def test_gram_matches_xla_fp32(shape, reduction):
  x = _normal(shape)
  out = kernels.gram(x, reduction=reduction, **SMALL)
  ref = _xla_gram(x)
  assert out.shape == ref.shape and out.dtype == jnp.float32
  assert _rel(out, ref) < 1e-5
  np.testing.assert_array_equal(out, jnp.swapaxes(out, -1, -2))


def test_gram_of_tall_input_transposed_to_wide():
  x = _normal((2, 53, 37))
  wide = jnp.swapaxes(x, -1, -2)
  out = kernels.gram(wide, **SMALL)
  assert out.shape == (2, 37, 37)
  assert _rel(out, jnp.einsum("...ki,...kj->...ij", x, x)) < 1e-5


@pytest.mark.parametrize("shape,reduction", [
    ((37, 53), "loop"), ((3, 24, 40), "loop"), ((50, 30), "loop"),
    ((3, 24, 40), "grid")])
def test_symmetric_poly_matches_xla_fp32(shape, reduction):
  a = _xla_gram(_normal(shape)) / shape[-1]
  b, c = -4.775, 2.0315
  out = kernels.symmetric_poly(a, b, c, reduction=reduction, **SMALL)
  ref = b * a + c * (a @ a)
  assert out.shape == a.shape and out.dtype == a.dtype
  assert _rel(out, ref) < 1e-5


def test_symmetric_poly_traced_coefficients_under_jit():
  a = _xla_gram(_normal((2, 30, 45))) / 45
  coeffs = jnp.asarray([[-4.775, 2.0315], [-2.9, 0.55]], jnp.float32)
  f = jax.jit(lambda a, bc: jax.lax.map(
      lambda r: kernels.symmetric_poly(a, r[0], r[1], **SMALL), bc))
  out = f(a, coeffs)
  for k in range(2):
    ref = coeffs[k, 0] * a + coeffs[k, 1] * (a @ a)
    assert _rel(out[k], ref) < 1e-5


@pytest.mark.parametrize("shape", [(3, 37, 53)])
def test_bf16_within_bound(shape):
  # XLA and Pallas both accumulate in fp32 and round the output to bf16
  # (relative rounding 2^-9); each must sit that close to the fp64 truth.
  x = _normal(shape, dtype=jnp.bfloat16)
  x64 = np.asarray(x, np.float64)
  truth = np.einsum("...ik,...jk->...ij", x64, x64)
  out = kernels.gram(x, **SMALL)
  assert out.dtype == jnp.bfloat16
  assert _rel(out, truth) < 2 ** -8
  assert _rel(out, _xla_gram(x)) < 2 ** -7
  a = (out / shape[-1]).astype(jnp.bfloat16)
  a64 = np.asarray(a, np.float64)
  poly_truth = -4.775 * a64 + 2.0315 * a64 @ a64
  poly = kernels.symmetric_poly(a, -4.775, 2.0315, **SMALL)
  assert poly.dtype == jnp.bfloat16
  assert _rel(poly, poly_truth) < 2 ** -8


def test_empty_and_zero_inputs():
  assert kernels.gram(jnp.zeros((0, 4, 6))).shape == (0, 4, 4)
  np.testing.assert_array_equal(kernels.gram(jnp.zeros((4, 0))), jnp.zeros((4, 4)))
  np.testing.assert_array_equal(kernels.gram(jnp.zeros((20, 30)), **SMALL),
                                jnp.zeros((20, 20)))


# ---------------------------------------------------------------------------
# One iteration and full NS5 through the backend switch
# ---------------------------------------------------------------------------


def test_newton_schulz_step_matches_xla():
  x = _normal((2, 24, 40))
  x = x / jnp.linalg.norm(x, axis=(-2, -1), keepdims=True)
  a, b, c = KELLER
  g = _xla_gram(x)
  ref = a * x + (b * g + c * (g @ g)) @ x
  out = kernels.newton_schulz_step(x, a, b, c, **SMALL)
  assert out.dtype == x.dtype and _rel(out, ref) < 1e-5


@pytest.mark.parametrize("shape", [(200, 150), (3, 40, 70)])
def test_ns5_pallas_equals_xla_fp32(shape):
  x = _normal(shape, seed=1)
  f = jax.jit(lambda v, backend: newton_schulz(v, backend=backend),
              static_argnums=1)
  out, ref = f(x, "pallas"), f(x, "xla")
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  assert _pallas_grids(lambda v: newton_schulz(v, backend="pallas"), x)
  assert not _pallas_grids(lambda v: newton_schulz(v, backend="xla"), x)


@pytest.mark.parametrize("normalization", ["aol", "schatten"])
def test_first_step_normalizations_pallas_equals_xla(normalization):
  x = _normal((2, 30, 50), seed=2)
  # Both backends in one compiled program: run eagerly, every primitive of the
  # first-step normalization compiled on its own (most of this test's CPU time).
  out, ref = jax.jit(lambda v: [newton_schulz(v, normalization=normalization, backend=b)
                                for b in ("pallas", "xla")])(x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_polar_express_pallas_equals_xla():
  x = _normal((40, 70), seed=3)
  np.testing.assert_allclose(polar_express(x, backend="pallas"),
                             polar_express(x, backend="xla"), rtol=1e-5, atol=1e-5)


def test_ns5_bf16_pallas_within_spec_tolerance():
  # docs/optimizers.md#singular-value-ranges oracle: output sigma = p5(...p1(sigma / ||X||_F)) for
  # Keller's quintic, in float64; bf16 compute gets +-3e-2.
  rng = np.random.default_rng(4)
  u, _ = np.linalg.qr(rng.standard_normal((48, 48)))
  v, _ = np.linalg.qr(rng.standard_normal((80, 48)))
  sigma = np.geomspace(1e-2, 1, 48)
  x = jnp.asarray((u * sigma) @ v.T, jnp.float32)
  expected = sigma / np.linalg.norm(sigma)
  for _ in range(5):
    a, b, c = KELLER
    expected = a * expected + b * expected ** 3 + c * expected ** 5
  expected = np.sort(expected)[::-1]
  for backend in ("pallas", "xla"):
    out = newton_schulz(x, compute_dtype=jnp.bfloat16, backend=backend)
    s = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    np.testing.assert_allclose(s, expected, atol=3e-2, err_msg=backend)


def test_ns_zero_matrix_pallas():
  out = newton_schulz(jnp.zeros((20, 30)), backend="pallas")
  np.testing.assert_array_equal(out, jnp.zeros((20, 30)))


def test_orthogonalize_stage_backend():
  tree = {"w": _normal((40, 24), seed=5), "stack": _normal((2, 24, 40), seed=6)}
  txs = {backend: orthogonalize(backend=backend) for backend in ("pallas", "xla", "auto")}
  # One compiled program for the three stages (run eagerly, each primitive of
  # each stage compiles on its own).
  outs = jax.jit(lambda t: {b: tx.update(t, tx.init(t))[0] for b, tx in txs.items()})(tree)
  for k in tree:
    np.testing.assert_allclose(outs["pallas"][k], outs["xla"][k], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outs["auto"][k], outs["xla"][k])


# ---------------------------------------------------------------------------
# backend="auto" and validation
# ---------------------------------------------------------------------------


def test_auto_picks_xla_until_thresholds_are_measured():
  # No accelerator has measured a crossover yet, so the table is empty and
  # "auto" must choose XLA on every platform and size.
  assert all(v is None for v in kernels.PALLAS_MIN_SHORT_EDGE.values())
  for on in ("cpu", "gpu", "tpu"):
    for m in (8, 1024, 16384):
      assert kernels.resolve_backend("auto", m, 4 * m, on=on) == "xla"
  x = _normal((20, 30))
  assert not _pallas_grids(lambda v: newton_schulz(v), x)
  assert not _pallas_grids(lambda v: newton_schulz(v, backend="auto"), x)


def test_auto_uses_a_measured_threshold(monkeypatch):
  monkeypatch.setitem(dispatch.PALLAS_MIN_SHORT_EDGE, "gpu", 1024)
  assert kernels.resolve_backend("auto", 1024, 4096, on="gpu") == "pallas"
  assert kernels.resolve_backend("auto", 768, 3072, on="gpu") == "xla"
  assert kernels.resolve_backend("auto", 4096, 4096, on="cpu") == "xla"
  assert kernels.resolve_backend("xla", 4096, on="gpu") == "xla"
  assert kernels.resolve_backend("pallas", 8, on="cpu") == "pallas"


@pytest.mark.parametrize("call", [
    lambda: newton_schulz(jnp.ones((4, 6)), backend="triton"),
    lambda: polar_express(jnp.ones((4, 6)), backend="triton"),
    lambda: mj.newton_schulz(jnp.ones((4, 6)), backend="triton"),
    lambda: make_orthogonalizer("newton_schulz", backend="triton"),
    lambda: make_orthogonalizer(lambda x: x, backend="triton"),
    lambda: orthogonalize(backend="triton"),
    lambda: kernels.resolve_backend("triton", 8),
])
def test_bad_backend_raises(call):
  with pytest.raises(ValueError, match=r"backend.*'auto', 'xla', 'pallas'.*'triton'"):
    call()


@pytest.mark.parametrize("kwargs,match", [
    ({"block": 24}, "block must be a power of two"),
    ({"block": 4}, "block must be a power of two"),
    ({"block_k": True}, "block_k must be a power of two"),
    ({"reduction": "tree"}, "reduction must be one of"),
    ({"interpret": False}, "interpret=False needs a GPU or TPU"),
])
def test_bad_kernel_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    kernels.gram(jnp.ones((4, 6)), **kwargs)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="x must have shape"):
    kernels.gram(jnp.ones((4,)))
  with pytest.raises(ValueError, match="real floating"):
    kernels.gram(jnp.ones((4, 6), jnp.int32))
  with pytest.raises(ValueError, match="a must be square"):
    kernels.symmetric_poly(jnp.ones((4, 6)), 1.0, 1.0)


# ---------------------------------------------------------------------------
# Benchmark script
# ---------------------------------------------------------------------------


def _load_bench():
  spec = importlib.util.spec_from_file_location(
      "bench_kernels", REPO / "experiments" / "bench_kernels.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_kernels_smoke_and_skip(capsys, tmp_path):
  bench = _load_bench()
  if dispatch.platform() == "cpu":
    assert bench.main([]) == 0
    assert "no GPU or TPU present" in capsys.readouterr().out
  assert bench.main(["--smoke", "--repeats", "1", "--out", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "pallas-interpret" in out and "timings above mean nothing" in out
  assert (tmp_path / "kernels.json").exists() and (tmp_path / "kernels.md").exists()


def test_bench_threshold_suggestion():
  bench = _load_bench()
  rows = [{"m": m, "n": n, "ops": {"step": {"speedup": s}}}
          for m, n, s in [(768, 3072, 0.9), (1024, 1024, 1.05), (2048, 2048, 1.2),
                          (4096, 4096, 1.3)]]
  assert bench.suggest_threshold(rows) == 1024
  rows[1]["ops"]["step"]["speedup"] = 0.95
  assert bench.suggest_threshold(rows) == 2048


# ---------------------------------------------------------------------------
# Lowering for the accelerators, on paper (cross-platform lowering on CPU)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("target,lowering_platform,custom_call", [
    ("gpu", "cuda", "xla.gpu.triton"),
    ("tpu", "tpu", "tpu_custom_call"),
])
@pytest.mark.parametrize("m,k,dtype", [(768, 3072, jnp.bfloat16), (300, 1000, jnp.float32)])
def test_kernel_lowers_for_accelerators(target, lowering_platform, custom_call, m, k, dtype):
  # Builds the Triton / Mosaic TPU kernel IR without the hardware: catches
  # unsupported ops, non-power-of-two Triton tensors and bad index maps. The
  # device compiler (PTX / libtpu) still runs only on the device.
  p = kernels.plan(2, m, k, target=target)
  assert p.lowering == {"gpu": "pallas-triton", "tpu": "pallas-mosaic-tpu"}[target]
  assert p.block % 128 == 0 and (target == "gpu" or p.block_k % 128 == 0)
  y = jax.ShapeDtypeStruct((2, p.m_pad, p.k_pad), dtype)
  lowered = jax.jit(kernels.syrk_lower_tiles, static_argnums=1).trace(y, p).lower(
      lowering_platforms=(lowering_platform,))
  assert custom_call in lowered.as_text()


def test_plan_enforces_device_block_rules():
  with pytest.raises(ValueError, match="reduction='grid' cannot run compiled on GPU"):
    kernels.plan(1, 256, 256, reduction="grid", target="gpu")
  with pytest.raises(ValueError, match="must be >= 16 on GPU"):
    kernels.plan(1, 256, 256, block=8, target="gpu")
  with pytest.raises(ValueError, match="block must be a multiple of 128 on TPU"):
    kernels.plan(1, 256, 256, block=64, target="tpu")
  # A block covering the whole (padded) matrix is exempt from the (8, 128) rule.
  assert kernels.plan(1, 20, 30, target="tpu").block == 32
  with pytest.raises(ValueError, match="target must be one of"):
    kernels.plan(1, 8, 8, target="cuda")
