"""NorMuon (`mj.normuon`, forms code / paper / modded) against a NumPy float64 reference.

The reference is written from docs/optimizers.md#normuon in Flax layout: a
leaf is a stack of ``(n_in, n_out)`` matrices. "Per output neuron" (code and
paper forms) means one statistic per column, a mean over the input axis (-2),
state ``(..., 1, n_out)``. The modded form keeps one statistic per index of the
*longer* side (it averages over the shorter axis).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import muonjax as mj
from muonjax.transforms.normalize import SecondMomentState, normuon_normalize

import helpers
import references
from helpers import as_stack, assert_close, random_tree, states_of, to_jax
from references import fro

pytestmark = pytest.mark.usefixtures("fp32_matmuls")

# --- NumPy float64 reference (docs/optimizers.md#newton-schulz-step, #coefficient-sets, #normuon) -------------------------


class NorMuonReference:
  """One matrix stack ``(B, n_in, n_out)``; returns the update ``-lr * D``."""

  def __init__(self, shape, form, lr=0.02, beta=0.95):
    self.form, self.lr, self.beta = form, lr, beta
    self.beta2 = 0.9 if form == "modded" else 0.95
    _, n_in, n_out = shape
    self.n_in, self.n_out = n_in, n_out
    if form == "modded":  # reduce the shorter axis
      self.axis = -2 if n_out >= n_in else -1
    else:  # per output neuron
      self.axis = -2
    self.m = np.zeros(shape)
    s_shape = list(shape)
    s_shape[self.axis] = 1
    self.s = np.zeros(s_shape)

  def step(self, g):
    beta = self.beta
    self.m = beta * self.m + (1 - beta) * g
    u = self.m if self.form == "paper" else beta * self.m + (1 - beta) * g
    if self.form == "modded":  # modded-nanogpt's Polar Express table (docs/optimizers.md#coefficient-sets)
      o = references.newton_schulz(u, table=references.PE_MODDED, safety=1.02, eps=1e-6)
    else:
      o = references.newton_schulz(u)
    v = np.mean(o * o, axis=self.axis, keepdims=True)
    self.s = self.beta2 * self.s + (1 - self.beta2) * v
    if self.form == "code":
      o1 = o / (np.sqrt(self.s) + 1e-10)
      d = o1 * fro(o) / (fro(o1) + 1e-10)
      d = d * np.sqrt(max(1.0, self.n_out / self.n_in))
    elif self.form == "paper":
      o1 = o / (np.sqrt(self.s) + 1e-8)
      d = o1 * 0.2 * np.sqrt(self.n_in * self.n_out) / (fro(o1) + 1e-8)
    else:  # modded: r = rsqrt(max(S, 1e-10)); O r f / max(f', 1e-10)
      o1 = o / np.sqrt(np.maximum(self.s, 1e-10))
      d = o1 * fro(o) / np.maximum(fro(o1), 1e-10)
      d = d * np.sqrt(max(1.0, self.n_out / self.n_in))
    return -self.lr * d


# --- helpers ---------------------------------------------------------------

SHAPES = helpers.REFERENCE_SHAPES

# assert_close: rtol 1e-4 plus an atol of 1e-5 x the largest entry (for near-zero
# entries). Calibrated over 4 seeds x 3 steps: fp32 vs float64 differ by at most
# 3e-6 x max|update| (relative errors above 1e-5 occur only on near-zero entries).


# --- reference checks ------------------------------------------------------


class NorMuonReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("code", "paper", "modded")
  def test_first_three_updates(self, form):
    rng = np.random.default_rng(0)
    params = to_jax(random_tree(rng, SHAPES))
    grads = [random_tree(rng, SHAPES) for _ in range(3)]
    tx = mj.normuon(form=form, compute_dtype=None)
    run = helpers.run_steps(tx, params, to_jax(grads), self.variant(tx.update))
    refs = {k: NorMuonReference(as_stack(np.zeros(s)).shape, form) for k, s in SHAPES.items()}
    for t, (g, updates) in enumerate(zip(grads, run.updates)):
      for k, ref in refs.items():
        expected = ref.step(as_stack(g[k].astype(np.float64)))
        assert updates[k].dtype == jnp.float32
        try:
          assert_close(updates[k], expected)
        except AssertionError as e:
          raise AssertionError(f"form={form} leaf={k} step={t + 1}: {e}") from None
    (nu_state,) = states_of(run.state, SecondMomentState)
    for k, ref in refs.items():
      assert_close(nu_state.nu[k], ref.s)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_state_shapes_per_output_neuron(form):
  params = {"w": jnp.zeros((3, 7)), "v": jnp.zeros((7, 3)), "s": jnp.zeros((2, 6, 4)),
            "b": jnp.zeros((7,))}
  state = mj.normuon(form=form).init(params)
  (nu_state,) = states_of(state, SecondMomentState)
  shapes = {k: (v.shape, v.dtype) for k, v in nu_state.nu.items() if hasattr(v, "shape")}
  assert shapes == {"w": ((1, 1, 7), jnp.float32), "v": ((1, 1, 3), jnp.float32),
                    "s": ((2, 1, 4), jnp.float32)}
  assert isinstance(nu_state.nu["b"], optax.MaskedNode)  # bias goes to AdamW


def test_state_shapes_modded_longer_axis():
  params = {"w": jnp.zeros((3, 7)), "v": jnp.zeros((7, 3)), "s": jnp.zeros((2, 6, 4))}
  (nu_state,) = states_of(mj.normuon(form="modded").init(params), SecondMomentState)
  assert {k: v.shape for k, v in nu_state.nu.items()} == {
      "w": (1, 1, 7), "v": (1, 7, 1), "s": (2, 6, 1)}
  assert all(v.dtype == jnp.float32 for v in nu_state.nu.values())


def test_code_form_keeps_frobenius_norm():
  """docs/optimizers.md#test-oracles: normalization restores each matrix's Frobenius norm (1e-5)."""
  rng = np.random.default_rng(1)
  tx = normuon_normalize(0.95)
  o = {"w": jnp.asarray(rng.standard_normal((5, 9)), jnp.float32),
       "s": jnp.asarray(rng.standard_normal((3, 8, 4)) * 1e-2, jnp.float32)}
  state = tx.init(o)
  for _ in range(3):
    out, state = tx.update(o, state)
    for k in o:
      before = np.linalg.norm(np.asarray(as_stack(o[k]), np.float64), axis=(-2, -1))
      after = np.linalg.norm(np.asarray(as_stack(out[k]), np.float64), axis=(-2, -1))
      np.testing.assert_allclose(after, before, rtol=1e-5)
    o = jax.tree.map(lambda x: x * 1.3 + 0.1, o)


