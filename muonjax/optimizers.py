"""Ready-made optimizers (aliases) built from muonjax stages, and their registry.

Every alias is an ``optax.partition`` of a Muon-family chain on matrix leaves
and AdamW on the rest (embeddings, heads, norms, biases, scalars); routing comes
from :func:`muonjax.muon_dimension_numbers` unless ``dimension_numbers`` says
otherwise.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Sequence, Union

import jax.numpy as jnp
import optax
from flax import nnx

from muonjax import routing
from muonjax.orthogonalization.coefficients import CoeffsLike
from muonjax.transforms.momentum import MomentumForm, momentum
from muonjax.transforms.normalize import (
    adamuon_normalize,
    normuon_normalize,
    scale_to_rms,
    sign,
)
from muonjax.transforms.orthogonalize import Orthogonalizer, orthogonalize
from muonjax.transforms.gower import gower_optimizer, gptopt_orthogonalizer
from muonjax.transforms.lmo import (
    constrained_decay,
    scale_by_lmo,
    scion_default_lmos,
    scion_momentum,
)
from muonjax.transforms.manifold import VERSIONS, mano_normalize
from muonjax.transforms.precondition import RefreshRule, precondition_input
from muonjax.transforms.scale import ShapeRule, scale_by_shape
from muonjax.transforms.weight_decay import DecayMode
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
    static_int,
)


class _Preset:
  """Marker default: the value comes from the ``compat`` preset."""

  def __repr__(self) -> str:
    return "<preset>"


PRESET: Any = _Preset()

# Knobs that differ between Keller's Muon (muonjax default) and optax.contrib.muon.
_COMPAT_PRESETS: dict[Optional[str], dict[str, Any]] = {
    None: dict(bias_correction=False, eps=None, compute_dtype="bfloat16",
               adam_learning_rate=3e-4, adam_b2=0.95, adam_eps=1e-10,
               adam_nesterov=False, dimension_numbers=routing.Router),
    "optax": dict(bias_correction=True, eps=1e-8, compute_dtype=None,
                  adam_learning_rate=None, adam_b2=0.999, adam_eps=1e-8,
                  adam_nesterov="nesterov", dimension_numbers=routing.optax_dimension_numbers),
}


def resolve_routing(dimension_numbers: Any) -> Any:
  """An alias's routing: ``None``/``Router`` → a fresh ``Router``; an ``nnx.Module`` → its tree."""
  if dimension_numbers is routing.Router or dimension_numbers is None:
    return routing.Router()
  if isinstance(dimension_numbers, nnx.Module):
    return routing.muon_dimension_numbers(dimension_numbers)
  return dimension_numbers


def forwards_to(target: Callable[..., Any]):
  """Mark an alias whose ``**kwargs`` are ``target``'s keyword arguments.

  ``optax.inject_hyperparams`` binds the alias's signature and passes the
  catch-all back as one keyword (``muon_kwargs={...}``); the wrapper unpacks
  it. :func:`hyperparameters` lists ``target``'s names for the registry.
  """
  def wrap(alias):
    var_kw = next(p.name for p in inspect.signature(alias).parameters.values()
                  if p.kind is inspect.Parameter.VAR_KEYWORD)

    @functools.wraps(alias)
    def inner(*args, **kwargs):
      nested = kwargs.pop(var_kw, None)
      if isinstance(nested, dict):
        kwargs = {**nested, **kwargs}
      return alias(*args, **kwargs)

    inner.forwards_to = target
    return inner
  return wrap


Stage = Union[optax.GradientTransformation, Callable[[Any], optax.GradientTransformation]]


def build_stages(stages: Sequence[Stage], dims) -> list[optax.GradientTransformation]:
  """Instantiate stage factories with the dimension-numbers spec ``dims``."""
  return [s if isinstance(s, optax.GradientTransformation) else s(dims) for s in stages]


def check_learning_rate(name: str, value) -> None:
  if not callable(value):
    check_positive(name, value)


def partition_matrices(
    matrix_tx: Callable[[Any], optax.GradientTransformation],
    other_tx: optax.GradientTransformation,
    dimension_numbers,
) -> optax.GradientTransformation:
  """``optax.partition`` of ``matrix_tx(dim_nums)`` (Muon leaves) and ``other_tx``.

  Args:
    matrix_tx: builds the matrix chain from the dimension-numbers spec it must
      use (a static tree or a callable evaluated on the masked updates).
    other_tx: transformation for leaves routed to ``None``.
    dimension_numbers: a tree of ``MuonDimensionNumbers | None`` or a callable
      ``params -> tree``.
  """
  def labels(params):
    dims = dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers
    return routing.labels_from_dimension_numbers(dims, params)

  return optax.partition(
      {routing.MUON: matrix_tx(dimension_numbers), routing.ADAM: other_tx}, labels)


def muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: MomentumForm = "ema",
    bias_correction: bool = PRESET,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = PRESET,
    compute_dtype: Optional[jnp.dtype] = PRESET,
    shape_rule: ShapeRule = "keller",
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Optional[optax.ScalarOrSchedule] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: float = PRESET,
    adam_eps: float = PRESET,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool = PRESET,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
) -> optax.GradientTransformation:
  r"""Muon on matrix leaves, AdamW on the rest.

  Matrix chain: :func:`momentum` → :func:`orthogonalize` → :func:`scale_by_shape`
  → ``optax.add_decayed_weights`` → ``optax.scale_by_learning_rate``, i.e.
  ``W ← W − η (s · NS(U) + λ W)`` (decoupled decay with the base η).

  The default is Keller Jordan's form: EMA momentum 0.95 with Nesterov and no
  bias correction, 5 steps of Keller's quintic in bfloat16, ``‖X‖_F + 1e-7``,
  scale ``sqrt(max(1, n_out/n_in))``; AdamW(3e-4, b1 0.9, b2 0.95, eps 1e-10)
  on embeddings, heads, norms, biases and scalars.

  ``compat="optax"`` reproduces ``optax.contrib.muon(learning_rate)`` (to 1e-5
  relative on float32 params): bias-corrected Nesterov EMA, NS in the update's
  dtype with ``eps=1e-8``, every rank-2 leaf to Muon (embeddings and heads
  included, rank-3 stacks to Adam, as optax does) and, on the rest, optax's
  NAdamW: same learning rate, b2 0.999, eps 1e-8, Nesterov as the Muon
  branch's (optax's one ``nesterov`` flag drives both). Arguments passed
  explicitly override either preset.

  Args:
    learning_rate: base learning rate η (float or schedule).
    beta: momentum coefficient.
    nesterov: Nesterov look-ahead for the matrix momentum.
    momentum_form: ``"ema"``, ``"sgd"`` or ``"ema_from_first"``.
    bias_correction: optax-style bias correction of the EMA.
    mu_dtype: momentum buffer dtype (default: the parameter dtype).
    method: ``"newton_schulz"``, ``"polar_express"``, ``"svd"``, a callable, or
      ``None`` for no orthogonalization (Mano; the "momentum only" ablation).
    coeffs: coefficient preset or table (default: Keller / Polar Express).
    steps: orthogonalization iterations (default 5).
    normalization: ``"frobenius"``, ``"spectral"``, ``"aol"``, ``"schatten"``.
    safety: Frobenius-norm safety divisor (default: the coefficient set's).
    eps: normalization epsilon (default: the coefficient set's, 1e-7 for Keller).
    compute_dtype: Newton–Schulz dtype (default bfloat16; None = update dtype).
    shape_rule: ``"keller"``, ``"rms_match"``, ``"spectral"``, ``"spectral_max"``
      or ``"none"``.
    rms: target RMS of ``"rms_match"``.
    weight_decay: decoupled decay λ of the matrix leaves.
    weight_decay_mask: optax mask (tree or callable) for the matrix decay.
    weight_decay_mode: ``"decoupled"`` or ``"cautious"`` (both branches).
    adam_learning_rate: AdamW learning rate (None: same as ``learning_rate``).
    adam_b1, adam_b2, adam_eps, adam_weight_decay, adam_nesterov: AdamW knobs.
    dimension_numbers: routing. Default: a :class:`muonjax.routing.Router`
      (name/shape rules plus ``muon=`` Variable metadata, which it remembers
      from ``init`` for ``nnx.Optimizer``). Or a tree of
      ``MuonDimensionNumbers`` / ``None``, an ``nnx.Module`` (routed once by
      :func:`muonjax.muon_dimension_numbers`), or a callable
      ``params -> tree``.
    group_by_shape: orthogonalize equal-shape matrices in one batched call.
    before_momentum: stages run on the raw gradient, before momentum (stage
      S0, e.g. :func:`muonjax.precondition_input` for Newton-Muon), in the
      same forms as ``before_orthogonalize``.
    before_orthogonalize: stages run after momentum, before orthogonalization
      (e.g. ``mj.sign()``): ``GradientTransformation``\ s, or callables taking
      the dimension-numbers spec and returning one.
    after_orthogonalize: stages run on the orthogonalized update, before the
      shape scale (e.g. ``mj.normuon_normalize``), in the same forms.
    compat: ``None`` (Keller) or ``"optax"``.

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  References:
    Jordan, Muon, https://github.com/KellerJordan/Muon;
    optax.contrib.muon, https://github.com/google-deepmind/optax.
  """
  check_choice("compat", compat, tuple(_COMPAT_PRESETS))
  preset = _COMPAT_PRESETS[compat]
  given = dict(bias_correction=bias_correction, eps=eps, compute_dtype=compute_dtype,
               adam_learning_rate=adam_learning_rate, adam_b2=adam_b2,
               adam_eps=adam_eps, adam_nesterov=adam_nesterov,
               dimension_numbers=dimension_numbers)
  # A knob left at PRESET takes the preset's value.
  knobs = {k: preset[k] if v is PRESET else v for k, v in given.items()}
  if knobs["adam_nesterov"] == "nesterov":  # optax's one flag drives both branches
    knobs["adam_nesterov"] = nesterov
  knobs["dimension_numbers"] = resolve_routing(knobs["dimension_numbers"])
  adam_lr = (learning_rate if knobs["adam_learning_rate"] is None
             else knobs["adam_learning_rate"])

  check_learning_rate("learning_rate", learning_rate)
  check_learning_rate("adam_learning_rate", adam_lr)
  for name, value in [("beta", beta), ("adam_b1", adam_b1), ("adam_b2", knobs["adam_b2"])]:
    check_unit_interval(name, value)
  for name, value in [("weight_decay", weight_decay), ("adam_weight_decay", adam_weight_decay),
                      ("adam_eps", knobs["adam_eps"])]:
    check_non_negative(name, value)
  if steps is not None:
    static_int("steps", steps, minimum=1)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(before_momentum, dims),
        momentum(beta, nesterov=nesterov, form=momentum_form,
                 bias_correction=knobs["bias_correction"], mu_dtype=mu_dtype),
        *build_stages(before_orthogonalize, dims),
        *([] if method is None else [orthogonalize(
            method, coeffs=coeffs, steps=steps, normalization=normalization, safety=safety,
            eps=knobs["eps"], compute_dtype=knobs["compute_dtype"], dimension_numbers=dims,
            group_by_shape=group_by_shape)]),
        *build_stages(after_orthogonalize, dims),
        scale_by_shape(shape_rule, dimension_numbers=dims, rms=rms),
        weight_decay_stage(weight_decay, mode=weight_decay_mode, mask=weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )

  other = adam_branch(adam_lr, b1=adam_b1, b2=knobs["adam_b2"], eps=knobs["adam_eps"],
                      weight_decay=adam_weight_decay, weight_decay_mode=weight_decay_mode,
                      mu_dtype=mu_dtype, nesterov=knobs["adam_nesterov"])
  return partition_matrices(matrix_chain, other, knobs["dimension_numbers"])


