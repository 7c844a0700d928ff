"""Studies: campaigns, tuned campaigns, learning-rate grids and bands, one compilation per
sweep, sphere updates.

The study scripts themselves (experiments/study_*.py) run their smoke presets in
tests/apps/test_study_<name>.py.
"""

import dataclasses
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import muonjax as mj
from muonjax import compare, models, report, study, sweep
from muonjax.models.ngpt import sphere_projection
from muonjax.train import TrainConfig, build_optimizer, lower_train_step, schedule_for

TINY_GPT = dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32)


def _config(**changes):
  base = TrainConfig(model="gpt", model_fields=TINY_GPT, optimizer="muon", learning_rate=0.02,
                     optimizer_hparams={"adam_learning_rate": 3e-3}, schedule="cosine",
                     warmup_steps=2, steps=10, batch_size=2, seq_len=8)
  return dataclasses.replace(base, **changes)


# --- one compiled step per learning-rate sweep and per seed set ------------------


@pytest.mark.e2e  # a study's machinery on real (tiny) runs: CI's second tier
def test_learning_rates_and_seed_do_not_change_the_compiled_program():
  text = lambda c: lower_train_step(c).as_text()
  reference = text(_config())
  assert text(_config(learning_rate=0.05)) == reference
  assert text(_config(optimizer_hparams={"adam_learning_rate": 1e-2})) == reference
  assert text(_config(seed=3)) == reference
  assert text(_config(steps=11)) != reference  # the schedule's shape is part of the program


@pytest.mark.parametrize("optimizer,hparams", [
    ("muon", {"adam_learning_rate": 3e-3}),
    ("adamw", {}),
    ("momo", {}),
])
@pytest.mark.e2e  # a study's machinery on real (tiny) runs: CI's second tier
def test_build_optimizer_equals_the_alias_with_the_schedule(optimizer, hparams):
  config = _config(optimizer=optimizer, optimizer_hparams=hparams)
  model = models.build("gpt", rngs=0, max_seq_len=8, **TINY_GPT)
  params = nnx.state(model, nnx.Param)
  direct_hparams = dict(hparams)
  if "adam_learning_rate" in hparams:
    direct_hparams["adam_learning_rate"] = schedule_for(config, hparams["adam_learning_rate"])
  direct = mj.get_optimizer(optimizer, learning_rate=schedule_for(config), **direct_hparams)
  ours = build_optimizer(config)
  s_direct, s_ours = direct.init(params), ours.init(params)
  extra = {"value": jnp.float32(3.0)} if optimizer == "momo" else {}
  # One compiled update each (eager updates compile every op separately).
  update_direct, update_ours = jax.jit(direct.update), jax.jit(ours.update)
  rng = np.random.default_rng(0)
  for step in range(3):
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    u_direct, s_direct = update_direct(grads, s_direct, params, **extra)
    u_ours, s_ours = update_ours(grads, s_ours, params, **extra)
    np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in jax.tree.leaves(u_ours)]),
                               np.concatenate([np.ravel(x) for x in jax.tree.leaves(u_direct)]),
                               rtol=2e-5, atol=1e-7)


@pytest.mark.e2e  # a study's machinery on real (tiny) runs: CI's second tier
def test_build_optimizer_keeps_metadata_routing_across_updates():
  # LoopFormer's conditioning matrices go to AdamW by metadata; the optimizer is
  # rebuilt at every update and must keep routing them there.
  config = TrainConfig(model="loopformer", optimizer="newton_muon", learning_rate=0.02,
                       model_fields=dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2,
                                         d_ff=32, n_loops=2, freq_dim=8),
                       steps=4, batch_size=2, seq_len=8)
  model = models.build("loopformer", rngs=0, max_seq_len=8, **config.model_fields)
  optimizer = nnx.Optimizer(model, build_optimizer(config), wrt=nnx.Param)
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
  # Raised on a routing mismatch before the fix (at trace time, so also under jit).
  nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, grads)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(nnx.state(model)))


# --- evaluation accuracy ------------------------------------------------------


