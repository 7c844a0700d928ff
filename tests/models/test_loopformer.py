"""Tests for muonjax.models.loopformer (docs/models.md#loopformer, #weight-shared-loops, #dropout-keys-in-shared-loops, #expected-behaviours).

The oracle is a NumPy float64 re-implementation of the docs/models.md#loopformer and #trajectories-and-loss equations
on the model's own parameters (``ref_hidden`` / ``ref_loss`` below); oracle tests
first draw O(1) random parameters (``randomize``), because at the reference init
the gates are ~1e-3 and the looped stack hardly shows in the output.
"""

import copy
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models import loopformer as lf
from muonjax.models.loopformer import LoopFormer, LoopFormerConfig

import helpers

# One canonical config: nnx.jit caches on the graph (the config included), so tests that
# share it share compiles. Structure-only tests build abstract models (nnx.eval_shape).
TINY = dict(vocab_size=64, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_seq_len=16,
            n_loops=4, dropout=0.1)
SEQ = 16


def build(**fields):
  # An "rbg" init key: the same init distribution, and on CPU its eager random draws compile
  # several times faster than threefry's (the model does not depend on the PRNG impl).
  return LoopFormer(LoopFormerConfig(**{**TINY, **fields}),
                    rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def abstract(**fields):
  config = LoopFormerConfig(**{**TINY, **fields})
  return nnx.eval_shape(lambda: LoopFormer(config, rngs=nnx.Rngs(0)))


def randomize(model, seed=0):
  """O(1) random parameters (same graph), so that every term of the equations shows in the output.

  At the reference init the gates are ~1e-3 and the stack barely moves the state.
  """
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
    noise = rng.standard_normal(x.shape)
    if name == "scale":
      new = 1.0 + 0.2 * noise
    elif name == "bias":
      new = 0.3 * noise
    else:
      new = noise / math.sqrt(x.shape[-2])
    return jnp.asarray(new, x.dtype)

  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree_util.tree_map_with_path(draw, params))
  return model


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, TINY["vocab_size"])


@nnx.jit(static_argnames=("unroll", "n_loops", "steps"))
def apply(model, x, key=None, unroll=False, n_loops=None, steps=None):
  """Jitted forward; ``steps`` is a static tuple (a concrete trajectory)."""
  return model(x, key=key, unroll=unroll, n_loops=n_loops, steps=steps)


TRACES = []


@nnx.jit
def apply_traced(model, x, steps):
  """Forward with a traced trajectory: one compile per trajectory length."""
  TRACES.append(steps.shape)
  return model(x, steps=steps)


def is_dn(x):
  return x is None or isinstance(x, mj.MuonDimensionNumbers)


# ----------------------------------------------------------------------------- NumPy oracle


def f64(x):
  return np.asarray(x[...] if isinstance(x, nnx.Variable) else x, np.float64)


def np_params(model):
  b = model.core.blocks
  emb = lambda e: [(f64(e.fc1.linear.kernel), f64(e.fc1.bias)),
                   (f64(e.fc2.linear.kernel), f64(e.fc2.bias))]
  layers = [dict(q=f64(b.attn.query.kernel)[i], k=f64(b.attn.key.kernel)[i],
                 v=f64(b.attn.value.kernel)[i], o=f64(b.attn.out.kernel)[i],
                 up=f64(b.mlp.up.kernel)[i], down=f64(b.mlp.down.kernel)[i],
                 ada_w=f64(b.adaln.linear.kernel)[i], ada_b=f64(b.adaln.bias)[i])
            for i in range(model.config.n_layers)]
  head = None if model.lm_head is None else f64(model.lm_head.kernel)  # None: tied to wte
  return dict(wte=f64(model.wte.embedding), wpe=f64(model.wpe.embedding),
              norm_f=f64(model.norm_f.scale), head=head, time=emb(model.core.time_embedder),
              step=emb(model.core.step_embedder), layers=layers)


def head(p):
  return p["wte"].T if p["head"] is None else p["head"]


def silu(x):
  return x / (1.0 + np.exp(-x))


