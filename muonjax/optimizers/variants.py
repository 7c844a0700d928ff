"""Muon variants: each builds its own matrix chain from the shared stages.

Every variant takes all :func:`muonjax.muon` arguments (same meaning; a few
defaults differ, documented per variant) and returns an ``optax.partition`` of
its matrix chain and the AdamW branch (:class:`MuonSettings`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from muonjax.optimizers.base import PRESET, Preset, Stage, build_stages, muon_settings
from muonjax.orthogonalization.coefficients import CoeffsLike
from muonjax.transforms.manifold import VERSIONS, mano_normalize
from muonjax.transforms.momentum import MomentumForm
from muonjax.transforms.normalize import adamuon_normalize, normuon_normalize, scale_to_rms, sign
from muonjax.transforms.orthogonalize import Orthogonalizer
from muonjax.transforms.precondition import RefreshRule, precondition_input
from muonjax.transforms.scale import ShapeRule
from muonjax.transforms.validation import (
    check_choice,
    check_positive,
    check_unit_interval,
    static_int,
)
from muonjax.transforms.weight_decay import DecayMode

NEWTON_MUON_REFRESH_EVERY = 16
NEWTON_MUON_REFRESH_RULE = "end"



def matrices_only(tree: Any) -> Any:
  """Weight-decay mask: ``True`` on rank >= 2 leaves (embeddings, heads), ``False`` on the rest."""
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, tree)


RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # AdaMuon GPT-2 scripts (https://github.com/Chongjie-Si/AdaMuon: gpt2/config/small.py
    # and medium.py set learning_rate 6e-4, weight_decay 0.1, betas (0.9, 0.95);
    # gpt2/models/model.py configure_optimizers gives AdaMuon and the AdamW of wte/lm_head
    # that same lr and decay, AdamW with torch's default eps 1e-8, and decay 0 on 1-D leaves).
    "adamuon": {
        "gpt2": dict(learning_rate=6e-4, weight_decay=0.1, adam_learning_rate=None,
                     adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8, adam_weight_decay=0.1,
                     adam_weight_decay_mask=matrices_only),
    },
    # Newton-Muon `_2` script (https://github.com/zhehangdu/Newton-Muon,
    # train_gpt_newton_muon_2.py): Muon lr 0.05, wd 0; DistAdam(lr 0.008, betas (0.8, 0.95),
    # eps 1e-10, wd 0) on embeddings, head and scalars; the MLP up-projection c_fc is
    # stored (in, out) = (d, 4d), so its max(1, rows/cols)**0.5 is 1 (muonjax's Flax rule
    # gives 2 for a (d, 4d) kernel): override it to 1. Not expressed: the script's
    # momentum warmup 0.85 -> 0.95 over 300 steps (beta is a constant here).
    "newton_muon": {
        "gpt2": dict(learning_rate=0.05, weight_decay=0.0, adam_learning_rate=0.008,
                     adam_b1=0.8, adam_b2=0.95, adam_eps=1e-10, adam_weight_decay=0.0,
                     shape_overrides={"(^|/)mlp/up(/|$)": 1.0}),
    },
}
"""Official recipes: alias name → recipe name → the keyword values it sets."""


def with_recipes(alias: Callable[..., Any]) -> Callable[..., Any]:
  """Add ``recipe=`` to ``alias``: the recipe's keywords, overridden by explicit ones."""
  recipes = RECIPES[alias.__name__]

  @functools.wraps(alias)
  def wrapper(*args, recipe: Optional[str] = None, **kwargs):
    if recipe is not None:
      check_choice("recipe", recipe, tuple(recipes))
      values = dict(recipes[recipe])
      if args:  # learning_rate given positionally
        values.pop("learning_rate", None)
      kwargs = {**values, **kwargs}
    return alias(*args, **kwargs)

  sig = inspect.signature(alias)
  wrapper.__signature__ = sig.replace(parameters=list(sig.parameters.values()) + [
      inspect.Parameter("recipe", inspect.Parameter.KEYWORD_ONLY, default=None,
                        annotation="Optional[str]")])
  return wrapper


