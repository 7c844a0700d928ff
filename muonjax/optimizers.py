"""Ready-made optimizers (aliases) built from muonjax stages, and their registry.

Every alias is an ``optax.partition`` of a Muon-family chain on matrix leaves
and AdamW on the rest (embeddings, heads, norms, biases, scalars); routing comes
from :func:`muonjax.muon_dimension_numbers` unless ``dimension_numbers`` says
otherwise.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence, Union

import jax.numpy as jnp
import optax

from muonjax import routing
from muonjax.orthogonalize.coefficients import CoeffsLike
from muonjax.transforms.momentum import MomentumForm, momentum
from muonjax.transforms.normalize import (
    adamuon_normalize,
    normuon_normalize,
    scale_to_rms,
    sign,
)
from muonjax.transforms.orthogonalize import Orthogonalizer, orthogonalize
from muonjax.transforms.scale import ShapeRule, scale_by_shape
from muonjax.transforms.weight_decay import DecayMode
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage
from muonjax.transforms.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)


class _Preset:
  """Marker default: the value comes from the ``compat`` preset."""

  def __repr__(self) -> str:
    return "<preset>"


PRESET: Any = _Preset()

# Knobs that differ between Keller's Muon (muonjax default) and optax.contrib.muon.
_COMPAT_PRESETS: dict[Optional[str], dict[str, Any]] = {
    None: dict(bias_correction=False, eps=None, compute_dtype=jnp.bfloat16,
               adam_learning_rate=3e-4, adam_b2=0.95, adam_eps=1e-10,
               adam_nesterov=False, dimension_numbers=routing.muon_dimension_numbers),
    "optax": dict(bias_correction=True, eps=1e-8, compute_dtype=None,
                  adam_learning_rate=None, adam_b2=0.999, adam_eps=1e-8,
                  adam_nesterov=True, dimension_numbers=routing.optax_dimension_numbers),
}


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
  NAdamW: same learning rate, b2 0.999, eps 1e-8, Nesterov on. Arguments passed
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
    dimension_numbers: routing: a tree of ``MuonDimensionNumbers`` / ``None``
      (e.g. from :func:`muonjax.muon_dimension_numbers` of an ``nnx.Module``,
      which reads Variable metadata) or a callable ``params -> tree``.
    group_by_shape: orthogonalize equal-shape matrices in one batched call.
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
  adam_lr = (learning_rate if knobs["adam_learning_rate"] is None
             else knobs["adam_learning_rate"])

  check_learning_rate("learning_rate", learning_rate)
  check_learning_rate("adam_learning_rate", adam_lr)
  for name, value in [("beta", beta), ("adam_b1", adam_b1), ("adam_b2", knobs["adam_b2"])]:
    check_unit_interval(name, value)
  for name, value in [("weight_decay", weight_decay), ("adam_weight_decay", adam_weight_decay),
                      ("adam_eps", knobs["adam_eps"])]:
    check_non_negative(name, value)
  if steps is not None and steps < 1:
    raise ValueError(f"steps must be >= 1; got {steps}")

  def matrix_chain(dims):
    return optax.chain(
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


def polar_muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    steps: int = 5,
    variant: str = "paper",
    **muon_kwargs,
) -> optax.GradientTransformation:
  """Muon with Polar Express coefficients instead of Keller's quintic.

  Args:
    learning_rate: base learning rate η.
    steps: iterations (the paper table has 8 rows; beyond, the last repeats).
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


def adamuon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    *,
    weight_decay: float = 0.01,
    eps: float = 1e-8,
    form: str = "code",
    nu_dtype: Optional[jnp.dtype] = jnp.float32,
    **muon_kwargs,
) -> optax.GradientTransformation:
  r"""AdaMuon: Newton–Schulz of ``sign(U)``, an elementwise second moment, RMS 0.2.

  Matrix chain: momentum → ``sign`` → Keller NS5 → ``v ← βv + (1−β)O²`` (β is
  the momentum's) → ``O/(√v + eps)`` → ``· 0.2·√(n_in n_out)/(‖Ô‖_F + eps)`` →
  decay → −η. ``form="megatron"`` uses heavy-ball momentum (same direction up to
  the ε terms) and weight decay 0.1 unless given.

  Args:
    learning_rate: base learning rate η.
    weight_decay: decoupled decay λ of the matrices.
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
  if form == "megatron":
    muon_kwargs.setdefault("momentum_form", "sgd")
    if weight_decay == 0.01:
      weight_decay = 0.1
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


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "muon": muon,
    "polar_muon": polar_muon,
    "normuon": normuon,
    "adamuon": adamuon,
    "adamw": adamw,
}


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation]) -> None:
  """Add ``factory`` to the registry under ``name`` (an error if taken)."""
  if name in OPTIMIZERS:
    raise ValueError(f"optimizer {name!r} is already registered")
  OPTIMIZERS[name] = factory


def hyperparameters(factory: Callable[..., Any]) -> list[str]:
  """Names a factory accepts; ``**muon_kwargs`` forwards to :func:`muon`'s."""
  names = []
  for p in inspect.signature(factory).parameters.values():
    if p.kind is inspect.Parameter.VAR_KEYWORD:
      names += [n for n in inspect.signature(muon).parameters if n not in names]
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