def gelu_tanh(x):  # jax.nn.gelu's default (approximate=True)
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rms(x, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def timestep_embed(params, s, dim=256):
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
  feats = np.concatenate([np.cos(s * freqs), np.sin(s * freqs)])
  (w1, b1), (w2, b2) = params
  return silu(feats @ w1 + b1) @ w2 + b2


def attention(h, p, n_heads):
  batch, seq, d = h.shape
  split = lambda y: y.reshape(batch, seq, n_heads, d // n_heads)
  q, k, v = split(h @ p["q"]), split(h @ p["k"]), split(h @ p["v"])
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // n_heads)
  scores = np.where(np.tril(np.ones((seq, seq), bool)), scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, seq, d) @ p["o"]


def dropout_masks(key, n_steps, n_layers, shape, rate, freeze=False):
  """The model's key derivation (``LoopFormer.hidden``), each mask rescaled by 1/(1 − rate).

  ``freeze=True`` reuses loop 0's keys in every loop: the shared-loop dropout bug (docs/models.md#dropout-keys-in-shared-loops).
  """
  keep = 1.0 - rate
  mask = lambda k: np.asarray(jax.random.bernoulli(k, keep, shape), np.float64) / keep
  embed_key, loop_key = jax.random.split(key, 2)
  loop_keys = jax.random.split(loop_key, n_steps)
  masks = {"embed": mask(embed_key)}
  for i in range(n_steps):
    layer_keys = jax.random.split(loop_keys[0 if freeze else i], n_layers)
    for l in range(n_layers):
      attn_key, mlp_key = jax.random.split(layer_keys[l], 2)
      masks[i, l] = (mask(attn_key), mask(mlp_key))
  return masks


def ref_hidden(p, toks, steps, n_heads, masks=None, base_loop=False):
  """docs/models.md#loopformer from the equations; ``base_loop``: no conditioning (Base-Loop, docs/models.md#looped-transformer)."""
  toks = np.asarray(toks)
  x = p["wte"][toks] + p["wpe"][:toks.shape[-1]]
  if masks is not None:
    x = x * masks["embed"]
  t = 0.0
  for i, dt in enumerate(steps):
    c = timestep_embed(p["time"], t) + timestep_embed(p["step"], dt)
    for l, q in enumerate(p["layers"]):
      if base_loop:
        g_msa = g_mlp = 1.0
        s_msa = s_mlp = 0.0
      else:
        g_msa, g_mlp, s_msa, s_mlp = np.split(silu(c) @ q["ada_w"] + q["ada_b"], 4)
      m_attn, m_mlp = (1.0, 1.0) if masks is None else masks[i, l]
      x = x + g_msa * attention(rms(x) * (1 + s_msa), q, n_heads) * m_attn
      x = x + g_mlp * (gelu_tanh(rms(x) * (1 + s_mlp) @ q["up"]) @ q["down"]) * m_mlp
    t += dt
  return rms(x) * p["norm_f"]


def ref_ce(p, x, targets):
  logits = x @ head(p)
  top = logits.max(-1, keepdims=True)
  lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
  picked = np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
  return np.mean(lse - picked)


def ref_loss(p, inputs, targets, full, short, n_heads, masks_full=None, masks_short=None,
             anchor=None):
  """CE_L + 0.1·CE_S + 0.1·MSE(x_L, x_S), x after norm_f (docs/models.md#trajectories-and-loss).

  ``anchor``: the MSE target instead of x_L (x_L at fixed parameters: stop_grad for
  finite differences).
  """
  x_full = ref_hidden(p, inputs, full, n_heads, masks=masks_full)
  x_short = ref_hidden(p, inputs, short, n_heads, masks=masks_short)
  ce, ce_short = ref_ce(p, x_full, targets), ref_ce(p, x_short, targets)
  mse = np.mean(((x_full if anchor is None else anchor) - x_short) ** 2)
  return ce + 0.1 * ce_short + 0.1 * mse, dict(ce=ce, ce_short=ce_short, consistency=mse)


# ----------------------------------------------------------------------------- structure


def test_logits_shape_finite_and_causality():
  model = build()
  x = tokens()
  logits = apply(model, x)  # no key: evaluation, deterministic
  assert logits.shape == (2, SEQ, TINY["vocab_size"])
  assert np.all(np.isfinite(logits))
  np.testing.assert_array_equal(logits, apply(model, x))
  helpers.assert_causal(lambda tokens: apply(model, tokens), x, logits, TINY["vocab_size"], (0, 5, SEQ - 2))


def test_forward_matches_numpy_equations():
  model = randomize(build())
  x = tokens(4)
  p = np_params(model)
  got = apply(model, x)
  np.testing.assert_allclose(got, ref_hidden(p, x, [0.25] * 4, 2) @ head(p), rtol=1e-4,
                             atol=1e-4)
  got = apply_traced(model, x, jnp.array([0.5, 0.25, 0.25]))
  np.testing.assert_allclose(got, ref_hidden(p, x, [0.5, 0.25, 0.25], 2) @ head(p),
                             rtol=1e-4, atol=1e-4)


def test_untied_head_matches_numpy_equations():
  model = randomize(build(tie_embeddings=False), seed=1)
  assert model.lm_head.kernel.shape == (16, 64)
  x = tokens(5)
  p = np_params(model)
  np.testing.assert_allclose(apply(model, x), ref_hidden(p, x, [0.25] * 4, 2) @ head(p),
                             rtol=1e-4, atol=1e-4)


def test_shapes_and_no_rng_state():
  model = abstract(n_layers=3)
  b = model.core.blocks
  assert b.attn.query.kernel.shape == (3, 16, 16)
  assert b.mlp.up.kernel.shape == (3, 16, 32)
  assert b.adaln.linear.kernel.shape == (3, 16, 64)
  assert b.adaln.bias.shape == (3, 64)
  assert model.core.time_embedder.fc1.linear.kernel.shape == (256, 16)
  assert model.wpe.embedding.shape == (16, 16)
  assert model.lm_head is None  # tied by default (docs/models.md#loopformer)
  assert not jax.tree.leaves(nnx.state(model, nnx.RngState))  # keys come in at call time
  with pytest.raises(ValueError, match="max_seq_len"):
    build()(tokens(seq=SEQ + 1))


def test_reference_init_statistics():
  model = build()
  b = model.core.blocks
  std = lambda v: float(np.std(np.asarray(v[...])))
  for v in (model.wte.embedding, model.wpe.embedding, b.attn.query.kernel, b.mlp.up.kernel,
            b.adaln.linear.kernel, model.core.step_embedder.fc1.linear.kernel):
    assert abs(std(v) - 0.02) < 0.002
  for v in (b.attn.out.kernel, b.mlp.down.kernel):  # residual projections: 0.02/√(2k), k = 2
    assert abs(std(v) - 0.01) < 0.001
  for v in (b.adaln.bias, model.core.time_embedder.fc2.bias):
    assert not np.any(np.asarray(v[...]))
  zero = build(adaln_init="zero")
  assert not np.any(np.asarray(zero.core.blocks.adaln.linear.kernel[...]))


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("fields", [
    {},
    dict(tie_embeddings=False, n_layers=3),
    dict(adaln_init="zero", conditioning_to_muon=True, freq_dim=8),
    dict(d_model=32, n_heads=4, d_ff=48, vocab_size=100, max_seq_len=12),
])
def test_analytic_param_count(fields):
  model = abstract(**fields)
  assert models.param_count(model) == lf.loopformer_param_count(model.config)


def test_param_count_independent_of_loops():
  counts = {models.param_count(abstract(n_loops=n)) for n in (2, 4, 8)}
  assert len(counts) == 1
  assert {lf.loopformer_param_count(LoopFormerConfig(**{**TINY, "n_loops": n}))
          for n in (2, 4, 8, 64)} == counts
  assert models.param_count(build()) in counts


def test_published_config_param_count():
  c = lf.LOOPFORMER_3X8  # 3⊗8, d 2048, d_ff 5120, vocab 50304, block 1024 (docs/models.md#published-configuration)
  d = 2048
  block = 4 * d * d + 2 * d * 5120 + 4 * d * d + 4 * d
  embedders = 2 * (256 * d + d + d * d + d)
  expected = 50304 * d + 1024 * d + 3 * block + embedders + d
  assert lf.loopformer_param_count(c) == expected == 278_169_600


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("field,value", [
    ("n_loops", 1),            # no short trajectory exists
    ("n_loops", 0),
    ("adaln_init", "dit"),
    ("freq_dim", 255),
    ("freq_dim", 0),
    ("short_weight", -0.1),
    ("consistency_weight", float("nan")),
    ("consistency_weight", True),
    ("conditioning_to_muon", 1),
    ("d_model", 0),
    ("n_heads", 3),
    ("dropout", 1.0),
    ("tie_embeddings", "yes"),
    ("activation", "swish"),
])
def test_bad_config_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    LoopFormerConfig(**{**TINY, field: value})


# ----------------------------------------------------------------------------- loop


def test_scan_matches_unrolled_loop():
  model = randomize(build(), seed=2)
  x = tokens(1)
  np.testing.assert_allclose(apply(model, x), apply(model, x, unroll=True), atol=1e-5)
  # Train mode (scan vs the oracle): test_dropout_uses_a_fresh_key_every_loop; unrolled with
  # keys: test_dropout_masks_differ_between_loop_iterations; gradients of the scan against
  # the equations: test_training_loss_gradient_matches_equations.


def test_dropout_uses_a_fresh_key_every_loop():
  """docs/models.md#dropout-keys-in-shared-loops on the real model: train mode matches the oracle with per-loop masks, not frozen."""
  model = randomize(build(), seed=3)
  x, key = tokens(1), jax.random.key(7)
  p = np_params(model)
  shape, rate = (2, SEQ, TINY["d_model"]), TINY["dropout"]
  got = apply(model, x, key)
  fresh, frozen = (
      ref_hidden(p, x, [0.25] * 4, 2, masks=dropout_masks(key, 4, 2, shape, rate, freeze=f))
      @ head(p) for f in (False, True))
  np.testing.assert_allclose(got, fresh, rtol=1e-4, atol=1e-4)
  assert not np.allclose(got, frozen, atol=1e-2)


class DropoutProbe(nnx.Module):
  """A loop step that outputs its dropout mask (ones through dropout), ignoring the state."""

  def __init__(self):
    self.dropout = nnx.Dropout(0.5)

  def __call__(self, x, t, dt, key):
    return self.dropout(jnp.ones_like(x), rngs=key)


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_dropout_masks_differ_between_loop_iterations(unroll, masked):
  x = jnp.zeros((4, 64))
  t, dt = jnp.array([0.0, 0.25, 0.5]), jnp.array([0.25, 0.25, 0.5])
  keys = jax.random.split(jax.random.key(0), 3)
  _, masks = lf.run_trajectory(DropoutProbe(), x, t, dt, keys=keys, all_states=True,
                               active=(dt > 0) if masked else None, unroll=unroll)
  masks = np.asarray(masks)
  assert masks.shape == (3, 4, 64)
  assert 0.3 < np.mean(masks > 0) < 0.7
  for i in range(3):
    for j in range(i):
      assert not np.array_equal(masks[i], masks[j])


def test_inactive_steps_are_skipped():
  x = jnp.zeros((2, 8))
  t, dt = jnp.array([0.0, 0.5, 1.0]), jnp.array([0.5, 0.5, 0.0])
  _, states = lf.run_trajectory(DropoutProbe(), x, t, dt, active=dt > 0,
                                keys=jax.random.split(jax.random.key(1), 3), all_states=True)
  np.testing.assert_array_equal(states[2], states[1])  # Δ = 0: state passes through


def test_compile_time_does_not_grow_with_loops():
  model = build()
  x = tokens()
  graphdef, state = nnx.split(model)

  def compile_seconds(n):
    def forward(state, x):
      return nnx.merge(graphdef, state)(x, n_loops=n)
    start = time.process_time()
    jax.jit(forward).lower(state, x).compile()
    return time.process_time() - start

  two, eight = [compile_seconds(2)], [compile_seconds(8)]
  if eight[0] > 2 * two[0]:  # a noisy first measurement: measure again, keep the best
    two.append(compile_seconds(2))
    eight.append(compile_seconds(8))
  assert min(eight) <= 2 * min(two), (two, eight)


# ----------------------------------------------------------------------------- elastic depth


def test_elastic_depth_and_trajectories():
  model = randomize(build(), seed=4)
  x = tokens(2)
  full = apply(model, x)
  uniform = apply_traced(model, x, jnp.full((4,), 0.25))
  np.testing.assert_allclose(uniform, full, atol=1e-5)
  a = apply_traced(model, x, jnp.array([0.5, 0.25, 0.25]))
  traces = len(TRACES)
  b = apply_traced(model, x, jnp.array([0.25, 0.25, 0.5]))  # same length: no retrace
  assert len(TRACES) == traces
  assert not np.allclose(a, full, atol=1e-3)
  assert not np.allclose(a, b, atol=1e-3)
  # A traced trajectory padded with zeros skips the padding (one compile for ≤ 5 steps).
  padded = apply_traced(model, x, jnp.array([0.5, 0.25, 0.25, 0.0, 0.0]))
  np.testing.assert_allclose(padded, a, atol=1e-5)
  # Concrete trajectories: zeros are dropped statically; n_loops=M is uniform 1/M.
  dt, active = model.trajectory((0.5, 0.0, 0.25, 0.25))
  np.testing.assert_allclose(dt, [0.5, 0.25, 0.25])
  assert active is None
  np.testing.assert_allclose(model.trajectory(n_loops=3)[0], [1 / 3] * 3)
  np.testing.assert_allclose(model.trajectory()[0], [0.25] * 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=(0.5, 0.4)), "sum to 1"),
    (dict(steps=(1.5, -0.5)), ">= 0"),
    (dict(steps=()), "non-empty"),
    (dict(steps=((0.5, 0.5),)), "1-D"),
    (dict(steps=(1.0,), n_loops=1), "not both"),
    (dict(n_loops=0), "n_loops"),
])
def test_bad_trajectory_raises(kwargs, match):
  model = abstract()
  with pytest.raises(ValueError, match=match):
    model.trajectory(**kwargs)


