"""muonjax.distributed (docs/performance.md#sharding): mesh, FSDP rules, sharded Newton–Schulz; muonjax.testing.hlo audit.

The multi-device checks need 8 simulated CPU devices, which JAX only creates
when ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` is set before it is
imported. This file therefore runs itself as a script in one subprocess
(:func:`_worker`) with that flag, collects every measurement as JSON, and the
tests below assert on it; the rest of the suite keeps its single device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

import muonjax as mj
from muonjax import distributed as sh
from muonjax.testing import hlo as audit

ROOT = Path(__file__).resolve().parents[2]
N_DEVICES = 8
STEPS = 20


# ----------------------------------------------------------- subprocess worker


def _loop_report(hlo: str) -> dict:
  """Collectives inside the Newton–Schulz loops (and all loops) of a compiled module."""
  import re
  ns_loops = audit.while_loops(hlo, "newton_schulz")
  trips = [int(t) for t in re.findall(
      r'op_name="[^"]*newton_schulz[^"]*".*?known_trip_count":\{"n":"(\d+)"', hlo)]
  return {
      "ns_loops": len(ns_loops),
      "ns_trip_counts": trips,
      "in_ns_loops": [k for _, k, _ in audit.collectives_in_while_loops(hlo, "newton_schulz")],
      "in_any_loop": [k for _, k, _ in audit.collectives_in_while_loops(hlo)],
      "total": audit.count_collectives(hlo),
  }


def _worker() -> dict:
  from flax import nnx
  from jax.sharding import AxisType, NamedSharding

  from muonjax.models.losses import loss_and_metrics

  import time
  t0 = time.process_time()
  res: dict = {"devices": jax.device_count(), "seconds": {}}
  mark = lambda name: res["seconds"].__setitem__(name, round(time.process_time() - t0, 2))
  mesh = sh.make_mesh(data=2, fsdp=4)
  res["mesh"] = {k: int(v) for k, v in mesh.shape.items()}
  res["mesh_default"] = {k: int(v) for k, v in sh.make_mesh().shape.items()}
  res["mesh_data2"] = {k: int(v) for k, v in sh.make_mesh(data=2).shape.items()}
  res["mesh_fsdp2"] = {k: int(v) for k, v in sh.make_mesh(fsdp=2).shape.items()}
  res["mesh_errors"] = {}
  for name, kw in {"data3": dict(data=3), "mismatch": dict(data=2, fsdp=2),
                   "zero": dict(fsdp=0)}.items():
    try:
      sh.make_mesh(**kw)
      res["mesh_errors"][name] = None
    except ValueError as e:
      res["mesh_errors"][name] = str(e)

  def err(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))

  def spec_of(x):
    return str(x.sharding.spec)

  # ---- stacked leaf through the orthogonalize stage
  tx = mj.orthogonalize()
  stage = jax.jit(lambda u: tx.update(u, tx.init(None))[0])
  x = jax.random.normal(jax.random.key(0), (8, 64, 128), jnp.float32)
  ref = jax.jit(mj.newton_schulz)(x)
  stack_cases = {
      "stack_all_axes": P(("data", "fsdp")),
      "stack_fsdp": P("fsdp"),
      "replicated": P(),
  }
  res["stack"] = {}
  for use_mesh in (True, False):
    for name, spec in stack_cases.items():
      xs = jax.device_put(x, NamedSharding(mesh, spec))
      with (jax.set_mesh(mesh) if use_mesh else _null()):
        compiled = stage.lower({"w": xs}).compile()
      out = compiled({"w": xs})["w"]
      res["stack"][f"{name}{'_set_mesh' if use_mesh else ''}"] = {
          "err": err(out, ref), **_loop_report(compiled.as_text())}

  # an explicit strategy bound to the mesh does the same without jax.set_mesh
  explicit_tx = mj.orthogonalize(strategy=sh.shard_stack_strategy(mesh))
  compiled = jax.jit(lambda u: explicit_tx.update(u, explicit_tx.init(None))[0]).lower(
      {"w": x}).compile()
  res["stack"]["replicated_strategy"] = {"err": err(compiled({"w": x})["w"], ref),
                                         **_loop_report(compiled.as_text())}

  mark("stack")
  # stacks that are not a multiple of the device count are padded
  res["padded"] = {}
  for b in (5, 12):
    xb = jax.random.normal(jax.random.key(b), (b, 32, 64), jnp.float32)
    with jax.set_mesh(mesh):
      compiled = stage.lower({"w": xb}).compile()
    res["padded"][str(b)] = {"err": err(compiled({"w": xb})["w"], jax.jit(mj.newton_schulz)(xb)),
                             **_loop_report(compiled.as_text())}

  mark("padded")
  # ---- one long matrix sharded on its long axis: one Gram all-reduce per iteration
  y = jax.random.normal(jax.random.key(1), (64, 1024), jnp.float32)
  yref = jax.jit(mj.newton_schulz)(y)
  ys = jax.device_put(y, NamedSharding(mesh, P(None, ("data", "fsdp"))))
  res["long"] = {}
  with jax.set_mesh(mesh):
    compiled = stage.lower({"w": ys}).compile()
  res["long"]["stage_gspmd"] = {"err": err(compiled({"w": ys})["w"], yref),
                                **_loop_report(compiled.as_text())}
  gram = jax.jit(lambda a: sh.newton_schulz_sharded(a, mesh, ("data", "fsdp")))
  compiled = gram.lower(ys).compile()
  out = compiled(ys)
  res["long"]["shard_map"] = {"err": err(out, yref), "spec": spec_of(out),
                              **_loop_report(compiled.as_text())}
  mark("long")
  # automatic choice from the input's sharding (committed arrays)
  auto = {}
  out = sh.newton_schulz_sharded(ys)
  auto["long"] = {"err": err(out, yref), "spec": spec_of(out)}
  # ... and inside jit, where Explicit mesh axes carry the layout in the type
  emesh = sh.make_mesh(data=2, fsdp=4, axis_types=AxisType.Explicit)
  auto_jit = jax.jit(sh.newton_schulz_sharded)
  for name, arr, spec, want in (("tall", y.T, P("fsdp", None), yref.T),
                                ("short", y, P("fsdp", None), yref),
                                ("stack", x, P("fsdp"), ref),
                                ("replicated", y, P(), yref)):
    with jax.set_mesh(emesh):
      out = auto_jit(jax.device_put(arr, NamedSharding(emesh, spec)))
    auto[name] = {"err": err(out, want), "spec": spec_of(out)}
  res["auto"] = auto
  try:
    sh.newton_schulz_sharded(jnp.ones((64, 1022)), mesh, "fsdp")
    res["indivisible_error"] = None
  except ValueError as e:
    res["indivisible_error"] = str(e)

  mark("auto")
  # ---- Explicit mesh axes: the stage decides the layout itself
  res["explicit"] = {}
  for name, arr, spec, want in (("stack", x, P("fsdp"), ref),
                                ("long", y, P(None, ("data", "fsdp")), yref)):
    arr = jax.device_put(arr, NamedSharding(emesh, spec))
    with jax.set_mesh(emesh):
      compiled = stage.lower({"w": arr}).compile()
    res["explicit"][name] = {"err": err(compiled({"w": arr})["w"], want),
                             **_loop_report(compiled.as_text())}

  mark("explicit")
  # ---- batch
  batch = sh.shard_batch({"inputs": np.zeros((8, 16), np.int32)}, mesh)
  res["batch_spec"] = spec_of(batch["inputs"])
  try:
    sh.shard_batch({"inputs": np.zeros((6, 16), np.int32)}, mesh)
    res["batch_error"] = None
  except ValueError as e:
    res["batch_error"] = str(e)

  # ---- tiny GPT: parameter / optimizer-state shardings, and 20 Muon steps on
  # 1 device vs the (data=2, fsdp=4) mesh
  cfg = dict(d_model=16, n_layers=4, n_heads=2, d_ff=32, max_seq_len=16)
  data = np.random.default_rng(0).integers(0, 256, (STEPS, 8, 17)).astype(np.int32)

  def train(mesh_or_none):
    model = mj.models.build("gpt", rngs=0, **cfg)
    opt = nnx.Optimizer(model, mj.muon(0.02, compute_dtype=jnp.float32), wrt=nnx.Param)
    if mesh_or_none is not None:
      ps = sh.param_shardings(model, mesh_or_none)
      flat = lambda t: {"/".join(str(k) for k in sh.leaf_path(p)): str(s.spec)
                        for p, s in jax.tree_util.tree_flatten_with_path(t)[0]}
      res["param_specs"] = flat(ps)
      res["state_specs"] = flat(sh.state_shardings(opt, ps))
      sh.shard_module(model, ps)
      sh.shard_module(opt, sh.state_shardings(opt, ps))
      kernel = model.blocks.mlp.up.kernel
      res["placed_kernel_spec"] = str(kernel[...].sharding.spec)
    graphdef, state = nnx.split((model, opt))

    def step(state, inputs, targets):
      model, opt = nnx.merge(graphdef, state)
      loss, grads = nnx.value_and_grad(
          lambda m: loss_and_metrics(m, inputs, targets)[0])(model)
      opt.update(model, grads)
      return loss, nnx.state((model, opt))

    if mesh_or_none is None:
      put = lambda b: (jnp.asarray(b[:, :-1]), jnp.asarray(b[:, 1:]))
      compiled = jax.jit(step).lower(state, *put(data[0])).compile()
    else:
      m = mesh_or_none
      shard = sh.state_shardings(state, ps)  # already placed by shard_module
      bs = sh.batch_sharding(m)
      put = lambda b: (jax.device_put(b[:, :-1], bs), jax.device_put(b[:, 1:], bs))
      with jax.set_mesh(m):
        compiled = jax.jit(step, in_shardings=(shard, bs, bs),
                           out_shardings=(NamedSharding(m, P()), shard),
                           donate_argnums=0).lower(state, *put(data[0])).compile()
    losses = []
    for b in data:
      loss, state = compiled(state, *put(b))
      losses.append(float(loss))
    return losses, compiled.as_text()

  single, _ = train(None)
  mark("train_single")
  sharded, hlo = train(mesh)
  mark("train_sharded")
  res["train"] = {"single": single, "sharded": sharded, **_loop_report(hlo)}
  return res


class _null:
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={N_DEVICES}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT), str(ROOT / "tests")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  proc = subprocess.run([sys.executable, __file__], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=900)
  if proc.returncode:
    pytest.fail(f"sharding worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------- in-process (single device)


def test_leaf_spec_rules():
  # stacked (L, in, out): the stack axis, so each device owns whole matrices
  assert sh.leaf_spec((4, 32, 32), 4) == P("fsdp", None, None)
  assert sh.leaf_spec((8, 64, 128), 4) == P("fsdp", None, None)
  # stack axis not divisible: the largest divisible axis
  assert sh.leaf_spec((2, 64, 32), 4) == P(None, "fsdp", None)
  # plain matrices: the largest divisible axis (the long one)
  assert sh.leaf_spec((256, 32), 4) == P("fsdp", None)
  assert sh.leaf_spec((32, 256), 4) == P(None, "fsdp")
  assert sh.leaf_spec((1024, 1024), 4) == P("fsdp", None)  # ties: the first
  # small, indivisible, or one device: replicated
  assert sh.leaf_spec((32,), 4) == P()
  assert sh.leaf_spec((4, 32), 4) == P()
  assert sh.leaf_spec((33, 65), 4) == P()
  assert sh.leaf_spec((4, 32, 32), 1) == P()
  assert sh.leaf_spec((4, 32), 4, min_size=1) == P(None, "fsdp")
  assert sh.leaf_spec((), 4, min_size=0) == P()
  assert sh.leaf_spec((8, 64, 128), 4, axis=("data", "fsdp")) == P(("data", "fsdp"), None, None)


def test_make_mesh_single_process_devices():
  n = jax.device_count()
  mesh = sh.make_mesh()
  assert mesh.axis_names == ("data", "fsdp")
  assert dict(mesh.shape) == {"data": 1, "fsdp": n}
  assert dict(sh.make_mesh(data=n).shape) == {"data": n, "fsdp": 1}
  with pytest.raises(ValueError, match="device count"):
    sh.make_mesh(data=n, fsdp=2)
  with pytest.raises(ValueError, match="data must be a positive integer"):
    sh.make_mesh(data=0)
  with pytest.raises(ValueError, match="fsdp must be a positive integer"):
    sh.make_mesh(fsdp=1.5)
  with pytest.raises(ValueError, match="does not divide"):
    sh.make_mesh(data=n + 1)


def test_stack_axes_choice():
  mesh = AbstractMesh((2, 4), ("data", "fsdp"))
  assert sh.stack_axes(mesh, 8) == ("data", "fsdp")
  assert sh.stack_axes(mesh, 100) == ("data", "fsdp")
  assert sh.stack_axes(mesh, 5) == ("fsdp",)
  assert sh.stack_axes(mesh, 3) == ("data",)
  assert sh.stack_axes(mesh, 1) == ()
  assert sh.stack_axes(AbstractMesh((1, 8), ("data", "fsdp")), 8) == ("fsdp",)


def test_stage_unchanged_without_mesh():
  x = jax.random.normal(jax.random.key(3), (3, 16, 24))
  ortho = mj.make_orthogonalizer()
  np.testing.assert_array_equal(sh.orthogonalize_stack(ortho, x), ortho(x))
  with jax.set_mesh(sh.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])):
    np.testing.assert_array_equal(jax.jit(lambda a: sh.orthogonalize_stack(ortho, a))(x), ortho(x))
  tree = {"a": x, "b": jnp.swapaxes(x, -1, -2)}
  a = jax.jit(lambda t: mj.orthogonalize_tree(t, ortho))(tree)
  b = jax.jit(lambda t: mj.orthogonalize_tree(t, ortho, strategy="local"))(tree)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_strategy_argument():
  """The stage runs each batched call through its strategy; "auto" is local without a mesh."""
  import importlib
  stage_module = importlib.import_module("muonjax.transforms.orthogonalize")
  x = jax.random.normal(jax.random.key(4), (3, 16, 24))
  calls = []

  def recording(orthogonalizer, stacked):
    calls.append(stacked.shape)
    return orthogonalizer(stacked)

  tree = {"a": x, "b": x[0]}
  ortho = mj.make_orthogonalizer()
  out = mj.orthogonalize_tree(tree, ortho, strategy=recording)
  assert calls == [(4, 16, 24)]  # one batched call for the shape group
  jax.tree.map(np.testing.assert_array_equal, out,
               mj.orthogonalize_tree(tree, ortho, strategy="local"))
  # importing muonjax installs the stack-sharded strategy for "auto" ...
  assert stage_module.resolve_strategy("auto") is stage_module.local  # no mesh set
  with jax.set_mesh(sh.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])):
    assert stage_module.resolve_strategy("auto") is stage_module.local  # one device
  with jax.sharding.use_abstract_mesh(AbstractMesh((2, 4), ("data", "fsdp"))):
    assert stage_module.resolve_strategy("auto") is sh.orthogonalize_stack
    assert stage_module.resolve_strategy("local") is stage_module.local
  with pytest.raises(ValueError, match="strategy"):
    mj.orthogonalize(strategy="sharded")
  with pytest.raises(ValueError, match="strategy"):
    mj.orthogonalize_tree(tree, ortho, strategy="sharded")


def test_state_shardings_follow_params_single_device():
  mesh = sh.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  params = {"w": jnp.zeros((4, 8, 8)), "b": jnp.zeros((8,))}
  ps = sh.param_shardings(params, mesh)
  state = optax.adam(0.1).init(params)
  ss = sh.state_shardings(state, ps)
  leaves = jax.tree.leaves(ss, is_leaf=lambda s: hasattr(s, "spec"))
  assert len(leaves) == len(jax.tree.leaves(state))
  with pytest.raises(ValueError, match="NamedSharding"):
    sh.state_shardings(state, {"w": None})


_HLO = """\
HloModule m, entry_computation_layout={()->f32[]}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%inner_fusion (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %ar = f32[4]{0} all-reduce(%p), replica_groups={}, to_apply=%add
}