def adam_branch(learning_rate, *, b1, b2, eps, weight_decay, weight_decay_mode="decoupled",
                mu_dtype=None, nesterov=False) -> optax.GradientTransformation:
  """AdamW for non-matrix leaves: ``optax.adamw``'s chain with a choice of decay."""
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov),
      weight_decay_stage(weight_decay, mode=weight_decay_mode),
      optax.scale_by_learning_rate(learning_rate),
  )


@forwards_to(muon)
def polar_muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    steps: Optional[int] = None,
    variant: str = "paper",
    **muon_kwargs,
) -> optax.GradientTransformation:
  """Muon with Polar Express coefficients instead of Keller's quintic.

  Args:
    learning_rate: base learning rate η.
    steps: iterations (default 5; the paper table has 8 rows, beyond which
      the last repeats).
    variant: ``"paper"`` (safety 1.01) or ``"modded"`` (modded-nanogpt's 5-row
      table, safety 1.02).
    **muon_kwargs: any :func:`muon` argument.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Amsel et al., The Polar Express, arXiv 2505.16932,
    https://github.com/NoahAmsel/PolarExpress; modded-nanogpt record 38.
  """
  check_choice("variant", variant, ("paper", "modded"))
  coeffs = "polar_express" if variant == "paper" else "polar_express_modded"
  return muon(learning_rate, method="newton_schulz", coeffs=coeffs, steps=steps, **muon_kwargs)


