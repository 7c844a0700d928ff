"""One battery over every registered optimizer (as optax's ``_common_test.py`` does).

Registering an alias in ``muonjax.optimizers.registry.SPECS`` puts it under
every check here: jit and no-jit give the same updates, ``optax.inject_hyperparams``
of the learning rate equals the plain alias, ``nnx.Optimizer`` trains a model,
the state keeps its structure, shapes and dtypes through an update, bad
hyperparameters are a ``ValueError`` naming them, zero and huge gradients
give finite updates, and a non-finite gradient under ``optax.apply_if_finite``
is skipped with the state kept.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import helpers
import muonjax as mj
from muonjax.optimizers import registry

NAMES = sorted(registry.SPECS)
# Iteration counts and versions select code: they are static under inject_hyperparams.
STATIC = ("steps", "version")
# Exact float32 Newton–Schulz where the alias defaults to bfloat16, so jit/no-jit and
# injected/plain runs compare at float32 precision.
F32 = {"compute_dtype": None}


def kwargs_for(name):
  spec = registry.get_spec(name)
  return {k: v for k, v in F32.items() if k in spec.hyperparameters}


def make(name, learning_rate=1e-2, **extra):
  return mj.get_optimizer(name, learning_rate=learning_rate, **kwargs_for(name), **extra)


def tree(seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  shapes = {"embed": (11, 6), "w": (6, 8), "stack": (2, 8, 6), "b": (8,)}
  return {k: jnp.asarray(scale * rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}


def update_kwargs(name, loss=2.0):
  return {"value": jnp.asarray(loss, jnp.float32)} if registry.get_spec(name).needs_value else {}


@functools.lru_cache(maxsize=None)
def compiled(name):
  """The alias and its jitted update, compiled once per name for the whole battery
  (every check below calls it on the same shapes)."""
  tx = make(name)
  return tx, jax.jit(tx.update)


def run(tx, params, grads, name, steps=2, update=None):
  state = tx.init(params)
  update = update or tx.update
  outs = []
  for i in range(steps):
    u, state = update(jax.tree.map(lambda g: g * (1 + 0.5 * i), grads), state, params,
                      **update_kwargs(name))
    params = optax.apply_updates(params, u)
    outs.append(u)
  return outs, state


@pytest.mark.parametrize("name", NAMES)
class TestBattery:

  def test_jit_equals_no_jit(self, name):
    (tx, update), params, grads = compiled(name), tree(0), tree(1)
    plain, _ = run(tx, params, grads, name, steps=1)
    jitted, _ = run(tx, params, grads, name, steps=1, update=update)
    chex.assert_trees_all_close(jitted, plain, rtol=1e-4, atol=1e-6)  # float32 NS: XLA fusion reorders sums

  def test_state_keeps_structure_shapes_and_dtypes(self, name):
    (tx, update), params, grads = compiled(name), tree(0), tree(1)
    state = tx.init(params)
    _, new = update(grads, state, params, **update_kwargs(name))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    chex.assert_trees_all_equal_shapes_and_dtypes(new, state)

  def test_inject_hyperparams_learning_rate(self, name):
    spec = registry.get_spec(name)
    static = tuple(k for k in STATIC if k in spec.hyperparameters)
    kwargs = kwargs_for(name)
    injected = optax.inject_hyperparams(spec.factory, static_args=static)(
        learning_rate=1e-2, **kwargs)
    params, grads = tree(0), tree(1)
    got, state = run(injected, params, grads, name)
    want, _ = run(spec.factory(learning_rate=1e-2, **kwargs), params, grads, name)
    # float32 NS: XLA fusion reorders sums. MuonMax's polar step of a momentum scaled
    # by its own nuclear-norm estimate amplifies that rounding: the same chain
    # compiled twice (optimized or not) differs by up to 1.5e-5 in parameters of size ~1.
    atol = 3e-5 if name == "muon_max" else 1e-6
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=atol)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-2)

  def test_nnx_optimizer_trains(self, name):
    # The alias exactly as a user builds it: every default (MuonMax's global scale
    # makes 1e-2 too large a rate), bfloat16 Newton–Schulz included.
    tx = mj.get_optimizer(name)
    helpers.check_nnx_optimizer(tx, pass_value=registry.get_spec(name).needs_value)

  @pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf"), "a"])
  def test_bad_learning_rate_names_it(self, name, value):
    with pytest.raises(ValueError, match="learning_rate"):
      mj.get_optimizer(name, learning_rate=value)

  def test_unknown_hyperparameter_lists_the_allowed(self, name):
    with pytest.raises(ValueError, match="no hyperparameter 'not_a_knob'"):
      mj.get_optimizer(name, not_a_knob=1)

  @pytest.mark.parametrize("scale", [0.0, 1e30])
  def test_zero_and_huge_gradients_give_finite_updates(self, name, scale):
    (tx, update), params = compiled(name), tree(0)
    grads = jax.tree.map(lambda g: g * scale, tree(1))
    updates, _ = run(tx, params, grads, name, steps=2, update=update)
    for u in jax.tree.leaves(updates):
      assert bool(jnp.all(jnp.isfinite(u))), name

  def test_nonfinite_gradient_is_skipped_under_apply_if_finite(self, name):
    tx = optax.apply_if_finite(make(name), max_consecutive_errors=3)
    update = jax.jit(tx.update)
    params, grads = tree(0), tree(1)
    state = tx.init(params)
    _, state = update(grads, state, params, **update_kwargs(name))
    bad = dict(grads, w=grads["w"].at[0, 0].set(jnp.nan))
    updates, after = update(bad, state, params, **update_kwargs(name))
    for u in jax.tree.leaves(updates):
      assert not bool(jnp.any(u))  # the step is skipped...
    chex.assert_trees_all_equal(after.inner_state, state.inner_state)  # ...and the state kept
    assert int(after.notfinite_count) == 1


def test_the_battery_covers_the_whole_registry():
  assert set(NAMES) == set(mj.OPTIMIZERS) and len(NAMES) >= 11