@pytest.mark.e2e  # a study's machinery on real (tiny) runs: CI's second tier
def test_eval_metrics_accuracy_is_the_argmax_hit_rate():
  model = models.build("gpt", rngs=0, max_seq_len=8, **TINY_GPT)
  x = jax.random.randint(jax.random.key(1), (3, 8), 0, 64)
  y = jax.random.randint(jax.random.key(2), (3, 8), 0, 64)
  loss, accuracy = models.eval_metrics(model, x, y)
  logits = np.asarray(model(x), np.float64)
  np.testing.assert_allclose(float(accuracy), np.mean(logits.argmax(-1) == np.asarray(y)))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.take_along_axis(log_probs, np.asarray(y)[..., None], -1).mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


# --- comparison rows, learning-rate curves and bands ----------------------------------


def _result(loss, seconds=0.01, history=None):
  return dict(final_val_loss=loss, final_val_accuracy=0.5, time_per_step=seconds,
              eval_history=history or [[10, loss]])


def test_comparison_rows_leave_diverged_runs_out_of_the_means():
  runs = {"adamw": [_result(2.0), _result(2.2)],
          "muon": [_result(1.0), {"diverged": True, "final_val_loss": None, "eval_history": [],
                                  "time_per_step": None}],
          "bad": [{"diverged": True, "final_val_loss": None, "eval_history": [],
                   "time_per_step": None}]}
  rows = {r["optimizer"]: r for r in report.comparison_rows(runs)}
  assert rows["muon"]["val_loss"] == 1.0 and rows["muon"]["diverged"] == 1
  assert rows["muon"]["seeds"] == 1
  assert rows["muon"]["delta"] == pytest.approx(1.0 - 2.1)
  assert rows["bad"]["val_loss"] is None and rows["bad"]["diverged"] == 1
  assert rows["adamw"]["perplexity"] == pytest.approx(math.exp(2.1))
  table = report.markdown_table(list(rows.values()), accuracy=True)
  assert "diverged (1 of 0 runs)" not in table and "| bad | diverged" in table
  assert "1.0000 (1 diverged)" in table


def _grid_payload(losses):
  """A campaign payload for lr_curves: ``losses[entry][lr]`` = per-seed losses (None: diverged)."""
  runs = {}
  for entry, by_lr in losses.items():
    for lr, seeds in by_lr.items():
      runs[study.lr_label(entry, lr)] = [
          {"diverged": True, "final_val_loss": None, "eval_history": [], "time_per_step": None}
          if v is None else _result(v) for v in seeds]
  return {"rows": report.comparison_rows(runs, baseline="none")}


def test_lr_curves_best_rate_and_band_within_two_percent():
  losses = {"a": {1e-3: [3.0, 3.2], 1e-2: [2.0, 2.02], 1e-1: [2.03, 2.03]},
            "b": {1e-3: [2.5, 2.5], 1e-2: [None, 1.0], 1e-1: [None, None]}}
  grid = {"a": (1e-3, 1e-2, 1e-1), "b": (1e-3, 1e-2, 1e-1)}
  curves = study.lr_curves(_grid_payload(losses), ["a", "b"], grid)
  a, b = curves["a"], curves["b"]
  assert a["points"][0][1:] == [pytest.approx(3.1), pytest.approx(0.1414, abs=1e-4), 2, 0]
  assert a["band"]["best_lr"] == 1e-2 and a["band"]["lo"] == 1e-2 and a["band"]["hi"] == 1e-1
  assert a["band"]["decades"] == pytest.approx(1.0)
  # a rate where a seed diverged is not in the band, even with a low finished mean
  assert b["band"]["best_lr"] == 1e-3 and b["band"]["decades"] == 0.0
  assert study.best_learning_rates(curves) == {"a": 1e-2, "b": 1e-3}
  table = study.lr_table(curves)
  assert "| b | 2.500 ± 0.000 | 1.000 ± 0.000 (1 div.) | diverged | 0.001 (grid edge) |" in table
  assert "| 0.01 | 2.0100 |" in table  # a's best is inside its grid: no edge mark
  with pytest.raises(ValueError, match="every learning rate of 'c' diverged"):
    study.best_learning_rates({"c": {"points": [], "band": {"best_lr": None}}})


def test_versus_calls_overlapping_seeds_a_tie():
  row = lambda m, s: {"val_loss": m, "val_loss_std": s}
  assert study.versus(row(1.0, 0.01), row(1.1, 0.01)) == "lower"
  assert study.versus(row(1.2, 0.01), row(1.1, 0.01)) == "higher"
  assert study.versus(row(1.0, 0.06), row(1.1, 0.05)) == "tie"