def polar_muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    variant: str = "paper",
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: MomentumForm = "ema",
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Union[float, None, Preset] = PRESET,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: ShapeRule = "keller",
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = None,
    adam_eps: Optional[float] = None,
    adam_weight_decay: float = 0.0,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Muon with Polar Express coefficients instead of Keller's quintic.

  Args:
    learning_rate: base learning rate η.
    steps: iterations (default 5; the paper table has 8 rows, beyond which
      the last repeats).
    variant: ``"paper"`` (safety 1.01) or ``"modded"`` (modded-nanogpt's 5-row
      table, safety 1.02).
    other arguments: as :func:`muonjax.muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Amsel et al., The Polar Express, arXiv 2505.16932,
    https://github.com/NoahAmsel/PolarExpress; modded-nanogpt record 38.
  """
  check_choice("variant", variant, ("paper", "modded"))
  coeffs = "polar_express" if variant == "paper" else "polar_express_modded"
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method="newton_schulz",
      coeffs=coeffs, steps=steps, normalization=normalization, safety=safety, eps=eps,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)


def normuon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    beta2: Optional[float] = None,
    form: str = "code",
    beta: float = 0.95,
    nesterov: Optional[bool] = None,
    momentum_form: MomentumForm = "ema",
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Union[float, None, Preset] = PRESET,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: Optional[ShapeRule] = None,
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = None,
    adam_eps: Optional[float] = None,
    adam_weight_decay: float = 0.0,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""NorMuon: Muon with a per-neuron second moment on the orthogonalized update.

  Forms (Flax layout; "per output neuron" = one value per column of the
  ``(n_in, n_out)`` kernel):

  * ``"code"`` (default, the official repository): EMA + Nesterov momentum,
    Keller NS5, ``S`` = EMA(β₂ = 0.95) of the mean of ``O²`` over the input axis,
    ``O / (√S + 1e-10)`` rescaled back to ``‖O‖_F``, Keller shape scale.
  * ``"paper"``: no Nesterov, ``O / (√S + 1e-8)`` then ``0.2·√(n_in n_out)/‖Ô‖_F``
    (update RMS 0.2) instead of the norm restore and shape scale.
  * ``"modded"`` (modded-nanogpt): statistic along the longer side, β₂ = 0.9,
    ``rsqrt(max(S, 1e-10))`` and a clamped norm restore, and modded-nanogpt's
    orthogonalization: the Polar Express 5-row table
    (``coeffs="polar_express_modded"``, ``X/(‖X‖_F·1.02 + 1e-6)``) unless
    ``coeffs`` is given. modded's cautious decay tied to the learning rate is
    ``weight_decay_mode="cautious_lr"`` (opt-in; the decay λ defaults to 0).

  Args:
    learning_rate: base learning rate η.
    beta2: EMA coefficient of the neuron statistic (0.95; 0.9 for ``"modded"``).
    form: ``"code"``, ``"paper"`` or ``"modded"``.
    nesterov: default True; False for ``"paper"``.
    coeffs: default Keller's (``"code"``, ``"paper"``) or
      ``"polar_express_modded"`` (``"modded"``, modded-nanogpt ``train_gpt.py``
      ``polar_express_coeffs``).
    shape_rule: default ``"keller"``; ``"none"`` for ``"paper"``.
    other arguments: as :func:`muonjax.muon`.

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
  paper, modded = form == "paper", form == "modded"
  if nesterov is None:
    nesterov = not paper
  if shape_rule is None:
    shape_rule = "none" if paper else "keller"
  if coeffs is None and modded and method == "newton_schulz":
    coeffs = "polar_express_modded"
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method=method, coeffs=coeffs,
      steps=steps, normalization=normalization, safety=safety, eps=eps,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def neuron_normalize(dims):
    if paper:  # O / (sqrt(S) + 1e-8), then update RMS 0.2
      return [normuon_normalize(beta2, eps=1e-8, restore_norm=False, dimension_numbers=dims),
              scale_to_rms(0.2, eps=1e-8, dimension_numbers=dims)]
    return [normuon_normalize(beta2, axis="longer" if modded else "output",
                              eps=1e-10, clamp=modded, dimension_numbers=dims)]

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        *neuron_normalize(dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)


@with_recipes
def adamuon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    form: str = "code",
    nu_dtype: Any = "float32",
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: Optional[MomentumForm] = None,
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: float = 1e-8,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: ShapeRule = "none",
    rms: float = 0.2,
    weight_decay: Optional[float] = None,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = None,
    adam_eps: Optional[float] = None,
    adam_weight_decay: float = 0.0,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
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
    momentum_form: default ``"ema"``; ``"sgd"`` for ``"megatron"``.
    shape_rule: default ``"none"`` (the RMS rescale sets the scale).
    nu_dtype: second-moment dtype (float32; bfloat16 for reference parity).
    recipe: ``None`` (the defaults above) or ``"gpt2"``: the official GPT-2
      script (https://github.com/Chongjie-Si/AdaMuon, ``gpt2/config/small.py``,
      ``gpt2/models/model.py``): ``learning_rate=6e-4, weight_decay=0.1`` and
      AdamW on embeddings/head at the same rate with ``adam_b1=0.9,
      adam_b2=0.95, adam_eps=1e-8, adam_weight_decay=0.1`` masked to rank-2
      leaves (``adam_weight_decay_mask=matrices_only``: no decay on norms and
      biases). Explicit keywords override the recipe's (:data:`RECIPES`).
    other arguments: as :func:`muonjax.muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Si et al., AdaMuon, arXiv 2507.11005, https://github.com/Chongjie-Si/AdaMuon.
  """
  check_choice("form", form, ("code", "megatron"))
  if weight_decay is None:
    weight_decay = 0.1 if form == "megatron" else 0.01
  if momentum_form is None:
    momentum_form = "sgd" if form == "megatron" else "ema"
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method=method, coeffs=coeffs,
      steps=steps, normalization=normalization, safety=safety, eps=PRESET,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        sign(dimension_numbers=dims),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        adamuon_normalize(beta, eps=eps, nu_dtype=nu_dtype, dimension_numbers=dims),
        scale_to_rms(0.2, eps=eps, dimension_numbers=dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)


@with_recipes
def newton_muon(
    learning_rate: optax.ScalarOrSchedule = 0.05,
    *,
    beta2: float = 0.8,
    refresh_every: int = NEWTON_MUON_REFRESH_EVERY,
    ridge: float = 0.2,
    k0: float = 1e-3,
    ridge_eps: float = 0.0,
    refresh_rule: RefreshRule = NEWTON_MUON_REFRESH_RULE,
    block_diagonal: Any = None,
    beta: float = 0.95,
    nesterov: bool = True,
    momentum_form: MomentumForm = "ema",
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = "newton_schulz",
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: Union[float, None, Preset] = PRESET,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: ShapeRule = "keller",
    rms: float = 0.2,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = PRESET,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = None,
    adam_eps: Optional[float] = None,
    adam_weight_decay: float = 0.0,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
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
    recipe: ``None`` (the defaults above) or ``"gpt2"``: the ``_2`` script
      (https://github.com/zhehangdu/Newton-Muon, ``train_gpt_newton_muon_2.py``):
      ``learning_rate=0.05, weight_decay=0``, Adam on embeddings/head/scalars
      with ``adam_learning_rate=0.008, adam_b1=0.8, adam_b2=0.95,
      adam_eps=1e-10, adam_weight_decay=0``, and
      ``shape_overrides={"(^|/)mlp/up(/|$)": 1.0}`` (the script stores the MLP
      up-projection ``(d, 4d)``, shape scale 1; the Flax rule would give 2).
      Its momentum warmup (0.85 → 0.95 over 300 steps) is not part of the
      recipe. Explicit keywords override the recipe's (:data:`RECIPES`).
    other arguments: as :func:`muonjax.muon`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Du et al., Newton-Muon, arXiv 2604.01472,
    https://github.com/zhehangdu/Newton-Muon.
  """
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method=method, coeffs=coeffs,
      steps=steps, normalization=normalization, safety=safety, eps=eps,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def matrix_chain(dims):
    return optax.chain(
        precondition_input(beta2=beta2, refresh_every=refresh_every, ridge=ridge,
                           ridge_eps=ridge_eps, k0=k0, refresh_rule=refresh_rule,
                           block_diagonal=block_diagonal, dimension_numbers=dims),
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)


