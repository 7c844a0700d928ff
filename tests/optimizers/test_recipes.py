"""Official recipes: ``mj.adamuon(recipe="gpt2")`` and ``mj.newton_muon(recipe="gpt2")``
equal the alias with the recipe's values spelled out; explicit keywords override them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import muonjax as mj
from muonjax.optimizers.variants import RECIPES, matrices_only

import helpers

# A small GPT-like tree: embedding and head (AdamW), a norm scale and a bias (AdamW, 1-D),
# attention and MLP kernels (Muon), the up-projection (d, 4d) under mlp/up.
SHAPES = {"embed": (16, 8), "head": (8, 16), "norm": (8,), "bias": (8,)}


def tree(seed):
  raw = helpers.random_tree(seed, SHAPES)
  rng = np.random.default_rng(seed + 50)
  raw["blocks"] = {"attn": {"query": {"kernel": rng.standard_normal((8, 8)).astype(np.float32)}},
                   "mlp": {"up": {"kernel": rng.standard_normal((8, 32)).astype(np.float32)},
                           "down": {"kernel": rng.standard_normal((32, 8)).astype(np.float32)}}}
  return jax.tree.map(jnp.asarray, raw)


def run(tx, steps=2):
  params = tree(0)
  grads = [tree(10 + t) for t in range(steps)]
  return helpers.run_steps(tx, params, grads, jax.jit(tx.update)).updates


def assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


SPELLED = {
    "adamuon": dict(learning_rate=6e-4, weight_decay=0.1, adam_learning_rate=None, adam_b1=0.9,
                    adam_b2=0.95, adam_eps=1e-8, adam_weight_decay=0.1,
                    adam_weight_decay_mask=matrices_only),
    "newton_muon": dict(learning_rate=0.05, weight_decay=0.0, adam_learning_rate=0.008,
                        adam_b1=0.8, adam_b2=0.95, adam_eps=1e-10, adam_weight_decay=0.0,
                        shape_overrides={"(^|/)mlp/up(/|$)": 1.0}),
}


@pytest.mark.parametrize("name", ["adamuon", "newton_muon"])
def test_recipe_equals_values_spelled_out(name):
  alias = getattr(mj, name)
  assert RECIPES[name]["gpt2"] == SPELLED[name]
  assert_same(run(alias(recipe="gpt2")), run(alias(**SPELLED[name])))


@pytest.mark.parametrize("name", ["adamuon", "newton_muon"])
def test_explicit_keywords_override_the_recipe(name):
  alias = getattr(mj, name)
  a = run(alias(1e-3, recipe="gpt2", adam_b1=0.85))
  b = run(alias(**{**SPELLED[name], "learning_rate": 1e-3, "adam_b1": 0.85}))
  assert_same(a, b)
  # step 2 (Adam's first step is ±lr whatever b1): the override changed the AdamW leaves
  assert not np.allclose(np.asarray(a[1]["embed"]) / 1e-3,
                         np.asarray(run(alias(1e-3, recipe="gpt2"))[1]["embed"]) / 1e-3)


def test_recipe_through_registry_and_unknown_recipe():
  assert "recipe" in mj.get_spec("adamuon").hyperparameters
  assert "recipe" in mj.get_spec("newton_muon").hyperparameters
  assert_same(run(mj.get_optimizer("adamuon", recipe="gpt2")), run(mj.adamuon(recipe="gpt2")))
  with pytest.raises(ValueError, match="recipe"):
    mj.adamuon(recipe="llama")


def test_adamuon_gpt2_decays_embeddings_not_vectors():
  tx = mj.adamuon(recipe="gpt2")
  params = tree(0)
  zero = jax.tree.map(jnp.zeros_like, params)
  u = helpers.run_steps(tx, params, [zero], jax.jit(tx.update)).updates[0]
  # zero gradient: the AdamW direction is 0, only decay moves a leaf: -lr * wd * W
  np.testing.assert_allclose(np.asarray(u["embed"]), -6e-4 * 0.1 * np.asarray(params["embed"]),
                             rtol=1e-5, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(u["norm"]), 0.0)
  np.testing.assert_array_equal(np.asarray(u["bias"]), 0.0)


def test_newton_muon_gpt2_up_projection_scale_is_one():
  # Without activation statistics Newton-Muon is Muon; the override halves the up update.
  base = run(mj.newton_muon(**{**SPELLED["newton_muon"], "shape_overrides": None}), steps=1)[0]
  rec = run(mj.newton_muon(recipe="gpt2"), steps=1)[0]
  up = ("blocks", "mlp", "up", "kernel")
  get = lambda t: np.asarray(t[up[0]][up[1]][up[2]][up[3]])
  np.testing.assert_allclose(get(rec), get(base) / 2.0, rtol=1e-6)
  down = lambda t: np.asarray(t["blocks"]["mlp"]["down"]["kernel"])
  np.testing.assert_array_equal(down(rec), down(base))
