"""Sharded training (docs/performance.md#sharding): ``TrainConfig.mesh`` end to end.

JAX creates simulated CPU devices only when ``XLA_FLAGS`` holds
``--xla_force_host_platform_device_count`` before it is imported, so the
multi-device runs happen in subprocesses that run this file as a script:

* one process with 8 devices (``worker``): 20 steps on one device and on the
  ``data=2, fsdp=4`` mesh, the compiled step's HLO, and a resume under the mesh;
* two processes with 4 devices each on the loopback address (``process i port``),
  joined by ``jax.distributed.initialize``: 5 steps on the same mesh.

Each prints its measurements as one JSON line; the tests assert on them. The
subprocesses share a persistent compilation cache, so the resumed run reuses
the compiled step of the straight one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = 20
MP_STEPS = 5
MESH = {"data": 2, "fsdp": 4}
# 4 stacked layers: the (4, 16, 16) and (4, 16, 32) kernels are sharded over fsdp
# along the stack axis, and Muon orthogonalizes stacks of 16 and 8 matrices.
# grad_accum=2: the step reshapes the row-sharded global batch into micro-batches
# each split over all devices; with two processes each process holds whole
# micro-batches of 8 rows, so this also moves tokens across processes.
MODEL = dict(d_model=16, n_layers=4, n_heads=2, d_ff=32)


def config(corpus: str, **changes):
  from muonjax.train import TrainConfig
  values = dict(model="gpt", model_fields=MODEL, optimizer="muon",
                optimizer_hparams={"compute_dtype": None}, learning_rate=0.02,
                schedule="constant", steps=STEPS, batch_size=8, grad_accum=2, seq_len=16,
                eval_every=0, eval_batches=1, data=corpus)
  values.update(changes)
  return TrainConfig(**values)


def _losses(cfg, **kwargs) -> tuple[list, dict]:
  from muonjax.train import train
  losses = []
  result = train(cfg, on_step=lambda step, record: losses.append(record["loss"]), **kwargs)
  return losses, result


# ----------------------------------------------------------- subprocess workers


def _worker(corpus: str, tmp: str) -> dict:
  import jax
  from muonjax.testing import hlo as audit
  from muonjax.train import lower_train_step

  res: dict = {"devices": jax.device_count(), "seconds": {}}
  t0 = time.perf_counter()
  mark = lambda name: res["seconds"].__setitem__(name, round(time.perf_counter() - t0, 1))

  res["single"], single = _losses(config(corpus))
  mark("single")
  res["sharded"], sharded = _losses(config(corpus, mesh=MESH))
  res["val"] = {"single": single["final_val_loss"], "sharded": sharded["final_val_loss"]}
  mark("sharded")

  hlo = lower_train_step(config(corpus, mesh=MESH), vocab_size=256).compile().as_text()
  res["hlo"] = {
      "ns_loops": len(audit.while_loops(hlo, "newton_schulz")),
      "in_ns_loops": [k for _, k, _ in audit.collectives_in_while_loops(hlo, "newton_schulz")],
      "total": audit.count_collectives(hlo),
  }
  mark("hlo")

  ckpt = os.path.join(tmp, "ckpt")
  first, _ = _losses(config(corpus, mesh=MESH, steps=3, checkpoint_dir=ckpt))
  rest, resumed = _losses(config(corpus, mesh=MESH, steps=6, checkpoint_dir=ckpt), resume=True)
  res["resume"] = {"first": first, "rest": rest, "resumed_from": resumed["resumed_from"]}
  mark("resume")

  res["errors"] = {}
  for name, changes in {"mismatch": dict(mesh={"data": 2, "fsdp": 2}),
                        "batch": dict(mesh=MESH, batch_size=4)}.items():
    try:
      _losses(config(corpus, **changes))
      res["errors"][name] = None
    except ValueError as e:
      res["errors"][name] = str(e)
  return res


def _process(corpus: str, tmp: str, index: int, port: int) -> dict:
  """3 steps with a checkpoint, then resumed to 5, both in a shared folder."""
  import jax
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=index)
  shared = dict(mesh=MESH, checkpoint_dir=os.path.join(tmp, "ckpt"),
                log_path=os.path.join(tmp, "metrics.jsonl"))
  first, _ = _losses(config(corpus, steps=3, **shared))
  rest, resumed = _losses(config(corpus, steps=MP_STEPS, **shared), resume=True)
  return {"process": jax.process_index(), "processes": jax.process_count(),
          "devices": jax.device_count(), "local_devices": jax.local_device_count(),
          "losses": first + rest, "resumed_from": resumed["resumed_from"]}


def _env(devices: int, cache: str) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return env


def _last_json(text: str) -> dict:
  return json.loads(text.strip().splitlines()[-1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  rng = np.random.RandomState(0)
  words = ["def", "return", "self", "x", "y", "for", "in", "range", "if", "else", "(", ")", ":"]
  lines = [" ".join(rng.choice(words, size=rng.randint(3, 12))) for _ in range(1500)]
  path = tmp_path_factory.mktemp("corpus") / "text.txt"
  path.write_text("\n".join(lines))
  return str(path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def results(corpus, cache, tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("worker"))
  proc = subprocess.run([sys.executable, __file__, "worker", corpus, tmp],
                        env=_env(8, cache), cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  if proc.returncode:
    pytest.fail(f"8-device worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
  return _last_json(proc.stdout)


@pytest.fixture(scope="module")
def two_processes(corpus, cache, tmp_path_factory):
  """Both processes' JSON lines; if one fails the other is killed (not left at a barrier)."""
  tmp = tmp_path_factory.mktemp("processes")
  port, procs, logs = _free_port(), [], []
  for i in range(2):
    out, err = open(tmp / f"out{i}.txt", "w+"), open(tmp / f"err{i}.txt", "w+")
    logs.append((out, err))
    procs.append(subprocess.Popen(
        [sys.executable, __file__, "process", corpus, str(tmp), str(i), str(port)],
        env=_env(4, cache), cwd=ROOT, stdout=out, stderr=err, text=True))
  deadline = time.monotonic() + 600
  try:
    while any(p.poll() is None for p in procs):
      if any(p.returncode for p in procs) or time.monotonic() > deadline:
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = []
  for p, (out, err) in zip(procs, logs):
    out.seek(0), err.seek(0)
    texts.append((out.read(), err.read()))
    out.close(), err.close()
  for i, (p, (_, err)) in enumerate(zip(procs, texts)):
    if p.returncode:
      pytest.fail(f"process {i} of the two-process run failed (rc {p.returncode}):\n"
                  f"{err[-4000:]}")
  return str(tmp), [_last_json(out) for out, _ in texts]