def test_fresh_adaln_zero_model_is_the_identity_stack():
  """adaln_init="zero": every gate is 0, so every block is the identity whatever the trajectory."""
  model = build(adaln_init="zero")
  x = tokens(3)
  p = np_params(model)
  assert not np.any(p["layers"][0]["ada_w"]) and not np.any(p["layers"][1]["ada_b"])
  want = rms(p["wte"][np.asarray(x)] + p["wpe"][:SEQ]) * p["norm_f"] @ head(p)
  for steps in ([0.5, 0.5], [0.25, 0.75]):
    np.testing.assert_allclose(apply_traced(model, x, jnp.array(steps)), want, rtol=1e-5,
                               atol=1e-5)


def test_open_gates_start_at_one():
  """adaln_init="open" (the looped study's control): gates 1 + N(0, 0.02)-sized terms, scales
  near 0, so each block starts as a plain pre-norm residual block."""
  model = build(adaln_init="open")
  cond = model.core.condition(jnp.float32(0.25), jnp.float32(0.25))
  g_msa, g_mlp, s_msa, s_mlp = _modulations(model, cond)
  for g in (g_msa, g_mlp):
    np.testing.assert_allclose(g, 1.0, atol=0.3)
  for s in (s_msa, s_mlp):
    np.testing.assert_allclose(s, 0.0, atol=0.3)
  ref = _modulations(build(), cond)
  np.testing.assert_allclose(ref[0], 0.0, atol=0.3)  # the reference init: gates near 0
  np.testing.assert_allclose(g_msa - 1.0, ref[0], atol=1e-6)  # same draws, gate bias 1


