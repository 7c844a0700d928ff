"""A small end-to-end demo: the same Flax NNX MLP trained with ``mj.muon`` and ``optax.adamw``.

The task is a synthetic regression: a fixed random two-layer "teacher" network
maps Gaussian inputs to targets, and a wider student learns it. Both optimizers
see the same initial weights and the same batches. The default learning rates
are each optimizer's best on a small grid (mean loss of the last 20 steps;
AdamW over {1e-3, 3e-3, 1e-2, 3e-2}, Muon over {0.01, 0.02, 0.05, 0.1}).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from muonjax import optimizers


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  d_in: int = 32
  hidden: int = 128
  d_out: int = 8
  batch: int = 256
  steps: int = 300
  seed: int = 0
  muon_lr: float = 0.02
  adamw_lr: float = 1e-2


class MLP(nnx.Module):
  """Three-layer tanh MLP; the hidden kernels go to Muon, biases to AdamW."""

  def __init__(self, d_in: int, hidden: int, d_out: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d_in, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.fc3 = nnx.Linear(hidden, d_out, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.tanh(self.fc1(x))
    x = jnp.tanh(self.fc2(x))
    return self.fc3(x)


def teacher_batches(cfg: DemoConfig) -> tuple[jax.Array, jax.Array]:
  """``(steps, batch, d_in)`` inputs and their teacher targets."""
  k_w1, k_w2, k_x = jax.random.split(jax.random.key(cfg.seed + 1), 3)
  w1 = jax.random.normal(k_w1, (cfg.d_in, 64)) / jnp.sqrt(cfg.d_in)
  w2 = jax.random.normal(k_w2, (64, cfg.d_out)) / jnp.sqrt(64)
  x = jax.random.normal(k_x, (cfg.steps, cfg.batch, cfg.d_in))
  return x, jnp.sin(2.0 * x @ w1) @ w2


def train(cfg: DemoConfig, tx: optax.GradientTransformation) -> jax.Array:
  """Train a fresh MLP with ``tx``; returns the loss at every step."""
  model = MLP(cfg.d_in, cfg.hidden, cfg.d_out, rngs=nnx.Rngs(cfg.seed))
  graphdef, params = nnx.split(model, nnx.Param)
  opt_state = tx.init(params)
  xs, ys = teacher_batches(cfg)

  def loss_fn(params, x, y):
    return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  _, losses = jax.jit(lambda c, b: jax.lax.scan(step, c, b))((params, opt_state), (xs, ys))
  return losses


def run(cfg: DemoConfig = DemoConfig(), print_fn: Callable[[str], None] = print) -> dict:
  """Train with both optimizers and print a side-by-side table."""
  runs = {
      f"muon (lr {cfg.muon_lr})": optimizers.muon(cfg.muon_lr),
      f"adamw (lr {cfg.adamw_lr})": optax.adamw(cfg.adamw_lr),
  }
  results = {}
  for name, tx in runs.items():
    start = time.perf_counter()
    losses = jax.device_get(train(cfg, tx))
    results[name] = dict(losses=losses, seconds=time.perf_counter() - start)
  checkpoints = sorted({0, cfg.steps // 10, cfg.steps // 3, cfg.steps - 1})
  header = f"{'optimizer':<20}" + "".join(f"{'step ' + str(s):>12}" for s in checkpoints)
  print_fn(f"MLP {cfg.d_in}-{cfg.hidden}-{cfg.hidden}-{cfg.d_out} on a synthetic teacher, "
           f"batch {cfg.batch}, {cfg.steps} steps, seed {cfg.seed}")
  print_fn(header + f"{'seconds':>10}")
  for name, r in results.items():
    row = "".join(f"{float(r['losses'][s]):>12.5f}" for s in checkpoints)
    print_fn(f"{name:<20}{row}{r['seconds']:>10.1f}")
  return results


if __name__ == "__main__":
  run()
