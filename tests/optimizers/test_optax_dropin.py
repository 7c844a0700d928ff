"""``mj.muon(..., compat="optax")`` as a drop-in for ``optax.contrib.muon`` (optax 0.2.8).

Every keyword of ``optax.contrib.muon`` is varied alone from its default and the
updates of both optimizers are compared over 3 steps (1e-5 relative per leaf),
jitted and eager. The tree has 2-D float32 leaves, a 1-D bias (AdamW branch) and a
3-D leaf routed by ``muon_weight_dimension_numbers`` (batch axis 0). The
``adaptive`` and ``consistent_rms`` stages are also checked against NumPy
(docs/optimizers.md#optax-compatibility: ``adaptive`` scales by ``⟨μ̂, O⟩``, ``consistent_rms=r`` by
``r·sqrt(max(fan_in, fan_out))``).
"""

from __future__ import annotations

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import muonjax as mj
from muonjax import MuonDimensionNumbers as DN

import helpers

SHAPES = {"w1": (8, 16), "w2": (16, 8), "bias": (8,), "stack": (3, 6, 10)}
DIMS = {"w1": DN(), "w2": DN(), "bias": None, "stack": DN(1, 2)}
LR = 0.02
STEPS = 3


def params_and_grads():
  params = {k: jnp.asarray(v) for k, v in helpers.random_tree(0, SHAPES).items()}
  grads = [{k: jnp.asarray(v) for k, v in helpers.random_tree(100 + t, SHAPES).items()}
           for t in range(STEPS)]
  return params, grads


def decay_2d(tree):
  return jax.tree.map(lambda x: x.ndim == 2, tree)


DION3 = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (2.8366, -3.0525, 1.2012))

# One entry per keyword of optax.contrib.muon (0.2.8) except learning_rate and
# muon_weight_dimension_numbers, which every case passes.
CASES = [
    ("defaults", {}),
    ("ns_coeffs_dion", dict(ns_coeffs="dion")),
    ("ns_coeffs_standard", dict(ns_coeffs="standard")),
    ("ns_coeffs_triple", dict(ns_coeffs=(3.0, -3.2, 1.2))),
    ("ns_coeffs_table", dict(ns_coeffs=DION3)),
    ("ns_steps", dict(ns_steps=3)),
    ("beta", dict(beta=0.9)),
    ("eps", dict(eps=1e-3)),
    ("weight_decay", dict(weight_decay=0.1)),
    ("weight_decay_mask", dict(weight_decay=0.1, weight_decay_mask=decay_2d)),
    ("mu_dtype", dict(mu_dtype=jnp.bfloat16)),
    ("nesterov", dict(nesterov=False)),
    ("adaptive", dict(adaptive=True)),
    ("preconditioning_spectral", dict(preconditioning="spectral")),
    ("preconditioning_aol", dict(preconditioning="aol")),
    ("preconditioning_schatten", dict(preconditioning="schatten")),
    ("adam_b1", dict(adam_b1=0.8)),
    ("adam_b2", dict(adam_b2=0.95)),
    ("adam_eps_root", dict(adam_eps_root=1e-3)),
    ("adam_weight_decay", dict(adam_weight_decay=0.1)),
    ("adam_learning_rate", dict(adam_learning_rate=0.005)),
    ("consistent_rms", dict(consistent_rms=0.2)),
]


@functools.lru_cache(maxsize=None)
def _pair(name):
  kwargs = dict(dict(CASES)[name], muon_weight_dimension_numbers=DIMS)
  return (mj.muon(LR, compat="optax", **kwargs), optax.contrib.muon(LR, **kwargs))


def test_cases_cover_every_optax_keyword():
  names = set(inspect.signature(optax.contrib.muon).parameters) - {"learning_rate"}
  covered = {"muon_weight_dimension_numbers"}.union(*(set(kw) for _, kw in CASES))
  assert names <= covered, sorted(names - covered)
  # and mj.muon takes each of them by the same name
  assert names <= set(inspect.signature(mj.muon).parameters)


# Eager execution runs the same arithmetic op by op: a few cases that exercise each
# code path (plain, a coefficient table, the dual-norm stage, a bf16 buffer) suffice
# there; every case runs jitted.
EAGER_CASES = ("defaults", "ns_coeffs_table", "adaptive", "mu_dtype")


class DropInTest(chex.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*[dict(testcase_name=n, name=n) for n, _ in CASES])
  def test_matches_optax_contrib_muon(self, name):
    self._compare(name)

  @chex.variants(without_jit=True)
  @parameterized.named_parameters(*[dict(testcase_name=n, name=n) for n in EAGER_CASES])
  def test_matches_optax_contrib_muon_eager(self, name):
    self._compare(name)

  def _compare(self, name):
    ours, ref = _pair(name)
    params, grads = params_and_grads()
    a = helpers.run_steps(ours, params, grads, self.variant(ours.update))
    b = helpers.run_steps(ref, params, grads, self.variant(ref.update))
    for t in range(STEPS):
      helpers.assert_leaves_rel_close(a.updates[t], b.updates[t], 1e-5, f"{name} step {t}")


