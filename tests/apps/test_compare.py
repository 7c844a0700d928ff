"""muonjax.compare: run configs of a comparison, symmetric arms (no training here)."""

import dataclasses

import pytest

from muonjax import compare


def test_every_arm_trains_non_matrix_leaves_with_the_shared_adamw():
  preset = compare.get_preset("default")
  shared = preset.shared_adam
  muon = compare.train_config(preset, "muon", 0).optimizer_hparams
  assert {muon[f"adam_{k}"] for k in ("b1", "b2", "eps")} >= {shared["b1"], shared["b2"]}
  assert muon["adam_learning_rate"] == shared["learning_rate"]
  assert muon["adam_weight_decay"] == shared["weight_decay"]
  assert muon["adam_eps"] == shared["eps"]
  adamw = compare.train_config(preset, "adamw", 0).optimizer_hparams
  # the baseline's matrices share the betas/eps; its other leaves the shared rate and decay
  assert (adamw["b1"], adamw["b2"], adamw["eps"]) == (shared["b1"], shared["b2"], shared["eps"])
  assert adamw["adam_learning_rate"] == shared["learning_rate"]
  assert adamw["adam_weight_decay"] == shared["weight_decay"]
  assert compare.asymmetries(preset) == {}


def test_asymmetric_arms_are_named():
  preset = dataclasses.replace(compare.get_preset("smoke"), optimizers={
      "adamw": {"learning_rate": 1e-3},
      "muon": {"learning_rate": 0.02, "adam_learning_rate": 1e-2},
      "scion": {"learning_rate": 1e-3}})
  assert compare.train_config(preset, "muon", 0).optimizer_hparams["adam_learning_rate"] == 1e-2
  assert compare.asymmetries(preset) == {
      "muon": "sets adam_learning_rate=0.01",
      "scion": "no separate AdamW for the non-matrix leaves"}
  own = dataclasses.replace(preset, shared_adam=None)
  assert "adam_learning_rate" not in compare.train_config(own, "adamw", 0).optimizer_hparams
  assert compare.asymmetries(own) == {}


def test_unknown_entry_optimizer_is_a_value_error():
  preset = dataclasses.replace(compare.get_preset("smoke"),
                               optimizers={"x": {"learning_rate": 1e-3}})
  with pytest.raises(ValueError, match="unknown optimizer 'x'"):
    compare.train_config(preset, "x", 0)
