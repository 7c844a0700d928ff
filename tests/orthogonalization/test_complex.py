"""Complex parameters: orthogonalization, the Muon chain, and the variants that refuse them.

Oracles: the exact complex polar factor ``U V^H`` from NumPy's complex128 SVD,
unitary matrices from NumPy QR, and ``optax.contrib.muon`` (which orthogonalizes
with ``x @ x.T.conj()``) trained side by side, as in optax's own
``test_complex_mixed_target`` (same target, learning rate, step count and
tolerance 3e-2).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import _muon as optax_muon

import muonjax as mj

KELLER = (3.4445, -4.7750, 2.0315)
SHAPES = [(6, 6), (8, 4), (4, 8)]


def complex_normal(rng, shape, dtype=np.complex64):
  return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def exact_polar(x):
  u, _, vh = np.linalg.svd(np.asarray(x, np.complex128), full_matrices=False)
  return u @ vh


def random_unitary(rng, n):
  q, r = np.linalg.qr(complex_normal(rng, (n, n), np.complex128))
  return q * (np.diagonal(r) / np.abs(np.diagonal(r)))[None, :]


# --- (a) the orthogonalization core -----------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["svd", "polar_express", "exact_cubic"])
def test_converged_methods_match_exact_complex_polar_factor(shape, method):
  x = complex_normal(np.random.default_rng(0), shape)
  if method == "svd":
    out = mj.polar_factor(jnp.asarray(x))
  elif method == "polar_express":
    out = mj.polar_express(jnp.asarray(x), steps=10)
  else:  # (2, -1.5, 0.5) every step: converges to U V^H
    out = mj.newton_schulz(jnp.asarray(x), "exact_cubic", 60)
  assert out.dtype == jnp.complex64 and out.shape == shape
  np.testing.assert_allclose(np.asarray(out), exact_polar(x), atol=1e-5)


def test_optax_cubic_check_on_complex():
  # optax's test: (2, -1.5, 0.5) for 10 steps on a complex (4, 3) matrix gives
  # O^H O = I (atol 1e-5 on CPU/GPU).
  x = jax.random.normal(jax.random.key(0), (4, 3), dtype=jnp.complex64)
  o = np.asarray(mj.newton_schulz(x, (2.0, -1.5, 0.5), 10, eps=1e-8), np.complex128)
  np.testing.assert_allclose(o.conj().T @ o, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_factor_properties(shape):
  o = np.asarray(mj.polar_factor(jnp.asarray(complex_normal(np.random.default_rng(1), shape))),
                 np.complex128)
  m, n = shape
  if m >= n:  # tall or square: orthonormal columns, O^H O = I
    np.testing.assert_allclose(o.conj().T @ o, np.eye(n), atol=1e-5)
  if m <= n:  # wide or square: orthonormal rows, O O^H = I
    np.testing.assert_allclose(o @ o.conj().T, np.eye(m), atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coeffs", ["keller", "polar_express"])
def test_newton_schulz_is_unitarily_equivariant(shape, coeffs):
  # Any odd matrix polynomial of X X^H commutes with X -> P X Q for unitary P, Q,
  # and so does the Frobenius normalization: NS(P X Q) = P NS(X) Q.
  rng = np.random.default_rng(2)
  x = complex_normal(rng, shape)
  p, q = random_unitary(rng, shape[0]), random_unitary(rng, shape[1])
  rotated = mj.newton_schulz(jnp.asarray((p @ x @ q).astype(np.complex64)), coeffs, 5)
  expected = p @ np.asarray(mj.newton_schulz(jnp.asarray(x), coeffs, 5), np.complex128) @ q
  np.testing.assert_allclose(np.asarray(rotated), expected, atol=2e-5)


@pytest.mark.parametrize("normalization", ["frobenius", "spectral", "aol"])
@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_matches_optax_on_complex(normalization, shape):
  x = jnp.asarray(complex_normal(np.random.default_rng(3), shape))
  ref = optax_muon.orthogonalize_via_newton_schulz(
      x, jnp.asarray(KELLER), 5, normalization, 1e-8,
      optax_muon.MuonDimensionNumbers(0, 1))
  out = mj.newton_schulz(x, "keller", 5, normalization=normalization, eps=1e-8)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_schatten_normalization_on_complex_is_a_polar_approximation():
  # optax's Schatten step forms x @ x.T without the conjugate, so no parity;
  # check against the exact factor instead (polar-express table, 10 steps).
  x = complex_normal(np.random.default_rng(4), (5, 7))
  out = mj.newton_schulz(jnp.asarray(x), "polar_express", 10, normalization="schatten")
  np.testing.assert_allclose(np.asarray(out), exact_polar(x), atol=1e-4)


def test_real_compute_dtype_runs_complex_in_complex64():
  x = jnp.asarray(complex_normal(np.random.default_rng(5), (4, 6)))
  out = mj.newton_schulz(x, compute_dtype=jnp.bfloat16)
  assert out.dtype == jnp.complex64
  assert np.abs(np.asarray(out).imag).max() > 0.1  # imaginary part kept, not dropped
  np.testing.assert_allclose(np.asarray(out), np.asarray(mj.newton_schulz(x)), atol=1e-6)


def test_pallas_backend_refuses_complex():
  x = jnp.asarray(complex_normal(np.random.default_rng(6), (4, 6)))
  with pytest.raises(ValueError, match="pallas.*complex"):
    mj.newton_schulz(x, backend="pallas")


def test_complex_compute_dtype_for_real_input_is_an_error():
  with pytest.raises(ValueError, match="compute_dtype .*complex"):
    mj.newton_schulz(jnp.ones((3, 4)), compute_dtype=jnp.complex64)


# --- (b) optax's complex training test, side by side -------------------------------

TARGET_SQUARE = np.array([[1.0 + 2.0j, 0.0], [-1.0 + 1.0j, 1.0 - 3.0j]], np.complex64)
TARGET_WIDE = np.array([[1.0 + 2.0j, 0.0, 0.5j], [-1.0 + 1.0j, 1.0 - 3.0j, 2.0]], np.complex64)


TARGETS = {"square": TARGET_SQUARE, "wide": TARGET_WIDE, "tall": TARGET_WIDE.T}


def train(opt, targets, steps=1000):
  """optax's test loop on a tree of targets: conjugated gradients of sum |p - target|^2
  from zeros.

  Muon (ours with compat="optax", and optax's) acts on each 2-D leaf on its own
  (per-leaf momentum, per-leaf Newton–Schulz, no global norm), so every leaf of
  the tree follows the trajectory it would follow trained alone.
  """
  targets = jax.tree.map(jnp.asarray, targets)

  def loss(p):
    return sum(jnp.sum(jnp.square(jnp.abs(p[k] - targets[k]))) for k in targets)

  def step(carry, _):
    p, s = carry
    g = jax.tree.map(jnp.conj, jax.grad(loss)(p))
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), u

  p = jax.tree.map(jnp.zeros_like, targets)
  (p, _), updates = jax.lax.scan(step, (p, opt.init(p)), length=steps)
  return p, updates


@functools.lru_cache(maxsize=None)
def _trained():
  """Ours and optax's muon, with and without Nesterov, trained on the three targets:
  one compiled program for the twelve runs (compiling a 1000-step scan per run
  was most of this file's CPU time)."""
  opts = {(name, nesterov): opt
          for nesterov in (True, False)
          for name, opt in (("ours", mj.muon(1e-2, nesterov=nesterov, compat="optax")),
                            ("ref", optax.contrib.muon(1e-2, nesterov=nesterov)))}
  return jax.device_get(jax.jit(
      lambda: {key: train(opt, TARGETS) for key, opt in opts.items()})())


@pytest.mark.parametrize("target", ["square", "wide", "tall"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_trains_complex_like_optax(target, nesterov):
  runs = _trained()
  ours, our_updates = (x[target] for x in runs[("ours", nesterov)])
  ref, ref_updates = (x[target] for x in runs[("ref", nesterov)])
  assert np.isfinite(np.asarray(ours)).all()
  np.testing.assert_allclose(np.asarray(our_updates[:10]), np.asarray(ref_updates[:10]),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ours), TARGETS[target], rtol=3e-2, atol=3e-2)
  np.testing.assert_allclose(np.asarray(ref), TARGETS[target], rtol=3e-2, atol=3e-2)


def test_keller_muon_and_polar_muon_train_complex():
  # Keller's preset iterates in bfloat16; complex leaves run in complex64 instead.
  for opt in (mj.muon(1e-2), mj.polar_muon(1e-2)):
    params = {"w": jnp.zeros((2, 3), jnp.complex64)}
    state = opt.init(params)
    grads = {"w": jnp.asarray(TARGET_WIDE)}
    updates, _ = opt.update(grads, state, params)
    assert updates["w"].dtype == jnp.complex64
    assert np.isfinite(np.asarray(updates["w"])).all()
    assert np.abs(np.asarray(updates["w"]).imag).max() > 0


def test_svd_method_keeps_complex_under_a_real_compute_dtype():
  x = complex_normal(np.random.default_rng(8), (3, 5))
  ortho = mj.make_orthogonalizer("svd", compute_dtype=jnp.float32)
  np.testing.assert_allclose(np.asarray(ortho(jnp.asarray(x))), exact_polar(x), atol=1e-5)


def test_weight_decay_on_complex():
  w = jnp.asarray(np.array([[1 + 1j, 2j], [-1.0, 1 - 1j]], np.complex64))
  d = jnp.asarray(np.array([[1 + 1j, -2j], [0.5j, 1.0]], np.complex64))
  out, _ = mj.weight_decay(0.1).update(d, optax.EmptyState(), w)
  np.testing.assert_allclose(np.asarray(out), np.asarray(d + 0.1 * w), rtol=1e-6)
  # Cautious: decay where Re(D conj(W)) >= 0 (the step shrinks |W|).
  out, _ = mj.weight_decay(0.1, mode="cautious").update(d, optax.EmptyState(), w)
  mask = np.real(np.asarray(d) * np.conj(np.asarray(w))) >= 0
  np.testing.assert_allclose(np.asarray(out), np.asarray(d) + 0.1 * mask * np.asarray(w),
                             rtol=1e-6)
  assert not mask.all() and mask.any()


# --- (c) variants without a complex form refuse at init ---------------------------


@pytest.mark.parametrize("name,factory", [
    ("sign", lambda: mj.adamuon(1e-2)),
    ("normuon_normalize", lambda: mj.normuon(1e-2)),
    ("mano_normalize", lambda: mj.mano(1e-2)),
    ("precondition_input", lambda: mj.newton_muon(1e-2)),
    ("gower_optimizer", lambda: mj.muon_adam(1e-2)),
    ("gower_optimizer", lambda: mj.momo(1e-2)),
])
def test_variants_without_complex_form_raise_at_init(name, factory):
  params = {"layer": {"kernel": jnp.zeros((4, 4), jnp.complex64)},
            "bias": jnp.zeros((4,), jnp.float32)}
  with pytest.raises(ValueError, match=rf"{name}.*complex.*\['layer'\]\['kernel'\]"):
    factory().init(params)


@pytest.mark.parametrize("stage", [
    lambda: mj.adamuon_normalize(), lambda: mj.normuon_normalize(), lambda: mj.sign(),
    lambda: mj.mano_normalize(), lambda: mj.precondition_input()])
def test_stages_without_complex_form_raise_at_init(stage):
  with pytest.raises(ValueError, match=r"complex.*\['w'\]"):
    stage().init({"w": jnp.zeros((3, 5), jnp.complex64)})


# --- Scion's LMOs on complex leaves -------------------------------------------------


def test_scion_lmos_on_complex_leaves_use_moduli():
  rng = np.random.default_rng(7)
  d = complex_normal(rng, (4, 6))
  v = complex_normal(rng, (6,))
  mod2 = np.abs(d) ** 2
  expected = {
      "spectral": np.asarray(mj.newton_schulz(jnp.asarray(d))) * np.sqrt(6 / 4),
      "sign": (d / np.abs(d)) / 4,
      "colnorm": d / (np.sqrt(mod2.sum(-1, keepdims=True)) / np.sqrt(6) + 1e-8),
      "rownorm": d / (np.sqrt(mod2.sum(-2, keepdims=True)) * np.sqrt(4) + 1e-8),
  }
  for kind, ref in expected.items():
    out = mj.LMO(kind).apply(jnp.asarray(d))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6, err_msg=kind)
  out = mj.LMO("bias_rms").apply(jnp.asarray(v))
  np.testing.assert_allclose(np.asarray(out), v / (np.sqrt(np.mean(np.abs(v) ** 2)) + 1e-8),
                             rtol=1e-5)