%ns_body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]) parameter(0)
  %x = f32[4]{0} get-tuple-element(%t), index=1
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%inner_fusion
  %i = s32[] get-tuple-element(%t), index=0
  ROOT %r = (s32[], f32[4]{0}) tuple(%i, %f)
}

%ns_cond (t.1: (s32[], f32[4])) -> pred[] {
  %t.1 = (s32[], f32[4]) parameter(0)
  ROOT %c = pred[] constant(true)
}

%scan_body (u: (s32[], f32[4])) -> (s32[], f32[4]) {
  %u = (s32[], f32[4]) parameter(0)
  %y = f32[4]{0} get-tuple-element(%u), index=1
  %ags = (f32[4]{0}, f32[8]{0}) all-gather-start(%y), dimensions={0}
  %agd = f32[8]{0} all-gather-done(%ags)
  %cp = f32[4]{0} collective-permute(%y), source_target_pairs={{0,1}}
  %j = s32[] get-tuple-element(%u), index=0
  ROOT %r.1 = (s32[], f32[4]{0}) tuple(%j, %cp)
}

ENTRY %main () -> f32[] {
  %z = f32[4]{0} constant({0, 0, 0, 0})
  %before = f32[4]{0} all-reduce(%z), to_apply=%add
  %k = s32[] constant(0)
  %init = (s32[], f32[4]{0}) tuple(%k, %before)
  %w1 = (s32[], f32[4]{0}) while(%init), condition=%ns_cond, body=%ns_body, metadata={op_name="jit(f)/newton_schulz/while"}
  %w2 = (s32[], f32[4]{0}) while(%init), condition=%ns_cond, body=%scan_body, metadata={op_name="jit(f)/while"}
  ROOT %o = f32[] constant(0)
}
"""


def test_collectives_in_while_loops_parser():
  found = audit.collectives_in_while_loops(_HLO)
  assert sorted((b, k) for b, k, _ in found) == [
      ("ns_body", "all-reduce"), ("scan_body", "all-gather"),
      ("scan_body", "collective-permute")]
  ns = audit.collectives_in_while_loops(_HLO, "newton_schulz")
  assert [(b, k) for b, k, _ in ns] == [("ns_body", "all-reduce")]
  assert audit.while_loops(_HLO) == ["ns_body", "scan_body"]
  assert audit.while_loops(_HLO, "newton_schulz") == ["ns_body"]
  assert audit.count_collectives(_HLO) == {
      "all-reduce": 2, "all-gather": 1, "collective-permute": 1}


def test_parser_on_single_device_compiled_ns():
  hlo = jax.jit(mj.newton_schulz).lower(jnp.ones((4, 16, 32))).compile().as_text()
  assert len(audit.while_loops(hlo, "newton_schulz")) == 1
  assert audit.collectives_in_while_loops(hlo) == []


# ------------------------------------------------------ 8 simulated devices


@pytest.mark.e2e
def test_worker_sees_eight_devices(results):
  assert results["devices"] == N_DEVICES
  assert results["mesh"] == {"data": 2, "fsdp": 4}
  assert results["mesh_default"] == {"data": 1, "fsdp": 8}
  assert results["mesh_data2"] == {"data": 2, "fsdp": 4}
  assert results["mesh_fsdp2"] == {"data": 4, "fsdp": 2}
  errors = results["mesh_errors"]
  assert "does not divide the device count 8" in errors["data3"]
  assert "does not match the device count 8" in errors["mismatch"]
  assert "fsdp must be a positive integer" in errors["zero"]


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["stack_all_axes", "stack_fsdp", "replicated",
                                  "stack_all_axes_set_mesh", "stack_fsdp_set_mesh",
                                  "replicated_set_mesh", "replicated_strategy"])
def test_stacked_ns_has_no_collectives_in_loop(results, case):
  r = results["stack"][case]
  assert r["err"] < 1e-5
  assert r["ns_loops"] >= 1
  assert r["in_ns_loops"] == [] and r["in_any_loop"] == [], r


@pytest.mark.e2e
def test_stage_shards_the_stack_under_set_mesh(results):
  # A replicated input is split over the devices by the stage (local slicing,
  # no communication at all) and iterated without collectives.
  assert results["stack"]["replicated_set_mesh"]["total"] == {}
  assert results["stack"]["stack_all_axes_set_mesh"]["total"] == {}
  # ... and so does an explicit shard_stack_strategy(mesh) without a context mesh
  assert results["stack"]["replicated_strategy"]["total"] == {}


@pytest.mark.e2e
@pytest.mark.parametrize("b", ["5", "12"])
def test_padded_stacks(results, b):
  r = results["padded"][b]
  assert r["err"] < 1e-5
  assert r["in_ns_loops"] == []


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["stage_gspmd", "shard_map"])
def test_long_axis_one_gram_all_reduce_per_iteration(results, case):
  r = results["long"][case]
  assert r["err"] < 1e-5
  assert r["ns_loops"] == 1
  assert r["in_ns_loops"] == ["all-reduce"], r
  assert r["ns_trip_counts"] == [5]
  # outside the loop: the max and the sum of squares of the normalization
  assert r["total"] == {"all-reduce": 3}, r


@pytest.mark.e2e
def test_gram_mode_keeps_the_long_axis_sharded(results):
  assert results["long"]["shard_map"]["spec"] == str(P(None, ("data", "fsdp")))
  assert "not divisible" in results["indivisible_error"]


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["long", "tall", "short", "stack", "replicated"])
def test_automatic_choice_matches_unsharded(results, case):
  assert results["auto"][case]["err"] < 1e-5


@pytest.mark.e2e
def test_automatic_choice_layouts(results):
  auto = results["auto"]
  assert auto["long"]["spec"] == str(P(None, ("data", "fsdp")))
  assert auto["tall"]["spec"] == str(P("fsdp", None))
  assert auto["short"]["spec"] == str(P(None, "fsdp"))  # resharded to the long axis
  assert auto["stack"]["spec"] == str(P("fsdp", None, None))
  assert auto["replicated"]["spec"] == str(P(None, None))


@pytest.mark.e2e
def test_explicit_mesh_axes(results):
  stack, long = results["explicit"]["stack"], results["explicit"]["long"]
  assert stack["err"] < 1e-5 and stack["in_ns_loops"] == []
  assert long["err"] < 1e-5 and long["in_ns_loops"] == ["all-reduce"]


@pytest.mark.e2e
def test_param_and_state_shardings(results):
  ps, ss = results["param_specs"], results["state_specs"]
  stacked = str(P("fsdp", None, None))
  for name in ("attn/query", "attn/key", "attn/value", "attn/out", "mlp/up", "mlp/down"):
    assert ps[f"blocks/{name}/kernel"] == stacked
    assert ss[f"opt_state/inner_states/muon/inner_state/0/mu/blocks/{name}/kernel"] == stacked
  assert ps["embed/embedding"] == str(P("fsdp", None))
  assert ps["lm_head/kernel"] == str(P(None, "fsdp"))
  assert ps["norm/scale"] == str(P())
  assert ps["blocks/attn_norm/scale"] == str(P())
  for moment in ("mu", "nu"):
    prefix = f"opt_state/inner_states/adam/inner_state/0/{moment}"
    assert ss[f"{prefix}/embed/embedding"] == ps["embed/embedding"]
    assert ss[f"{prefix}/lm_head/kernel"] == ps["lm_head/kernel"]
  assert ss["step"] == str(P())
  assert results["placed_kernel_spec"] == stacked
  assert ss["opt_state/inner_states/muon/inner_state/0/count"] == str(P())


@pytest.mark.e2e
def test_batch_sharding(results):
  assert results["batch_spec"] == str(P(("data", "fsdp"), None))
  assert "divisible by the 8 devices" in results["batch_error"]


@pytest.mark.e2e
def test_sharded_training_matches_single_device(results):
  r = results["train"]
  single, sharded = np.array(r["single"]), np.array(r["sharded"])
  assert len(single) == len(sharded) == STEPS
  assert np.all(np.isfinite(single)) and single[-1] < single[0]
  np.testing.assert_allclose(sharded, single, atol=1e-4, rtol=0)


@pytest.mark.e2e
def test_train_step_hlo_has_no_collectives_in_ns_loops(results):
  r = results["train"]
  assert r["ns_loops"] >= 1
  assert r["in_ns_loops"] == [], r


if __name__ == "__main__":
  print(json.dumps(_worker()))