# ------------------------------------------------------------ in-process tests


@pytest.mark.parametrize("mesh, match", [
    ({"model": 2}, r"mesh axes must be among \('data', 'fsdp'\)"),
    ({}, "at least one"),
    ({"data": 0}, r"mesh\['data'\] must be a positive int"),
    ({"fsdp": 1.5}, r"mesh\['fsdp'\]"),
    ("data=2", "TrainConfig.mesh must be None or a dict"),
])
def test_config_rejects_bad_meshes(corpus, mesh, match):
  with pytest.raises(ValueError, match=match):
    config(corpus, mesh=mesh)


def test_config_mesh_round_trips_and_may_change_on_resume(corpus):
  from muonjax.train import TrainConfig, first_mismatch
  cfg = config(corpus, mesh=MESH)
  assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
  assert config(corpus).mesh is None
  assert first_mismatch(cfg.to_dict(), cfg.replace(mesh={"data": 8})) is None


def test_mesh_larger_than_the_devices_names_the_field(corpus):
  from muonjax.train import train
  with pytest.raises(ValueError, match=r"TrainConfig.mesh=\{'data': 2\}.*device count 1"):
    train(config(corpus, mesh={"data": 2}))


def test_lower_train_step_without_a_mesh(corpus):
  from muonjax.train import lower_train_step
  lowered = lower_train_step(config(corpus), vocab_size=256)
  assert "newton_schulz" in lowered.as_text(debug_info=True)
  with pytest.raises(ValueError, match="record_stats"):
    lower_train_step(config(corpus), vocab_size=256, record_stats=True)


