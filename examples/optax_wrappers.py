"""optax's wrappers around a muonjax optimizer: MultiSteps, apply_if_finite,
inject_hyperparams and contrib.reduce_on_plateau.

A muonjax optimizer is an ordinary ``optax.GradientTransformation``, so optax's
wrappers compose with it unchanged. Each section trains the same small model
(a dict of arrays, synthetic regression) and prints its initial and final loss:

* ``optax.MultiSteps(mj.muon(...), every_k_schedule=4)``: gradient
  accumulation, one Muon step every 4 micro-batches;
* ``optax.apply_if_finite(mj.muon(...), max_consecutive_errors=3)``: a step
  whose gradient is not finite is skipped (one NaN batch is injected);
* ``optax.inject_hyperparams(mj.muon)(learning_rate=...)``: the learning rate
  lives in the optimizer state and is changed between steps (halved midway);
* ``optax.chain(mj.muon(...), optax.contrib.reduce_on_plateau(...))``: the
  update is halved when the loss (passed as ``value=``, averaged over 8 steps)
  has not improved by 10% for 2 checks (never below a quarter).

Run::

    python examples/optax_wrappers.py --steps 120
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import muonjax as mj

D_IN, HIDDEN, D_OUT = 16, 64, 4


def init_params(key: jax.Array) -> dict:
  k1, k2 = jax.random.split(key)
  return {
      "hidden": {"kernel": jax.random.normal(k1, (D_IN, HIDDEN)) / D_IN**0.5,
                 "bias": jnp.zeros((HIDDEN,))},
      "out": {"kernel": jax.random.normal(k2, (HIDDEN, D_OUT)) / HIDDEN**0.5,
              "bias": jnp.zeros((D_OUT,))},
  }


def forward(params: dict, x: jax.Array) -> jax.Array:
  h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  return h @ params["out"]["kernel"] + params["out"]["bias"]


def loss_fn(params, x, y):
  return jnp.mean((forward(params, x) - y) ** 2)


def make_data(seed: int, steps: int, batch: int):
  k_teacher, k_x, k_eval = jax.random.split(jax.random.key(seed), 3)
  w = jax.random.normal(k_teacher, (D_IN, D_OUT)) / D_IN**0.5
  target = lambda x: jnp.sin(2.0 * x @ w)
  xs = jax.random.normal(k_x, (steps, batch, D_IN))
  x_eval = jax.random.normal(k_eval, (512, D_IN))
  return xs, target(xs), x_eval, target(x_eval)


def train(name: str, tx: optax.GradientTransformation, data, *, seed: int,
          nan_at: int | None = None, on_step=None) -> float:
  """Train from the same init; print the initial and final eval loss."""
  xs, ys, x_eval, y_eval = data
  params = init_params(jax.random.key(seed))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    # value= is an extra argument: reduce_on_plateau reads it, the rest ignore it.
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state, loss

  initial = float(loss_fn(params, x_eval, y_eval))
  for t in range(xs.shape[0]):
    x = xs[t]
    if t == nan_at:
      x = x.at[0, 0].set(jnp.nan)  # one corrupted batch: its gradient is NaN
    params, opt_state, _ = step(params, opt_state, x, ys[t])
    if on_step is not None:
      opt_state = on_step(t, opt_state)
  final = float(loss_fn(params, x_eval, y_eval))
  print(f"{name:<22} initial loss: {initial:.6f}  final loss: {final:.6f}")
  return opt_state


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=120)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--learning-rate", type=float, default=0.02)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  lr = args.learning_rate
  data = make_data(args.seed + 1, args.steps, args.batch_size)

  # 1. Gradient accumulation: one Muon step per 4 micro-batches.
  state = train("MultiSteps(k=4)", optax.MultiSteps(mj.muon(lr), every_k_schedule=4),
                data, seed=args.seed)
  print(f"  muon steps taken: {int(state.gradient_step)} of {args.steps} micro-batches")

  # 2. Skip non-finite updates (the NaN batch at step 5 changes nothing).
  state = train("apply_if_finite", optax.apply_if_finite(mj.muon(lr), max_consecutive_errors=3),
                data, seed=args.seed, nan_at=5)
  print(f"  non-finite steps skipped: {int(state.total_notfinite)}")

  # 3. The learning rate as state: halve it halfway through.
  def halve_midway(t, opt_state):
    if t == args.steps // 2:
      opt_state.hyperparams["learning_rate"] = opt_state.hyperparams["learning_rate"] / 2
    return opt_state
  state = train("inject_hyperparams", optax.inject_hyperparams(mj.muon)(learning_rate=lr),
                data, seed=args.seed, on_step=halve_midway)
  print(f"  learning rate at the end: {float(state.hyperparams['learning_rate']):.4g}")

  # 4. Scale the step down when the loss plateaus (value= passed to update).
  tx = optax.chain(mj.muon(lr), optax.contrib.reduce_on_plateau(
      factor=0.5, patience=2, rtol=0.1, accumulation_size=8, cooldown=0, min_scale=0.25))
  state = train("reduce_on_plateau", tx, data, seed=args.seed)
  print(f"  plateau scale at the end: {float(state[1].scale):.4g}")


if __name__ == "__main__":
  main()