def _modulations(model, cond):
  """(g_msa, g_mlp, γ_msa, γ_mlp) of every stacked block, from its adaLN weights (NumPy)."""
  adaln = model.core.blocks.adaln
  w, b = np.asarray(adaln.linear.kernel[...]), np.asarray(adaln.bias[...])
  out = np.einsum("d,kdn->kn", np.asarray(jax.nn.silu(cond)), w) + b
  return np.split(out, 4, axis=-1)


def test_constant_modulation_is_base_loop():
  """With the adaLN output pinned to gates 1, scales 0, LoopFormer is Base-Loop (docs/models.md#looped-transformer).

  The trajectory then only sets the number of loops: the conditioning carries all
  of the difference between the two models.
  """
  model = randomize(build(), seed=5)
  d, k = TINY["d_model"], TINY["n_layers"]
  blocks = model.core.blocks
  blocks.adaln.linear.kernel.set_value(jnp.zeros_like(blocks.adaln.linear.kernel[...]))
  blocks.adaln.bias.set_value(
      jnp.tile(jnp.concatenate([jnp.ones(2 * d), jnp.zeros(2 * d)]), (k, 1)))
  x = tokens(5)
  p = np_params(model)
  a = apply_traced(model, x, jnp.array([0.5, 0.25, 0.25]))
  b = apply_traced(model, x, jnp.array([0.2, 0.3, 0.5]))
  np.testing.assert_allclose(a, b, atol=1e-6)
  want = ref_hidden(p, x, [0.0] * 3, 2, base_loop=True) @ head(p)
  np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- trajectories