def test_lr_grid_entries_and_compare_entry_keys():
  preset = compare.ComparePreset(model="ngpt", model_fields=dict(TINY_GPT), optimizers={},
                                 steps=2, batch_size=2, seq_len=8, warmup_steps=0)
  grid = study.lr_grid(preset, {"Muon": {"optimizer": "muon", "beta": 0.9,
                                         "model_fields": {"gated": True, "sphere_every": 3}}},
                       {"Muon": (0.01, 0.1)})
  assert list(grid.optimizers) == ["Muon @ 0.01", "Muon @ 0.1"]
  assert grid.baseline == "Muon @ 0.01"
  config = compare.train_config(grid, "Muon @ 0.1", seed=2)
  assert (config.optimizer, config.learning_rate, config.seed) == ("muon", 0.1, 2)
  shared = {f"adam_{k}": v for k, v in compare.SHARED_ADAM.items()}  # symmetric arms
  assert config.optimizer_hparams == {"beta": 0.9, **shared}
  assert config.model_fields["sphere_every"] == 3 and config.model_fields["gated"] is True
  assert config.model_fields["d_model"] == TINY_GPT["d_model"]  # the preset's, merged
  misplaced = study.lr_grid(preset, {"Muon": {"optimizer": "muon", "sphere_every": 3}},
                            {"Muon": (0.1,)})
  with pytest.raises(ValueError, match=r"\['sphere_every'\] are ngpt model fields; put them "
                                       r"in the entry's 'model_fields'"):
    compare.train_config(misplaced, "Muon @ 0.1", seed=0)
  with pytest.raises(ValueError, match="no learning rates for"):
    study.lr_grid(preset, {"x": {}}, {})


# --- campaigns --------------------------------------------------------------------


@pytest.mark.e2e  # a study's machinery on real (tiny) runs: CI's second tier
def test_run_campaign_reads_a_finished_campaign_back(tmp_path, monkeypatch):
  preset = compare.get_preset("smoke")
  preset = dataclasses.replace(preset, optimizers={"adamw": {"learning_rate": 3e-3}}, steps=2,
                               baseline_length=1.0, timing_repeats=0)
  first = study.run_campaign(str(tmp_path), "c", preset, log=None)
  assert first["rows"][0]["val_accuracy"] is not None
  monkeypatch.setattr(compare, "run_comparison", lambda *a, **k: pytest.fail("reran"))
  lines = []
  again = study.run_campaign(str(tmp_path), "c", preset, log=lines.append)
  assert again["rows"] == json.loads(json.dumps(first["rows"]))
  assert first["campaign"] == again["campaign"] == "c"  # the runtime table names it
  assert lines and "already done" in lines[0]
  with pytest.raises(ValueError, match="preset differs"):
    study.run_campaign(str(tmp_path), "c", dataclasses.replace(preset, steps=3), log=None)


# --- sphere updates ---------------------------------------------------------------


def _unit_rows(key, n, d):
  w = jax.random.normal(key, (n, d))
  return w / jnp.linalg.norm(w, axis=1, keepdims=True)


def test_geodesic_norm_rule_moves_each_vector_by_its_step_length():
  w = _unit_rows(jax.random.key(0), 5, 8)
  delta = 0.05 * jax.random.normal(jax.random.key(1), (5, 8))
  stage = sphere_projection({"w": 1}, mode="geodesic", theta="norm")
  u, _ = stage.update({"w": delta}, stage.init({"w": w}), {"w": w})
  new = w + u["w"]
  np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, rtol=1e-5)
  angle = np.arccos(np.clip(np.sum(np.asarray(w * new), axis=1), -1, 1))
  np.testing.assert_allclose(angle, np.linalg.norm(delta, axis=1), rtol=1e-3)


