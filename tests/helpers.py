"""Test utilities shared by the test files, and the checks every optimizer alias must pass.

Utilities: random trees, tree conversions, a stepper that runs ``N`` steps of a
transformation from its zero state, and a relative-closeness assert. Alias
checks (optimizers spec "common alias requirements"): training the
``muonjax.demo`` MLP, ``optax.inject_hyperparams`` driving the learning rate,
``nnx.Optimizer`` under ``nnx.jit``, bad hyperparameters, ``mj.get_optimizer``.

Each check asserts exactly what the calling test asks for (tolerances and
bounds are arguments); NumPy references live in ``references.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import demo

# --- trees --------------------------------------------------------------------

# (in, out) with in < out, in > out, and a stacked (L, in, out) leaf.
REFERENCE_SHAPES = {"wide": (3, 7), "tall": (7, 3), "stack": (2, 6, 4)}


def random_tree(rng, shapes, scale=1.0):
  """``{name: scale * N(0, 1)}`` in float32; ``rng`` is a Generator or a seed."""
  rng = np.random.default_rng(rng)
  return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def matrix_and_bias(rng, random_w=False):
  """Params ``{"w": (4, 6), "b": (6,)}`` (``w`` zero, or N(0, 1) drawn first) and a
  gradient (``w`` drawn from ``rng``, ``b`` ones): a Muon leaf and an AdamW leaf."""
  w = jnp.asarray(rng.standard_normal((4, 6)), jnp.float32) if random_w else jnp.zeros((4, 6))
  params = {"w": w, "b": jnp.zeros((6,))}
  grads = {"w": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32), "b": jnp.ones((6,))}
  return params, grads


def to_jax(tree):
  return jax.tree.map(jnp.asarray, tree)


def to_f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def as_stack(x):
  """A 2-D matrix as a stack of one; stacks unchanged."""
  return x.reshape((1,) + x.shape) if x.ndim == 2 else x


def states_of(state, cls):
  """Every sub-state of type ``cls`` inside an optax state, in tree order."""
  return [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls))
          if isinstance(s, cls)]


# --- asserts --------------------------------------------------------------------


def assert_close(actual, expected, rtol=1e-4, floor=1e-1):
  """``rtol`` relative, plus an atol of ``rtol * floor`` x the largest expected entry.

  The absolute floor covers entries near zero, whose relative error is large
  even when the whole array agrees to ``rtol`` of its scale. ``actual`` is
  compared in float64, reshaped to ``expected``'s shape (a matrix against a
  stack of one).
  """
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual, np.float64).reshape(expected.shape), expected,
                             rtol=rtol, atol=rtol * floor * np.max(np.abs(expected)))


def assert_leaves_rel_close(actual, expected, rtol, what=""):
  """Per leaf of a dict: max |a - e| <= rtol * max |e| (relative to the leaf's scale)."""
  for k in expected:
    e = np.asarray(expected[k], np.float64)
    a = np.asarray(actual[k], np.float64)
    scale = max(np.max(np.abs(e)), 1e-30)
    err = np.max(np.abs(a - e))
    assert err <= rtol * scale, (f"{what + ' ' if what else ''}leaf {k}: max err {err:.3g} > "
                                 f"{rtol} * {scale:.3g}")


# --- stepping -----------------------------------------------------------------


class Steps(NamedTuple):
  updates: list  # the update of every step
  state: Any  # the state after the last step
  params: list  # the parameters before every step, then the final parameters


def run_steps(tx, params, grads, update=None, extra_args=None):
  """``len(grads)`` steps of ``tx`` from ``tx.init(params)``, applying every update.

  ``update`` replaces ``tx.update`` (e.g. ``jax.jit(tx.update)`` or a chex
  variant); ``extra_args`` are keyword arguments of every update call, one
  mapping for all steps or a sequence with one per step.
  """
  update = tx.update if update is None else update
  state = tx.init(params)
  trajectory, updates = [params], []
  for t, g in enumerate(grads):
    kwargs = extra_args[t] if isinstance(extra_args, (list, tuple)) else (extra_args or {})
    u, state = update(g, state, params, **kwargs)
    params = optax.apply_updates(params, u)
    updates.append(u)
    trajectory.append(params)
  return Steps(updates, state, trajectory)


# --- common alias requirements -------------------------------------------------

DEMO_CFG = demo.DemoConfig(steps=100, batch=64, hidden=32)


def check_trains_mlp(tx, factor=1.0, cfg=DEMO_CFG, train=demo.train):
  """``train(cfg, tx)`` gives finite losses, the last 10 below ``factor`` x the first."""
  losses = np.asarray(train(cfg, tx))
  assert np.all(np.isfinite(losses))
  assert losses[-10:].mean() < factor * losses[0]
  return losses


def nnx_optimizer_losses(tx, *, model=None, x=None, y=None, steps=4, pass_value=False):
  """Losses of ``steps`` ``nnx.Optimizer`` updates under ``nnx.jit`` (MSE on one batch).

  Defaults: ``demo.MLP(8, 16, 4)`` on a fixed random batch of 32. ``pass_value``
  hands the loss to the update as ``value=`` (Momo needs it).
  """
  model = demo.MLP(8, 16, 4, rngs=nnx.Rngs(0)) if model is None else model
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (32, 8)) if x is None else x
  y = jax.random.normal(jax.random.key(2), (32, 4)) if y is None else y

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads, **(dict(value=loss) if pass_value else {}))
    return loss

  return [float(step(model, optimizer)) for _ in range(steps)]