def reference_sampler_distribution(max_loops):
  """Exact probabilities of the official ``utils.sample_short_trajectory`` (in units of 1/L)."""
  probs = {}

  def walk(prefix, remaining, steps_left, prob):
    if steps_left == 1:
      key = tuple(prefix + [remaining])
      probs[key] = probs.get(key, 0.0) + prob
      return
    choices = [s for s in range(1, max_loops + 1) if s <= remaining - (steps_left - 1)]
    for s in choices:
      walk(prefix + [s], remaining - s, steps_left - 1, prob / len(choices))

  for length in range(1, max_loops):
    walk([], max_loops, length, 1.0 / (max_loops - 1))
  return probs


@pytest.mark.parametrize("max_loops,n", [(4, 4000), (8, 2000)])
def test_short_trajectory_sampler_matches_reference(max_loops, n):
  sample = jax.jit(jax.vmap(lambda k: lf.sample_short_trajectory(k, max_loops)))
  keys = jax.random.split(jax.random.key(0), n)
  steps, lengths = sample(keys)
  np.testing.assert_array_equal(steps, sample(keys)[0])  # deterministic given the key
  assert steps.shape == (n, max_loops - 1)
  steps, lengths = np.asarray(steps), np.asarray(lengths)
  units = np.rint(steps * max_loops).astype(int)
  np.testing.assert_allclose(steps * max_loops, units, atol=1e-5)
  inside = np.arange(max_loops - 1) < lengths[:, None]
  assert np.all(units[inside] >= 1) and np.all(units[~inside] == 0)  # zeros pad the tail
  assert np.all(units.sum(1) == max_loops)
  exact = reference_sampler_distribution(max_loops)
  rows, counts = np.unique(units, axis=0, return_counts=True)
  seen = {tuple(r[r > 0].tolist()): c / n for r, c in zip(rows, counts)}
  assert set(seen) <= set(exact)
  for traj, p in exact.items():
    assert abs(seen.get(traj, 0.0) - p) < 5 * math.sqrt(p * (1 - p) / n) + 2e-3, (traj, p)