def test_geodesic_lr_rule_uses_the_schedule_and_lazy_projection_waits():
  w = _unit_rows(jax.random.key(0), 4, 6)
  delta = 0.3 * jax.random.normal(jax.random.key(1), (4, 6))
  stage = sphere_projection({"w": 1}, mode="geodesic", theta="lr",
                            learning_rate=optax.constant_schedule(0.1))
  u, _ = stage.update({"w": delta}, stage.init({"w": w}), {"w": w})
  cosines = np.sum(np.asarray(w * (w + u["w"])), axis=1)
  np.testing.assert_allclose(cosines, np.cos(0.1), rtol=1e-5)

  lazy = sphere_projection({"w": 1}, every=3)
  state, params, norms = lazy.init({"w": w}), {"w": w}, []
  for _ in range(3):
    u, state = lazy.update({"w": 0.5 * delta}, state, params)
    params = optax.apply_updates(params, u)
    norms.append(np.linalg.norm(params["w"], axis=1))
  assert not np.allclose(norms[0], 1.0) and not np.allclose(norms[1], 1.0)
  np.testing.assert_allclose(norms[2], 1.0, rtol=1e-5)


def test_geodesic_stage_leaves_unconstrained_leaves_their_update():
  # A post-step stage: Δ is the optimizer's scaled update, so a leaf without a sphere
  # axis (nGPT's eigen learning rates, gates) moves by Δ itself, whatever θ is.
  w = {"w": _unit_rows(jax.random.key(0), 4, 6), "s": jnp.ones(3)}
  delta = {"w": 0.3 * jax.random.normal(jax.random.key(1), (4, 6)),
           "s": jnp.array([0.1, -0.2, 0.3])}
  axes = {"w": 1, "s": None}
  for theta in ("lr", "norm"):
    stage = sphere_projection(axes, mode="geodesic", theta=theta, learning_rate=0.05)
    u, _ = stage.update(delta, stage.init(w), w)
    np.testing.assert_allclose(u["s"], delta["s"], rtol=1e-6)


def test_geodesic_scope_blocks_projects_the_embedding_and_head():
  rows = lambda k: _unit_rows(jax.random.key(k), 4, 6)
  params = {"blocks": {"w": rows(0)}, "embed": {"e": rows(1)}, "gate": jnp.zeros(2)}
  delta = {"blocks": {"w": 0.2 * rows(2)}, "embed": {"e": 0.2 * rows(3)},
           "gate": jnp.array([0.5, -0.5])}
  axes = {"blocks": {"w": 1}, "embed": {"e": 1}, "gate": None}
  stage = sphere_projection(axes, mode="geodesic", theta="lr", learning_rate=0.1,
                            scope="blocks")
  u, _ = stage.update(delta, stage.init(params), params)
  new = optax.apply_updates(params, u)
  # blocks: a great-circle move by θ = η
  np.testing.assert_allclose(np.sum(np.asarray(params["blocks"]["w"] * new["blocks"]["w"]),
                                    axis=1), np.cos(0.1), rtol=1e-5)
  # the embedding: W + Δ renormalized, as in projection
  moved = params["embed"]["e"] + delta["embed"]["e"]
  np.testing.assert_allclose(new["embed"]["e"],
                             moved / np.linalg.norm(moved, axis=1, keepdims=True), rtol=1e-5)
  np.testing.assert_allclose(new["gate"], delta["gate"], rtol=1e-6)
  # On nGPT itself (the model builds with the field set): its constraint stage moves the
  # blocks' vectors by θ = η and projects the embedding.
  model = models.build("ngpt", vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                       sphere_update="geodesic", sphere_scope="blocks", rngs=0)
  state = nnx.state(model, nnx.Param)
  step = jax.tree.map(lambda w: 0.01 * jnp.ones_like(w), state)
  stage = model.optimizer_constraint(0.1)
  u, _ = stage.update(step, stage.init(state), state)
  new = optax.apply_updates(state, u)
  up = state["blocks"]["mlp"]["up"]["kernel"][...][0]  # (in, out): unit columns (axis 0)
  np.testing.assert_allclose(np.sum(np.asarray(up * new["blocks"]["mlp"]["up"]["kernel"][...][0]),
                                    axis=0), np.cos(0.1), rtol=1e-4)
  e = state["embed"]["embedding"][...] + 0.01
  np.testing.assert_allclose(new["embed"]["embedding"][...],
                             e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-5)
  with pytest.raises(ValueError, match="scope='blocks' applies to mode='geodesic'"):
    sphere_projection(axes, scope="blocks")
  with pytest.raises(ValueError, match="scope"):
    sphere_projection(axes, mode="geodesic", scope="head")