def mano(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    version: int = 2,
    both_axes: bool = False,
    beta: float = 0.95,
    nesterov: Optional[bool] = None,
    momentum_form: MomentumForm = "sgd",
    bias_correction: Optional[bool] = None,
    mu_dtype: Optional[jnp.dtype] = None,
    method: Union[str, Orthogonalizer, None] = None,
    coeffs: Optional[CoeffsLike] = None,
    steps: Optional[int] = None,
    normalization: str = "frobenius",
    safety: Optional[float] = None,
    eps: float = 1e-8,
    compute_dtype: Union[jnp.dtype, str, None, Preset] = PRESET,
    shape_rule: ShapeRule = "none",
    rms: float = 0.2,
    weight_decay: float = 0.1,
    weight_decay_mask: Any = None,
    weight_decay_mode: DecayMode = "decoupled",
    adam_learning_rate: Union[optax.ScalarOrSchedule, None, Preset] = None,
    adam_b1: float = 0.9,
    adam_b2: Optional[float] = 0.95,
    adam_eps: Optional[float] = 1e-8,
    adam_weight_decay: Optional[float] = None,
    adam_nesterov: Optional[bool] = None,
    dimension_numbers: Any = PRESET,
    group_by_shape: bool = True,
    before_momentum: Sequence[Stage] = (),
    before_orthogonalize: Sequence[Stage] = (),
    after_orthogonalize: Sequence[Stage] = (),
    compat: Optional[str] = None,
    adaptive: bool = False,
    consistent_rms: Optional[float] = None,
    shape_overrides: Optional[Mapping[str, float]] = None,
    adam_eps_root: float = 0.0,
    adam_weight_decay_mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
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
    other arguments: as :func:`muonjax.muon`; defaults here: ``nesterov``
      ``version == 2``, ``momentum_form="sgd"``, ``method=None`` (no
      orthogonalization), ``shape_rule="none"``, ``adam_learning_rate=None``
      (same as η), ``adam_weight_decay=None`` (same as ``weight_decay``),
      ``adam_b2=0.95``, ``adam_eps=1e-8``.

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  References:
    Gu & Xie, Mano: Restriking Manifold Optimization for LLM Training,
    arXiv 2601.23000,
    https://github.com/xie-lab-ml/Mano-Restriking-Manifold-Optimization-for-LLM-Training.
  """
  version = static_int("version", version, allowed=VERSIONS)
  check_positive("eps", eps)
  if nesterov is None:
    nesterov = version == 2
  if adam_weight_decay is None:
    adam_weight_decay = weight_decay
  s = muon_settings(
      learning_rate, beta=beta, nesterov=nesterov, momentum_form=momentum_form,
      bias_correction=bias_correction, mu_dtype=mu_dtype, method=method, coeffs=coeffs,
      steps=steps, normalization=normalization, safety=safety, eps=PRESET,
      compute_dtype=compute_dtype, shape_rule=shape_rule, rms=rms, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask, weight_decay_mode=weight_decay_mode,
      adam_learning_rate=adam_learning_rate, adam_b1=adam_b1, adam_b2=adam_b2,
      adam_eps=adam_eps, adam_weight_decay=adam_weight_decay, adam_nesterov=adam_nesterov,
      dimension_numbers=dimension_numbers, group_by_shape=group_by_shape,
      before_momentum=before_momentum, before_orthogonalize=before_orthogonalize,
      after_orthogonalize=after_orthogonalize, compat=compat,
      adaptive=adaptive, consistent_rms=consistent_rms, shape_overrides=shape_overrides,
      adam_eps_root=adam_eps_root, adam_weight_decay_mask=adam_weight_decay_mask)

  def matrix_chain(dims):
    return optax.chain(
        *build_stages(s.before_momentum, dims),
        s.momentum(),
        *build_stages(s.before_orthogonalize, dims),
        *s.orthogonalize(dims),
        mano_normalize(version, eps=eps, both_axes=both_axes, dimension_numbers=dims),
        *build_stages(s.after_orthogonalize, dims),
        s.scale(dims),
        *s.decay_and_learning_rate(),
    )

  return s.partition(matrix_chain)
