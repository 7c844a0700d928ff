r"""Pallas kernels for the symmetric products of one Newton–Schulz iteration.

On a wide matrix X (m <= n) one quintic iteration is::

    A = X X^T;   B = b A + c A A;   X <- a X + B X

A and B are symmetric, so only the tiles on or below the diagonal need
computing (docs/performance.md#cost-model: the Gram product halves, the whole
iteration saves 1/4 to 1/3 of its FLOPs). Both symmetric products are one
kernel, a SYRK ``C = Y Y^T`` over lower output tiles:

* ``gram(X)`` is the SYRK of X;
* ``symmetric_poly(A, b, c)`` uses ``A A = A A^T`` (A symmetric), so it is the
  SYRK of A, followed by ``b A + c C``.

Kernel layout (docs/performance.md#kernel-design):

* The grid is ``(batch, T(T+1)/2)`` for a ``T x T`` grid of ``block x block``
  output tiles: a 1-D triangular index ``t`` maps to the tile ``(i, j)`` with
  ``j <= i`` (row-major, ``t = i(i+1)/2 + j``) inside the ``BlockSpec`` index
  maps, using integer operations only (a binary search, no ``sqrt``), so the
  upper tiles are never launched.
* ``reduction="loop"`` (GPU, and the default in interpret mode): each program
  loads the two ``(block, K)`` row panels and loops over K in ``block_k``
  chunks with an fp32 accumulator (GPU grid programs run in parallel, so the
  reduction cannot be a grid axis there). ``reduction="grid"`` (TPU): K is the
  last, sequential grid axis and the fp32 output tile stays resident as the
  accumulator, the TPU matmul recipe (``(parallel, parallel, arbitrary)``).
* Accumulation is fp32 (or the input dtype if wider); inputs are bf16 or fp32
  (any float). The kernel writes fp32 lower tiles; one fused XLA pass mirrors
  them (``where(tile_row >= tile_col, C, C^T)``), applies the ``b A + c C``
  epilogue and casts to the output dtype. That pass moves O(m^2) bytes, small
  beside the O(m^2 n) FLOPs for m of about 1k and more (docs/performance.md#kernel-design).
* Odd shapes are zero-padded to block multiples (zero rows and columns do not
  change ``Y Y^T``) and the result is sliced back. Leading axes are batched.
* The third product ``a X + B X`` is a general GEMM and stays in XLA.

Lowering: one portable ``pl.pallas_call`` with ``BlockSpec`` s. On GPU it is
forced to the Triton lowering with ``pltriton.CompilerParams`` (jax 0.9+
defaults ``pallas_call`` to Mosaic GPU, which needs a different kernel
style); blocks are powers of two >= 16 (Triton). On TPU it lowers through
Mosaic TPU with ``reduction="grid"``; blocks must then be multiples of 128
(the (8, 128) rule on both the input ``(block, block_k)`` and the output
``(block, block)`` tiles) unless one block covers the whole padded matrix. On
CPU only ``interpret=True`` runs (correctness only; never time it).

References:
  Triton symmetric kernels ``XXT`` / ``ba_plus_cAA`` of modded-nanogpt PR #109
  (https://github.com/KellerJordan/modded-nanogpt, ``triton_kernels.py``);
  Pallas TPU block-sparse matmul (``docs/pallas/tpu/sparse.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from muonjax.kernels.dispatch import platform as _platform

Reduction = Literal["loop", "grid"]
REDUCTIONS = ("loop", "grid")
TARGETS = ("interpret", "gpu", "tpu")
DEFAULT_BLOCK = 128
# Starting points, not tuned on a device: modded-nanogpt's H100 config for its
# symmetric kernels is (BM, BN, BK) = (128, 128, 64) with 8 warps.
DEFAULT_BLOCK_K = {"gpu": 64, "tpu": 128, "interpret": 128}
MIN_BLOCK = 8          # interpret mode
MIN_BLOCK_GPU = 16     # Triton tl.dot needs every dimension >= 16
TPU_LANES = 128        # last block dim must be a multiple of 128 (or the full dim)


@dataclasses.dataclass(frozen=True)
class TilePlan:
  """How a ``(batch, m, k)`` SYRK is tiled.

  Attributes:
    batch, m, k: the (flattened) problem: ``C = Y Y^T`` with Y ``(batch, m, k)``.
    block, block_k: output tile edge and reduction chunk (after shrinking to
      the matrix for small inputs).
    m_pad, k_pad: ``m`` and ``k`` rounded up to ``block`` / ``block_k``.
    reduction: ``"loop"`` or ``"grid"``.
    target: ``"interpret"``, ``"gpu"`` or ``"tpu"``.
  """

  batch: int
  m: int
  k: int
  block: int
  block_k: int
  m_pad: int
  k_pad: int
  reduction: str
  target: str

  @property
  def tiles_per_side(self) -> int:
    return self.m_pad // self.block

  @property
  def num_tiles(self) -> int:
    """Lower-triangle output tiles: ``T(T+1)/2`` for ``T`` tiles per side."""
    t = self.tiles_per_side
    return t * (t + 1) // 2

  @property
  def k_steps(self) -> int:
    return self.k_pad // self.block_k

  @property
  def grid(self) -> tuple[int, ...]:
    if self.reduction == "grid":
      return (self.batch, self.num_tiles, self.k_steps)
    return (self.batch, self.num_tiles)

  @property
  def lowering(self) -> str:
    """What the kernel lowers through, for benchmark records."""
    return {"interpret": "pallas-interpret", "gpu": "pallas-triton",
            "tpu": "pallas-mosaic-tpu"}[self.target]


def _next_pow2(v: int) -> int:
  return 1 << max(0, (v - 1).bit_length())


def _round_up(v: int, mult: int) -> int:
  return -(-v // mult) * mult


def _check_block(name: str, value: Any) -> int:
  if (isinstance(value, bool) or not isinstance(value, int) or value < MIN_BLOCK
      or value & (value - 1)):
    raise ValueError(f"{name} must be a power of two >= {MIN_BLOCK}; got {value!r}")
  return value


def plan(batch: int, m: int, k: int, *, block: Optional[int] = None,
         block_k: Optional[int] = None, reduction: Optional[Reduction] = None,
         interpret: Optional[bool] = None, target: Optional[str] = None) -> TilePlan:
  """Choose tiles for ``C = Y Y^T`` with Y ``(batch, m, k)`` and check them.

  Args:
    batch, m, k: problem size (``m, k >= 1``).
    block: output tile edge (power of two); default 128. Shrunk to the next
      power of two >= ``m`` (at least 16) when the matrix is smaller.
    block_k: reduction chunk (power of two); default 64 on GPU, else 128.
      Shrunk the same way for small ``k``.
    reduction: ``"loop"`` (default except on TPU) or ``"grid"`` (TPU default).
    interpret: run in Pallas interpret mode; default: on CPU only.
    target: ``"interpret"``, ``"gpu"`` or ``"tpu"``, overriding ``interpret``
      and the default backend: plans for a platform that is not present, e.g.
      to lower ahead of time with ``.lower(lowering_platforms=("cuda",))``.

  Returns:
    A :class:`TilePlan`.

  Raises:
    ValueError: a block that is not a power of two, a reduction that is not one
      of :data:`REDUCTIONS`, ``interpret=False`` on CPU, ``reduction="grid"``
      compiled on GPU, blocks below 16 compiled on GPU, or blocks breaking the
      TPU (8, 128) rule.
  """
  if target is None:
    plat = _platform()
    if interpret is None:
      interpret = plat == "cpu"
    if not interpret and plat not in ("gpu", "tpu"):
      raise ValueError(
          f"interpret=False needs a GPU or TPU; the default backend is {plat!r} "
          "(Pallas runs on CPU only with interpret=True)")
    target = "interpret" if interpret else plat
  elif target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}; got {target!r}")
  block = _check_block("block", DEFAULT_BLOCK if block is None else block)
  block_k = _check_block("block_k", DEFAULT_BLOCK_K[target] if block_k is None
                         else block_k)
  if reduction is None:
    reduction = "grid" if target == "tpu" else "loop"
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
  block = min(block, max(MIN_BLOCK_GPU, _next_pow2(m)))
  block_k = min(block_k, max(MIN_BLOCK_GPU, _next_pow2(k)))
  m_pad, k_pad = _round_up(m, block), _round_up(k, block_k)
  if target == "gpu":
    if reduction == "grid":
      raise ValueError(
          "reduction='grid' cannot run compiled on GPU (grid programs run in "
          "parallel, so they cannot accumulate into one tile); use 'loop'")
    if block < MIN_BLOCK_GPU or block_k < MIN_BLOCK_GPU:
      raise ValueError(f"block and block_k must be >= {MIN_BLOCK_GPU} on GPU "
                       f"(Triton dot); got {block}, {block_k}")
  if target == "tpu":
    for name, b, full in (("block", block, m_pad), ("block_k", block_k, k_pad)):
      if b % TPU_LANES and b != full:
        raise ValueError(
            f"{name} must be a multiple of {TPU_LANES} on TPU unless one block "
            f"covers the padded matrix; got {b} for a padded size of {full}")
  return TilePlan(batch, m, k, block, block_k, m_pad, k_pad, reduction, target)


def _lower_tile(t, tiles_per_side: int):
  """Tile ``(i, j)``, ``j <= i``, of triangular index ``t = i(i+1)/2 + j``.

  Binary search for the largest ``i < T`` with ``i(i+1) <= 2t``: integer
  multiplies, compares and selects only, so it lowers in a Triton program and
  on the TPU scalar core alike.
  """
  i = t * 0
  step = _next_pow2(tiles_per_side) // 2
  while step:
    cand = i + step
    i = jnp.where((cand < tiles_per_side) & (cand * (cand + 1) <= 2 * t), cand, i)
    step //= 2
  return i, t - lax.div(i * (i + 1), 2)


def _dot_nt(a, b, acc_dtype, precision):
  """``a @ b.T`` contracting the last dims (native on the MXU; Triton transposes)."""
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision,
                         preferred_element_type=acc_dtype)


def _loop_kernel(x_ref, y_ref, o_ref, *, block_k, k_steps, precision):
  # x_ref, y_ref: (block, k_pad) row panels of tiles i and j; o_ref: (block, block).
  def body(s, acc):
    start = pl.multiple_of(s * block_k, block_k)
    return acc + _dot_nt(x_ref[:, pl.ds(start, block_k)],
                         y_ref[:, pl.ds(start, block_k)], o_ref.dtype, precision)

  acc = jnp.zeros(o_ref.shape, o_ref.dtype)
  o_ref[...] = lax.fori_loop(0, k_steps, body, acc)


def _grid_kernel(x_ref, y_ref, o_ref, *, precision):
  # The output tile is revisited on consecutive k steps (k is the last grid
  # axis), so it serves as the accumulator.
  @pl.when(pl.program_id(2) == 0)
  def _init():
    o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)

  o_ref[...] += _dot_nt(x_ref[...], y_ref[...], o_ref.dtype, precision)


def _compiler_params(p: TilePlan):
  if p.target == "gpu":
    from jax.experimental.pallas import triton as pltriton
    # Passing Triton params selects the Triton lowering (jax >= 0.9 defaults
    # pallas_call to Mosaic GPU). Untuned starting point, see DEFAULT_BLOCK_K.
    return pltriton.CompilerParams(num_warps=8 if p.block >= 128 else 4,
                                   num_stages=3)
  if p.target == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    sem = (("parallel", "parallel", "arbitrary") if p.reduction == "grid"
           else ("parallel", "parallel"))
    return pltpu.CompilerParams(dimension_semantics=sem)
  return None


def syrk_lower_tiles(y: jax.Array, p: TilePlan, *, precision=None) -> jax.Array:
  """Raw kernel: lower tiles of ``Y Y^T`` for a padded ``(batch, m_pad, k_pad)`` Y.

  Returns a ``(batch, m_pad, m_pad)`` array in the accumulation dtype whose
  tiles strictly above the diagonal are never written (uninitialized: NaN in
  interpret mode). :func:`mirror_lower_tiles` completes it.
  """
  acc_dtype = jnp.promote_types(y.dtype, jnp.float32)
  T, bm, bk = p.tiles_per_side, p.block, p.block_k
  tile = functools.partial(_lower_tile, tiles_per_side=T)

  def row_i(b, t, *k):
    return (b, tile(t)[0], k[0] if k else 0)

  def row_j(b, t, *k):
    return (b, tile(t)[1], k[0] if k else 0)

  def out_ij(b, t, *k):
    i, j = tile(t)
    return (b, i, j)

  if p.reduction == "grid":
    kernel = functools.partial(_grid_kernel, precision=precision)
    in_block = (None, bm, bk)
  else:
    kernel = functools.partial(_loop_kernel, block_k=bk, k_steps=p.k_steps,
                               precision=precision)
    in_block = (None, bm, p.k_pad)
  itemsize = jnp.dtype(y.dtype).itemsize
  cost = pl.CostEstimate(
      flops=2 * p.batch * p.num_tiles * bm * bm * p.k_pad,
      transcendentals=0,
      bytes_accessed=p.batch * p.num_tiles * (
          2 * bm * p.k_pad * itemsize + bm * bm * jnp.dtype(acc_dtype).itemsize))
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((p.batch, p.m_pad, p.m_pad), acc_dtype),
      grid=p.grid,
      in_specs=[pl.BlockSpec(in_block, row_i), pl.BlockSpec(in_block, row_j)],
      out_specs=pl.BlockSpec((None, bm, bm), out_ij),
      interpret=p.target == "interpret",
      compiler_params=_compiler_params(p),
      cost_estimate=cost,
      name="muonjax_syrk_lower",
  )(y, y)


def mirror_lower_tiles(c: jax.Array, block: int) -> jax.Array:
  """Symmetric matrix from its lower ``block x block`` tiles (diagonal tiles kept whole)."""
  tile = jnp.arange(c.shape[-1]) // block
  return jnp.where(tile[:, None] >= tile[None, :], c, jnp.swapaxes(c, -1, -2))


def _syrk(y: jax.Array, *, block, block_k, reduction, interpret, precision):
  """Full ``Y Y^T`` for Y ``(..., m, k)`` in the accumulation dtype."""
  *lead, m, k = y.shape
  acc_dtype = jnp.promote_types(y.dtype, jnp.float32)
  batch = math.prod(lead)
  if batch == 0 or m == 0 or k == 0:
    return jnp.zeros((*lead, m, m), acc_dtype)
  p = plan(batch, m, k, block=block, block_k=block_k, reduction=reduction,
           interpret=interpret)
  y3 = y.reshape(batch, m, k)
  if (p.m_pad, p.k_pad) != (m, k):
    y3 = jnp.pad(y3, ((0, 0), (0, p.m_pad - m), (0, p.k_pad - k)))
  c = mirror_lower_tiles(syrk_lower_tiles(y3, p, precision=precision), p.block)
  return c[:, :m, :m].reshape(*lead, m, m)


def _check_float(name: str, x: jax.Array, *, square: bool = False) -> None:
  if x.ndim < 2:
    raise ValueError(f"{name} must have shape (..., m, n); got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a real floating array; got {x.dtype}")
  if square and x.shape[-1] != x.shape[-2]:
    raise ValueError(f"{name} must be square (..., m, m); got shape {x.shape}")


@functools.partial(jax.jit, static_argnames=(
    "block", "block_k", "reduction", "interpret", "precision"))
def gram(x: jax.Array, *, block: Optional[int] = None,
         block_k: Optional[int] = None, reduction: Optional[Reduction] = None,
         interpret: Optional[bool] = None, precision=None) -> jax.Array:
  """``X X^T`` per matrix, computing only the lower output tiles.

  Args:
    x: ``(..., m, n)`` float array (bf16 or fp32); leading axes are batched.
      Meant for the wide orientation ``m <= n`` (the NS Gram matrix); a tall
      input works too but its ``m x m`` result is the large side.
    block, block_k, reduction, interpret: tiling, see :func:`plan`.
    precision: ``lax.dot_general`` precision inside the kernel (default: the
      config default, e.g. TF32 for fp32 on GPU, as in XLA).

  Returns:
    ``(..., m, m)`` in ``x.dtype``, accumulated in fp32 (or wider).

  Raises:
    ValueError: ``x`` is not a floating ``(..., m, n)`` array, or a bad tiling
      argument (see :func:`plan`).
  """
  _check_float("x", x)
  c = _syrk(x, block=block, block_k=block_k, reduction=reduction,
            interpret=interpret, precision=precision)
  return c.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=(
    "block", "block_k", "reduction", "interpret", "precision"))
def symmetric_poly(a: jax.Array, b, c, *, block: Optional[int] = None,
                   block_k: Optional[int] = None,
                   reduction: Optional[Reduction] = None,
                   interpret: Optional[bool] = None, precision=None) -> jax.Array:
  """``b A + c A A`` for symmetric ``A``, computing only the lower tiles of ``A A``.

  Relies on ``A A = A A^T``; a non-symmetric ``A`` gives ``b A + c A A^T``.

  Args:
    a: ``(..., m, m)`` symmetric float array (the Gram matrix of one NS step).
    b, c: scalars (Python numbers or traced arrays, e.g. one row of a scanned
      coefficient table).
    block, block_k, reduction, interpret, precision: as in :func:`gram`.

  Returns:
    ``(..., m, m)`` in ``a.dtype``; ``A A`` is accumulated and combined with
    ``b A`` in fp32 (or wider) and rounded once.
  """
  _check_float("a", a, square=True)
  s = _syrk(a, block=block, block_k=block_k, reduction=reduction,
            interpret=interpret, precision=precision)
  acc_dtype = s.dtype
  out = jnp.asarray(b, acc_dtype) * a.astype(acc_dtype) + jnp.asarray(c, acc_dtype) * s
  return out.astype(a.dtype)


@functools.partial(jax.jit, static_argnames=(
    "block", "block_k", "reduction", "interpret", "precision"))
def newton_schulz_step(x: jax.Array, a, b, c, *, block: Optional[int] = None,
                       block_k: Optional[int] = None,
                       reduction: Optional[Reduction] = None,
                       interpret: Optional[bool] = None,
                       precision=None) -> jax.Array:
  """One quintic iteration ``X <- a X + (b A + c A A) X`` with ``A = X X^T``.

  The symmetric products run in the Pallas kernels; ``a X + B X`` is an XLA
  GEMM. Rounding matches the XLA path of :func:`muonjax.newton_schulz`: ``A``
  and ``B`` are rounded to ``x.dtype``, ``a X + B X`` is formed in fp32 and
  rounded once.

  Args:
    x: wide ``(..., m, n)`` float array, ``m <= n``, already normalized.
    a, b, c: the step's coefficients.
    block, block_k, reduction, interpret, precision: as in :func:`gram`.

  Returns:
    Array with the shape and dtype of ``x``.
  """
  _check_float("x", x)
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  kernel_kwargs = dict(block=block, block_k=block_k, reduction=reduction,
                       interpret=interpret, precision=precision)
  gram_x = gram(x, **kernel_kwargs)
  b_mat = symmetric_poly(gram_x, b, c, **kernel_kwargs)
  return (jnp.asarray(a, acc_dtype) * x + b_mat @ x).astype(x.dtype)