def test_sphere_fields_are_checked():
  ngpt = lambda **fields: _config(model="ngpt", model_fields=dict(TINY_GPT, **fields))
  with pytest.raises(ValueError, match="NGPTConfig.sphere_update must be one of"):
    ngpt(sphere_update="retract")
  with pytest.raises(ValueError, match="NGPTConfig.sphere_theta must be one of"):
    ngpt(sphere_theta="angle")
  with pytest.raises(ValueError, match="sphere_every .* applies to"):
    ngpt(sphere_update="geodesic", sphere_every=2)
  with pytest.raises(ValueError, match="sphere_every must be a positive int"):
    ngpt(sphere_every=0)
  with pytest.raises(ValueError, match="NGPTConfig.sphere_scope must be one of"):
    ngpt(sphere_update="geodesic", sphere_scope="head")
  with pytest.raises(ValueError, match="sphere_scope='blocks' applies to"):
    ngpt(sphere_scope="blocks")
  # Models without unit-sphere weights have no such fields.
  with pytest.raises(ValueError, match=r"unknown GPTConfig field\(s\) \['sphere_every'\]"):
    _config(model_fields=dict(TINY_GPT, sphere_every=2))
  assert "sphere_every" not in TrainConfig.__dataclass_fields__


# --- tuned campaigns, interior grids, bands against a reference, the runtime table ---------


def _fake_campaign(loss_of):
  """A stand-in for run_campaign: every entry's seeds end at ``loss_of(entry, lr)`` (+ seed)."""
  calls = []

  def run(root, name, preset, *, log=None):
    calls.append((name, sorted(preset.optimizers)))
    runs = {e: [{"final_val_loss": loss_of(h.get("optimizer", e), h["learning_rate"]) + 0.01 * s}
                for s in preset.seeds] for e, h in preset.optimizers.items()}
    rows = [{"optimizer": e, "val_loss": sum(r["final_val_loss"] for r in v) / len(v),
             "val_loss_std": 0.01, "seeds": len(v), "diverged": 0} for e, v in runs.items()]
    return {"runs": runs, "rows": rows, "campaign": name, "wall_time": 60.0}
  return run, calls


def test_interior_lr_grid_extends_each_edge_until_interior(monkeypatch):
  # a's optimum (1e-2) lies three quarter-decades above its grid (three extensions to
  # reach it, a fourth to see past it); b's is inside.
  loss = {"a": lambda lr: (math.log10(lr) + 2) ** 2, "b": lambda lr: (math.log10(lr) + 3) ** 2}
  fake, calls = _fake_campaign(lambda opt, lr: 1.0 + loss[opt](lr))
  monkeypatch.setattr(study, "run_campaign", fake)
  preset = dataclasses.replace(compare.get_preset("smoke"), seeds=(0, 1, 2))
  entries = {"a": {"optimizer": "a"}, "b": {"optimizer": "b"}}
  payloads, curves, grids = study.interior_lr_grid(
      "root", "grid", preset, entries, {"a": (1e-3, 10 ** -2.75), "b": (1e-4, 1e-3, 1e-2)},
      log=None)
  assert [c[0] for c in calls] == ["grid"] + [f"grid/extend-{k}" for k in (1, 2, 3, 4)]
  assert all(names == ["a @ " + names[0].split(" @ ")[1]] for _, names in calls[1:])
  assert grids["b"] == [1e-4, 1e-3, 1e-2]
  assert grids["a"][-1] > 1e-2 and curves["a"]["band"]["best_lr"] == pytest.approx(1e-2, rel=1e-5)
  assert len(payloads) == 5
  for curve in curves.values():  # every best rate is interior
    lrs = [p[0] for p in curve["points"]]
    assert min(lrs) < curve["band"]["best_lr"] < max(lrs)


def test_lr_band_against_the_best_of_all_methods():
  points = [(1e-3, 3.0), (3e-3, 2.9), (1e-2, 3.05)]
  own = sweep.lr_band(points, 0.05)
  assert own["best_lr"] == 3e-3 and own["decades"] == pytest.approx(math.log10(3))
  shared = sweep.lr_band(points, 0.05, reference=2.8)  # 2.94 is the limit
  assert (shared["lo"], shared["hi"], shared["decades"]) == (3e-3, 3e-3, 0.0)
  empty = sweep.lr_band(points, 0.05, reference=2.0)
  assert empty["best_lr"] == 3e-3 and empty["decades"] is None and empty["lo"] is None