@forwards_to(muon)
def normuon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    beta2: Optional[float] = None,
    form: str = "code",
    **muon_kwargs,
) -> optax.GradientTransformation:
  r"""NorMuon: Muon with a per-neuron second moment on the orthogonalized update.

  Forms (Flax layout; "per output neuron" = one value per column of the
  ``(n_in, n_out)`` kernel):

  * ``"code"`` (default, the official repository): EMA + Nesterov momentum,
    Keller NS5, ``S`` = EMA(β₂ = 0.95) of the mean of ``O²`` over the input axis,
    ``O / (√S + 1e-10)`` rescaled back to ``‖O‖_F``, Keller shape scale.
  * ``"paper"``: no Nesterov, ``O / (√S + 1e-8)`` then ``0.2·√(n_in n_out)/‖Ô‖_F``
    (update RMS 0.2) instead of the norm restore and shape scale.
  * ``"modded"`` (modded-nanogpt): statistic along the longer side, β₂ = 0.9,
    ``rsqrt(max(S, 1e-10))`` and a clamped norm restore.

  Args:
    learning_rate: base learning rate η.
    beta2: EMA coefficient of the neuron statistic (0.95; 0.9 for ``"modded"``).
    form: ``"code"``, ``"paper"`` or ``"modded"``.
    **muon_kwargs: any :func:`muon` argument (momentum, NS, AdamW branch,
      weight decay, routing).

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Li et al., NorMuon, arXiv 2510.05491, https://github.com/zichongli5/NorMuon
    (paper vs code: issues #5, #6, #9); modded-nanogpt
    https://github.com/KellerJordan/modded-nanogpt.
  """
  check_choice("form", form, ("code", "paper", "modded"))
  beta2 = (0.9 if form == "modded" else 0.95) if beta2 is None else beta2
  check_unit_interval("beta2", beta2)
  if form == "paper":
    muon_kwargs.setdefault("nesterov", False)
    muon_kwargs.setdefault("shape_rule", "none")
    stages = [lambda dims: normuon_normalize(beta2, eps=1e-8, restore_norm=False,
                                             dimension_numbers=dims),
              lambda dims: scale_to_rms(0.2, eps=1e-8, dimension_numbers=dims)]
  else:
    modded = form == "modded"
    stages = [lambda dims: normuon_normalize(
        beta2, axis="longer" if modded else "output", eps=1e-10, clamp=modded,
        dimension_numbers=dims)]
  muon_kwargs["after_orthogonalize"] = list(stages) + list(
      muon_kwargs.get("after_orthogonalize", ()))
  return muon(learning_rate, **muon_kwargs)


@forwards_to(muon)
def adamuon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    weight_decay: Optional[float] = None,
    eps: float = 1e-8,
    form: str = "code",
    nu_dtype: Any = "float32",
    **muon_kwargs,
) -> optax.GradientTransformation:
  r"""AdaMuon: Newton–Schulz of ``sign(U)``, an elementwise second moment, RMS 0.2.

  Matrix chain: momentum → ``sign`` → Keller NS5 → ``v ← βv + (1−β)O²`` (β is
  the momentum's) → ``O/(√v + eps)`` → ``· 0.2·√(n_in n_out)/(‖Ô‖_F + eps)`` →
  decay → −η. ``form="megatron"`` uses heavy-ball momentum (same direction up to
  the ε terms) and weight decay 0.1 unless given.

  Args:
    learning_rate: base learning rate η.
    weight_decay: decoupled decay λ of the matrices (default 0.01; 0.1 for
      ``"megatron"``).
    eps: epsilon of the second moment and of the RMS rescale.
    form: ``"code"`` (GPT-2 code) or ``"megatron"``.
    nu_dtype: second-moment dtype (float32; bfloat16 for reference parity).
    **muon_kwargs: any :func:`muon` argument.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Si et al., AdaMuon, arXiv 2507.11005, https://github.com/Chongjie-Si/AdaMuon.
  """
  check_choice("form", form, ("code", "megatron"))
  if weight_decay is None:
    weight_decay = 0.1 if form == "megatron" else 0.01
  if form == "megatron":
    muon_kwargs.setdefault("momentum_form", "sgd")
  beta = muon_kwargs.get("beta", 0.95)
  muon_kwargs.setdefault("shape_rule", "none")
  muon_kwargs["before_orthogonalize"] = [
      lambda dims: sign(dimension_numbers=dims),
      *muon_kwargs.get("before_orthogonalize", ())]
  muon_kwargs["after_orthogonalize"] = [
      lambda dims: adamuon_normalize(beta, eps=eps, nu_dtype=nu_dtype, dimension_numbers=dims),
      lambda dims: scale_to_rms(0.2, eps=eps, dimension_numbers=dims),
      *muon_kwargs.get("after_orthogonalize", ())]
  return muon(learning_rate, weight_decay=weight_decay, **muon_kwargs)