def test_default_short_trajectory():
  np.testing.assert_allclose(lf.default_short_trajectory(8), [0.25] * 4)
  np.testing.assert_allclose(lf.default_short_trajectory(5), [0.6, 0.4])
  np.testing.assert_allclose(lf.default_short_trajectory(2), [1.0])
  for max_loops in range(2, 10):
    units = tuple(np.rint(lf.default_short_trajectory(max_loops) * max_loops).astype(int))
    assert units in reference_sampler_distribution(max_loops)


# ----------------------------------------------------------------------------- objective


@nnx.jit
def jit_loss(model, inputs, targets, key):
  return models.loss_and_metrics(model, inputs, targets, key=key)


def test_training_loss_matches_equations():
  model = randomize(build(), seed=6)
  x = tokens(6, batch=4)  # the training batch's shapes: the training program is reused below
  inputs, targets = x[:, :-1], x[:, 1:]
  p = np_params(model)
  full = [0.25] * 4

  loss, metrics = jit_loss(model, inputs, targets, None)  # key=None: no dropout, fixed short path
  want, want_metrics = ref_loss(p, inputs, targets, full, [0.5, 0.5], 2)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for name in ("ce", "ce_short", "consistency"):
    np.testing.assert_allclose(metrics[name], want_metrics[name], rtol=1e-4, atol=1e-7)
  assert float(metrics["short_loops"]) == 2

  # With a key: sampled short path (padded to L−1 = 3 steps), dropout on both paths.
  shape, rate = inputs.shape + (TINY["d_model"],), TINY["dropout"]
  lengths = set()
  for seed in range(3):
    key = jax.random.key(seed)
    # The training program itself (compiled once, shared with test_train_step_reduces_loss).
    (loss, metrics), _ = loss_and_grads(model, inputs, targets, key)
    traj_key, full_key, short_key = jax.random.split(key, 3)
    short, length = lf.sample_short_trajectory(traj_key, 4)
    short = np.asarray(short)[:int(length)].tolist()
    lengths.add(len(short))
    want, want_metrics = ref_loss(p, inputs, targets, full, short, 2,
                                  masks_full=dropout_masks(full_key, 4, 2, shape, rate),
                                  masks_short=dropout_masks(short_key, 3, 2, shape, rate))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    for name in ("ce", "ce_short", "consistency"):
      np.testing.assert_allclose(metrics[name], want_metrics[name], rtol=1e-4, atol=1e-7)
    assert float(metrics["short_loops"]) == len(short)
    np.testing.assert_array_equal(loss, loss_and_grads(model, inputs, targets, key)[0][0])
  assert len(lengths) > 1  # the sampled length changes with the key, one compile


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("to_muon", [False, True])
def test_routing_conditioning_to_adamw_by_default(to_muon):
  stacked = mj.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  model = abstract(tie_embeddings=False, conditioning_to_muon=to_muon)
  dims = mj.muon_dimension_numbers(model)
  blocks, core = dims["core"]["blocks"], dims["core"]
  for sub in (blocks["attn"], blocks["mlp"]):  # hidden matrices: Muon per stacked matrix
    for leaf in jax.tree.leaves(sub, is_leaf=is_dn):
      assert leaf == stacked
  for leaf in (dims["wte"]["embedding"], dims["wpe"]["embedding"], dims["lm_head"]["kernel"],
               dims["norm_f"]["scale"], blocks["adaln"]["bias"]):
    assert leaf is None
  for emb in ("time_embedder", "step_embedder"):
    for fc in ("fc1", "fc2"):
      assert core[emb][fc]["bias"] is None
      assert core[emb][fc]["linear"]["kernel"] == (
          mj.MuonDimensionNumbers(0, 1) if to_muon else None)
  assert blocks["adaln"]["linear"]["kernel"] == (stacked if to_muon else None)
  labels = mj.label_params(model)
  assert labels["core"]["blocks"]["adaln"]["linear"]["kernel"] == ("muon" if to_muon else "adam")
  assert labels["core"]["blocks"]["attn"]["query"]["kernel"] == "muon"


