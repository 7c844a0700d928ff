"""Tests of parameter routing (docs/optimizers.md#routing, #pitfalls) on dict trees and Flax NNX models."""

from __future__ import annotations

import functools
import re

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import MuonDimensionNumbers as DN

import references

HYP = hypothesis.settings(max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=list(hypothesis.HealthCheck))


def _key_name(k):  # one key of a path, as muonjax.routing.path_names names it
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flat(tree):
  """``{'a/b/c': leaf}`` with ``None`` and MuonDimensionNumbers kept as leaves."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: x is None or isinstance(x, (DN, nnx.Variable)))[0]
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def z(*shape):
  return jnp.zeros(shape, jnp.float32)


def dict_tree():
  return {
      "embed": {"embedding": z(50, 8)},
      "wte": z(50, 8),
      "lm_head": {"kernel": z(8, 50)},
      "head": z(8, 10),
      "hidden": {"kernel": z(8, 16), "bias": z(16)},
      "norm": {"scale": z(16)},
      "scalar": z(),
      "stacked": {"kernel": z(3, 8, 16)},
      "moe": {"experts": z(3, 4, 8, 16), "router": {"kernel": z(8, 4)}},
  }


EXPECTED_DEFAULT = {
    "embed/embedding": None,
    "wte": None,
    "lm_head/kernel": None,
    "head": None,
    "hidden/kernel": DN(0, 1),
    "hidden/bias": None,
    "norm/scale": None,
    "scalar": None,
    "stacked/kernel": DN(1, 2),
    "moe/experts": DN(2, 3),
    "moe/router/kernel": None,
}


def same_dn(a, b):
  """MuonDimensionNumbers equality up to int-vs-tuple axis spelling."""
  if a is None or b is None:
    return a is b
  norm = lambda ax: (ax,) if isinstance(ax, int) else tuple(ax)
  return (norm(a.reduction_axis), norm(a.output_axis)) == (norm(b.reduction_axis),
                                                           norm(b.output_axis))


def assert_dims(got, expected):
  got = flat(got)
  assert set(got) == set(expected), (sorted(got), sorted(expected))
  bad = {k: (got[k], expected[k]) for k in expected if not same_dn(got[k], expected[k])}
  assert not bad, bad


# --------------------------------------------------------------------------------------
# Dict trees
# --------------------------------------------------------------------------------------


def test_default_routing_dict_tree():
  dims = mj.muon_dimension_numbers(dict_tree())
  assert_dims(dims, EXPECTED_DEFAULT)
  # The actual axis values the library returns (per matrix for stacks).
  f = flat(dims)
  assert (f["stacked/kernel"].reduction_axis, f["stacked/kernel"].output_axis) == (1, 2)
  assert (f["moe/experts"].reduction_axis, f["moe/experts"].output_axis) == (2, 3)
  assert (f["hidden/kernel"].reduction_axis, f["hidden/kernel"].output_axis) == (0, 1)


def test_label_params_dict_tree():
  labels = flat(mj.label_params(dict_tree()))
  expected = {k: ("adam" if v is None else "muon") for k, v in EXPECTED_DEFAULT.items()}
  assert labels == expected


def test_router_to_muon():
  dims = flat(mj.muon_dimension_numbers(dict_tree(), router_to_muon=True))
  assert same_dn(dims["moe/router/kernel"], DN(0, 1))
  # Embeddings and heads are unaffected by the router flag.
  assert dims["wte"] is None and dims["lm_head/kernel"] is None


def test_overrides_beat_defaults_first_match_wins():
  overrides = {
      r"^hidden/kernel$": "adam",
      r"hidden/k": "muon",  # never reached for hidden/kernel: the first match wins
      r"lm_head": "muon",
      r"^wte$": DN(reduction_axis=1, output_axis=0),
      r"stacked": None,
      r"norm/scale": "adam",
  }
  dims = flat(mj.muon_dimension_numbers(dict_tree(), overrides=overrides))
  assert dims["hidden/kernel"] is None
  assert same_dn(dims["lm_head/kernel"], DN(0, 1))
  assert same_dn(dims["wte"], DN(1, 0))
  assert dims["stacked/kernel"] is None
  assert dims["norm/scale"] is None
  # Untouched leaves keep the default rule.
  assert same_dn(dims["moe/experts"], DN(2, 3))
  assert dims["embed/embedding"] is None

  # Order matters: swapping the two hidden patterns flips the result.
  dims = flat(mj.muon_dimension_numbers(
      dict_tree(), overrides={r"hidden/k": "adam", r"^hidden/kernel$": "muon"}))
  assert dims["hidden/kernel"] is None
  dims = flat(mj.muon_dimension_numbers(
      dict_tree(), overrides={r"^hidden/kernel$": "muon", r"hidden/k": "adam"}))
  assert same_dn(dims["hidden/kernel"], DN(0, 1))


def test_bad_override_value_names_path():
  with pytest.raises(ValueError, match=re.escape("hidden/kernel")):
    mj.muon_dimension_numbers(dict_tree(), overrides={r"^hidden/kernel$": "sgd"})


def test_override_rank1_to_muon_is_an_error():
  with pytest.raises(ValueError, match=re.escape("hidden/bias")):
    mj.muon_dimension_numbers(dict_tree(), overrides={r"hidden/bias": "muon"})


def test_attention_module_named_multi_head_goes_to_muon():
  tree = {"multi_head_attention": {"query": {"kernel": z(8, 8)}}}
  assert same_dn(flat(mj.muon_dimension_numbers(tree))["multi_head_attention/query/kernel"],
                 DN(0, 1))


NEUTRAL_NAMES = ["mlp", "proj", "fc1", "kernel", "w", "attn", "q"]
ADAM_NAMES = ["embed", "embedding", "wte", "lm_head", "head", "router"]


@HYP
@hypothesis.given(
    names=st.lists(st.sampled_from(NEUTRAL_NAMES + ADAM_NAMES), min_size=1, max_size=3),
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=4),
)
def test_default_rule_property(names, shape):
  tree = {}
  node = tree
  for n in names[:-1]:
    node = node.setdefault(n, {})
  node[names[-1]] = z(*shape)
  got = list(flat(mj.muon_dimension_numbers(tree)).values())[0]
  ndim = len(shape)
  if ndim < 2 or any(n in ADAM_NAMES for n in names):
    assert got is None
  else:
    assert same_dn(got, DN(ndim - 2, ndim - 1))


# --------------------------------------------------------------------------------------
# optax labelling
# --------------------------------------------------------------------------------------


def test_optax_dimension_numbers():
  dims = mj.optax_dimension_numbers(dict_tree())
  expected = {
      "embed/embedding": DN(0, 1),  # optax sends embeddings and heads to Muon
      "wte": DN(0, 1),
      "lm_head/kernel": DN(0, 1),
      "head": DN(0, 1),
      "hidden/kernel": DN(0, 1),
      "hidden/bias": None,
      "norm/scale": None,
      "scalar": None,
      "stacked/kernel": None,  # optax sends rank-3 stacks to Adam, silently
      "moe/experts": None,
      "moe/router/kernel": DN(0, 1),
  }
  assert_dims(dims, expected)


def test_dims_tree_usable_by_optax_contrib_muon():
  """mj's dims tree works as optax's muon_weight_dimension_numbers (per-matrix stacks)."""
  rng = np.random.default_rng(0)
  params = {"hidden": {"kernel": jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)},
            "stacked": {"kernel": jnp.asarray(rng.standard_normal((3, 4, 8)), jnp.float32)},
            "bias": jnp.zeros((8,))}
  grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
  dims = mj.muon_dimension_numbers(params)
  tx = optax.contrib.muon(0.1, muon_weight_dimension_numbers=dims)
  upd, _ = tx.update(grads, tx.init(params), params)
  # optax's t = 1 direction is ∝ G; Keller NS with optax's eps 1e-8; scale sqrt(8/4); lr 0.1.
  ns = functools.partial(references.newton_schulz, eps=1e-8)
  scale = np.sqrt(2.0)
  chex.assert_trees_all_close(upd["stacked"]["kernel"],
                              np.stack([-0.1 * scale * ns(m) for m in grads["stacked"]["kernel"]]),
                              atol=5e-6)
  chex.assert_trees_all_close(upd["hidden"]["kernel"], -0.1 * scale * ns(grads["hidden"]["kernel"]),
                              atol=5e-6)


# --------------------------------------------------------------------------------------
# Flax NNX models
# --------------------------------------------------------------------------------------


class TinyModel(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.embed = nnx.Embed(20, 8, rngs=rngs)
    self.fc1 = nnx.Linear(8, 16, rngs=rngs)
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.fc2 = nnx.Linear(16, 8, rngs=rngs)
    self.rms = nnx.RMSNorm(8, rngs=rngs)
    # Metadata overrides the name/shape rules in both directions.
    self.conv_like = nnx.Param(jnp.zeros((3, 3, 4, 8)),
                               muon=DN(reduction_axis=(0, 1, 2), output_axis=3))
    self.frozen_matrix = nnx.Param(jnp.zeros((8, 8)), muon=False)
    self.head = nnx.Param(jnp.zeros((8, 20)), muon=True)  # 'head' name, forced to Muon
    self.mixer = nnx.Param(jnp.zeros((4, 8, 16)))  # no metadata: stacked default

  def __call__(self, x):
    h = self.fc2(jax.nn.relu(self.norm(self.fc1(self.embed(x)))))
    return self.rms(h) @ self.head[...]


EXPECTED_NNX = {
    "embed/embedding": None,
    "fc1/kernel": DN(0, 1),
    "fc1/bias": None,
    "norm/scale": None,
    "norm/bias": None,
    "fc2/kernel": DN(0, 1),
    "fc2/bias": None,
    "rms/scale": None,
    "conv_like": DN((0, 1, 2), 3),
    "frozen_matrix": None,
    "head": DN(0, 1),
    "mixer": DN(1, 2),
}


def test_nnx_module_routing():
  model = TinyModel(nnx.Rngs(0))
  assert_dims(mj.muon_dimension_numbers(model), EXPECTED_NNX)


def test_nnx_state_routing():
  model = TinyModel(nnx.Rngs(0))
  assert_dims(mj.muon_dimension_numbers(nnx.state(model, nnx.Param)), EXPECTED_NNX)


def test_nnx_label_params():
  model = TinyModel(nnx.Rngs(0))
  expected = {k: ("adam" if v is None else "muon") for k, v in EXPECTED_NNX.items()}
  for tree in (model, nnx.state(model, nnx.Param)):
    labels = flat(mj.label_params(tree))
    labels = {k: (v.get_value() if isinstance(v, nnx.Variable) else v) for k, v in labels.items()}
    assert labels == expected


def test_nnx_overrides_beat_metadata():
  model = TinyModel(nnx.Rngs(0))
  dims = flat(mj.muon_dimension_numbers(
      model, overrides={r"^frozen_matrix$": "muon", r"^head$": "adam"}))
  assert same_dn(dims["frozen_matrix"], DN(0, 1))
  assert dims["head"] is None


def test_nnx_optax_dimension_numbers_ignores_metadata():
  model = TinyModel(nnx.Rngs(0))
  dims = flat(mj.optax_dimension_numbers(model))
  for k in ("embed/embedding", "fc1/kernel", "fc2/kernel", "frozen_matrix", "head"):
    assert same_dn(dims[k], DN(0, 1)), k
  for k in ("conv_like", "mixer", "fc1/bias", "norm/scale", "rms/scale"):
    assert dims[k] is None, k


def test_stacked_vectors_and_whole_component_names():
  """Stacked biases / norm scales (L, d) go to AdamW; names match whole components."""
  params = {
      "layers": {"attn": {"kernel": jnp.ones((3, 8, 8)), "bias": jnp.ones((3, 8))},
                 "norm": {"scale": jnp.ones((3, 8))}},
      "head_proj": {"kernel": jnp.ones((8, 8))},
      "token_embed": {"embedding": jnp.ones((16, 8))},
      "output_head": {"kernel": jnp.ones((8, 16))},
  }
  dims = mj.muon_dimension_numbers(params)
  assert dims["layers"]["attn"]["bias"] is None
  assert dims["layers"]["norm"]["scale"] is None
  assert dims["layers"]["attn"]["kernel"] == mj.MuonDimensionNumbers(1, 2)
  assert dims["head_proj"]["kernel"] == mj.MuonDimensionNumbers(0, 1)
  assert dims["token_embed"]["embedding"] is None
  assert dims["output_head"]["kernel"] is None