def test_paper_form_update_rms():
  params = {"w": jnp.zeros((6, 10))}
  tx = mj.normuon(1.0, form="paper", compute_dtype=None)
  state = tx.init(params)
  g = {"w": jnp.asarray(np.random.default_rng(2).standard_normal((6, 10)), jnp.float32)}
  update = jax.jit(tx.update)
  for _ in range(2):
    updates, state = update(g, state, params)
    rms = float(jnp.sqrt(jnp.mean(jnp.square(updates["w"]))))
    assert rms == pytest.approx(0.2, rel=1e-5)


def test_beta2_override():
  rng = np.random.default_rng(3)
  g = rng.standard_normal((4, 6)).astype(np.float32)
  params = {"w": jnp.zeros((4, 6))}
  tx = mj.normuon(beta2=0.5, compute_dtype=None)
  state = tx.init(params)
  _, state = tx.update({"w": jnp.asarray(g)}, state, params)
  (nu_state,) = states_of(state, SecondMomentState)
  o = references.newton_schulz(as_stack(0.05 * 1.95 * g.astype(np.float64)))
  assert_close(nu_state.nu["w"], 0.5 * np.mean(o * o, axis=-2, keepdims=True))


# --- common alias requirements ---------------------------------------------


@pytest.mark.training
@pytest.mark.parametrize("form", ["code", "paper", "modded"])
def test_trains_mlp_at_default_lr(form):
  helpers.check_trains_mlp(mj.normuon(form=form), factor=0.8)


def _check_injected_lr(factory):
  params, g = helpers.matrix_and_bias(np.random.default_rng(4))
  # learning_rate drives the Muon leaves; the AdamW leaf keeps its own 3e-4.
  helpers.check_injected_lr(optax.inject_hyperparams(factory)(learning_rate=0.02),
                            mj.normuon(0.02), params, g, lr=0.02, scaled=["w"], unscaled=["b"])


def test_inject_hyperparams():
  _check_injected_lr(mj.normuon)


def test_inject_hyperparams_through_wrapper():
  """The alias itself accepts a traced learning rate (a wrapper hides **muon_kwargs)."""
  _check_injected_lr(helpers.through_wrapper(mj.normuon, form="code"))


@pytest.mark.parametrize("kwargs, name", [
    (dict(beta2=1.0), "beta2"),
    (dict(beta2=-0.1), "beta2"),
    (dict(form="x"), "form"),
    (dict(beta=1.0), "beta"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(weight_decay_mode="x"), "weight_decay_mode"),
])
def test_bad_arguments(kwargs, name):
  helpers.check_bad_argument(mj.normuon, kwargs, name)


def test_registry():
  params = {"w": jnp.zeros((4, 6))}
  g = {"w": jnp.asarray(np.random.default_rng(5).standard_normal((4, 6)), jnp.float32)}
  helpers.check_registry("normuon", params, g, learning_rate=0.01, form="paper",
                         compute_dtype=None, hyperparameters=("beta2", "form", "beta",
                                                              "compute_dtype"))
  with pytest.raises(ValueError, match="beta2"):
    mj.get_optimizer("normuon", beta2=1.5)
  with pytest.raises(ValueError, match="no hyperparameter"):
    mj.get_optimizer("normuon", bogus=1)