@forwards_to(muon)
def newton_muon(
    learning_rate: optax.ScalarOrSchedule = 0.05,
    *,
    beta2: float = 0.8,
    refresh_every: int = 16,
    ridge: float = 0.2,
    k0: float = 1e-3,
    ridge_eps: float = 0.0,
    refresh_rule: RefreshRule = "end",
    block_diagonal: Any = None,
    **muon_kwargs,
) -> optax.GradientTransformationExtraArgs:
  r"""Newton-Muon: Muon on the input-preconditioned gradient ``(K + γI)^{-1} G``.

  Matrix chain: :func:`muonjax.precondition_input` (before momentum) → EMA
  momentum 0.95 with Nesterov → Keller NS5 → ``sqrt(max(1, n_out/n_in))`` →
  decay → −η; AdamW on the rest (as :func:`muon`). ``K`` is the EWMA of the
  layer's input second moment, passed at every refresh step as the extra
  argument ``activation_stats`` (``tx.update(grads, state, params,
  activation_stats=stats)``; see :func:`muonjax.input_second_moment`). Without
  statistics the optimizer is plain Muon. Defaults follow the ``_2`` script;
  the ``_1`` script is ``beta2=0.95, refresh_every=32, ridge_eps=1e-8,
  momentum_form="sgd", shape_rule="spectral_max"`` with ``0.1×`` the learning
  rate.

  Args:
    learning_rate: base learning rate η.
    beta2: EWMA coefficient of ``K``.
    refresh_every: steps between refreshes of ``K`` and ``(K + γI)^{-1}``.
    ridge: ``γ = ridge·tr(K)/n_in + ridge_eps``.
    k0: ``K`` starts at ``k0·I``.
    ridge_eps: constant part of the ridge.
    refresh_rule: ``"end"`` (refresh on steps ``k−1, 2k−1, …``) or ``"start"``.
    block_diagonal: block-diagonal ``K`` per leaf (see
      :func:`muonjax.precondition_input`).
    **muon_kwargs: any :func:`muon` argument.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Du et al., Newton-Muon, arXiv 2604.01472,
    https://github.com/zhehangdu/Newton-Muon.
  """
  def stage(dims):
    return precondition_input(beta2=beta2, refresh_every=refresh_every, ridge=ridge,
                              ridge_eps=ridge_eps, k0=k0, refresh_rule=refresh_rule,
                              block_diagonal=block_diagonal, dimension_numbers=dims)
  muon_kwargs["before_momentum"] = [stage, *muon_kwargs.get("before_momentum", ())]
  return muon(learning_rate, **muon_kwargs)


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
) -> optax.GradientTransformation:
  """``optax.adamw`` with argument checks, for the registry and the CLI."""
  check_learning_rate("learning_rate", learning_rate)
  check_unit_interval("b1", b1)
  check_unit_interval("b2", b2)
  check_non_negative("eps", eps)
  check_non_negative("weight_decay", weight_decay)
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     nesterov=nesterov)


