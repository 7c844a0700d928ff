"""Momentum stage (docs/optimizers.md#momentum-forms): EMA, heavy-ball SGD, bias-corrected EMA, EMA from G_1."""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from muonjax.transforms.validation import check_choice, check_same_shapes, check_unit_interval

MomentumForm = Literal["ema", "sgd", "ema_from_first"]
FORMS = ("ema", "sgd", "ema_from_first")


class MomentumState(NamedTuple):
  """State of :func:`momentum`."""

  count: jax.Array  # int32 scalar: number of updates so far.
  mu: optax.Updates  # momentum buffer, in ``mu_dtype``.


def momentum(
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    form: MomentumForm = "ema",
    bias_correction: bool = False,
    mu_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Accumulate gradients into a momentum buffer and emit the direction to use.

  Forms (zero-initialised buffers; ``t`` counts from 1):

  * ``"ema"`` (Keller Muon): ``M_t = beta M_{t-1} + (1 - beta) G_t``; output
    ``beta M_t + (1 - beta) G_t`` with Nesterov, else ``M_t``. With
    ``bias_correction=True`` this becomes optax.contrib.muon's form:
    ``beta M_t / (1 - beta^{t+1}) + (1 - beta) G_t / (1 - beta^t)`` (Nesterov)
    or ``M_t / (1 - beta^t)``.
  * ``"sgd"`` (heavy ball; Moonlight, Dion, Mano): ``S_t = beta S_{t-1} + G_t``;
    output ``G_t + beta S_t`` with Nesterov, else ``S_t``. ``S_t = M_t/(1-beta)``
    exactly, so scale-invariant stages (Newton–Schulz) see no difference.
  * ``"ema_from_first"`` (GPT-opt MuonAdam): ``M_1 = G_1``, then EMA.

  Args:
    beta: momentum coefficient in ``[0, 1)``; ``0`` passes gradients through.
    nesterov: use the Nesterov look-ahead form.
    form: ``"ema"``, ``"sgd"`` or ``"ema_from_first"``.
    bias_correction: optax-style bias correction (``"ema"`` only).
    mu_dtype: dtype of the stored buffer; defaults to the parameter dtype.

  Returns:
    An ``optax.GradientTransformation`` with :class:`MomentumState`.

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    optax.contrib.muon, https://github.com/google-deepmind/optax.
  """
  check_unit_interval("beta", beta)
  check_choice("form", form, FORMS)
  if bias_correction and form != "ema":
    raise ValueError(f"bias_correction applies to form='ema' only; got form={form!r}")
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    return MomentumState(count=jnp.zeros([], jnp.int32),
                         mu=optax.tree.zeros_like(params, dtype=mu_dtype))

  def update_fn(updates, state, params=None):
    del params
    check_same_shapes(updates, state.mu)  # the buffers have the parameters' shapes
    count = optax.safe_increment(state.count)
    if form == "sgd":
      mu = jax.tree.map(lambda m, g: beta * m + g, state.mu, updates)
      out = (jax.tree.map(lambda m, g: g + beta * m, mu, updates) if nesterov else mu)
    else:
      mu = optax.tree.update_moment(updates, state.mu, beta, 1)
      if form == "ema_from_first":
        first = state.count == 0
        mu = jax.tree.map(lambda m, g: jnp.where(first, g.astype(m.dtype), m), mu, updates)
      if bias_correction:
        m_hat = optax.tree.bias_correction(
            mu, beta, optax.safe_increment(count) if nesterov else count)
        g_hat = optax.tree.bias_correction(updates, beta, count)
      else:
        m_hat, g_hat = mu, updates
      out = (jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, m_hat, g_hat)
             if nesterov else m_hat)
    out = jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates)
    return out, MomentumState(count=count, mu=optax.tree.cast(mu, mu_dtype))

  return optax.GradientTransformation(init_fn, update_fn)
