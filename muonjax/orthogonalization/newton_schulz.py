"""Newton–Schulz and Polar Express orthogonalization on arrays ``(..., m, n)``.

One quintic step on a wide matrix X (m <= n)::

    A = X X^H;   B = b A + c A A;   X <- a X + B X

maps every singular value through ``p(s) = a s + b s^3 + c s^5`` and leaves the
singular vectors alone. Tall inputs are transposed first so the Gram matrix lives
on the short side; NS(X^T) = NS(X)^T exactly. Leading axes are batch axes.

Complex matrices: ``X^H`` is the conjugate transpose (``X^T`` for real inputs),
norms use ``|x|``, coefficients stay real, so the iteration approximates the
unitary polar factor ``U V^H`` of ``X = U S V^H`` (as optax.contrib.muon's
``x @ x.T.conj()``). The plain transpose of tall inputs still commutes with the
map: ``X^T = conj(V) S U^T`` has polar factor ``(U V^H)^T``.

References:
  Jordan, Muon (https://kellerjordan.github.io/posts/muon/,
  https://github.com/KellerJordan/Muon).
  Amsel et al., The Polar Express, arXiv 2505.16932
  (https://github.com/NoahAmsel/PolarExpress).
  Boissin et al., Turbo-Muon (AOL preconditioning), arXiv 2512.04632.
  Grishina et al., Chebyshev-type NS (Schatten-4 scaling), arXiv 2506.10935.
"""

from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from muonjax.kernels.dispatch import check_backend, resolve_backend
from muonjax.orthogonalization.coefficients import CoeffsLike, get_coefficients

Normalization = Literal["frobenius", "spectral", "aol", "schatten", "none"]
NORMALIZATIONS = ("frobenius", "spectral", "aol", "schatten", "none")
Backend = Literal["auto", "xla", "pallas"]


def _gram(x: jax.Array, backend: str = "xla") -> jax.Array:
  if backend == "pallas":
    from muonjax.kernels import symmetric
    return symmetric.gram(x)
  return jnp.einsum("...ik,...jk->...ij", x, jnp.conj(x))  # X X^H (conj is free on reals)


def quintic_step(x: jax.Array, gram: jax.Array, abc: jax.Array,
                 backend: str = "xla") -> jax.Array:
  """One quintic Newton–Schulz step ``X <- aX + (bA + cA²)X`` from a given Gram matrix.

  Public so that distributed variants (``muonjax.distributed``: the Gram
  matrix all-reduced over devices) reuse the exact arithmetic of
  :func:`newton_schulz`.

  Args:
    x: wide ``(..., m, n)`` iterate (``m <= n``).
    gram: ``A = X Xᴴ`` (``X Xᵀ`` for real ``X``), shape ``(..., m, m)``.
    abc: the step's coefficients ``(a, b, c)`` (float32 or wider).
    backend: ``"xla"`` or ``"pallas"`` (symmetric product kernel).

  Returns:
    The next iterate, dtype of ``x``.
  """
  # Coefficients stay in (at least) float32: the scalar products are formed in
  # that precision and rounded once to the iteration dtype, as PyTorch does.
  if backend == "pallas":
    from muonjax.kernels import symmetric
    b_mat = symmetric.symmetric_poly(gram, abc[1], abc[2]).astype(x.dtype)
  else:
    b_mat = (abc[1] * gram + abc[2] * (gram @ gram)).astype(x.dtype)
  return (abc[0] * x + b_mat @ x).astype(x.dtype)


def _abs_square(x: jax.Array) -> jax.Array:
  """``|x|^2`` elementwise, real for complex ``x`` (``x^2`` for real ``x``)."""
  if jnp.iscomplexobj(x):
    return jnp.square(x.real) + jnp.square(x.imag)
  return jnp.square(x)