# ----------------------------------------------------------------------------- training


TRAIN_BATCH = (tokens(3, batch=4)[:, :-1], tokens(3, batch=4)[:, 1:])


@nnx.jit  # one compiled program instead of op-by-op dispatch of the looped scan
def loss_and_grads(model, inputs, targets, key):
  return nnx.value_and_grad(
      lambda m: models.loss_and_metrics(m, inputs, targets, key=key), has_aux=True)(model)


@nnx.jit
def apply_update(optimizer, model, grads):
  optimizer.update(model, grads)


@pytest.mark.slow  # ~30 s on 2 cores; run with -m slow
def test_training_loss_gradient_matches_equations():
  """Gradients of the objective against central differences of the float64 oracle.

  The oracle holds x_L fixed inside the MSE (stop_grad); the same differences
  without that differ from the model, so the test sees a missing stop_gradient.
  """
  model = randomize(build(), seed=7)
  inputs, targets = TRAIN_BATCH
  key = jax.random.key(11)
  (loss, _), grads = loss_and_grads(model, inputs, targets, key)  # the training program
  p = np_params(model)
  traj_key, full_key, short_key = jax.random.split(key, 3)
  short, length = lf.sample_short_trajectory(traj_key, 4)
  short = np.asarray(short, np.float64)[:int(length)].tolist()
  shape, rate = inputs.shape + (TINY["d_model"],), TINY["dropout"]
  masks_full = dropout_masks(full_key, 4, 2, shape, rate)
  masks_short = dropout_masks(short_key, 3, 2, shape, rate)
  anchor = ref_hidden(p, inputs, [0.25] * 4, 2, masks=masks_full)

  def oracle(q, stop_grad=True):
    return ref_loss(q, inputs, targets, [0.25] * 4, short, 2, masks_full, masks_short,
                    anchor=anchor if stop_grad else None)[0]

  np.testing.assert_allclose(loss, oracle(p), rtol=1e-5)
  g = grads["core"]
  entries = [  # (oracle parameter, index) and the model's gradient entry
      (lambda q: q["norm_f"], (3,), grads["norm_f"]["scale"][3]),
      (lambda q: q["wte"], (int(inputs[0, 2]), 5), grads["wte"]["embedding"][inputs[0, 2], 5]),
      (lambda q: q["wpe"], (2, 1), grads["wpe"]["embedding"][2, 1]),
      (lambda q: q["layers"][0]["q"], (1, 2), g["blocks"]["attn"]["query"]["kernel"][0, 1, 2]),
      (lambda q: q["layers"][1]["down"], (3, 4), g["blocks"]["mlp"]["down"]["kernel"][1, 3, 4]),
      (lambda q: q["layers"][1]["ada_b"], (7,), g["blocks"]["adaln"]["bias"][1, 7]),
      (lambda q: q["layers"][0]["ada_w"], (2, 40),
       g["blocks"]["adaln"]["linear"]["kernel"][0, 2, 40]),
      (lambda q: q["time"][1][1], (2,), g["time_embedder"]["fc2"]["bias"][2]),
      (lambda q: q["step"][0][0], (0, 3), g["step_embedder"]["fc1"]["linear"]["kernel"][0, 3]),
  ]
  eps, without_stop_grad = 1e-5, []
  for get, index, got in entries:
    diffs = []
    for stop_grad in (True, False):
      values = []
      for sign in (1, -1):
        q = copy.deepcopy(p)
        get(q)[index] += sign * eps
        values.append(oracle(q, stop_grad))
      diffs.append((values[0] - values[1]) / (2 * eps))
    np.testing.assert_allclose(got, diffs[0], rtol=2e-3, atol=2e-5)
    without_stop_grad.append(abs(float(got) - diffs[1]))
  assert max(without_stop_grad) > 1e-3, without_stop_grad


