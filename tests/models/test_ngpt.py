"""Tests for nGPT (docs/models.md#ngpt): the normalized transformer and its gated variant."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import models
from muonjax.models.ngpt import (
    NGPT,
    NGPTConfig,
    ngpt_param_count,
    normalize_weights,
    scaled_value,
    sphere_projection,
)

import helpers

TINY = dict(vocab_size=64, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_seq_len=16)
SEQ = 16
VARIANTS = [False, True]  # gated
STACKED = mj.MuonDimensionNumbers(reduction_axis=1, output_axis=2)


def build(gated=False, rngs=0, **fields):
  return NGPT(NGPTConfig(**{**TINY, "gated": gated, **fields}), rngs=nnx.Rngs(rngs))


def tokens(seed=0, batch=2, seq=SEQ):
  return jax.random.randint(jax.random.key(seed), (batch, seq), 0, TINY["vocab_size"])


@nnx.jit
def forward(model, x):
  """(logits, hidden states): one compile per config keeps the file fast."""
  return model(x), model.hidden_states(x)


def apply(model, x):
  return forward(model, x)[0]


def hidden(model, x):
  return forward(model, x)[1]


def params_of(model):
  return {"/".join(map(str, path)): var for path, var in nnx.to_flat_state(
      nnx.state(model, nnx.Param))}


def sphere_errors(model):
  """max |‖w‖ − 1| over the constrained vectors of every leaf with a sphere axis."""
  out = {}
  for path, var in params_of(model).items():
    axis = var.get_metadata().get("sphere_axis")
    if axis is not None:
      norms = np.linalg.norm(np.asarray(var[...], np.float64), axis=axis)
      out[path] = float(np.max(np.abs(norms - 1.0)))
  return out


def assert_on_sphere(model, atol=1e-5):
  errors = sphere_errors(model)
  assert len(errors) == 9  # embedding, head, q, k, v, o, up, gate, down: every matrix
  bad = {k: v for k, v in errors.items() if v > atol}
  assert not bad, bad


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("gated", VARIANTS)
def test_logits_shape_finite_and_causal(gated):
  model = build(gated)
  x = tokens()
  logits = apply(model, x)
  assert logits.shape == (2, SEQ, TINY["vocab_size"])
  assert np.all(np.isfinite(logits))
  helpers.assert_causal(lambda tokens: apply(model, tokens), x, logits, TINY["vocab_size"], (0, 5, SEQ - 2))


@pytest.mark.parametrize("gated", VARIANTS)
def test_fresh_model_hidden_states_and_weights_on_sphere(gated):
  model = build(gated)
  x = tokens(1)
  hs = hidden(model, x)
  assert hs.shape == (TINY["n_layers"] + 1, 2, SEQ, TINY["d_model"])
  assert np.all(np.isfinite(hs))
  np.testing.assert_allclose(np.linalg.norm(hs, axis=-1), 1.0, atol=1e-5)
  # The last hidden state is what the head reads.
  np.testing.assert_allclose(model.logits(hs[-1]), apply(model, x), atol=1e-5)
  assert_on_sphere(model)
  assert models.param_count(model) == ngpt_param_count(model.config)


def test_no_norm_layers_no_dropout_no_rng_state():
  model = build(True)
  assert not any(isinstance(m, (nnx.RMSNorm, nnx.LayerNorm)) for _, m in nnx.iter_modules(model))
  assert not any(str(p[-1]) == "scale" for p in params_of(model))
  assert not jax.tree.leaves(nnx.state(model, nnx.RngState))


def _np_unit(x, axis=-1):
  return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _np_rope(x, base=10000.0):
  seq, hd = x.shape[1], x.shape[-1]
  half = hd // 2
  angles = np.arange(seq)[:, None] * base ** (-np.arange(half) * 2.0 / hd)[None]
  sin, cos = np.sin(angles)[None, :, None], np.cos(angles)[None, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def reference_logits(model, x):
  """float64 NumPy port of NVIDIA/ngpt model.py (Block.forward, GPT.forward).

  Includes the official √d on both SwiGLU halves (muonjax puts it on ν only), the
  scaled-parameter trick and |α|; ``sigmoid(gate)`` multiplies α in the gated variant.
  """
  c = model.config
  d, n_h = c.d_model, c.n_heads
  hd = d // n_h
  p = {k: np.asarray(v[...], np.float64) for k, v in params_of(model).items()}
  base = 1.0 / math.sqrt(d)
  h = _np_unit(p["embed/embedding"][np.asarray(x)])
  batch, seq = x.shape
  heads = lambda y: y.reshape(batch, seq, n_h, hd)
  causal = np.tril(np.ones((seq, seq), bool))
  for l in range(c.n_layers):
    w = lambda name: p[f"blocks/{name}"][l]
    sqk = (w("attn/s_qk") * (1.0 / base)).reshape(n_h, hd)
    q = sqk * _np_unit(_np_rope(heads(h @ w("attn/query/kernel"))))
    k = sqk * _np_unit(_np_rope(heads(h @ w("attn/key/kernel"))))
    v = heads(h @ w("attn/value/kernel"))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * math.sqrt(hd)
    s = np.where(causal, s, -np.inf)
    prob = np.exp(s - s.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    h_att = np.einsum("bhqk,bkhd->bqhd", prob, v).reshape(batch, seq, d) @ w("attn/out/kernel")
    lr = np.abs(w("alpha_attn") * (c.alpha_init / base))
    if c.gated:
      lr = lr / (1.0 + np.exp(-w("attn_gate")))
    a = _np_unit(h)
    h = _np_unit(a + lr * (_np_unit(h_att) - a))
    u = (h @ w("mlp/up/kernel")) * w("mlp/s_u") * math.sqrt(d)
    nu = (h @ w("mlp/gate/kernel")) * w("mlp/s_v") * math.sqrt(d)
    h_mlp = (u * nu / (1.0 + np.exp(-nu))) @ w("mlp/down/kernel")
    lr = np.abs(w("alpha_mlp") * (c.alpha_init / base))
    if c.gated:
      lr = lr / (1.0 + np.exp(-w("mlp_gate")))
    a = _np_unit(h)
    h = _np_unit(a + lr * (_np_unit(h_mlp) - a))
  return (h @ p["lm_head/kernel"]) * (p["s_z"] * (1.0 / base))


@pytest.mark.usefixtures("fp32_matmuls")
def test_forward_matches_official_reference():
  """Gated model with every scale moved; σ(g) → 1 reduces it to plain nGPT (tested below)."""
  model = build(True, alpha_init=0.15, gate_init=-1.0)
  # Move every scale (and gate) off its init so each one is exercised, α's sign included.
  rng = np.random.default_rng(0)
  for path, var in params_of(model).items():
    if var.get_metadata().get("sphere_axis") is None:
      factor = rng.uniform(0.5, 2.0, var.shape)
      if "alpha" in path:
        factor = factor * rng.choice([-1.0, 1.0], var.shape)
      offset = rng.normal(size=var.shape) if path.endswith("_gate") else 0.0
      var[...] = var[...] * factor + offset
  x = tokens(2)
  logits = apply(model, x)
  np.testing.assert_allclose(logits, reference_logits(model, x), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- parameters


def test_scaled_parameter_trick_stored_and_effective_values():
  d, v = TINY["d_model"], TINY["vocab_size"]
  model = build(True, alpha_init=0.15, gate_init=-1.0)
  base = 1.0 / math.sqrt(d)
  expected = {  # leaf: (shape, stored θ = s_scale, effective s = s_init)
      "blocks/alpha_attn": ((2, d), base, 0.15),
      "blocks/alpha_mlp": ((2, d), base, 0.15),
      "blocks/attn/s_qk": ((2, d), base, 1.0),
      "blocks/mlp/s_u": ((2, 32), 1.0, 1.0),
      "blocks/mlp/s_v": ((2, 32), 1.0, 1.0),
      "s_z": ((v,), base, 1.0),
  }
  params = params_of(model)
  for path, (shape, stored, effective) in expected.items():
    var = params[path]
    assert var.shape == shape, path
    np.testing.assert_allclose(var[...], stored, rtol=1e-6, err_msg=path)
    np.testing.assert_allclose(scaled_value(var), effective, rtol=1e-6, err_msg=path)
  for path in ("blocks/attn_gate", "blocks/mlp_gate"):
    assert params[path].shape == (2, d) and "s_init" not in params[path].get_metadata()
    np.testing.assert_allclose(params[path][...], -1.0)
  assert "blocks/attn_gate" not in params_of(build(False))


def test_logits_scale_with_s_z():
  model = build()
  x = tokens(3)
  h = hidden(model, x)[-1]
  base = apply(model, x)
  np.testing.assert_allclose(base, h @ model.lm_head.kernel[...], atol=1e-5)  # s_z = 1 at init
  model.s_z[...] = model.s_z[...] * jnp.arange(1, 65)
  np.testing.assert_allclose(apply(model, x), base * np.arange(1, 65), rtol=1e-5, atol=1e-5)


EXPECTED_AXES = {
    "embed/embedding": 1,
    "lm_head/kernel": 0,
    "blocks/attn/query/kernel": 1,
    "blocks/attn/key/kernel": 1,
    "blocks/attn/value/kernel": 1,
    "blocks/attn/out/kernel": 2,
    "blocks/mlp/up/kernel": 1,
    "blocks/mlp/gate/kernel": 1,
    "blocks/mlp/down/kernel": 2,
    "blocks/alpha_attn": None,
    "blocks/alpha_mlp": None,
    "blocks/attn/s_qk": None,
    "blocks/mlp/s_u": None,
    "blocks/mlp/s_v": None,
    "s_z": None,
}
GATE_AXES = {"blocks/attn_gate": None, "blocks/mlp_gate": None}


def flat(tree):
  is_leaf = lambda x: x is None or isinstance(x, mj.MuonDimensionNumbers)
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


@pytest.mark.parametrize("gated", VARIANTS)
def test_sphere_axes(gated):
  model = build(gated)
  expected = {**EXPECTED_AXES, **(GATE_AXES if gated else {})}
  assert flat(mj.sphere_axes(model)) == expected
  # Stacked kernels: the axis is the d_model axis, shifted past the layer axis.
  d = TINY["d_model"]
  for path, var in params_of(model).items():
    axis = expected[path]
    if axis is not None:
      assert var.shape[axis] == d, path
      assert path.startswith("blocks/") == (var.ndim == 3), path


@pytest.mark.parametrize("gated", VARIANTS)
def test_routing(gated):
  model = build(gated)
  dims = flat(mj.muon_dimension_numbers(model))
  labels = flat(mj.label_params(model))
  muon = {p for p, a in EXPECTED_AXES.items() if p.startswith("blocks/") and a is not None}
  assert len(muon) == 7
  expected = {**EXPECTED_AXES, **(GATE_AXES if gated else {})}
  assert set(dims) == set(expected)
  for path in expected:
    if path in muon:
      assert dims[path] == STACKED and labels[path] == "muon", path
    else:  # embedding, head, every scale and gate: AdamW
      assert dims[path] is None and labels[path] == "adam", path
  # mj.muon decides the routing at init (Variables: metadata visible), keeps it in its
  # state, and replays it on plain arrays at update.
  params = nnx.state(model, nnx.Param)
  tx = mj.muon(0.02)
  state = tx.init(params)
  decided = {"/".join(names): dn for names, _, dn in state.decision}
  assert decided == dims
  pure = nnx.as_pure(params)
  # Traced, not compiled: the decision is static structure of the returned state.
  _, state2 = jax.eval_shape(tx.update, jax.tree.map(jnp.ones_like, pure), tx.init(params), pure)
  assert {"/".join(names): dn for names, _, dn in state2.decision} == dims


def test_normalize_weights_projects_in_place():
  model = build(True)
  before = sphere_errors(model)
  assert max(before.values()) < 1e-5
  rng = np.random.default_rng(1)
  for var in params_of(model).values():
    var[...] = var[...] * rng.uniform(0.2, 3.0, var.shape)
  assert min(sphere_errors(model).values()) > 1e-3
  scales = {p: np.asarray(v[...]) for p, v in params_of(model).items() if EXPECTED_AXES.get(p, 0)
            is None}
  assert normalize_weights(model) is model
  assert_on_sphere(model)
  for p, value in scales.items():  # unconstrained leaves are untouched
    np.testing.assert_array_equal(params_of(model)[p][...], value)


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("fields", [
    {},
    dict(gated=True),
    dict(d_model=32, n_heads=4, d_ff=48, vocab_size=100, n_layers=3),
    dict(d_model=32, n_heads=2, n_layers=1, gated=True),
])
def test_analytic_param_count(fields):
  config = NGPTConfig(**{**TINY, **fields})
  model = nnx.eval_shape(lambda: NGPT(config, rngs=nnx.Rngs(0)))  # shapes only: no compute
  assert models.param_count(model) == models.analytic_param_count(config)
  assert models.analytic_param_count(config) == ngpt_param_count(config)


def test_published_config_param_counts():
  # Official launcher: 24 layers, 16 heads, d = 1024, MLP 4d, GPT-2 vocab 50304: the "0.5B" model.
  big = NGPTConfig(vocab_size=50304, d_model=1024, n_layers=24, n_heads=16, d_ff=4096)
  assert ngpt_param_count(big) == 505_996_416
  # Gated seed (11 × 768, GPT-2 vocab 50257, "155M"): SwiGLU at d_ff = 2048 ≈ a 4d GELU MLP.
  seed = NGPTConfig(vocab_size=50257, d_model=768, n_layers=11, n_heads=6, d_ff=2048, gated=True)
  assert ngpt_param_count(seed) == 155_189_073


# ----------------------------------------------------------------------------- optimizer steps


def lm_batch(seed=3):
  x = tokens(seed, batch=4)
  return x[:, :-1], x[:, 1:]


@nnx.jit
def loss_and_grads(model, inputs, targets):
  loss_fn = lambda m: models.loss_and_metrics(m, inputs, targets)
  (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  return loss, grads


@nnx.jit
def apply_update(optimizer, model, grads):
  optimizer.update(model, grads)


def native_sphere_chain(model, lr, mode):
  """Muon directions on the hidden matrices, Adam on the rest, then ``mj.hypersphere`` (the hypersphere stage)."""
  dims = mj.muon_dimension_numbers(model)
  directions = mj.partition_matrices(
      lambda dn: optax.chain(mj.momentum(), mj.orthogonalize(dimension_numbers=dn),
                             mj.scale_by_shape(dimension_numbers=dn)),
      optax.scale_by_adam(), dims)
  return optax.chain(directions, mj.hypersphere(lr, axes=mj.sphere_axes(model), mode=mode))


def muon_on_sphere(model):
  return optax.chain(mj.muon(0.05, adam_learning_rate=1e-2), sphere_projection(model))


CHAINS = {
    # The training test's Muon chain (gated model): one compiled update for both tests.
    "muon+projection": lambda m: muon_on_sphere(m),
    "adamw+projection": lambda m: optax.chain(optax.adamw(1e-2, weight_decay=0.0),
                                              sphere_projection(m)),
    "hypersphere-geodesic": lambda m: native_sphere_chain(m, 0.05, "geodesic"),
}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_one_step_keeps_every_constrained_vector_on_sphere(chain):
  gated = chain == "muon+projection"
  model = build(gated)
  before = {p: np.asarray(v[...]) for p, v in params_of(model).items()}
  optimizer = nnx.Optimizer(model, CHAINS[chain](model), wrt=nnx.Param)
  loss, grads = loss_and_grads(model, *lm_batch())
  assert np.isfinite(loss)
  apply_update(optimizer, model, grads)
  assert_on_sphere(model)
  after = params_of(model)
  for path, value in before.items():  # every leaf moved, constrained or not
    assert not np.allclose(after[path][...], value, atol=1e-7), path
  if chain != "adamw+projection":
    return
  # The stage is the post-step projection: a plain step, then normalize_weights.
  plain = build(gated)
  apply_update(nnx.Optimizer(plain, optax.adamw(1e-2, weight_decay=0.0), wrt=nnx.Param),
               plain, grads)
  normalize_weights(plain)
  for path, var in params_of(plain).items():
    np.testing.assert_allclose(var[...], after[path][...], atol=1e-6, err_msg=path)


@pytest.mark.training
@pytest.mark.parametrize("gated,opt", [(False, "muon"), (False, "adamw"), (True, "muon")])
def test_train_step_reduces_loss_on_sphere(gated, opt):
  remat = opt == "adamw"  # remat + scan: gradients keep the stacked shapes and train
  model = build(gated, remat=remat)
  tx = (muon_on_sphere(model) if opt == "muon" else
        optax.chain(optax.adamw(1e-2, weight_decay=0.0), sphere_projection(model)))
  shapes = jax.tree.map(jnp.shape, nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  inputs, targets = lm_batch()
  losses = []
  for _ in range(10):  # gradients and update jitted apart: the gradient programs are shared
    loss, grads = loss_and_grads(model, inputs, targets)
    apply_update(optimizer, model, grads)
    losses.append(float(loss))
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == shapes
  assert_on_sphere(model)
  if not remat:
    np.testing.assert_allclose(np.linalg.norm(hidden(model, tokens()), axis=-1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- gated variant


def test_saturated_gate_equals_ungated():
  """σ(g) → 1: the gated model reduces to plain nGPT (gates consume no init randomness)."""
  x = tokens(4)
  plain, gated = build(False, rngs=5), build(True, rngs=5)
  for p, var in params_of(plain).items():
    np.testing.assert_array_equal(params_of(gated)[p][...], var[...])
  half = apply(gated, x)  # σ(0) = 1/2 halves the eigen learning rates
  assert not np.allclose(half, apply(plain, x), atol=1e-3)
  gated.blocks.attn_gate[...] = jnp.full_like(gated.blocks.attn_gate[...], 40.0)
  gated.blocks.mlp_gate[...] = jnp.full_like(gated.blocks.mlp_gate[...], 40.0)
  np.testing.assert_allclose(apply(gated, x), apply(plain, x), atol=1e-5)


# ----------------------------------------------------------------------------- configs


def test_registry():
  assert models.CONFIGS["ngpt"] is NGPTConfig
  model = models.build("ngpt", **TINY, gated=True)
  assert isinstance(model, NGPT) and model.config.gated
  with pytest.raises(ValueError, match="n_loops"):
    models.build("ngpt", n_loops=3)


@pytest.mark.parametrize("field,value", [
    ("d_model", 0),
    ("n_layers", 2.5),
    ("n_heads", 3),
    ("vocab_size", -1),
    ("d_ff", True),
    ("max_seq_len", 0),
    ("alpha_init", 0.0),
    ("alpha_init", float("nan")),
    ("rope_base", -1.0),
    ("gate_init", float("inf")),
    ("gate_init", "0"),
    ("gated", 1),
    ("remat", "yes"),
])
def test_bad_config_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    NGPTConfig(**{**TINY, field: value})


def test_sequence_longer_than_max_raises():
  model = build()
  with pytest.raises(ValueError, match="max_seq_len"):
    model(tokens(seq=SEQ + 1))


# --- the trainer's hook: the sphere stage from the config ------------------------------


def test_sphere_fields_default_and_are_checked():
  config = NGPTConfig(**TINY)
  assert (config.sphere_update, config.sphere_every, config.sphere_theta) == ("project", 1, "lr")
  with pytest.raises(ValueError, match="NGPTConfig.sphere_update must be one of"):
    NGPTConfig(**TINY, sphere_update="retract")
  with pytest.raises(ValueError, match="NGPTConfig.sphere_theta must be one of"):
    NGPTConfig(**TINY, sphere_theta="angle")
  with pytest.raises(ValueError, match="NGPTConfig.sphere_every must be a positive int"):
    NGPTConfig(**TINY, sphere_every=0)
  with pytest.raises(ValueError, match="sphere_every .* applies to sphere_update='project'"):
    NGPTConfig(**TINY, sphere_update="geodesic", sphere_every=2)


@jax.jit
def random_delta(params):
  return jax.tree.map(lambda p: 0.1 * jax.random.normal(jax.random.key(1), p.shape, p.dtype),
                      params)


@pytest.mark.parametrize("fields", [dict(), dict(sphere_every=3),
                                    dict(sphere_update="geodesic", sphere_theta="lr"),
                                    dict(sphere_update="geodesic", sphere_theta="norm")])
def test_optimizer_constraint_is_the_configured_sphere_stage(fields):
  """``models.hooks.optimizer_constraint`` gives nGPT's sphere stage with its config's
  settings (what the trainer chains after the optimizer) and nothing for other models."""
  from muonjax.models import hooks
  model = build(**fields)
  assert isinstance(model, hooks.OptimizerConstraint)
  schedule = optax.linear_schedule(0.1, 0.05, 4)
  stage = hooks.optimizer_constraint(model, schedule)
  want = sphere_projection(model, mode=fields.get("sphere_update", "project"),
                           every=fields.get("sphere_every", 1),
                           theta=fields.get("sphere_theta", "lr"), learning_rate=schedule)
  params = nnx.state(model, nnx.Param)
  delta = random_delta(nnx.as_pure(params))
  # Both stages jitted (eager updates compile every op for every leaf shape); the two
  # programs are separate, so equal results mean equal stages.
  got_state, want_state = stage.init(params), want.init(params)
  got_update, want_update = jax.jit(stage.update), jax.jit(want.update)
  for _ in range(3):  # through a lazy period and along the schedule
    got, got_state = got_update(delta, got_state, params)
    expected, want_state = want_update(delta, want_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, expected)
  gpt = nnx.eval_shape(lambda: models.build("gpt", rngs=0, vocab_size=64, d_model=16,
                                             n_layers=1, n_heads=2, d_ff=32))  # no init compute
  assert not isinstance(gpt, hooks.OptimizerConstraint)
  assert hooks.optimizer_constraint(gpt, schedule) is None