def _scaled_by_max(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``x / max|x|`` per matrix (with 1 for zero matrices), and that max.

  Pre-scaling keeps the norms finite for inputs near the dtype's limits
  (1e30 gradients overflow a float32 sum of squares); every normalization
  below is invariant to it.
  """
  amax = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
  amax = jnp.where(amax > 0, amax, jnp.ones_like(amax))
  return x / amax, amax


def divide_by_norm(x, norm, safety, eps, amax):
  """``x / (norm · safety + eps / amax)`` for an ``x`` already divided by ``amax``.

  The pre-normalization ``X / (‖X‖ · safety + eps)`` of :func:`newton_schulz`
  written for an input pre-scaled by its largest magnitude ``amax`` (so the
  ``eps`` term is scaled alike); a zero denominator (``x = 0``, ``eps = 0``)
  divides by 1. Public so that distributed variants (``muonjax.distributed``:
  ``norm`` from an all-reduced sum of squares) normalize identically.
  """
  den = norm * safety + eps / amax
  return x / jnp.where(den > 0, den, jnp.ones_like(den))  # 0/0 only for x = 0 with eps = 0


def _frobenius_normalize(x, safety, eps):
  x, amax = _scaled_by_max(x)
  norm = jnp.sqrt(jnp.sum(_abs_square(x), axis=(-2, -1), keepdims=True))
  return divide_by_norm(x, norm, safety, eps, amax)


def _spectral_normalize(x, safety, eps):
  x, amax = _scaled_by_max(x)
  norm = jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True)
  return divide_by_norm(x, norm, safety, eps, amax)


def _aol_first_step(x, abc, eps, backend="xla"):
  """AOL: rescale rows by 1/sqrt(sum_j |A_ij|) inside the first iteration."""
  gram = _gram(x, backend)
  d = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(gram), axis=-1), eps))
  x = x * d[..., :, None]
  gram = gram * d[..., :, None] * d[..., None, :]
  return quintic_step(x, gram, abc, backend)


def _schatten_first_step(x, abc, eps, backend="xla"):
  """Scale by 1/||X||_{S4} = 1/sqrt(||X X^H||_F) inside the first iteration."""
  gram = _gram(x, backend)
  fro = jnp.sqrt(jnp.sum(_abs_square(gram), axis=(-2, -1), keepdims=True))
  s = jax.lax.rsqrt(jnp.maximum(fro, eps))
  return quintic_step(x * s, gram * s * s, abc, backend)


def as_matrices(x, name: str = "x", *, caller: str = "newton_schulz") -> jax.Array:
  """``x`` as a JAX array of matrices ``(..., m, n)``: the input check of the public entry points.

  Array-likes (NumPy arrays, nested lists or tuples) are converted with
  ``jnp.asarray``.

  Raises:
    ValueError: ``x`` is not array-like (ragged lists, strings, ``None``) or
      has fewer than 2 axes; the message names the argument and the caller.
  """
  if not isinstance(x, jax.Array):
    if isinstance(x, (str, bytes)) or x is None:
      raise ValueError(f"{caller}: {name} must be an array of shape (..., m, n); "
                       f"got {type(x).__name__}")
    try:
      x = jnp.asarray(x)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{caller}: {name} must be an array of shape (..., m, n); cannot "
                       f"convert {type(x).__name__} ({' '.join(str(e).split())[:120]})") from None
  if x.ndim < 2:
    raise ValueError(f"{caller}: {name} must be an array of shape (..., m, n); "
                     f"got shape {x.shape}")
  return x


def newton_schulz(
    x: jax.Array,
    coeffs: CoeffsLike = "keller",
    steps: Optional[int] = None,
    *,
    normalization: Normalization = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = None,
    compute_dtype: Optional[jnp.dtype] = None,
    backend: Backend = "auto",
) -> jax.Array:
  r"""Approximate the polar factor ``U V^T`` of every matrix in ``x``.

  Complex ``x`` gives the unitary polar factor ``U V^H`` (the iteration uses the
  conjugate transpose; see the module docstring).

  Args:
    x: array of shape ``(..., m, n)``, real or complex; leading axes are batch
      axes. Array-likes (NumPy arrays, nested lists) are converted with
      ``jnp.asarray``; fewer than 2 axes, a non-array (``None``, a string, a ragged list) or a
      non-floating dtype raise ``ValueError``. Empty matrices (``m = 0`` or
      ``n = 0``, or an empty batch) return an empty array of the same shape.
    coeffs: a preset name (``"keller"``, ``"dion"``, ``"polar_express"``,
      ``"polar_express_modded"``, ``"exact_cubic"``, ``"polar_express_gptopt"``),
      a ``(3,)`` triple or a ``(rows, 3)`` table. Tables shorter than ``steps``
      repeat their last row.
    steps: number of iterations; defaults to the set's own (5 for most).
    normalization: how the input is scaled before iterating. ``"frobenius"``:
      ``X / (||X||_F * safety + eps)``; ``"spectral"``: by the largest singular
      value (an SVD per matrix: expensive); ``"aol"`` and ``"schatten"``: no
      pre-scaling, the first iteration rescales with its own Gram matrix;
      ``"none"``: the caller guarantees ``sigma_max <= 1``.
    safety: divisor ``s`` of the Frobenius norm; defaults to the set's own
      (1.01 for Polar Express, 1.02 for the modded table, else 1).
    eps: additive epsilon of the normalization; defaults to the set's own.
    compute_dtype: dtype of the iteration (e.g. ``jnp.bfloat16``); the norm is
      taken in the input dtype first. Defaults to the input dtype. For complex
      ``x`` a real compute dtype selects the complex dtype of at least that
      precision (``bfloat16``/``float32`` -> ``complex64``, ``float64`` ->
      ``complex128``; XLA has no half-precision complex type).
    backend: ``"xla"`` (plain XLA matmuls), ``"pallas"`` (the symmetric
      kernels of :mod:`muonjax.kernels` for ``X X^T`` and ``b A + c A A``; on
      CPU they run in interpret mode: slow, for tests) or ``"auto"``: XLA on
      CPU and wherever no Pallas threshold has been measured, which today is
      everywhere (:data:`muonjax.kernels.PALLAS_MIN_SHORT_EDGE`). The Pallas
      kernels are real-only: ``"pallas"`` with complex ``x`` raises
      ``ValueError`` and ``"auto"`` runs complex inputs on XLA.

  Returns:
    An array with the shape and dtype of ``x``. Zero matrices map to zero.

  References:
    Jordan, https://github.com/KellerJordan/Muon; Amsel et al., arXiv 2505.16932.
  """
  x = as_matrices(x)
  if normalization not in NORMALIZATIONS:
    raise ValueError(
        f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
  check_backend(backend)
  cset = get_coefficients(coeffs)
  rows = cset.rows(steps)
  safety = cset.safety if safety is None else float(safety)
  eps = cset.eps if eps is None else float(eps)
  out_dtype = x.dtype
  compute_dtype = out_dtype if compute_dtype is None else jnp.dtype(compute_dtype)
  if not jnp.issubdtype(out_dtype, jnp.inexact):
    raise ValueError(f"newton_schulz expects a floating array; got {out_dtype}")
  complex_input = jnp.issubdtype(out_dtype, jnp.complexfloating)
  if complex_input:
    if backend == "pallas":
      raise ValueError("backend='pallas' has real kernels only; complex input "
                       f"({out_dtype}) needs backend='xla' or 'auto'")
    compute_dtype = jnp.result_type(compute_dtype, jnp.complex64)
  elif jnp.issubdtype(compute_dtype, jnp.complexfloating):
    raise ValueError(
        f"compute_dtype {compute_dtype} is complex but the input is real ({out_dtype})")
  if x.size == 0:  # nothing to orthogonalize (and the max-scaling has no identity)
    return x

  tall = x.shape[-2] > x.shape[-1]
  if tall:
    x = jnp.swapaxes(x, -1, -2)
  backend = "xla" if complex_input else resolve_backend(backend, x.shape[-2], x.shape[-1])

  first_eps = max(eps, 1e-30)
  if normalization == "frobenius":
    x = _frobenius_normalize(x, safety, eps)
  elif normalization == "spectral":
    x = _spectral_normalize(x, safety, eps)
  elif normalization in ("aol", "schatten"):
    x, _ = _scaled_by_max(x)
  x = x.astype(compute_dtype)
  # Real coefficients (the real part's dtype for complex iterations).
  table = jnp.asarray(rows, dtype=jnp.promote_types(
      jnp.finfo(compute_dtype).dtype, jnp.float32))

  if normalization == "aol":
    x = _aol_first_step(x, table[0], first_eps, backend)
    table = table[1:]
  elif normalization == "schatten":
    x = _schatten_first_step(x, table[0], first_eps, backend)
    table = table[1:]

  def body(x, abc):
    return quintic_step(x, _gram(x, backend), abc, backend), None

  if table.shape[0]:
    # The scope names the loop in HLO metadata (op_name ".../newton_schulz/while"),
    # so audits can find it among a train step's other loops.
    with jax.named_scope("newton_schulz"):
      x, _ = jax.lax.scan(body, x, table)
  if tall:
    x = jnp.swapaxes(x, -1, -2)
  return x.astype(out_dtype)


def polar_express(
    x: jax.Array,
    steps: int = 5,
    *,
    variant: Literal["paper", "modded", "gptopt"] = "paper",
    normalization: Normalization = "frobenius",
    safety: Optional[float] = None,
    eps: Optional[float] = None,
    compute_dtype: Optional[jnp.dtype] = None,
    backend: Backend = "auto",
) -> jax.Array:
  """Polar Express: Newton–Schulz with per-step optimal quintics.

  Args:
    x: array ``(..., m, n)``; array-likes, empty matrices and bad inputs as
      in :func:`newton_schulz`.
    steps: iterations; the paper table has 8 rows and repeats the last beyond.
    variant: ``"paper"`` (8-row table, safety 1.01), ``"modded"`` (the
      modded-nanogpt / Dion 5-row table, safety 1.02) or ``"gptopt"`` (GPT-opt's
      uniformly deflated table, parity only).
    normalization, safety, eps, compute_dtype, backend: as in
      :func:`newton_schulz`.

  Returns:
    Array with the shape and dtype of ``x``.

  References:
    Amsel, Persson, Musco, Gower, The Polar Express, arXiv 2505.16932,
    https://github.com/NoahAmsel/PolarExpress.
  """
  names = {"paper": "polar_express", "modded": "polar_express_modded",
           "gptopt": "polar_express_gptopt"}
  if variant not in names:
    raise ValueError(f"variant must be one of {sorted(names)}; got {variant!r}")
  x = as_matrices(x, caller="polar_express")
  return newton_schulz(x, names[variant], steps, normalization=normalization,
                       safety=safety, eps=eps, compute_dtype=compute_dtype,
                       backend=backend)


def polar_factor(x: jax.Array) -> jax.Array:
  """Exact polar factor ``U V^T`` via SVD, batched over leading axes.

  Complex ``x = U S V^H`` gives the unitary factor ``U V^H`` (``vh`` from the
  SVD is already ``V^H``).

  Singular directions with a singular value below ``max(m, n) * eps * sigma_max``
  map to zero, so ``polar_factor(0) = 0`` like the iterative methods. Runs in
  the input dtype (use float64 with ``jax_enable_x64`` for an oracle).

  Args:
    x: array ``(..., m, n)``; array-likes are converted with ``jnp.asarray``,
      fewer than 2 axes or a non-array raise ``ValueError``, and empty
      matrices return an empty array of the same shape.

  Returns:
    Array with the shape and dtype of ``x``.
  """
  x = as_matrices(x, caller="polar_factor")
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    raise ValueError(f"polar_factor expects a floating array; got {x.dtype}")
  if x.size == 0:
    return x
  u, s, vh = jnp.linalg.svd(x, full_matrices=False)
  tol = max(x.shape[-2:]) * jnp.finfo(x.dtype).eps * jnp.max(s, axis=-1, keepdims=True)
  keep = (s > tol).astype(x.dtype)
  return jnp.einsum("...ik,...k,...kj->...ij", u, keep, vh)


def composed_polynomial(sigma: np.ndarray, coeffs: CoeffsLike = "keller",
                        steps: Optional[int] = None, *,
                        safety: Optional[float] = None) -> np.ndarray:
  """Scalar map ``p_T o ... o p_1 (sigma / safety)`` in float64 (NumPy).

  The exact action of :func:`newton_schulz` on the singular values of a matrix
  whose Frobenius norm is 1 (epsilon neglected). Useful for checking tables.
  """
  cset = get_coefficients(coeffs)
  s = np.asarray(sigma, dtype=np.float64) / (cset.safety if safety is None else safety)
  for a, b, c in cset.rows(steps):
    s = a * s + b * s**3 + c * s**5
  return s
