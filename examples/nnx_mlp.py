"""Train a Flax NNX MLP on a synthetic regression task with Muon (or AdamW).

Written like Flax's own examples: an ``nnx.Module``, an ``nnx.Optimizer`` and an
``nnx.jit`` train step. Switching optimizers is one line::

    tx = optax.adamw(learning_rate=3e-3)      # before
    tx = mj.muon(learning_rate=0.02)          # after: Muon on the hidden
                                              # kernels, AdamW on the rest

Run::

    python examples/nnx_mlp.py --optimizer muon --steps 200
    python examples/nnx_mlp.py --optimizer adamw --steps 200

Synthetic data only (a fixed random "teacher" network), so it runs in a few
seconds on a CPU with nothing to download.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import muonjax as mj


class MLP(nnx.Module):
  """Three dense layers; ``mj.muon`` routes the hidden kernels to Muon."""

  def __init__(self, d_in: int, hidden: int, d_out: int, *, rngs: nnx.Rngs):
    self.linear1 = nnx.Linear(d_in, hidden, rngs=rngs)
    self.linear2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.linear3 = nnx.Linear(hidden, d_out, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.gelu(self.linear1(x))
    x = nnx.gelu(self.linear2(x))
    return self.linear3(x)


def make_optimizer(name: str, learning_rate: float | None) -> optax.GradientTransformation:
  if name == "muon":
    return mj.muon(learning_rate=learning_rate or 0.02)
  return optax.adamw(learning_rate=learning_rate or 3e-3)


def teacher(key: jax.Array, d_in: int, d_out: int):
  """A fixed random function the student learns: ``y = sin(2 x W1) W2``."""
  k1, k2 = jax.random.split(key)
  w1 = jax.random.normal(k1, (d_in, 64)) / jnp.sqrt(d_in)
  w2 = jax.random.normal(k2, (64, d_out)) / 8.0
  return lambda x: jnp.sin(2.0 * x @ w1) @ w2


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def eval_step(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  return loss_fn(model, x, y)


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--optimizer", choices=["muon", "adamw"], default="muon")
  parser.add_argument("--learning-rate", type=float, default=None,
                      help="default: 0.02 for muon, 3e-3 for adamw")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  d_in, hidden, d_out = 16, 64, 4
  model = MLP(d_in, hidden, d_out, rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, make_optimizer(args.optimizer, args.learning_rate),
                            wrt=nnx.Param)
  f = teacher(jax.random.key(args.seed + 1), d_in, d_out)
  x_eval = jax.random.normal(jax.random.key(args.seed + 2), (512, d_in))
  y_eval = f(x_eval)

  initial = float(eval_step(model, x_eval, y_eval))
  print(f"{args.optimizer}: initial loss: {initial:.6f}")
  key = jax.random.key(args.seed + 3)
  for step in range(args.steps):
    key, sub = jax.random.split(key)
    x = jax.random.normal(sub, (args.batch_size, d_in))
    loss = train_step(model, optimizer, x, f(x))
    if (step + 1) % max(1, args.steps // 5) == 0:
      print(f"step {step + 1:5d}  train loss {float(loss):.6f}")
  final = float(eval_step(model, x_eval, y_eval))
  print(f"{args.optimizer}: final loss: {final:.6f}")
  return final


if __name__ == "__main__":
  main()