def scion(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    alpha: float = 1.0,
    constrained: bool = True,
    lmos: Any = None,
    overrides: Optional[dict] = None,
    dimension_numbers: Any = None,
    compute_dtype: Any = "bfloat16",
    mu_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Scion: a norm-constrained LMO step on every leaf (no AdamW branch).

  Chain: :func:`scion_momentum` (``d ← (1−α)d + αG``) → :func:`scale_by_lmo`
  (``u = scale·lmo(d)`` per leaf) → :func:`constrained_decay` (``u + W``) →
  ``optax.scale_by_learning_rate``, i.e. ``W ← (1−η)W − η·u`` (Frank-Wolfe);
  ``constrained=False`` gives ``W ← W − η·u`` (uSCG). Unlike :func:`muon` every
  leaf is routed to an LMO; the default routing is :func:`scion_default_lmos`
  (shallow-nanogpt "Mixed": hidden Spectral ×3, head Sign ×10, embeddings
  ColNorm ×1 per token, vectors BiasRMS). Start the constrained form from
  :func:`scion_init` so weights begin inside the balls.

  Args:
    learning_rate: η (float or schedule); also the constrained decay rate.
    alpha: Scion's ``momentum`` = 1 − β, in (0, 1]; 1 keeps no buffer (the
      reference default), 0.1 is the README's recommendation.
    constrained: Frank-Wolfe decay ``(1−η)W`` (True) or uSCG (False).
    lmos: per-leaf :class:`LMO` tree, one LMO, or a callable ``params -> tree``;
      ``None`` uses :func:`scion_default_lmos`.
    overrides: ``{regex: LMO | kind | None}`` for the default routing.
    dimension_numbers: matrix view of the matrix-LMO leaves (default: last two
      axes are (in, out), leading axes batched).
    compute_dtype: Newton-Schulz dtype of Spectral (bfloat16 like the
      reference; ``None`` = the update's dtype).
    mu_dtype: averaging buffer dtype.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Pethick et al., Training Deep Learning Models with Norm-Constrained LMOs,
    arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
  """
  check_learning_rate("learning_rate", learning_rate)
  if lmos is None:
    scion_default_lmos({}, overrides=overrides)  # validate the overrides now
    lmos = lambda tree: scion_default_lmos(tree, overrides=overrides)
  elif overrides:
    raise ValueError("overrides apply to the default routing only (lmos=None); "
                     "put the LMOs in lmos instead")
  return optax.chain(
      scion_momentum(alpha, mu_dtype=mu_dtype),
      scale_by_lmo(lmos, dimension_numbers=dimension_numbers, compute_dtype=compute_dtype),
      *([constrained_decay()] if constrained else []),
      optax.scale_by_learning_rate(learning_rate),
  )


@forwards_to(muon)
def mano(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    version: int = 2,
    weight_decay: float = 0.1,
    eps: float = 1e-8,
    both_axes: bool = False,
    **muon_kwargs,
) -> optax.GradientTransformation:
  r"""Mano: heavy-ball momentum, tangent projection and per-slice normalization, no Newton–Schulz.

  Matrix chain: SGD momentum ``S ← 0.95 S + G`` (Nesterov ``U = G + 0.95 S``
  for ``version=2``, ``U = S`` for ``version=1``) → :func:`mano_normalize`
  (projection against ``W`` and unit-norm slices, alternating each step
  between rows (even t, one slice per input feature) and columns (odd t, one
  per output neuron) of the Flax ``(n_in, n_out)`` kernel; output RMS 0.2) →
  decoupled decay → −η, i.e. ``W ← W − η (0.2 √len D + λ W)``. Embeddings,
  heads and 0/1-D leaves use AdamW(β = (0.9, 0.95), eps 1e-8, bias-corrected)
  with the **same** learning rate and weight decay.

  Under ``optax.inject_hyperparams`` pass ``static_args=("version",)``: the
  version selects code, so it cannot be traced.

  Args:
    learning_rate: base learning rate η (float or schedule), shared by AdamW.
    version: ``2`` (``mano_v2.py``: raw-``W`` projection, ``‖T‖ + eps``,
      Nesterov on) or ``1`` (``mano.py``: normalized-``W`` projection,
      ``max(‖T‖, eps)``, Nesterov off).
    weight_decay: decoupled decay λ of both branches (``adam_weight_decay``
      overrides the AdamW one).
    eps: Mano's epsilon (the Newton–Schulz ``eps`` of :func:`muon` is unused).
    both_axes: normalize along both axes every step (see :func:`mano_normalize`).
    **muon_kwargs: any :func:`muon` argument, e.g. ``nesterov``, ``beta``,
      ``dimension_numbers`` or ``method`` (``None`` here: no orthogonalization).

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  References:
    Gu & Xie, Mano: Restriking Manifold Optimization for LLM Training,
    arXiv 2601.23000,
    https://github.com/xie-lab-ml/Mano-Restriking-Manifold-Optimization-for-LLM-Training.
  """
  version = static_int("version", version, allowed=VERSIONS)
  check_positive("eps", eps)
  muon_kwargs.setdefault("nesterov", version == 2)
  muon_kwargs.setdefault("momentum_form", "sgd")
  muon_kwargs.setdefault("method", None)
  muon_kwargs.setdefault("shape_rule", "none")
  muon_kwargs.setdefault("adam_learning_rate", None)
  muon_kwargs.setdefault("adam_weight_decay", weight_decay)
  muon_kwargs.setdefault("adam_b1", 0.9)
  muon_kwargs.setdefault("adam_b2", 0.95)
  muon_kwargs.setdefault("adam_eps", 1e-8)
  muon_kwargs["after_orthogonalize"] = [
      lambda dims: mano_normalize(version, eps=eps, both_axes=both_axes,
                                  dimension_numbers=dims),
      *muon_kwargs.get("after_orthogonalize", ())]
  return muon(learning_rate, weight_decay=weight_decay, **muon_kwargs)


def muon_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    muon_lr_scale: float = 10.0,
    weight_decay: float = 0.1,
    weight_decay_mode: DecayMode = "decoupled",
    beta: float = 0.95,
    adam_betas: tuple[float, float] = (0.95, 0.95),
    eps: float = 1e-8,
    steps: int = 5,
    polar_method: Union[str, Orthogonalizer] = "polar_express_gptopt",
    compute_dtype: Any = "bfloat16",
    global_scale: bool = False,
    truncate: bool = False,
    truncate_loss: Optional[float] = 0.0,
    clamp_nonnegative: bool = True,
    stale_nuc: bool = True,
    mu_dtype: Optional[jnp.dtype] = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MuonAdam (Gower et al.): polar-factor steps on matrices, Adam on the rest, one lr.

  Muon leaves: ``M_1 = G_1``, ``M ← βM + (1−β)G``,
  ``W ← W(1 − ηλ) − η_t·s·polar(M)``. Adam leaves (no bias correction,
  ``m_1 = g_1``, ``v_1 = g_1²``): ``w ← w(1 − ηλ) − η_t·m/(eps + √v)``. No
  shape scale factor. ``global_scale=True`` is MuonMax (:func:`muon_max`);
  ``truncate=True`` adds Momo (:func:`momo`); otherwise ``η_t = η``. Built on
  :func:`muonjax.transforms.gower.gower_optimizer` (one transform over the full
  tree, because MuonMax's and Momo's sums span both branches).

  Call ``tx.update(grads, state, params, value=loss)``: ``value`` is required
  with ``truncate=True`` and ignored otherwise. Under
  ``optax.inject_hyperparams`` pass ``static_args=("steps",)`` (the iteration
  count is static) and keep ``compute_dtype`` a string or ``None``.

  Args:
    learning_rate: base η (float or schedule) of both branches.
    muon_lr_scale: ``s``, the Muon leaves' lr multiplier.
    weight_decay: decay λ of every leaf, with the base η.
    weight_decay_mode: ``"decoupled"`` or ``"cautious"``.
    beta: Muon momentum β.
    adam_betas: Adam ``(β₁, β₂)``; Momo needs ``β₁ == beta``.
    eps: Adam epsilon.
    steps: Newton–Schulz iterations.
    polar_method: ``"polar_express_gptopt"`` (GPT-opt's ``"polar_express"``),
      ``"keller"`` (GPT-opt's ``"jordan"``), ``"svd"`` or a callable.
    compute_dtype: Newton–Schulz dtype (bfloat16 as GPT-opt; ``None`` = the
      momentum's dtype).
    global_scale: multiply Muon steps by ``N = Σ_Muon <M_l, polar(M_l)>``
      (MuonMax).
    truncate: Momo truncation of the step size.
    truncate_loss: Momo's ``f*`` (``None`` disables truncation).
    clamp_nonnegative: clamp the Momo numerator at 0 (``False`` = GPT-opt).
    stale_nuc: use last step's ``<M, polar(M)>`` (fresh at step 1) in ``N``
      and in Momo's denominator, as GPT-opt does.
    mu_dtype: dtype of the moment buffers.
    dimension_numbers: routing (default: a :class:`muonjax.routing.Router`:
      hidden matrices and stacks to Muon; embeddings, heads, vectors to Adam).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonadam.py``, ``muonmax_momo.py``, ``muonadam_momo.py``).
  """
  check_learning_rate("learning_rate", learning_rate)
  try:
    adam_b1, adam_b2 = adam_betas
  except (TypeError, ValueError):
    raise ValueError(f"adam_betas must be a pair (beta1, beta2); got {adam_betas!r}") from None
  check_unit_interval("adam_betas[0]", adam_b1)
  check_unit_interval("adam_betas[1]", adam_b2)
  return gower_optimizer(
      learning_rate, variant="muon_max" if global_scale else "muon_adam",
      muon_lr_scale=muon_lr_scale, weight_decay=weight_decay,
      weight_decay_mode=weight_decay_mode, beta=beta, adam_b1=adam_b1, adam_b2=adam_b2,
      eps=eps, orthogonalizer=gptopt_orthogonalizer(polar_method, steps=steps,
                                                    compute_dtype=compute_dtype),
      stale_nuc=stale_nuc, truncate=truncate, truncate_loss=truncate_loss,
      clamp_nonnegative=clamp_nonnegative, mu_dtype=mu_dtype,
      dimension_numbers=resolve_routing(dimension_numbers))


@forwards_to(muon_adam)
def muon_max(learning_rate: optax.ScalarOrSchedule = 1e-3,
             **kwargs) -> optax.GradientTransformationExtraArgs:
  r"""MuonMax (Gower et al.): MuonAdam with Muon steps scaled by the global dual norm.

  ``W ← W(1 − ηλ) − η_t·s·N·polar(M)`` with the tree-wide scalar
  ``N = Σ_Muon <M_l, polar(M_l)>`` (≈ Σ‖M_l‖_*; last step's per-leaf values
  when ``stale_nuc``, fresh at step 1) from
  :func:`muonjax.transforms.gower.scale_by_global_nuclear_norm`; Adam leaves
  as :func:`muon_adam`. ``truncate=True`` adds Momo with
  ``D² = s·N² + Σ_Adam Σ m²/(eps + √v)``.

  Args:
    learning_rate: base η.
    **kwargs: any :func:`muon_adam` argument except ``global_scale``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``).
  """
  return muon_adam(learning_rate, global_scale=True, **kwargs)


@forwards_to(muon_adam)
def momo(learning_rate: optax.ScalarOrSchedule = 1e-3, *, base: str = "muon_max",
         **kwargs) -> optax.GradientTransformationExtraArgs:
  r"""Momo-truncated MuonMax (default) or MuonAdam: ``base(..., truncate=True)``.

  ``η_t = min(η, max(f̄ − f* + Σ<W, M>, 0) / D)`` with ``f̄`` the EMA (β) of
  ``loss − Σ<W, G>`` (``f̄_1`` = its first value), sums over **all** leaves, and
  ``D = D²`` (MuonMax) or ``D₁`` (MuonAdam); weight decay keeps the base η.
  ``f* = truncate_loss = 0`` by default. The numerator is clamped at 0 unless
  ``clamp_nonnegative=False`` (GPT-opt has no clamp: a negative numerator
  reverses the step). Requires ``beta == adam_betas[0]``.

  Call ``tx.update(grads, state, params, value=loss)``; without ``value`` the
  update raises ``ValueError``.

  Args:
    learning_rate: base η.
    base: ``"muon_max"`` or ``"muon_adam"``.
    **kwargs: any :func:`muon_adam` argument except ``global_scale`` and
      ``truncate``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Gower et al., arXiv 2510.09827, https://github.com/modichirag/GPT-opt
    (``muonmax_momo.py``, ``muonadam_momo.py``); Schaipp et al., MoMo,
    arXiv 2305.07583.
  """
  check_choice("base", base, ("muon_max", "muon_adam"))
  return muon_adam(learning_rate, global_scale=base == "muon_max", truncate=True, **kwargs)

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "muon": muon,
    "polar_muon": polar_muon,
    "normuon": normuon,
    "adamuon": adamuon,
    "newton_muon": newton_muon,
    "adamw": adamw,
    "scion": scion,
    "mano": mano,
    "muon_adam": muon_adam,
    "muon_max": muon_max,
    "momo": momo,
}


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation]) -> None:
  """Add ``factory`` to the registry under ``name`` (an error if taken)."""
  if name in OPTIMIZERS:
    raise ValueError(f"optimizer {name!r} is already registered")
  OPTIMIZERS[name] = factory


def hyperparameters(factory: Callable[..., Any]) -> list[str]:
  """Names a factory accepts, following ``**kwargs`` to the alias it forwards to."""
  names = []
  for p in inspect.signature(factory).parameters.values():
    if p.kind is inspect.Parameter.VAR_KEYWORD:
      target = getattr(factory, "forwards_to", None)
      if target is not None:
        names += [n for n in hyperparameters(target) if n not in names]
    else:
      names.append(p.name)
  return names


def get_optimizer(name: str, **hparams) -> optax.GradientTransformation:
  """Build a registered optimizer by name.

  Raises:
    ValueError: unknown name (lists the known ones), a hyperparameter the
      optimizer does not take (lists the ones it takes), or a value out of range.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
  factory = OPTIMIZERS[name]
  allowed = hyperparameters(factory)
  unknown = sorted(set(hparams) - set(allowed))
  if unknown:
    raise ValueError(
        f"optimizer {name!r} has no hyperparameter {unknown[0]!r}; allowed: {allowed}")
  return factory(**hparams)