@pytest.mark.parametrize("opt", ["muon", "adamw"])
def test_train_step_reduces_loss(opt):
  # Muon's AdamW group (embeddings and, here, the whole conditioning path that opens the
  # gates) defaults to lr 3e-4: too slow to move a gated stack in ten steps.
  tx = mj.muon(0.02, adam_learning_rate=3e-3) if opt == "muon" else optax.adamw(3e-3)
  model = build()
  shapes = jax.tree.map(jnp.shape, nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  inputs, targets = TRAIN_BATCH
  ce = []
  for key in jax.random.split(jax.random.key(0), 10):
    (loss, metrics), grads = loss_and_grads(model, inputs, targets, key)
    assert np.isfinite(loss)
    ce.append(float(metrics["ce"]))
    apply_update(optimizer, model, grads)
  assert ce[-1] < ce[0] - 0.1, ce
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == shapes


def test_registry():
  model = models.build("loopformer", rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), **TINY)
  assert isinstance(model, LoopFormer) and model.config == LoopFormerConfig(**TINY)
  assert models.param_count(model) == models.analytic_param_count(model.config)
  assert models.analytic_param_count(lf.LOOPFORMER_3X8) == 278_169_600
  assert models.make_config("loopformer") == LoopFormerConfig()
  with pytest.raises(ValueError, match="n_loops"):
    models.make_config("loopformer", n_loops=1)
  with pytest.raises(ValueError, match="valid fields"):
    models.make_config("loopformer", max_model_loops=8)