def test_optax_names_without_compat_mean_the_same():
  params, grads = params_and_grads()
  pairs = [
      (mj.muon(LR, ns_steps=3, dimension_numbers=DIMS), mj.muon(LR, steps=3, dimension_numbers=DIMS)),
      (mj.muon(LR, ns_coeffs="dion", muon_weight_dimension_numbers=DIMS),
       mj.muon(LR, coeffs="dion", steps=5, dimension_numbers=DIMS)),
      (mj.muon(LR, preconditioning="schatten", dimension_numbers=DIMS),
       mj.muon(LR, normalization="schatten", dimension_numbers=DIMS)),
      (mj.muon(LR, consistent_rms=0.3, dimension_numbers=DIMS),
       mj.muon(LR, shape_rule="rms_match", rms=0.3, dimension_numbers=DIMS)),
  ]
  # Same initial state and the same traced program (equations and captured constants)
  # give bit-identical updates, with no compilation of the (identical) programs.
  for a, b in pairs:
    sa, sb = a.init(params), b.init(params)
    chex.assert_trees_all_equal(sa, sb)
    ja = jax.make_jaxpr(a.update)(grads[0], sa, params)
    jb = jax.make_jaxpr(b.update)(grads[0], sb, params)
    assert str(ja) == str(jb)
    assert len(ja.consts) == len(jb.consts)
    for ca, cb in zip(ja.consts, jb.consts):
      np.testing.assert_array_equal(np.asarray(ca), np.asarray(cb))


@pytest.mark.parametrize("kwargs, names", [
    (dict(ns_steps=3, steps=3), ("ns_steps", "steps")),
    (dict(ns_coeffs="dion", coeffs="dion"), ("ns_coeffs", "coeffs")),
    (dict(preconditioning="aol", normalization="schatten"), ("preconditioning", "normalization")),
    (dict(muon_weight_dimension_numbers=DIMS, dimension_numbers=DIMS),
     ("muon_weight_dimension_numbers", "dimension_numbers")),
    (dict(ns_coeffs=DION3 + DION3, ns_steps=5), ("ns_coeffs", "ns_steps")),
])
def test_optax_name_with_its_muonjax_twin_is_an_error(kwargs, names):
  with pytest.raises(ValueError) as e:
    mj.muon(LR, compat="optax", **kwargs)
  for n in names:
    assert n in str(e.value)


def test_registry_takes_optax_names():
  tx = mj.get_optimizer("muon", learning_rate=LR, compat="optax", ns_steps=3, adaptive=True,
                        consistent_rms=0.2, muon_weight_dimension_numbers=DIMS)
  params, grads = params_and_grads()
  helpers.run_steps(tx, params, grads[:1], jax.jit(tx.update))


def test_dual_norm_stage_is_nuclear_norm_times_polar_factor():
  # With the exact polar factor, <U, polar(U)> = ||U||_* (sum of singular values).
  rng = np.random.default_rng(3)
  u = {"a": rng.standard_normal((5, 9)).astype(np.float32),
       "s": rng.standard_normal((2, 4, 3)).astype(np.float32)}
  dims = {"a": DN(), "s": DN(1, 2)}
  tx = mj.scale_by_dual_norm(mj.orthogonalize("svd", dimension_numbers=dims),
                             dimension_numbers=dims)
  out, _ = tx.update(jax.tree.map(jnp.asarray, u), tx.init(u))
  for k in u:
    x = np.asarray(u[k], np.float64).reshape((-1,) + u[k].shape[-2:])
    svd = [np.linalg.svd(m, full_matrices=False) for m in x]
    polar = np.stack([p @ q for p, _, q in svd])
    nuclear = sum(s.sum() for _, s, _ in svd)  # whole leaf, batch included (optax)
    np.testing.assert_allclose(np.asarray(out[k]).reshape(polar.shape), nuclear * polar,
                               rtol=2e-4, atol=2e-5)


def test_consistent_rms_stage_factor():
  u = {"a": jnp.ones((4, 9)), "s": jnp.ones((2, 12, 3))}
  dims = {"a": DN(), "s": DN(1, 2)}
  out, _ = mj.scale_by_consistent_rms(0.2, dimension_numbers=dims).update(u, optax.EmptyState())
  np.testing.assert_allclose(np.asarray(out["a"]), 0.2 * np.sqrt(9.0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out["s"]), 0.2 * np.sqrt(12.0), rtol=1e-6)


ALIASES = [mj.muon, mj.polar_muon, mj.normuon, mj.adamuon, mj.newton_muon]


@pytest.mark.parametrize("alias", ALIASES, ids=lambda f: f.__name__)
def test_every_alias_takes_adaptive_and_consistent_rms(alias):
  params, grads = params_and_grads()
  base = alias(dimension_numbers=DIMS)
  tx = alias(dimension_numbers=DIMS, adaptive=True, consistent_rms=0.2)
  u0 = helpers.run_steps(base, params, grads[:1], jax.jit(base.update)).updates[0]
  u1 = helpers.run_steps(tx, params, grads[:1], jax.jit(tx.update)).updates[0]
  for k in ("w1", "w2", "stack"):
    assert np.all(np.isfinite(np.asarray(u1[k])))
    assert not np.allclose(np.asarray(u0[k]), np.asarray(u1[k]))
  np.testing.assert_array_equal(np.asarray(u0["bias"]), np.asarray(u1["bias"]))


def test_mano_rejects_adaptive_without_orthogonalization():
  with pytest.raises(ValueError, match="adaptive"):
    mj.mano(adaptive=True)
