"""Compose muonjax stages with optax on a plain pytree (no Flax).

The Muon chain is written out stage by stage::

    mj.momentum -> mj.orthogonalize -> mj.scale_by_shape
                -> optax.add_decayed_weights -> optax.scale_by_learning_rate

and ``optax.partition`` sends the matrices to it and the biases to
``optax.adamw``. Parameters are a dict of arrays; the loop is a jitted
function. This is what ``mj.muon(...)`` builds for you, minus the routing
rules.

Run::

    python examples/pytree_chain.py --steps 200
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import muonjax as mj


def init_params(key: jax.Array, sizes=(16, 64, 64, 4)) -> dict:
  params = {}
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    params[f"w{i}"] = jax.random.normal(k, (n_in, n_out)) / jnp.sqrt(n_in)  # (in, out)
    params[f"b{i}"] = jnp.zeros((n_out,))
  return params


def forward(params: dict, x: jax.Array) -> jax.Array:
  n = len(params) // 2
  for i in range(n):
    x = x @ params[f"w{i}"] + params[f"b{i}"]
    if i < n - 1:
      x = jnp.tanh(x)
  return x


def make_optimizer(learning_rate: float, adam_learning_rate: float,
                   weight_decay: float) -> optax.GradientTransformation:
  muon_chain = optax.chain(
      mj.momentum(0.95, nesterov=True),         # EMA momentum with Nesterov look-ahead
      mj.orthogonalize("newton_schulz"),        # Keller's quintic, 5 steps
      mj.scale_by_shape("keller"),              # sqrt(max(1, n_out / n_in))
      optax.add_decayed_weights(weight_decay),  # decoupled decay
      optax.scale_by_learning_rate(learning_rate),
  )
  labels = lambda params: jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adam", params)
  return optax.partition(
      {"muon": muon_chain, "adam": optax.adamw(adam_learning_rate, weight_decay=0.0)},
      labels)


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--learning-rate", type=float, default=0.02)
  parser.add_argument("--adam-learning-rate", type=float, default=3e-3)
  parser.add_argument("--weight-decay", type=float, default=0.01)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  key_params, key_teacher, key_eval, key_data = jax.random.split(jax.random.key(args.seed), 4)
  params = init_params(key_params)
  teacher = init_params(key_teacher)
  target = lambda x: jnp.sin(2.0 * forward(teacher, x))
  x_eval = jax.random.normal(key_eval, (512, 16))
  y_eval = target(x_eval)

  tx = make_optimizer(args.learning_rate, args.adam_learning_rate, args.weight_decay)
  opt_state = tx.init(params)

  def loss_fn(params, x, y):
    return jnp.mean((forward(params, x) - y) ** 2)

  @jax.jit
  def train_step(params, opt_state, key):
    x = jax.random.normal(key, (args.batch_size, 16))
    loss, grads = jax.value_and_grad(loss_fn)(params, x, target(x))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  initial = float(loss_fn(params, x_eval, y_eval))
  print(f"initial loss: {initial:.6f}")
  for step, key in enumerate(jax.random.split(key_data, args.steps)):
    params, opt_state, loss = train_step(params, opt_state, key)
    if (step + 1) % max(1, args.steps // 5) == 0:
      print(f"step {step + 1:5d}  train loss {float(loss):.6f}")
  final = float(loss_fn(params, x_eval, y_eval))
  print(f"final loss: {final:.6f}")
  return final


if __name__ == "__main__":
  main()