def test_tuned_campaign_reads_back_and_refuses_another_search(tmp_path, monkeypatch):
  preset = dataclasses.replace(compare.get_preset("smoke"), seeds=(0, 1),
                               optimizers={"adamw": {"learning_rate": 3e-3}})
  folder = tmp_path / "c" / "tune"
  folder.mkdir(parents=True)
  search = {"preset": json.loads(json.dumps(dataclasses.asdict(preset), default=str)),
            "budget": 5, "seed": study.TUNE_SEED, "first_points": 3, "table": "| t |",
            "results": {"adamw": {"best_lr": 1e-2, "edge": "high", "runs": 5,
                                  "points": [[1e-2, 2.0]], "best_loss": 2.0}}}
  (folder / "tune.json").write_text(json.dumps(search))
  fake, calls = _fake_campaign(lambda opt, lr: lr)
  monkeypatch.setattr(study, "run_campaign", fake)
  got, campaign = study.tuned_campaign(str(tmp_path), "c", preset, budget=5, log=None)
  assert got["campaign"] == os.path.join("c", "tune") and study.tuned_rates(got) == {"adamw": 1e-2}
  assert study.edge_entries(got) == ["adamw"]
  assert campaign["runs"]["adamw"][0]["final_val_loss"] == pytest.approx(1e-2)  # the tuned rate
  assert "budget 5 runs per entry" in study.search_markdown(got, "h")
  with pytest.raises(ValueError, match="another search"):
    study.tuned_campaign(str(tmp_path), "c", preset, budget=5, seed=7, log=None)


def test_tune_campaign_continues_a_search_with_a_larger_budget(tmp_path, monkeypatch):
  preset = dataclasses.replace(compare.get_preset("smoke"),
                               optimizers={"adamw": {"learning_rate": 3e-3}})
  folder = tmp_path / "s"
  folder.mkdir()
  old = {"preset": json.loads(json.dumps(dataclasses.asdict(preset), default=str)),
         "budget": 3, "seed": study.TUNE_SEED, "first_points": 3, "wall_time": 50.0,
         "results": {"adamw": {"points": [[1e-3, 2.0], [3e-3, 2.5]], "runs": 3}}}
  (folder / "tune.json").write_text(json.dumps(old))
  seen = {}

  def fake_tune_preset(preset, out_dir, *, budget, seed, first_points, known, known_wall_time,
                       on_run):
    seen.update(budget=budget, known=known)
    payload = dict(old, budget=budget, wall_time=known_wall_time + 10.0)
    (folder / "tune.json").write_text(json.dumps(payload))  # as tune_preset writes it
    return payload
  monkeypatch.setattr(study.tune, "tune_preset", fake_tune_preset)
  got = study.tune_campaign(str(tmp_path), "s", preset, budget=5, log=None)
  assert seen == {"budget": 5, "known": {"adamw": {1e-3: 2.0, 3e-3: 2.5}}}
  assert got["wall_time"] == 60.0 and got["campaign"] == "s"
  assert json.loads((folder / "tune-budget-3.json").read_text())["budget"] == 3
  assert json.loads((folder / "tune.json").read_text())["wall_time"] == 60.0
  with pytest.raises(ValueError, match="another search"):  # a smaller budget: not a continuation
    study.tune_campaign(str(tmp_path), "s", preset, budget=4, log=None)


def test_report_has_a_runtime_row_per_campaign(tmp_path):
  search = {"campaign": "x/tune", "wall_time": 120.0,
            "results": {"a": {"runs": 5}, "b": {"runs": 6}}}
  campaign = {"campaign": "x", "wall_time": 30.0, "runs": {"a": [{}, {}], "b": [{}, {}]}}
  study.write_report(str(tmp_path), "T", ["## s"], {}, campaigns=[search, campaign])
  text = (tmp_path / "report.md").read_text()
  assert "15 training runs in 2 campaigns, 2.5 min" in text
  assert "| x/tune | 11 | 2.0 |" in text and "| x | 4 | 0.5 |" in text