def check_nnx_optimizer(tx, *, strictly_decreasing=False, **kwargs):
  """The last loss is below the first (every loss below the previous one if asked)."""
  losses = nnx_optimizer_losses(tx, **kwargs)
  if strictly_decreasing:
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
  else:
    assert losses[-1] < losses[0]
  return losses


def through_wrapper(alias, **kwargs):
  """``alias`` behind a factory of the learning rate alone, as user code wraps it.

  ``optax.inject_hyperparams`` then cannot see the alias's own keyword arguments,
  so the alias itself must accept the traced learning rate.
  """
  def factory(learning_rate):
    return alias(learning_rate, **kwargs)
  return factory


def check_injected_lr(tx, plain, params, grads, *, lr, scaled, unscaled=(), check_initial=True,
                      jit_plain=False, plain_tol=None, tol=None, **update_kwargs):
  """``tx`` is ``plain`` under ``optax.inject_hyperparams`` with ``learning_rate=lr``.

  At ``lr`` the update equals ``plain``'s (``plain_tol``); with the injected rate
  doubled the ``scaled`` leaves double and the ``unscaled`` ones (their own
  rate, e.g. AdamW's) stay (``tol``). Tolerances default to chex's (rtol 1e-6).
  Returns the updates at ``lr`` and at ``2 lr``.
  """
  state = tx.init(params)
  if check_initial:
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(lr)
  update = jax.jit(tx.update)
  u1, _ = update(grads, state, params, **update_kwargs)
  state.hyperparams["learning_rate"] = jnp.asarray(2 * lr)
  u2, _ = update(grads, state, params, **update_kwargs)
  plain_update = jax.jit(plain.update) if jit_plain else plain.update
  u0, _ = plain_update(grads, plain.init(params), params, **update_kwargs)
  chex.assert_trees_all_close(u1, u0, **(plain_tol or {}))
  for k in scaled:
    chex.assert_trees_all_close(u2[k], 2 * u1[k], **(tol or {}))
  for k in unscaled:
    chex.assert_trees_all_close(u2[k], u1[k], **(tol or {}))
  return u1, u2


def check_bad_argument(factory, kwargs, match):
  """``factory(**kwargs)`` raises a ValueError whose message matches ``match``."""
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


def check_registry(name, params, grads, /, *, hyperparameters=(), jit=False, update_kwargs=None,
                   **kwargs):
  """``mj.OPTIMIZERS[name]`` is ``mj.<name>``, ``mj.get_optimizer(name, **kwargs)``
  updates like ``mj.<name>(**kwargs)``, and ``hyperparameters`` are listed."""
  factory = getattr(mj, name)
  assert mj.OPTIMIZERS[name] is factory
  tx = mj.get_optimizer(name, **kwargs)
  direct = factory(**kwargs)
  update = (lambda t: jax.jit(t.update)) if jit else (lambda t: t.update)
  u1, _ = update(tx)(grads, tx.init(params), params, **(update_kwargs or {}))
  u2, _ = update(direct)(grads, direct.init(params), params, **(update_kwargs or {}))
  chex.assert_trees_all_close(u1, u2)
  for hp in hyperparameters:
    assert hp in mj.hyperparameters(factory)


# ----------------------------------------------------------------------------- models and engine


def assert_causal(forward, x, logits, vocab_size, positions):
  """Changing token t+1 leaves the logits at positions <= t unchanged and changes position t+1.

  ``forward(tokens) -> logits``; ``logits`` is ``forward(x)``.
  """
  for t in positions:
    changed = x.at[:, t + 1].set((x[:, t + 1] + 1) % vocab_size)
    other = forward(changed)
    np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-6)
    assert not np.allclose(other[:, t + 1], logits[:, t + 1])


def persistent_compilation_cache(path: str):
  """Generator for a module fixture: JAX's persistent compilation cache in ``path``, so
  repeated runs of one program (straight, interrupted, resumed) compile it once; the
  previous settings come back afterwards."""
  from jax.experimental.compilation_cache import compilation_cache
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  previous = {n: getattr(jax.config, n) for n in names}
  compilation_cache.reset_cache()
  for name, value in zip(names, (path, 0.0, 0)):
    jax.config.update(name, value)
  yield path
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def write_word_corpus(path, words, seed: int, lines: int = 3000) -> str:
  """A deterministic text file of random lines of ``words`` (~40 KB); returns its path."""
  rng = np.random.RandomState(seed)
  text = [" ".join(rng.choice(words, size=rng.randint(3, 12))) for _ in range(lines)]
  path.write_text("\n".join(text))
  return str(path)


def load_experiment(name: str):
  """``experiments/<name>.py`` imported as a module (registered in ``sys.modules``:
  the script's dataclasses look their module up there)."""
  import importlib.util
  import os
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(root, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module
