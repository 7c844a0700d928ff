"""Time per training step of several runs, measured interleaved in one process.

Sequential runs on a shared machine do not give comparable times (the same
AdamW run measured 134 and 164 ms per step an hour apart on one 2-core
machine). :func:`time_arms` builds every arm's :class:`muonjax.train.Engine`
(model, optimizer, jitted step) in this process, feeds them the same batches,
and times them with the benchmark harness's method
(:func:`muonjax.bench.harness.interleaved`, ``docs/performance.md#measurement-method``):
warm-up calls, each call timed to ``block_until_ready``, the arms alternated
(A B C A B C …), the whole loop repeated, medians and ratios of medians.

Beside the arms it times the steps' forward and backward passes alone
(:func:`muonjax.train.step.build_grad_step`, the same model and batches): the
optimizer update's share of an arm's step is ``1 − t(forward+backward) / t(step)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax

# The case name of the forward and backward passes alone.
GRADS = "forward+backward"


def _stepper(engine):
  """A function of one batch that advances ``engine``'s own state by one training step
  (the state is donated, as in training) and returns what the step returns."""
  box = {"state": engine.state, "step": 0}
  engine.state = None

  def call(inputs, targets):
    box["step"] += 1
    box["state"], out = engine.step(box["state"], inputs, targets, box["step"])
    return box["state"], out

  return call


def time_arms(configs: Mapping[str, Any], corpus, baseline: str, *, repeats: int = 20,
              rounds: int = 2, warmup: int = 3, n_batches: int = 4) -> dict:
  """Times one training step of every config, interleaved.

  Args:
    configs: arm name → :class:`muonjax.train.TrainConfig` (the same model,
      batch size and sequence length; each arm's own optimizer and rate).
    corpus: the :class:`muonjax.data.Corpus` the batches come from.
    baseline: the arm the ratios refer to.
    repeats: timed steps per arm and round.
    rounds: how many times the interleaved loop runs.
    warmup: untimed steps per arm before the first round (the first compiles).
    n_batches: training batches that rotate through the timed calls.

  Returns:
    ``{"arms": {name: {"median_ms", "iqr_ms", "ratio" (median over the
    baseline's), "ratio_q1", "ratio_q3" (quartiles of the per-call paired
    ratios), "update_share"}}, "grads_median_ms", "repeats", "rounds",
    "warmup", "n_batches", "method"}``. ``update_share`` is ``None`` on a mesh
    (no forward+backward case there).

  Raises:
    ValueError: ``baseline`` is not an arm, or the arms' batch shapes differ.
  """
  from muonjax import data
  from muonjax.bench import harness
  from muonjax.train import EXTRA_ARGS_FNS, Engine, model_fields

  if baseline not in configs:
    raise ValueError(f"baseline {baseline!r} is not one of the arms {list(configs)}")
  shapes = {(c.batch_size, c.seq_len, c.grad_accum) for c in configs.values()}
  if len(shapes) != 1:
    raise ValueError(f"the arms' (batch_size, seq_len, grad_accum) differ: {sorted(shapes)}")
  first = next(iter(configs.values()))
  train_tokens, _ = data.split(corpus.tokens, val_fraction=first.val_fraction)
  engines = {name: Engine(c, model_fields(c, corpus.vocab_size),
                          EXTRA_ARGS_FNS.get(c.optimizer))
             for name, c in configs.items()}
  stream = engines[baseline].stream(train_tokens)
  batches = [engines[baseline].batch(next(stream)) for _ in range(n_batches)]

  cases = {}
  base_engine = engines[baseline]
  if base_engine.mesh is None:
    # A copy: the baseline's stepper donates the engine's own state.
    state = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x,
                         base_engine.state)
    cases[GRADS] = (lambda x, y: base_engine.grads(state, x, y, 1), batches)
  for name, engine in engines.items():
    cases[name] = (_stepper(engine), batches)
  with base_engine.context():
    result = harness.interleaved(cases, repeats, warmup=warmup, rounds=rounds)
  stats = result["stats"]
  grads_ms = 1e3 * stats[GRADS]["median"] if GRADS in stats else None
  arms = {}
  for name in configs:
    ratio = harness.ratio_of_medians(result, name, baseline)
    median_ms = 1e3 * stats[name]["median"]
    arms[name] = {
        "median_ms": median_ms,
        "iqr_ms": 1e3 * stats[name]["iqr"],
        "ratio": ratio["ratio"],
        "ratio_q1": ratio["paired"]["q1"],
        "ratio_q3": ratio["paired"]["q3"],
        "update_share": None if grads_ms is None else 1.0 - grads_ms / median_ms,
    }
  return {"arms": arms, "grads_median_ms": grads_ms, "repeats": result["n_per_round"],
          "rounds": rounds, "warmup": warmup, "n_batches": n_batches,
          "method": "interleaved in one process (muonjax.bench.harness.interleaved)"}
