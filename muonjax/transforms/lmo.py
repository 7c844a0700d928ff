"""Scion: linear minimization oracles (LMOs) over norm balls, as optax stages.

Scion (Pethick et al.) replaces Muon's single orthogonalization by a per-leaf
LMO: each parameter gets a norm, and the update is ``u = scale * lmo(d)``, the
(negated) extreme point of the radius-``scale`` ball of that norm in the
direction of the averaged gradient ``d``. The constrained (Frank-Wolfe) form
then steps ``W <- (1 - eta) W - eta u``; the unconstrained form (uSCG) drops the
``(1 - eta)``.

Complex leaves: norms use ``|d|`` and Newton-Schulz the conjugate transpose, so
every LMO is the extreme point for the real inner product ``Re <d, u>``
(Sign's ``jnp.sign(d) = d / |d|`` is the complex max-norm LMO).

Every formula here is in Flax layout: a kernel is ``(n_in, n_out)`` (the
PyTorch reference stores ``(out, in)``), so Scion's *ColNorm* (one statistic
per input feature) normalizes the **rows** of a Flax kernel (reduce over axis
-1) and *RowNorm* (one statistic per output neuron) normalizes its **columns**
(reduce over axis -2). An embedding ``(vocab, d)`` is already input-major in
both frameworks, so ColNorm on it is per token; the PyTorch ``transpose`` flag,
which turns a ``(vocab, d)`` tensor into PyTorch's ``(out, in)`` convention, is
therefore the identity here and is kept only so configurations port 1:1.

References:
  Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher, Training Deep
  Learning Models with Norm-Constrained LMOs, arXiv 2502.07529,
  https://github.com/LIONS-EPFL/scion (``scion.py``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import optax

from muonjax.orthogonalization.newton_schulz import newton_schulz
from muonjax.transforms import dimensions
from muonjax.transforms.momentum import momentum
from muonjax.transforms.scale import shape_factor
from muonjax.transforms.validation import check_choice, check_non_negative
from muonjax.transforms.weight_decay import weight_decay as weight_decay_stage

KINDS = ("spectral", "spectral_conv", "sign", "colnorm", "rownorm", "bias_rms", "auto")
MATRIX_KINDS = ("spectral", "sign", "colnorm", "rownorm")
# A path component naming a convolution (nnx.Conv attributes such as ``conv1``,
# linen's ``Conv_0``, ``ConvTranspose``): rank >= 3 leaves under it are kernels
# ``(*spatial, in, out)`` and get SpectralConv in the automatic rules.
CONV_PATTERN = re.compile(r"conv", re.IGNORECASE)
# Default of ``normalized`` per kind (Scion's constructor defaults).
_NORMALIZED_DEFAULT = {"spectral": True, "sign": True, "colnorm": False, "rownorm": True}
EPS = 1e-8




# ---------------------------------------------------------------------------
# LMOs on arrays (..., n_in, n_out); leading axes are batch axes.


def _spectral_factor(n_in: int, n_out: int, normalized: bool, max_: bool) -> float:
  factor = shape_factor("spectral", n_in, n_out) if normalized else math.sqrt(n_out)
  return max(1.0, factor) if max_ else factor


def spectral(d: jax.Array, normalized: bool = True, max: bool = False, *,  # pylint: disable=redefined-builtin
             steps: int = 5, compute_dtype: Optional[jnp.dtype] = None) -> jax.Array:
  r"""Spectral-norm LMO: ``NS5(d) * sqrt(d_out / d_in)`` (Scion ``Spectral``).

  The polar factor is approximated by Keller's quintic Newton-Schulz
  (:func:`muonjax.newton_schulz`, coefficients (3.4445, -4.7750, 2.0315),
  ``X / (||X||_F + 1e-7)``). Layout-free apart from the factor, which uses the
  Flax fans ``d_in = d.shape[-2]``, ``d_out = d.shape[-1]``.

  Args:
    d: array ``(..., n_in, n_out)``.
    normalized: factor ``sqrt(d_out / d_in)`` (RMS->RMS operator norm); else
      ``sqrt(d_out)``.
    max: use ``max(1, factor)``.
    steps: Newton-Schulz iterations.
    compute_dtype: iteration dtype (Scion runs bfloat16); default ``d.dtype``.

  Returns:
    Array with the shape and dtype of ``d``.
  """
  factor = _spectral_factor(d.shape[-2], d.shape[-1], normalized, max)
  return newton_schulz(d, "keller", steps, compute_dtype=compute_dtype) * jnp.asarray(
      factor, d.dtype)


def spectral_conv(d: jax.Array, *, steps: int = 5,
                  compute_dtype: Optional[jnp.dtype] = None) -> jax.Array:
  r"""SpectralConv LMO on a Flax conv kernel ``(*spatial, in, out)`` (Scion ``SpectralConv``).

  Scion's PyTorch code takes a kernel ``(out, in, k, k)``, runs Keller's NS5 on
  its ``(out, in·k·k)`` view and multiplies by ``sqrt(out / in) / k²``
  (``/ k`` for a 1-D ``(out, in, k)`` kernel). In Flax layout the same matrix,
  transposed and with its ``in·k·k`` axis permuted, is the
  ``(k·k·in, out)`` view of ``(kh, kw, in, out)``; the polar factor commutes
  with transposes and permutations, so the result is the same array in Flax
  layout. The factor is ``sqrt(out / in) / prod(spatial)``: ``in`` is the
  channel count, not the fan-in, and ``prod(spatial) = k²`` for the square
  kernels of the reference (``kh·kw`` generalizes it to non-square ones).

  Args:
    d: array of rank >= 3, ``(*spatial, in, out)``.
    steps: Newton-Schulz iterations (Scion's default 5; airbench uses 9).
    compute_dtype: iteration dtype (Scion runs bfloat16); default ``d.dtype``.

  Returns:
    Array with the shape and dtype of ``d``.

  References:
    ``SpectralConv`` in https://github.com/LIONS-EPFL/scion/blob/main/scion.py.
  """
  if d.ndim < 3:
    raise ValueError(f"spectral_conv needs a kernel (*spatial, in, out) of rank >= 3; "
                     f"got shape {tuple(d.shape)}")
  n_in, n_out = d.shape[-2], d.shape[-1]
  taps = math.prod(d.shape[:-2])
  o = newton_schulz(d.reshape(taps * n_in, n_out), "keller", steps,
                    compute_dtype=compute_dtype).reshape(d.shape)
  return o * jnp.asarray(math.sqrt(n_out / n_in) / taps, d.dtype)


def sign(d: jax.Array, normalized: bool = True) -> jax.Array:
  """Max-norm (ell_inf -> ell_1 dual) LMO: ``sign(d) / d_in`` (Scion ``Sign``).

  Elementwise, no per-neuron statistic; ``d_in = d.shape[-2]`` (Flax fan-in).

  Args:
    d: array ``(..., n_in, n_out)``.
    normalized: divide by ``d_in``; else plain ``sign(d)``.
  """
  out = jnp.sign(d)
  return out / d.shape[-2] if normalized else out


def colnorm(d: jax.Array, normalized: bool = False, transpose: bool = False, *,
            eps: float = EPS) -> jax.Array:
  r"""ColNorm LMO: one RMS per **input feature** = per row of the Flax kernel.

  ``d_row / (||d_row||_2 / sqrt(d_out) + eps)`` with the norm over axis -1, so
  every input feature's outgoing weights get RMS 1. ``normalized=True``
  multiplies the RMS term by ``d_in``. On an embedding ``(vocab, d)`` this is per
  token: ``e_v / (||e_v|| / sqrt(d) + eps)``. (PyTorch's ColNorm normalizes the
  columns of its ``(out, in)`` weight: the same statistic.)

  Args:
    d: array ``(..., n_in, n_out)`` (an embedding ``(vocab, d)`` is
      ``n_in = vocab``).
    normalized: multiply the RMS by ``d_in`` (Scion: only for non-input layers).
    transpose: Scion's flag for ``(vocab, d)`` embeddings. Flax kernels and
      embeddings share the input-major layout, so it changes nothing here.
    eps: added to the RMS.
  """
  del transpose  # already input-major (see module docstring)
  n_in, n_out = d.shape[-2], d.shape[-1]
  rms = jnp.sqrt(jnp.sum(jnp.square(jnp.abs(d)), axis=-1, keepdims=True)) / math.sqrt(n_out)
  if normalized:
    rms = rms * n_in
  return d / (rms + eps)


def rownorm(d: jax.Array, normalized: bool = True, transpose: bool = False, *,
            eps: float = EPS) -> jax.Array:
  r"""RowNorm LMO: one norm per **output neuron** = per column of the Flax kernel.

  ``d_col / (||d_col||_2 * sqrt(d_in) + eps)`` with the norm over axis -2;
  ``normalized=False`` drops the ``sqrt(d_in)``. (PyTorch's RowNorm normalizes
  the rows of its ``(out, in)`` weight: the same statistic.)

  Args:
    d: array ``(..., n_in, n_out)``.
    normalized: multiply the norm by ``sqrt(d_in)`` (Scion: False only for the
      input layer).
    transpose: Scion's embedding flag; the identity in Flax layout.
    eps: added to the norm.
  """
  del transpose
  norm = jnp.sqrt(jnp.sum(jnp.square(jnp.abs(d)), axis=-2, keepdims=True))
  if normalized:
    norm = norm * math.sqrt(d.shape[-2])
  return d / (norm + eps)


def bias_rms(g: jax.Array, *, eps: float = EPS) -> jax.Array:
  """BiasRMS LMO: ``g / (rms(g) + eps)`` for vectors (Scion ``BiasRMS``).

  The RMS is over the last axis: the whole vector for a 1-D leaf, one value per
  vector for a stacked ``(L, d)`` leaf, ``|g|`` for a scalar.
  """
  if g.ndim == 0:
    return g / (jnp.abs(g) + eps)
  rms = jnp.sqrt(jnp.mean(jnp.square(jnp.abs(g)), axis=-1, keepdims=True))
  return g / (rms + eps)


# ---------------------------------------------------------------------------
# Per-leaf LMO specification and the stage.


@dataclasses.dataclass(frozen=True)
class LMO:
  """Which LMO a leaf uses and its radius.

  Attributes:
    kind: ``"spectral"``, ``"spectral_conv"`` (a whole conv kernel
      ``(*spatial, in, out)``, see :func:`spectral_conv`; dimension numbers do
      not apply), ``"sign"``, ``"colnorm"``, ``"rownorm"``, ``"bias_rms"`` or
      ``"auto"``: SpectralConv for a rank >= 3 leaf whose path names a
      convolution (:data:`CONV_PATTERN`), otherwise Spectral for rank >= 2 (per
      matrix of the dimension-numbers view) and BiasRMS for rank 0/1. Scion's
      ``Auto`` sends every rank-3/4 tensor to SpectralConv; in JAX a rank-3 or
      rank-4 leaf is as often a stack of dense layers (``(L, in, out)`` from
      ``nnx.vmap``/scan, ``(L, E, in, out)`` experts), which must stay per-matrix
      Spectral, so the path decides.
    scale: radius of the norm ball; the update is ``scale * lmo(d)``.
    normalized: Scion's ``normalized`` flag; ``None`` takes the kind's default
      (Spectral True, Sign True, ColNorm False, RowNorm True).
    transpose: ColNorm/RowNorm embedding flag (identity in Flax layout).
    max: Spectral ``max(1, factor)``.
    steps: Newton-Schulz iterations of Spectral.
  """

  kind: str = "auto"
  scale: float = 1.0
  normalized: Optional[bool] = None
  transpose: bool = False
  max: bool = False
  steps: int = 5

  def __post_init__(self):
    check_choice("kind", self.kind, KINDS)
    check_non_negative("scale", self.scale)
    if self.steps < 1:
      raise ValueError(f"steps must be >= 1; got {self.steps}")

  def resolved(self, ndim: int, path: str = "") -> "LMO":
    """``auto`` replaced by the concrete kind for a leaf of rank ``ndim`` at ``path``."""
    if self.kind != "auto":
      return self
    if ndim >= 3 and CONV_PATTERN.search(path):
      return dataclasses.replace(self, kind="spectral_conv")
    return dataclasses.replace(self, kind="spectral" if ndim >= 2 else "bias_rms")

  def apply(self, d: jax.Array, *, compute_dtype: Optional[jnp.dtype] = None) -> jax.Array:
    """``scale * lmo(d)`` for ``d`` of shape ``(..., n_in, n_out)`` (or a vector)."""
    lmo = self.resolved(d.ndim)
    normalized = _NORMALIZED_DEFAULT.get(lmo.kind) if lmo.normalized is None else lmo.normalized
    if lmo.kind == "spectral":
      out = spectral(d, normalized, lmo.max, steps=lmo.steps, compute_dtype=compute_dtype)
    elif lmo.kind == "spectral_conv":
      out = spectral_conv(d, steps=lmo.steps, compute_dtype=compute_dtype)
    elif lmo.kind == "sign":
      out = sign(d, normalized)
    elif lmo.kind == "colnorm":
      out = colnorm(d, normalized, lmo.transpose)
    elif lmo.kind == "rownorm":
      out = rownorm(d, normalized, lmo.transpose)
    else:
      out = bias_rms(d)
    return out * jnp.asarray(lmo.scale, out.dtype)


LMOSpec = Union[LMO, str, None]
LMOTree = Union[Any, Callable[[Any], Any]]


def _is_lmo_leaf(x) -> bool:
  return x is None or isinstance(x, (LMO, str, dimensions.MaskedNode))


def as_lmo(x: Any, path: str) -> Optional[LMO]:
  if x is None or isinstance(x, LMO):
    return x
  if isinstance(x, str):
    if x not in KINDS:
      raise ValueError(f"LMO for leaf {path}: kind must be one of {KINDS}; got {x!r}")
    return LMO(x)
  raise ValueError(f"LMO for leaf {path} must be an LMO, a kind name or None; got {x!r}")


def lmo_leaves(lmos: LMOTree, tree: Any) -> list[Optional[LMO]]:
  """The LMO of every array leaf of ``tree`` (aligned with ``jax.tree.leaves``).

  ``lmos`` is one :class:`LMO` (or kind name) for every leaf, a tree (a prefix
  of ``tree``) of them with ``None`` for leaves left untouched, or a callable
  ``tree -> such a tree``.
  """
  if callable(lmos) and not isinstance(lmos, LMO):
    lmos = lmos(tree)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  if _is_lmo_leaf(lmos) and not isinstance(lmos, dimensions.MaskedNode):
    specs = [lmos] * len(paths)
  else:
    specs = [None if isinstance(s, dimensions.MaskedNode) else s
             for s in dimensions.broadcast_to_leaves(lmos, tree, _is_lmo_leaf)]
  return [as_lmo(s, p) for s, p in zip(specs, paths)]


def _matrix_view(path: str, leaf: jax.Array, dn, kind: str) -> dimensions.MatrixView:
  if leaf.ndim < 2:
    raise ValueError(
        f"LMO {kind!r} needs a rank >= 2 leaf; leaf {path} has shape {tuple(leaf.shape)} "
        "(use 'bias_rms' or 'auto')")
  return dimensions.leaf_view(path, leaf, "default" if dn is None else dn)


def _per_leaf(fn, lmos: LMOTree, dimension_numbers, tree: Any) -> Any:
  """``fn(path, leaf, lmo, view)`` on every leaf with an LMO (view None for vectors)."""
  items, treedef = dimensions.resolve(dimension_numbers, tree)
  specs = lmo_leaves(lmos, tree)
  out = []
  for (path, leaf, dn), lmo in zip(items, specs):
    if lmo is None:
      out.append(leaf)
      continue
    lmo = lmo.resolved(leaf.ndim, path)
    if lmo.kind == "spectral_conv" and leaf.ndim < 3:
      raise ValueError(f"LMO 'spectral_conv' needs a conv kernel (*spatial, in, out) of rank "
                       f">= 3; leaf {path} has shape {tuple(leaf.shape)}")
    view = _matrix_view(path, leaf, dn, lmo.kind) if lmo.kind in MATRIX_KINDS else None
    out.append(fn(path, leaf, lmo, view))
  return treedef.unflatten(out)


def scale_by_lmo(
    lmos: LMOTree = LMO("auto"),
    *,
    dimension_numbers: dimensions.DimensionNumbersSpec = None,
    compute_dtype: Optional[jnp.dtype] = None,
) -> optax.GradientTransformation:
  r"""Replace every leaf's update ``d`` by ``scale * lmo(d)`` (Scion's orthogonalize and shape-scale stages in one, docs/optimizers.md#scion).

  Matrix LMOs (Spectral, Sign, ColNorm, RowNorm) act on each matrix of the
  leaf's ``(batch, n_in, n_out)`` view: a stacked ``(L, in, out)`` leaf gets one
  LMO per layer. BiasRMS acts on vectors (RMS over the last axis).

  Args:
    lmos: one :class:`LMO` (or kind name) for every leaf, a tree (a prefix of
      the updates) of them, with ``None`` for leaves passed through unchanged,
      or a callable ``updates -> tree`` such as :func:`scion_default_lmos`.
    dimension_numbers: matrix view of the matrix-LMO leaves: ``None`` (last two
      axes are (in, out), leading axes batched), one ``MuonDimensionNumbers``,
      a tree of them, or a callable. A ``None`` entry in a tree (as
      :func:`muonjax.muon_dimension_numbers` gives embeddings and heads) means
      the default view.
    compute_dtype: Newton-Schulz dtype for Spectral (default: the update's).

  Returns:
    A stateless ``optax.GradientTransformation``.

  Raises:
    ValueError: an unknown kind (lists the kinds) or a matrix LMO on a rank < 2
      leaf (names the leaf).

  References:
    Pethick et al., arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
  """
  if not callable(lmos) or isinstance(lmos, LMO):  # fail at construction, not under jit
    for spec in jax.tree.leaves(lmos, is_leaf=_is_lmo_leaf):
      if not isinstance(spec, dimensions.MaskedNode):
        as_lmo(spec, "<lmos>")

  def update_fn(updates, state, params=None):
    del params
    def apply(path, leaf, lmo, view):
      if view is None:  # vectors and whole conv kernels
        return lmo.apply(leaf, compute_dtype=compute_dtype).astype(leaf.dtype)
      mats = lmo.apply(view.to_matrices(leaf), compute_dtype=compute_dtype)
      return view.from_matrices(mats).astype(leaf.dtype)
    return _per_leaf(apply, lmos, dimension_numbers, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# ---------------------------------------------------------------------------
# Momentum, constrained decay, init.


def scion_momentum(alpha: float = 1.0, *,
                   mu_dtype: Optional[jnp.dtype] = None) -> optax.GradientTransformation:
  r"""Scion's gradient averaging ``d <- (1 - alpha) d + alpha G`` (``d_0 = 0``).

  ``alpha`` is Scion's ``momentum`` argument, i.e. ``1 - beta``; it is
  :func:`muonjax.momentum` with ``beta = 1 - alpha`` in EMA form, no Nesterov and
  no bias correction (the LMOs are scale-invariant, so the missing correction
  does not matter). ``alpha = 1`` keeps no buffer: the stage is the identity.
  Never mix this with EMA-``beta`` parameterizations (Emerging-Optimizers' Scion uses beta).

  Args:
    alpha: averaging weight of the new gradient, in ``(0, 1]`` (README: 0.1;
      0.5 for short low-noise runs; reference default 1).
    mu_dtype: buffer dtype (default: the parameter dtype).

  Returns:
    ``optax.identity()`` for ``alpha == 1``, else :func:`muonjax.momentum`'s
    transformation with :class:`muonjax.MomentumState`.

  References:
    Pethick et al., arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
  """
  concrete = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
  if concrete and not 0 < alpha <= 1:
    raise ValueError(f"alpha must be in (0, 1]; got {alpha!r}")
  if concrete and alpha == 1:
    return optax.identity()
  return momentum(1 - alpha, nesterov=False, form="ema", bias_correction=False,
                  mu_dtype=mu_dtype)


def constrained_decay(mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""Frank-Wolfe (constrained) decay: ``u <- u + W``, placed just before the lr.

  With ``optax.scale_by_learning_rate(eta)`` after it, the step is
  ``W <- W - eta (u + W) = (1 - eta) W - eta u``: the decay is tied to the
  (scheduled) learning rate with coefficient 1, so iterates stay inside the
  radius-``scale`` balls of the LMOs. It is :func:`muonjax.weight_decay` with
  rate 1.

  Args:
    mask: optional optax mask (tree or callable) of decayed leaves.

  Returns:
    A ``GradientTransformation`` that needs ``params``.

  References:
    Pethick et al., arXiv 2502.07529, https://github.com/LIONS-EPFL/scion.
  """
  return weight_decay_stage(1.0, mask=mask)


def _orthogonal(key: jax.Array, batch: int, n_in: int, n_out: int) -> jax.Array:
  """Random (semi-)orthogonal ``(batch, n_in, n_out)``: orthonormal short side."""
  tall = (batch, max(n_in, n_out), min(n_in, n_out))
  q, r = jnp.linalg.qr(jax.random.normal(key, tall, jnp.float32))
  q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
  return q if n_in >= n_out else jnp.swapaxes(q, -1, -2)


def _init_matrices(key: jax.Array, lmo: LMO, batch: int, n_in: int, n_out: int) -> jax.Array:
  normalized = _NORMALIZED_DEFAULT[lmo.kind] if lmo.normalized is None else lmo.normalized
  shape = (batch, n_in, n_out)
  if lmo.kind == "spectral":
    return _orthogonal(key, batch, n_in, n_out) * _spectral_factor(
        n_in, n_out, normalized, lmo.max)
  if lmo.kind == "sign":
    w = jax.random.rademacher(key, shape, jnp.float32)
    return w / n_in if normalized else w
  w = jax.random.normal(key, shape, jnp.float32)
  if lmo.kind == "colnorm":  # each input feature (row) gets RMS 1
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True) * math.sqrt(n_out)
    return w / n_in if normalized else w
  w = w / jnp.linalg.norm(w, axis=-2, keepdims=True)  # rownorm: unit output neurons
  return w / math.sqrt(n_in) if normalized else w


def scion_init(params: Any, lmos: LMOTree, key: jax.Array, *,
               dimension_numbers: dimensions.DimensionNumbersSpec = None) -> Any:
  r"""Initialize every leaf on the sphere of its LMO's radius-``scale`` ball.

  The constrained (Frank-Wolfe) iterates stay in the ball only when they start
  in it. Per kind (Flax ``(n_in, n_out)``, per matrix of the leaf's view), all
  multiplied by ``scale``:

  * Spectral: random semi-orthogonal times ``sqrt(n_out/n_in)`` (or
    ``sqrt(n_out)``, ``max(1, .)``): spectral norm exactly that factor;
  * SpectralConv: one random semi-orthogonal ``(in, out)`` per spatial tap
    times ``sqrt(out/in) / prod(spatial)``;
  * Sign: random ``+-1/n_in`` (``+-1`` unnormalized);
  * ColNorm: Gaussian with every row (input feature; token of an embedding)
    rescaled to RMS 1 (``/ n_in`` more when normalized);
  * RowNorm: Gaussian with unit-norm columns (output neurons), ``/ sqrt(n_in)``
    when normalized;
  * BiasRMS: zeros.

  Leaves whose LMO is ``None`` keep their values.

  Args:
    params: parameter pytree (``nnx.State`` works).
    lmos: as in :func:`scale_by_lmo`.
    key: PRNG key.
    dimension_numbers: as in :func:`scale_by_lmo`.

  Returns:
    New params with the structure and dtypes of ``params``.

  References:
    ``Norm.init`` in https://github.com/LIONS-EPFL/scion/blob/main/scion.py.
  """
  counter = iter(range(1 << 30))

  def init(path, leaf, lmo, view):
    leaf_key = jax.random.fold_in(key, next(counter))
    if lmo.kind == "spectral_conv":  # one semi-orthogonal (in, out) per tap, as Scion
      taps, n_in, n_out = math.prod(leaf.shape[:-2]), leaf.shape[-2], leaf.shape[-1]
      mats = _orthogonal(leaf_key, taps, n_in, n_out) * (math.sqrt(n_out / n_in) / taps)
      return (mats * lmo.scale).reshape(leaf.shape).astype(leaf.dtype)
    if view is None:
      return jnp.zeros_like(leaf)
    mats = _init_matrices(leaf_key, lmo, view.batch, view.n_in, view.n_out) * lmo.scale
    return view.from_matrices(mats).astype(leaf.dtype)

  return _per_leaf(init, lmos, dimension_numbers, params)