def test_cli_mesh_flag(corpus, tmp_path, capsys):
  from muonjax import cli
  args = cli.build_parser().parse_args(["train", "--mesh", "data=2,fsdp=4", "--data", corpus])
  assert cli._train_config_from_args(args).mesh == MESH
  args = cli.build_parser().parse_args(["sweep", "--lrs", "0.01", "--mesh", "fsdp=1"])
  assert cli._train_config_from_args(args).mesh == {"fsdp": 1}
  assert cli.build_parser().parse_args(["compare", "--mesh", "data=1"]).mesh == {"data": 1}
  for bad in ("data", "data=x", "model=2", "data=0"):
    assert cli.main(["train", "--mesh", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mesh" in err and "\n" not in err, err
  code = cli.main(["train", "--mesh", "data=2", "--data", corpus, "--steps", "1",
                   "--out", str(tmp_path / "run"), "--quiet"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "TrainConfig.mesh" in err and "device count 1" in err, err


# ---------------------------------------------------- 8 simulated devices


@pytest.mark.e2e
def test_worker_sees_eight_devices(results):
  assert results["devices"] == 8


@pytest.mark.e2e
def test_sharded_losses_match_one_device(results):
  single, sharded = np.array(results["single"]), np.array(results["sharded"])
  assert len(single) == len(sharded) == STEPS
  assert np.all(np.isfinite(single)) and single[-1] < single[0]
  np.testing.assert_allclose(sharded, single, atol=1e-4, rtol=0)
  assert abs(results["val"]["sharded"] - results["val"]["single"]) < 1e-4


@pytest.mark.e2e
def test_compiled_step_has_no_collectives_in_newton_schulz_loops(results):
  hlo = results["hlo"]
  assert hlo["ns_loops"] >= 1, hlo
  assert hlo["in_ns_loops"] == [], hlo
  assert sum(hlo["total"].values()) > 0, hlo  # the step itself is sharded


@pytest.mark.e2e
def test_resume_under_the_mesh_is_exact(results):
  r = results["resume"]
  assert r["resumed_from"] == 3 and len(r["first"]) == 3 and len(r["rest"]) == 3
  assert r["first"] + r["rest"] == results["sharded"][:6]  # bit-identical


@pytest.mark.e2e
def test_mesh_errors_name_the_field(results):
  errors = results["errors"]
  assert "TrainConfig.mesh" in errors["mismatch"] and "device count 8" in errors["mismatch"]
  assert "TrainConfig.batch_size=4" in errors["batch"] and "8 devices" in errors["batch"]


# ------------------------------------------------ two processes on loopback


@pytest.mark.e2e
def test_two_processes_match_the_single_process_run(two_processes, results):
  """Each process reads its half of every batch; a checkpoint at step 3 is
  written by both (orbax) and resumed by both; only process 0 logs."""
  from muonjax.train import Checkpointer, read_jsonl
  tmp, runs = two_processes
  for i, r in enumerate(runs):
    assert (r["process"], r["processes"], r["devices"], r["local_devices"]) == (i, 2, 8, 4)
    assert r["resumed_from"] == 3
    np.testing.assert_allclose(r["losses"], results["sharded"][:MP_STEPS], atol=1e-4, rtol=0)
  assert runs[0]["losses"] == runs[1]["losses"]
  ckpt = Checkpointer(os.path.join(tmp, "ckpt"))
  assert ckpt.steps() == [3, MP_STEPS]
  ckpt.close()
  assert [r["step"] for r in read_jsonl(os.path.join(tmp, "metrics.jsonl"))] == [1, 2, 3, 4, 5]


if __name__ == "__main__":
  if sys.argv[1] == "worker":
    print(json.dumps(_worker(*sys.argv[2:4])))
  else:
    print(json.dumps(_process(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
