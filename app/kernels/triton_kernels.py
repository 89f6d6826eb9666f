"""Triton kernels and launchers for 3D transposed convolution (forward, grad_input, grad_weight, grad_bias).

Conventions (the same as ``torch.nn.functional.conv_transpose3d``):
  x (N, C_in, D, H, W), weight (C_in, C_out/groups, kD, kH, kW), y (N, C_out, OD, OH, OW) with
  OD = (D - 1)·sD − 2·pD + dD·(kD − 1) + opD + 1, and y[n, co, i·s − p + k·d] += x[n, ci, i] · w[ci, co, k].

Forward, stride-phase (sub-pixel) decomposition: output index o = r + s·q with phase r ∈ [0, s). Tap k reaches
phase r iff (r + p − k·d) ≡ 0 (mod s), and then reads input q + (r + p − k·d)/s: a constant offset per
(phase, tap). One program computes a [BLOCK_M positions of one phase] × [BLOCK_N output channels] tile as an
implicit GEMM over its own taps only (no dead taps, no division of a gathered index); its K loop is one flat
(tap, C_in block) loop, which Triton software-pipelines. kernel == stride with no padding/dilation (the U-Net's
upsampling) is one plain GEMM instead, x (N·D·H·W × C_in) @ w (C_in × C_out·taps), over boxes of input positions
whose tile is regrouped to store runs of consecutive output voxels (``_fwd_gemm_kernel``). The other geometries
with dilation 1 run the phase GEMM (``_fwd_phase_gemm_kernel``): per (D, H) phase pair one GEMM over its taps and
all W input shifts, stored in the same runs along W (NCDHW, sW a power of 2) or as runs of channels
(channels_last_3d, groups 1; this includes kernel == stride on channels_last_3d). grad_input is a strided conv3d of
grad_y with the same flat K loop. grad_weight is one GEMM over all taps for every geometry (x read once per column
tile, not once per tap), which also sums grad_bias in the GEMM geometry; a channels_last_3d grad_y's grad_bias is
otherwise a split channel sum (``_channel_sum_kernel``).

On Hopper, channels_last_3d tensors with 16-byte channel runs take TMA kernels: tensor descriptors (up to 5D) move
every tile, their zero fill for out-of-range coordinates replaces the padding masks and their clipped stores the
output bounds, so the loops carry no per-element address arithmetic (``_fwd_phase_tma_kernel``, the forward's phase
GEMM; ``_bwd_weight_tma_kernel``, its adjoint for grad_weight).

Every tensor is addressed through its strides, so NCDHW, channels_last_3d and non-contiguous views need no
copy. Offsets are int32 unless a tensor spans 2^31 elements or more (then INDEX_64 switches to int64).
Accumulation is fp32 (fp64 for fp64 inputs).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import triton
import triton.language as tl
from triton import knobs
from triton.runtime.autotuner import Autotuner
from triton.tools.tensor_descriptor import TensorDescriptor

Triple = tuple[int, int, int]
_INT32_LIMIT = 2**31


def interpreter_active() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def _mma(acc, a, b, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr, PRECISION: tl.constexpr,
         UPCAST: tl.constexpr):
    """acc += a @ b with fp32 accumulation (fp64 for fp64 operands, which tensor-core dots do not take).
    UPCAST multiplies in fp32: Triton's interpreter multiplies bf16 tiles as raw integers otherwise."""
    if IS_FP64:
        acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    elif IS_FP32:
        acc += tl.dot(a, b, input_precision=PRECISION)
    elif UPCAST:
        acc += tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        acc += tl.dot(a, b)
    return acc


@triton.jit
def _tile_rows(pid, BLOCK: tl.constexpr, INDEX_64: tl.constexpr):
    """Flat indices pid·BLOCK + [0, BLOCK): int64 when INDEX_64, else int32."""
    if INDEX_64:
        rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        rows = pid * BLOCK + tl.arange(0, BLOCK)
    return rows


@triton.jit
def _unravel(m, W, H, D):
    """Flat position m over (N, D, H, W) (W fastest) -> (w, h, d, n)."""
    w = m % W
    t = m // W
    h = t % H
    t = t // H
    return w, h, t % D, t // D


@triton.jit
def _wide_mul(i, k, INDEX_64: tl.constexpr):
    """i·k, in int64 when INDEX_64 (a split's first position, a partial buffer's base offset)."""
    if INDEX_64:
        prod = i.to(tl.int64) * k
    else:
        prod = i * k
    return prod


@triton.jit
def _gemm_columns(col, taps: tl.constexpr, C_OUT_G, KH: tl.constexpr, KW: tl.constexpr, TAP_FASTEST: tl.constexpr):
    """GEMM column (kernel = stride geometry) -> (co, tap, kd, kh, kw): columns ordered (co, tap) when TAP_FASTEST,
    else (tap, co)."""
    if TAP_FASTEST:
        co = col // taps
        tap = col % taps
    else:
        tap = col // C_OUT_G
        co = col % C_OUT_G
    kw = tap % KW
    kh = (tap // KW) % KH
    kd = tap // (KW * KH)
    return co, tap, kd, kh, kw


@triton.constexpr_function
def _box_extent(axis: int, w_p2: int, h_p2: int, block: int) -> int:
    """Extent along ``axis`` (0: (n, d) slabs, 1: rows, 2: W) of a box of ``block`` input positions (a power of 2)
    for a volume whose W and H round up to the powers of 2 ``w_p2``, ``h_p2``: W takes min(w_p2, block), the
    rows min(h_p2, what is left), the slabs the rest. Host code calls ``_box_extent.fn`` (the plain function:
    the constexpr-function wrapper costs ~4 µs a call)."""
    bw = min(w_p2, block)
    bh = min(h_p2, block // bw)
    return (block // (bw * bh), bh, bw)[axis]


@triton.jit
def _box(b, t_start, t_end, IH, IW, W_P2: tl.constexpr, H_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Box b of the tiling of (n, d) slabs [t_start, t_end) × IH rows × IW by boxes of BLOCK positions, [BT slabs]
    × [BH rows] × [BW along W] (``_box_extent``), W fastest: its first (slab, row, w), and per position, ordered
    (slab, row, w), its slab, h, w and whether it is in bounds."""
    BT: tl.constexpr = _box_extent(0, W_P2, H_P2, BLOCK)
    BH: tl.constexpr = _box_extent(1, W_P2, H_P2, BLOCK)
    BW: tl.constexpr = _box_extent(2, W_P2, H_P2, BLOCK)
    tiles_w = tl.cdiv(IW, BW)
    tiles_h = tl.cdiv(IH, BH)
    t0 = t_start + b // (tiles_w * tiles_h) * BT
    h0 = b // tiles_w % tiles_h * BH
    w0 = b % tiles_w * BW
    r = tl.arange(0, BLOCK)
    slab = t0 + r // (BW * BH)
    i_h = h0 + r // BW % BH
    i_w = w0 + r % BW
    return t0, h0, w0, slab, i_h, i_w, (slab < t_end) & (i_h < IH) & (i_w < IW)


@triton.jit
def _box_program(T, IH, IW, n_tiles, W_P2: tl.constexpr, H_P2: tl.constexpr, BLOCK_M: tl.constexpr,
                 INDEX_64: tl.constexpr):
    """This program's group, column tile and box (``_box``) on a kernel = stride GEMM's grid (boxes of T slabs,
    groups · n_tiles)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = pid_n // n_tiles
    if INDEX_64:  # channel index x channel stride can pass 2^31 too
        g = g.to(tl.int64)
        pid_m = pid_m.to(tl.int64)
    t0, h0, w0, slab, i_h, i_w, row_ok = _box(pid_m, 0, T, IH, IW, W_P2, H_P2, BLOCK_M)
    return g, pid_n % n_tiles, t0, h0, w0, slab, i_h, i_w, row_ok


@triton.jit
def _interleaved_rows(col0, g, C_OUT_G, s_c, s_d, s_h, KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                      BJ: tl.constexpr):
    """Rows j of an interleaved tile (kernel = stride geometry, columns (co, kd, kh, kw) from col0, kW fastest):
    each row is one (co, kd, kh); its offset in an NCDHW output-sized tensor (strides s_*) and whether it exists."""
    j = col0 // KW + tl.arange(0, BJ)
    offset = (g * C_OUT_G + j // (KD * KH)) * s_c + (j // KH % KD) * s_d + (j % KH) * s_h
    return offset, j < C_OUT_G * KD * KH


@triton.jit
def _interleaved_offsets(t0, h0, w0, row_offset, row_ok, t_end, ID, IH, r_d, r_h, OD, OH, OW, s_n, s_d, s_h, s_w,
                         KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                         W_P2: tl.constexpr, H_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Offsets and mask [rows, BT, BH, BW·KW] of the output voxels that the box at (t0, h0, w0) (``_box``) reaches
    when each position i owns the KD × KH × KW output block at i·K: element [j, t, r, q] is y[n, co, d·KD + r_d + kd,
    (h0 + r)·KH + r_h + kh, w0·KW + q] of slab t0 + t = n·ID + d, for row j = (co, kd, kh) (``_interleaved_rows``;
    its kd, kh and the phase r_d, r_h of the phase GEMM are in ``row_offset``), inside OD × OH × OW: runs of BW·KW
    consecutive voxels. The kernel = stride GEMMs pass r_d = r_h = 0 and the full output (K·input size)."""
    BT: tl.constexpr = _box_extent(0, W_P2, H_P2, BLOCK)
    BH: tl.constexpr = _box_extent(1, W_P2, H_P2, BLOCK)
    BW: tl.constexpr = _box_extent(2, W_P2, H_P2, BLOCK)
    slab = t0 + tl.arange(0, BT)
    h = h0 + tl.arange(0, BH)
    ow = w0 * KW + tl.arange(0, BW * KW)
    offsets = (row_offset[:, None, None, None] + ((slab // ID) * s_n + (slab % ID * KD) * s_d)[None, :, None, None]
               + (h * KH * s_h)[None, None, :, None] + (ow * s_w)[None, None, None, :])
    slab_ok = (slab < t_end) & (slab % ID * KD + r_d < OD)
    h_ok = (h < IH) & (h * KH + r_h < OH)
    ok = (row_ok[:, None, None, None] & slab_ok[None, :, None, None] & h_ok[None, None, :, None]
          & (ow < OW)[None, None, None, :])
    return offsets, ok


@triton.jit
def _regroup_runs(tile, TO_RUNS: tl.constexpr, W_P2: tl.constexpr, H_P2: tl.constexpr, BLOCK: tl.constexpr,
                  BJ: tl.constexpr, KW: tl.constexpr):
    """TO_RUNS: [BLOCK box positions, BJ·KW columns (row j, kw)] -> [BJ, BT, BH, BW·KW], the layout of
    ``_interleaved_offsets``; else the inverse."""
    BT: tl.constexpr = _box_extent(0, W_P2, H_P2, BLOCK)
    BH: tl.constexpr = _box_extent(1, W_P2, H_P2, BLOCK)
    BW: tl.constexpr = _box_extent(2, W_P2, H_P2, BLOCK)
    if TO_RUNS:
        tile = tl.reshape(tl.permute(tl.reshape(tile, (BT, BH, BW, BJ, KW)), (3, 0, 1, 2, 4)), (BJ, BT, BH, BW * KW))
    else:
        tile = tl.reshape(tl.permute(tl.reshape(tile, (BJ, BT, BH, BW, KW)), (1, 2, 3, 0, 4)), (BLOCK, BJ * KW))
    return tile


@triton.jit
def _zero_acc(ROWS: tl.constexpr, COLS: tl.constexpr, IS_FP64: tl.constexpr):
    """The [ROWS, COLS] accumulator: fp64 for fp64 operands, else fp32."""
    if IS_FP64:
        acc = tl.zeros((ROWS, COLS), dtype=tl.float64)
    else:
        acc = tl.zeros((ROWS, COLS), dtype=tl.float32)
    return acc


@triton.jit
def _phase_taps(r, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, DIL: tl.constexpr):
    """Taps of phase r along one axis: (first tap k0, count T, input offset of k0). The taps k with
    (r + P − k·DIL) ≡ 0 (mod S) are k0 + j·S/g for j < T (g = gcd(S, DIL)); tap k0 + j·S/g reads input q + offset
    − j·DIL/g."""
    k0 = r * 0 - 1
    count = r * 0
    for k in tl.static_range(K):
        hit = (r + P - k * DIL) % S == 0
        count += hit.to(count.dtype)
        k0 = tl.where(hit & (k0 < 0), k, k0)
    return k0, count, (r + P - k0 * DIL) // S


@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, ID, IH, IW, OD, OH, OW, QD, QH, QW, C_IN_G, C_OUT_G,
    sxn, sxc, sxd, sxh, sxw,
    swi, swo, swd, swh, sww,
    syn, syc, syd, syh, syw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DD: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TSD: tl.constexpr, TSH: tl.constexpr, TSW: tl.constexpr,
    HAS_BIAS: tl.constexpr, INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y tile = sum over the taps of one stride phase of x[positions + offset] @ w[tap]; grid (M tiles · phases,
    groups · C_out/groups tiles). M = N·QD·QH·QW counts the positions q of one phase. The K loop is one flat
    (tap of the phase, C_in block) loop, which Triton software-pipelines across taps. TS* = S/gcd(S, DIL), the tap
    step within a phase. The sD·sH·sW phases of an M tile are neighbouring programs: they read the same x rows
    (from L2 after the first) and fill each other's interleaved output sectors while those are still in L2."""
    pid_m = tl.program_id(0) // (SD * SH * SW)
    pid_p = tl.program_id(0) % (SD * SH * SW)
    pid_n = tl.program_id(1)
    rw = pid_p % SW
    rh = (pid_p // SW) % SH
    rd = pid_p // (SW * SH)
    n_tiles = tl.cdiv(C_OUT_G, BLOCK_N)
    g = pid_n // n_tiles

    m = _tile_rows(pid_m, BLOCK_M, INDEX_64)
    qw, qh, qd, n = _unravel(m, QW, QH, QD)
    od = rd + SD * qd
    oh = rh + SH * qh
    ow = rw + SW * qw
    row_ok = (m < M) & (od < OD) & (oh < OH) & (ow < OW)

    co = (pid_n % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    co_ok = co < C_OUT_G
    if INDEX_64:  # channel index x channel stride can pass 2^31 too
        g = g.to(tl.int64)
    ci_base = g * C_IN_G
    co_glob = g * C_OUT_G + co
    k_range = tl.arange(0, BLOCK_K)
    kd0, td, bd = _phase_taps(rd, KD, SD, PD, DD)
    kh0, th, bh = _phase_taps(rh, KH, SH, PH, DH)
    kw0, tw, bw = _phase_taps(rw, KW, SW, PW, DW)
    k_blocks = tl.cdiv(C_IN_G, BLOCK_K)

    acc = _zero_acc(BLOCK_M, BLOCK_N, IS_FP64)
    x_n = x_ptr + n * sxn
    for it in range(0, td * th * tw * k_blocks):
        tap = it // k_blocks
        ci = (it - tap * k_blocks) * BLOCK_K + k_range
        jw = tap % tw
        jh = (tap // tw) % th
        jd = tap // (tw * th)
        i_d = qd + bd - jd * (DD * TSD // SD)
        i_h = qh + bh - jh * (DH * TSH // SH)
        i_w = qw + bw - jw * (DW * TSW // SW)
        ok = row_ok & (i_d >= 0) & (i_d < ID) & (i_h >= 0) & (i_h < IH) & (i_w >= 0) & (i_w < IW)
        ci_ok = ci < C_IN_G
        w_tap = w_ptr + (kd0 + jd * TSD) * swd + (kh0 + jh * TSH) * swh + (kw0 + jw * TSW) * sww
        a = tl.load((x_n + i_d * sxd + i_h * sxh + i_w * sxw)[:, None] + (ci_base + ci)[None, :] * sxc,
                    mask=ok[:, None] & ci_ok[None, :], other=0.0)
        b = tl.load(w_tap + (ci_base + ci)[:, None] * swi + co[None, :] * swo,
                    mask=ci_ok[:, None] & co_ok[None, :], other=0.0)
        acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co_glob, mask=co_ok, other=0.0).to(acc.dtype)[None, :]
    y_row = y_ptr + n * syn + od * syd + oh * syh + ow * syw
    tl.store(y_row[:, None] + co_glob[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & co_ok[None, :])


@triton.jit
def _fwd_gemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    T, ID, IH, IW, C_IN_G, C_OUT_G,
    sxn, sxc, sxd, sxh, sxw,
    swi, swo, swd, swh, sww,
    syn, syc, syd, syh, syw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, W_P2: tl.constexpr, H_P2: tl.constexpr,
    INTERLEAVE_W: tl.constexpr, W_FLAT: tl.constexpr, HAS_BIAS: tl.constexpr, INDEX_64: tl.constexpr, IS_FP64: tl.constexpr,
    IS_FP32: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """kernel = stride, padding 0, dilation 1, output_padding 0, y NCDHW: y[n, co, i·k + tap] = x[n, :, i] @
    w[:, co, tap] is one GEMM per group, [input positions] × C_in/g @ C_in/g × [C_out/g · taps columns, (co, kd, kh,
    kw) with kw fastest]: x is read once, every program spans all phases. A program's BLOCK_M positions are a box
    [BT (n, d) slabs of T = N·D] × [BH rows] × [BW positions along W] (BW = min(W_P2, BLOCK_M), W_P2 = next power of
    2 of W, likewise BH), so x's tile rows are contiguous along W. INTERLEAVE_W (kW a power of 2): the tile is
    regrouped so that each (co, kd, kh, slab, row) stores BW·kW consecutive output voxels (y[..., i_w·kW + kw] for
    the box's i_w, every kw): wide coalesced stores instead of one scattered voxel per (position, column). W_FLAT:
    weight is contiguous, so a column's offset in it is the column index.
    Grid (box tiles, groups · column tiles)."""
    taps: tl.constexpr = KD * KH * KW
    n_cols = taps * C_OUT_G
    g, col_tile, t0, h0, w0, slab, i_h, i_w, row_ok = _box_program(T, IH, IW, tl.cdiv(n_cols, BLOCK_N), W_P2, H_P2,
                                                                    BLOCK_M, INDEX_64)
    n = slab // ID
    i_d = slab % ID

    col0 = col_tile * BLOCK_N
    col = col0 + tl.arange(0, BLOCK_N)
    col_ok = col < n_cols
    co, tap, kd, kh, kw = _gemm_columns(col, taps, C_OUT_G, KH, KW, True)
    ci_base = g * C_IN_G
    co_glob = g * C_OUT_G + co
    k_range = tl.arange(0, BLOCK_K)

    acc = _zero_acc(BLOCK_M, BLOCK_N, IS_FP64)
    x_row = x_ptr + n * sxn + i_d * sxd + i_h * sxh + i_w * sxw
    if W_FLAT:  # contiguous weight: a column's (co, tap) offset is the column itself (wide loads)
        w_col = w_ptr + col
    else:
        w_col = w_ptr + co * swo + kd * swd + kh * swh + kw * sww
    for k0 in range(0, C_IN_G, BLOCK_K):
        ci = ci_base + k0 + k_range
        ci_ok = k0 + k_range < C_IN_G
        a = tl.load(x_row[:, None] + ci[None, :] * sxc, mask=row_ok[:, None] & ci_ok[None, :], other=0.0)
        b = tl.load(w_col[None, :] + ci[:, None] * swi, mask=ci_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co_glob, mask=col_ok, other=0.0).to(acc.dtype)[None, :]
    out = acc.to(y_ptr.dtype.element_ty)
    if INTERLEAVE_W:  # stored as runs of BW·kW consecutive voxels
        BJ: tl.constexpr = BLOCK_N // KW
        row_offset, row_exists = _interleaved_rows(col0, g, C_OUT_G, syc, syd, syh, KD, KH, KW, BJ)
        offsets, ok = _interleaved_offsets(t0, h0, w0, row_offset, row_exists, T, ID, IH, 0, 0, ID * KD, IH * KH,
                                           IW * KW, syn, syd, syh, syw, KD, KH, KW, W_P2, H_P2, BLOCK_M)
        tl.store(y_ptr + offsets, _regroup_runs(out, True, W_P2, H_P2, BLOCK_M, BJ, KW), mask=ok)
    else:
        y_row = y_ptr + n * syn + (i_d * KD) * syd + (i_h * KH) * syh + (i_w * KW) * syw
        y_col = co_glob * syc + kd * syd + kh * syh + kw * syw
        tl.store(y_row[:, None] + y_col[None, :], out, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _phase_range(r, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, U_MAX: tl.constexpr):
    """Along one axis (dilation 1), the input shifts that phase r uses in the phase GEMM's weight
    (``phase_weight``): shift v reads input q + U_MAX − v with tap k = S·v + r + P − S·U_MAX; the taps in [0, K) are
    v in [first, first + count) (count may be 0)."""
    lead: tl.constexpr = S * U_MAX - P  # taps k = S·v + r − lead; lead in [0, S)
    first = (lead - r > 0).to(tl.int32)
    count = (K - 1 + lead - r + S) // S - first
    return first, tl.maximum(count, 0)


@triton.jit
def _phase_shift(it, k_blocks, vd0, vh0, th, UW: tl.constexpr):
    """Step ``it`` of a phase pair's K loop, which walks its (vd, vh, vw) shifts (vd from ``vd0``, th H shifts from
    ``vh0``, UW W shifts) × ``k_blocks`` channel blocks: (channel block, vw, vh, vd)."""
    shift = it // k_blocks
    return it - shift * k_blocks, shift % UW, vh0 + shift // UW % th, vd0 + shift // (UW * th)


@triton.jit
def _weight_shift(pair, vd, vh, vw, UD: tl.constexpr, UH: tl.constexpr, UW: tl.constexpr):
    """Index of the (pair, vd, vh, vw) block of ``phase_weight`` (its rows per shift follow)."""
    return ((pair * UD + vd) * UH + vh) * UW + vw


@triton.jit
def _tma_box_origin(pid, DEPTH, H, W, BOX_H: tl.constexpr, BOX_W: tl.constexpr):
    """(n, d, h0, w0) of program ``pid`` in a grid of BOX_H × BOX_W boxes over (N·DEPTH) slabs of H × W
    positions, W boxes fastest."""
    w_boxes = tl.cdiv(W, BOX_W)
    h_boxes = tl.cdiv(H, BOX_H)
    slab = pid // (w_boxes * h_boxes)
    return slab // DEPTH, slab % DEPTH, pid // w_boxes % h_boxes * BOX_H, pid % w_boxes * BOX_W


@triton.jit
def _fwd_phase_gemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    T, ID, IH, IW, QD, QH, QW, OD, OH, OW, C_IN, C_IN_G, C_OUT_G,
    sxn, sxc, sxd, sxh, sxw,
    syn, syc, syd, syh, syw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    UD: tl.constexpr, UH: tl.constexpr, UW: tl.constexpr,
    UD_MAX: tl.constexpr, UH_MAX: tl.constexpr, UW_MAX: tl.constexpr,
    W_P2: tl.constexpr, H_P2: tl.constexpr, Y_CL: tl.constexpr, W_EXACT: tl.constexpr, HAS_BIAS: tl.constexpr,
    INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, ALL_PAIRS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Dilation 1, x in any layout: output o = S·q + r (phase r). For one (rd, rh) phase pair, y[n, :, S·q + r]
    for every rW is one GEMM over positions q: the sum over the pair's taps along D and H and over all UW input
    shifts along W of x[n, :, q + shift] (C_in/g) @ w (``phase_weight``: [C_in/g] × [(co, rW) columns], zero where
    phase rW has no tap at that W shift). A program takes a box of q positions (``_box`` over T = N·QD slabs × QH ×
    QW) × BLOCK_N columns of one pair (of every pair in turn when ALL_PAIRS, re-reading its x box from cache).
    y NCDHW (sW a power of 2): columns (co, rW), stored as runs of BW·sW consecutive voxels along W (the kernel =
    stride GEMM's regrouping, its taps played by the W phases). Y_CL (y channels_last_3d, groups 1): columns
    (rW, co), so a position's sW·C_out columns are one run of y (its voxels S·q_w + rW, all channels); W_EXACT
    (OW = sW·QW) drops the per-column W bound. Grid (boxes, groups · [sD·sH pairs unless ALL_PAIRS] · column
    tiles)."""
    n_cols = C_OUT_G * SW
    col_tiles = tl.cdiv(n_cols, BLOCK_N)
    pairs_per_program: tl.constexpr = SD * SH if ALL_PAIRS else 1
    g, tile, t0, h0, w0, slab, q_h, q_w, row_ok = _box_program(T, QH, QW, SD * SH // pairs_per_program * col_tiles,
                                                               W_P2, H_P2, BLOCK_M, INDEX_64)
    col0 = tile % col_tiles * BLOCK_N
    n = slab // QD
    q_d = slab % QD
    col = col0 + tl.arange(0, BLOCK_N)
    col_ok = col < n_cols
    ci_base = g * C_IN_G
    k_range = tl.arange(0, BLOCK_K)
    k_blocks = tl.cdiv(C_IN_G, BLOCK_K)
    x_n = x_ptr + n * sxn
    if HAS_BIAS:
        bias = tl.load(b_ptr + g * C_OUT_G + (col % C_OUT_G if Y_CL else col // SW), mask=col_ok, other=0.0)
    for pair in range(tile // col_tiles * pairs_per_program, (tile // col_tiles + 1) * pairs_per_program):
        rd = pair // SH
        rh = pair % SH
        vd0, td = _phase_range(rd, KD, SD, PD, UD_MAX)
        vh0, th = _phase_range(rh, KH, SH, PH, UH_MAX)
        acc = _zero_acc(BLOCK_M, BLOCK_N, IS_FP64)
        w_pair = w_ptr + pair * (UD * UH * UW) * C_IN * n_cols
        for it in range(0, td * th * UW * k_blocks):
            k_block, vw, vh, vd = _phase_shift(it, k_blocks, vd0, vh0, th, UW)
            ci = k_block * BLOCK_K + k_range
            i_d = q_d + UD_MAX - vd
            i_h = q_h + UH_MAX - vh
            i_w = q_w + UW_MAX - vw
            ok = row_ok & (i_d >= 0) & (i_d < ID) & (i_h >= 0) & (i_h < IH) & (i_w >= 0) & (i_w < IW)
            ci_ok = ci < C_IN_G
            a = tl.load((x_n + i_d * sxd + i_h * sxh + i_w * sxw)[:, None] + (ci_base + ci)[None, :] * sxc,
                        mask=ok[:, None] & ci_ok[None, :], other=0.0)
            w_shift = w_pair + ((vd * UH + vh) * UW + vw) * C_IN * n_cols
            b = tl.load(w_shift + (ci_base + ci)[:, None] * n_cols + col[None, :],
                        mask=ci_ok[:, None] & col_ok[None, :], other=0.0)
            acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
        if HAS_BIAS:
            acc += bias.to(acc.dtype)[None, :]
        if Y_CL:  # column (rW, co) of position q sits at y's voxel S·q (phase 0 along W) + col
            o_d = q_d * SD + rd
            o_h = q_h * SH + rh
            y_pos = y_ptr + n * syn + o_d * syd + o_h * syh + (q_w * SW) * syw
            ok = (row_ok & (o_d < OD) & (o_h < OH))[:, None] & col_ok[None, :]
            if not W_EXACT:
                ok = ok & ((q_w * SW)[:, None] + (col // C_OUT_G)[None, :] < OW)
            tl.store(y_pos[:, None] + col[None, :], acc.to(y_ptr.dtype.element_ty), mask=ok)
        else:
            BJ: tl.constexpr = BLOCK_N // SW
            co = col0 // SW + tl.arange(0, BJ)
            row_offset = (g * C_OUT_G + co) * syc + rd * syd + rh * syh
            offsets, ok = _interleaved_offsets(t0, h0, w0, row_offset, co < C_OUT_G, T, QD, QH, rd, rh, OD, OH, OW,
                                               syn, syd, syh, syw, SD, SH, SW, W_P2, H_P2, BLOCK_M)
            tl.store(y_ptr + offsets,
                     _regroup_runs(acc.to(y_ptr.dtype.element_ty), True, W_P2, H_P2, BLOCK_M, BJ, SW), mask=ok)


@triton.jit
def _fwd_phase_tma_kernel(
    x_desc, w_desc, y_desc, b_ptr,
    QD, QH, QW, OD, C_IN, C_OUT, N_COLS,
    KD: tl.constexpr, KH: tl.constexpr, SD: tl.constexpr, SH: tl.constexpr, PD: tl.constexpr, PH: tl.constexpr,
    UD: tl.constexpr, UH: tl.constexpr, UW: tl.constexpr,
    UD_MAX: tl.constexpr, UH_MAX: tl.constexpr, UW_MAX: tl.constexpr, W_K_MAJOR: tl.constexpr,
    HAS_BIAS: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The phase GEMM (``_fwd_phase_gemm_kernel``) on channels_last_3d x and y, groups 1, OD/OH/OW multiples of the
    stride, with every tile moved by TMA (no per-element address or bound arithmetic: out-of-range reads are zeros,
    out-of-range writes are dropped). x_desc: x as (N, D, H, W, C_in), blocks [1, 1, BOX_H, BOX_W, BLOCK_K];
    w_desc: ``phase_weight`` (w_phase_major) as [(sD, sH, UD, UH, UW, C_in) rows, sW·C_out columns], blocks
    [BLOCK_K, BLOCK_N] (rows past one shift's C_in meet zero x channels), or with W_K_MAJOR (columns_first) as
    [(sD, sH, UD, UH, UW, sW·C_out) rows, C_in columns], blocks [BLOCK_N, BLOCK_K] (rows past one shift's columns
    land in y columns that the store drops); y_desc: y as (N·OD, QH, sH, QW, sW·C_out),
    blocks [1, BOX_H, 1, BOX_W, BLOCK_N]. A program computes a BOX_H × BOX_W box of positions q of one (n, q_d) ×
    BLOCK_N (rW, co) columns of one (rd, rh) phase pair. Grid (N·QD · H boxes · W boxes, sD·sH · column tiles)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n, q_d, q_h0, q_w0 = _tma_box_origin(pid_m, QD, QH, QW, BOX_H, BOX_W)
    col_tiles = tl.cdiv(N_COLS, BLOCK_N)
    col0 = pid_n % col_tiles * BLOCK_N
    pair = pid_n // col_tiles
    rd = pair // SH
    rh = pair % SH
    vd0, td = _phase_range(rd, KD, SD, PD, UD_MAX)
    vh0, th = _phase_range(rh, KH, SH, PH, UH_MAX)
    k_blocks = tl.cdiv(C_IN, BLOCK_K)
    acc = _zero_acc(BOX_H * BOX_W, BLOCK_N, IS_FP64)
    for it in range(0, td * th * UW * k_blocks):
        k_block, vw, vh, vd = _phase_shift(it, k_blocks, vd0, vh0, th, UW)
        k0 = k_block * BLOCK_K
        a = x_desc.load([n, q_d + UD_MAX - vd, q_h0 + UH_MAX - vh, q_w0 + UW_MAX - vw, k0])
        shift = _weight_shift(pair, vd, vh, vw, UD, UH, UW)
        if W_K_MAJOR:  # a [BLOCK_N, BLOCK_K] tile, its transpose the dot's K-major operand (TF32 needs one)
            b = w_desc.load([shift * N_COLS + col0, k0]).T
        else:
            b = w_desc.load([shift * C_IN + k0, col0])
        acc = _mma(acc, a.reshape(BOX_H * BOX_W, BLOCK_K), b, IS_FP64, IS_FP32, PRECISION, UPCAST)
    if HAS_BIAS:  # column (rW, co) takes bias[co]
        col = col0 + tl.arange(0, BLOCK_N)
        acc += tl.load(b_ptr + col % C_OUT, mask=col < N_COLS, other=0.0).to(acc.dtype)[None, :]
    y_desc.store([n * OD + q_d * SD + rd, q_h0, rh, q_w0, col0],
                 acc.to(y_desc.dtype).reshape(1, BOX_H, 1, BOX_W, BLOCK_N))


@triton.jit
def _bwd_input_tma_kernel(
    g_desc, w_desc, gx_desc,
    D, H, W, QD, OD, C_IN, N_COLS,
    KD: tl.constexpr, KH: tl.constexpr, SD: tl.constexpr, SH: tl.constexpr, PD: tl.constexpr, PH: tl.constexpr,
    UD: tl.constexpr, UH: tl.constexpr, UW: tl.constexpr,
    UD_MAX: tl.constexpr, UH_MAX: tl.constexpr, UW_MAX: tl.constexpr,
    IS_FP64: tl.constexpr, IS_FP32: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BOX_H: tl.constexpr, BOX_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_input as the phase GEMM's transpose, channels_last_3d, groups 1, OD/OH/OW multiples of the stride, every
    tile by TMA: grad_x[n, i, ci] = sum over phase pairs (rd, rh), their taps' shifts (vd, vh), the W shifts vw and
    (rW, co) of grad_y[n, S·(i + v − U_MAX) + r, co] · phase_weight[rd, rh, vd, vh, vw, ci, (rW, co)]. g_desc:
    grad_y as (N·OD, QH, sH, QW, sW·C_out), blocks [1, BOX_H, 1, BOX_W, BLOCK_K] (a program's D shifts are limited
    to rows of its own n: out-of-range H and W rows read zeros); w_desc: the phase weight's [(sD, sH, UD, UH, UW,
    C_in) rows, sW·C_out columns], blocks [BLOCK_N, BLOCK_K], transposed in shared memory (rows past C_in land in
    grad_x columns that the store drops); gx_desc: grad_x as (N, D, H, W, C_in), blocks [1, 1, BOX_H, BOX_W,
    BLOCK_N]. A program computes a BOX_H × BOX_W box of one (n, i_d) × BLOCK_N input channels.
    Grid (N·D · H boxes · W boxes, C_in tiles)."""
    pid_m = tl.program_id(0)
    ci0 = tl.program_id(1) * BLOCK_N
    n, i_d, i_h0, i_w0 = _tma_box_origin(pid_m, D, H, W, BOX_H, BOX_W)
    k_blocks = tl.cdiv(N_COLS, BLOCK_K)
    acc = _zero_acc(BOX_H * BOX_W, BLOCK_N, IS_FP64)
    for pair in range(0, SD * SH):
        rd = pair // SH
        rh = pair % SH
        vd0, td = _phase_range(rd, KD, SD, PD, UD_MAX)
        vh0, th = _phase_range(rh, KH, SH, PH, UH_MAX)
        vd_lo = tl.maximum(vd0, UD_MAX - i_d)  # the D shifts whose grad_y row q_d = i_d + vd − U_MAX is in [0, QD)
        vd_hi = tl.minimum(vd0 + td, UD_MAX - i_d + QD)
        for it in range(0, tl.maximum(vd_hi - vd_lo, 0) * th * UW * k_blocks):
            k_block, vw, vh, vd = _phase_shift(it, k_blocks, vd_lo, vh0, th, UW)
            k0 = k_block * BLOCK_K
            a = g_desc.load([n * OD + SD * (i_d + vd - UD_MAX) + rd, i_h0 + vh - UH_MAX, rh, i_w0 + vw - UW_MAX, k0])
            b = w_desc.load([_weight_shift(pair, vd, vh, vw, UD, UH, UW) * C_IN + ci0, k0])
            acc = _mma(acc, a.reshape(BOX_H * BOX_W, BLOCK_K), tl.trans(b), IS_FP64, IS_FP32, PRECISION, UPCAST)
    gx_desc.store([n, i_d, i_h0, i_w0, ci0], acc.to(gx_desc.dtype).reshape(1, 1, BOX_H, BOX_W, BLOCK_N))


@triton.jit
def _bwd_input_kernel(
    g_ptr, w_ptr, gx_ptr,
    M, ID, IH, IW, OD, OH, OW, C_IN_G, C_OUT_G,
    sgn, sgc, sgd, sgh, sgw,
    swi, swo, swd, swh, sww,
    sxn, sxc, sxd, sxh, sxw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DD: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_x[n, ci, i] = sum_{co, k} grad_y[n, co, i·s − p + k·d] · w[ci, co, k]: a strided conv3d of grad_y.
    Grid (tiles of M = N·D·H·W input positions, groups · C_in/groups tiles)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n_tiles = tl.cdiv(C_IN_G, BLOCK_N)
    g = pid_n // n_tiles

    m = _tile_rows(pid_m, BLOCK_M, INDEX_64)
    i_w, i_h, i_d, n = _unravel(m, IW, IH, ID)
    row_ok = m < M

    ci = (pid_n % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN_G
    if INDEX_64:  # channel index x channel stride can pass 2^31 too
        g = g.to(tl.int64)
    ci_glob = g * C_IN_G + ci
    co_base = g * C_OUT_G
    k_range = tl.arange(0, BLOCK_K)

    acc = _zero_acc(BLOCK_M, BLOCK_N, IS_FP64)
    g_n = g_ptr + n * sgn
    k_blocks = tl.cdiv(C_OUT_G, BLOCK_K)
    for it in range(0, KD * KH * KW * k_blocks):  # one flat (tap, C_out block) loop: pipelined across taps
        tap = it // k_blocks
        co = (it - tap * k_blocks) * BLOCK_K + k_range
        kw = tap % KW
        kh = (tap // KW) % KH
        kd = tap // (KW * KH)
        o_d = i_d * SD - PD + kd * DD
        o_h = i_h * SH - PH + kh * DH
        o_w = i_w * SW - PW + kw * DW
        ok = row_ok & (o_d >= 0) & (o_d < OD) & (o_h >= 0) & (o_h < OH) & (o_w >= 0) & (o_w < OW)
        co_ok = co < C_OUT_G
        a = tl.load((g_n + o_d * sgd + o_h * sgh + o_w * sgw)[:, None] + (co_base + co)[None, :] * sgc,
                    mask=ok[:, None] & co_ok[None, :], other=0.0)
        b = tl.load(w_ptr + kd * swd + kh * swh + kw * sww + co[:, None] * swo + ci_glob[None, :] * swi,
                    mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
        acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
    x_row = gx_ptr + n * sxn + i_d * sxd + i_h * sxh + i_w * sxw
    tl.store(x_row[:, None] + ci_glob[None, :] * sxc, acc.to(gx_ptr.dtype.element_ty),
             mask=row_ok[:, None] & ci_ok[None, :])


@triton.jit
def _bwd_input_gemm_kernel(
    g_ptr, w_ptr, gx_ptr,
    T, ID, IH, IW, C_IN_G, C_OUT_G,
    sgn, sgc, sgd, sgh, sgw,
    swi, swo, swd, swh, sww,
    sxn, sxc, sxd, sxh, sxw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, W_P2: tl.constexpr, H_P2: tl.constexpr,
    W_FLAT: tl.constexpr, INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_x[n, ci, i] = sum_{co, tap} grad_y[n, co, i·k + tap] · w[ci, co, tap] for kernel = stride, padding 0,
    dilation 1, grad_y NCDHW, kW a power of 2: the forward GEMM transposed, [input positions] × [C_out/g · taps]
    @ [C_out/g · taps] × [C_in/g], positions in the forward's boxes. Each K step reads grad_y as runs of
    consecutive voxels (``_interleaved_offsets``) and regroups them to [positions, (co, kd, kh, kw)]. W_FLAT: weight
    is contiguous (a K index is its offset). Grid (boxes, groups · C_in/g tiles)."""
    BJ: tl.constexpr = BLOCK_K // KW
    taps: tl.constexpr = KD * KH * KW
    n_cols = taps * C_OUT_G
    g, ci_tile, t0, h0, w0, slab, i_h, i_w, row_ok = _box_program(T, IH, IW, tl.cdiv(C_IN_G, BLOCK_N), W_P2, H_P2,
                                                                   BLOCK_M, INDEX_64)
    ci = ci_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN_G
    ci_glob = g * C_IN_G + ci

    acc = _zero_acc(BLOCK_M, BLOCK_N, IS_FP64)
    for k0 in range(0, n_cols, BLOCK_K):
        row_offset, row_exists = _interleaved_rows(k0, g, C_OUT_G, sgc, sgd, sgh, KD, KH, KW, BJ)
        offsets, ok = _interleaved_offsets(t0, h0, w0, row_offset, row_exists, T, ID, IH, 0, 0, ID * KD, IH * KH,
                                           IW * KW, sgn, sgd, sgh, sgw, KD, KH, KW, W_P2, H_P2, BLOCK_M)
        a = _regroup_runs(tl.load(g_ptr + offsets, mask=ok, other=0.0), False, W_P2, H_P2, BLOCK_M, BJ, KW)
        col = k0 + tl.arange(0, BLOCK_K)
        if W_FLAT:
            w_row = col
        else:
            co, tap, kd, kh, kw = _gemm_columns(col, taps, C_OUT_G, KH, KW, True)
            w_row = co * swo + kd * swd + kh * swh + kw * sww
        b = tl.load(w_ptr + w_row[:, None] + ci_glob[None, :] * swi, mask=(col < n_cols)[:, None] & ci_ok[None, :],
                    other=0.0)
        acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
    x_row = gx_ptr + slab // ID * sxn + slab % ID * sxd + i_h * sxh + i_w * sxw
    tl.store(x_row[:, None] + ci_glob[None, :] * sxc, acc.to(gx_ptr.dtype.element_ty),
             mask=row_ok[:, None] & ci_ok[None, :])


@triton.jit
def _bwd_weight_kernel(
    x_ptr, g_ptr, part_ptr, bias_part_ptr,
    P, CHUNK, ID, IH, IW, OD, OH, OW, C_IN, C_IN_G, C_OUT_G,
    sxn, sxc, sxd, sxh, sxw,
    sgn, sgc, sgd, sgh, sgw,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DD: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TAP_FASTEST: tl.constexpr, IN_BOUNDS: tl.constexpr, SUM_BIAS: tl.constexpr, BOXES: tl.constexpr,
    W_P2: tl.constexpr, H_P2: tl.constexpr, INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Split-K partial of grad_w[ci, (co, tap)] = sum_{n, i} x[n, ci, i] · grad_y[n, co, i·s − p + k·d]: one GEMM
    over all taps at once, [C_in/g tile] × [input positions] @ [input positions] × [taps · C_out/g columns], each
    column reading grad_y at its own tap offset, so x is read once per column tile (not once per tap).
    Grid (groups · C_in tiles · column tiles, splits); split z sums input positions [z·CHUNK, (z+1)·CHUNK) of
    P = N·D·H·W into part[z, ci, co, tap] (weight's layout; fp32, fp64 for fp64). Columns are ordered (co, tap) when
    TAP_FASTEST (NCDHW grad_y), else (tap, co) (``_gemm_columns``). IN_BOUNDS (the GEMM geometry: kernel = stride, no padding) drops the output-bounds
    masks. SUM_BIAS (only with IN_BOUNDS, where every grad_y voxel is one (position, tap) pair) also stores the
    columns' sums of grad_y from the first C_in tile into bias_part[z, co, tap]. BOXES (the GEMM geometry with
    grad_y NCDHW and kW a power of 2, as the forward's INTERLEAVE_W): P and CHUNK count (n, d) slabs, not
    positions, and a split walks its slabs in the forward's boxes (W_P2, H_P2), reading grad_y in runs of
    consecutive voxels. Deterministic."""
    pid_t = tl.program_id(0)
    split = tl.program_id(1)
    taps: tl.constexpr = KD * KH * KW
    n_cols = taps * C_OUT_G
    col_tiles = tl.cdiv(n_cols, BLOCK_N)
    ci_tiles = tl.cdiv(C_IN_G, BLOCK_CI)
    g = pid_t // (ci_tiles * col_tiles)
    r = pid_t % (ci_tiles * col_tiles)
    ci_tile = r // col_tiles

    ci = ci_tile * BLOCK_CI + tl.arange(0, BLOCK_CI)
    col0 = (r % col_tiles) * BLOCK_N
    col = col0 + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN_G
    col_ok = col < n_cols
    co, tap, kd, kh, kw = _gemm_columns(col, taps, C_OUT_G, KH, KW, TAP_FASTEST)
    if INDEX_64:  # channel index x channel stride can pass 2^31 too
        g = g.to(tl.int64)
    ci_glob = g * C_IN_G + ci
    co_glob = g * C_OUT_G + co
    g_col = co_glob * sgc + (kd * DD) * sgd + (kh * DH) * sgh + (kw * DW) * sgw

    acc = _zero_acc(BLOCK_CI, BLOCK_N, IS_FP64)
    col_sum = tl.sum(_zero_acc(1, BLOCK_N, IS_FP64), axis=0)
    start = _wide_mul(split, CHUNK, INDEX_64)
    if BOXES:
        BT: tl.constexpr = _box_extent(0, W_P2, H_P2, BLOCK_P)
        BH: tl.constexpr = _box_extent(1, W_P2, H_P2, BLOCK_P)
        BW: tl.constexpr = _box_extent(2, W_P2, H_P2, BLOCK_P)
        BJ: tl.constexpr = BLOCK_N // KW
        t_end = tl.minimum(start + CHUNK, P)
        row_offset, row_exists = _interleaved_rows(col0, g, C_OUT_G, sgc, sgd, sgh, KD, KH, KW, BJ)
        for box in range(0, tl.cdiv(CHUNK, BT) * tl.cdiv(IH, BH) * tl.cdiv(IW, BW)):
            t0, h0, w0, slab, i_h, i_w, p_ok = _box(box, start, t_end, IH, IW, W_P2, H_P2, BLOCK_P)
            x_col = x_ptr + slab // ID * sxn + slab % ID * sxd + i_h * sxh + i_w * sxw
            a = tl.load(x_col[None, :] + ci_glob[:, None] * sxc, mask=ci_ok[:, None] & p_ok[None, :], other=0.0)
            offsets, ok = _interleaved_offsets(t0, h0, w0, row_offset, row_exists, t_end, ID, IH, 0, 0, ID * KD,
                                               IH * KH, IW * KW, sgn, sgd, sgh, sgw, KD, KH, KW, W_P2, H_P2, BLOCK_P)
            b = _regroup_runs(tl.load(g_ptr + offsets, mask=ok, other=0.0), False, W_P2, H_P2, BLOCK_P, BJ,
                              KW)
            acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
            if SUM_BIAS:
                col_sum += tl.sum(b.to(col_sum.dtype), axis=0)
    else:
        for p0 in range(0, CHUNK, BLOCK_P):
            p = start + p0 + tl.arange(0, BLOCK_P)
            i_w, i_h, i_d, n = _unravel(p, IW, IH, ID)
            p_ok = (p < P) & (p0 + tl.arange(0, BLOCK_P) < CHUNK)
            b_d = i_d * SD - PD  # output index of tap 0; tap k adds k·d
            b_h = i_h * SH - PH
            b_w = i_w * SW - PW
            ok = p_ok[:, None] & col_ok[None, :]
            if not IN_BOUNDS:
                o_d = b_d[:, None] + (kd * DD)[None, :]
                o_h = b_h[:, None] + (kh * DH)[None, :]
                o_w = b_w[:, None] + (kw * DW)[None, :]
                ok = ok & (o_d >= 0) & (o_d < OD) & (o_h >= 0) & (o_h < OH) & (o_w >= 0) & (o_w < OW)
            x_col = x_ptr + n * sxn + i_d * sxd + i_h * sxh + i_w * sxw
            g_row = g_ptr + n * sgn + b_d * sgd + b_h * sgh + b_w * sgw
            a = tl.load(x_col[None, :] + ci_glob[:, None] * sxc, mask=ci_ok[:, None] & p_ok[None, :], other=0.0)
            b = tl.load(g_row[:, None] + g_col[None, :], mask=ok, other=0.0)
            acc = _mma(acc, a, b, IS_FP64, IS_FP32, PRECISION, UPCAST)
            if SUM_BIAS:
                col_sum += tl.sum(b.to(col_sum.dtype), axis=0)
    base = _wide_mul(split, C_IN, INDEX_64) * C_OUT_G * taps
    tl.store(part_ptr + base + (ci_glob[:, None] * C_OUT_G + co[None, :]) * taps + tap[None, :], acc,
             mask=ci_ok[:, None] & col_ok[None, :])
    if SUM_BIAS:
        bias_base = _wide_mul(split, (C_IN // C_IN_G) * C_OUT_G, INDEX_64) * taps
        first_ci_tile = col * 0 + ci_tile == 0  # as a vector: the interpreter rejects a scalar in a mask
        tl.store(bias_part_ptr + bias_base + co_glob * taps + tap, col_sum, mask=col_ok & first_ci_tile)


@triton.jit
def _bwd_weight_tma_kernel(
    x_desc, g_desc, part_ptr,
    STEPS, CHUNK, QD, QH, W_STEPS, C_IN, N_COLS,
    KD: tl.constexpr, KH: tl.constexpr, SD: tl.constexpr, SH: tl.constexpr, PD: tl.constexpr, PH: tl.constexpr,
    UW: tl.constexpr, UD_MAX: tl.constexpr, UH_MAX: tl.constexpr, UW_MAX: tl.constexpr,
    INDEX_64: tl.constexpr, IS_FP64: tl.constexpr, IS_FP32: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Dilation 1, groups 1, x and grad_y channels_last_3d: split-K partial of the gradient of the phase GEMM's
    weight (``phase_weight``), the forward's adjoint, with both tiles loaded by TMA (no per-element address or
    bound arithmetic: out-of-range coordinates read zeros). x_desc: x as (N, D, H, W, C_in), blocks
    [1, 1, 1, BLOCK_W, BLOCK_CI]; g_desc: grad_y as (N, OD, OH, QW, sW·C_out) (a voxel's channels of its W phases
    are one row), blocks [1, 1, 1, BLOCK_W, BLOCK_N]. For a (kd, kh) tap (its phase pair (rd, rh) and input shifts
    (vd, vh)) and a W input shift vw: part[z, kd, kh, vw, ci, (rW, co)] = sum over positions q of
    x[n, ci, q + U_MAX − v] · grad_y[n, co, S·q + r], a GEMM [C_in] × [positions] @ [positions] × [(rW, co)]; the
    (vw, rW) pairs whose W tap is outside the kernel are dropped by the caller. A step is a run of BLOCK_W
    positions along W of one (n, q_d, q_h) row; split z sums steps [z·CHUNK, (z+1)·CHUNK) of STEPS =
    N·QD·QH·W_STEPS. Grid (KD·KH·UW · C_in tiles · column tiles, splits). Deterministic."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    col_tiles = tl.cdiv(N_COLS, BLOCK_N)
    ci_tiles = tl.cdiv(C_IN, BLOCK_CI)
    col0 = pid % col_tiles * BLOCK_N
    rest = pid // col_tiles
    ci0 = rest % ci_tiles * BLOCK_CI
    rest = rest // ci_tiles
    vw = rest % UW
    tap = rest // UW
    lead_d: tl.constexpr = SD * UD_MAX - PD  # tap k = S·v + r − lead (``_phase_range``)
    lead_h: tl.constexpr = SH * UH_MAX - PH
    vd = (tap // KH + lead_d) // SD
    rd = (tap // KH + lead_d) % SD
    vh = (tap % KH + lead_h) // SH
    rh = (tap % KH + lead_h) % SH
    acc = _zero_acc(BLOCK_CI, BLOCK_N, IS_FP64)
    start = split * CHUNK
    for step in range(start, tl.minimum(start + CHUNK, STEPS)):
        q_w = step % W_STEPS * BLOCK_W
        t = step // W_STEPS
        q_h = t % QH
        t = t // QH
        q_d = t % QD
        n = t // QD
        a = x_desc.load([n, q_d + UD_MAX - vd, q_h + UH_MAX - vh, q_w + UW_MAX - vw, ci0])
        b = g_desc.load([n, q_d * SD + rd, q_h * SH + rh, q_w, col0])
        acc = _mma(acc, tl.trans(a.reshape(BLOCK_W, BLOCK_CI)), b.reshape(BLOCK_W, BLOCK_N), IS_FP64, IS_FP32,
                   PRECISION, UPCAST)
    ci = ci0 + tl.arange(0, BLOCK_CI)
    col = col0 + tl.arange(0, BLOCK_N)
    base = _wide_mul(_wide_mul(split, KD * KH * UW, INDEX_64) + tap * UW + vw, C_IN, INDEX_64)
    tl.store(part_ptr + (base + ci)[:, None] * N_COLS + col[None, :], acc,
             mask=(ci < C_IN)[:, None] & (col < N_COLS)[None, :])


@triton.jit
def _channel_sum_kernel(g_ptr, part_ptr, M, C, CHUNK, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                        INDEX_64: tl.constexpr, IS_FP64: tl.constexpr):
    """part[z, c] = sum over rows [z·CHUNK, (z+1)·CHUNK) of M of g[row, c], g a contiguous [M, C] (a
    channels_last_3d grad_y: rows are voxels), in fp32 (fp64 for fp64). Grid (splits, C tiles). Deterministic."""
    split = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    start = _wide_mul(split, CHUNK, INDEX_64)
    end = tl.minimum(start + CHUNK, M)
    acc = _zero_acc(BLOCK_R, BLOCK_C, IS_FP64)
    for r0 in range(0, CHUNK, BLOCK_R):
        rows = start + r0 + tl.arange(0, BLOCK_R)
        tile = tl.load(g_ptr + rows[:, None] * C + c[None, :], mask=(rows < end)[:, None] & c_ok[None, :], other=0.0)
        acc += tile.to(acc.dtype)
    tl.store(part_ptr + _wide_mul(split, C, INDEX_64) + c, tl.sum(acc, axis=0), mask=c_ok)


# ----------------------------------------------------------------------------------------------------------
# Launch configurations. Autotune keys: channels, kernel, stride, dilation, dtype (Triton adds the tensors'
# dtypes to the key) — never spatial sizes, so a new volume size does not re-tune. Under the interpreter the
# autotuner cannot benchmark, so one fixed configuration is launched there.
# ----------------------------------------------------------------------------------------------------------
_GEMM_KEY = ["C_IN_G", "C_OUT_G", "KD", "KH", "KW", "SD", "SH", "SW", "DD", "DH", "DW", "INDEX_64", "PRECISION"]
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [
        (64, 32, 32, 4, 3), (128, 64, 32, 4, 3), (64, 64, 64, 4, 3), (128, 128, 32, 8, 3), (256, 64, 32, 8, 3),
        (128, 32, 32, 4, 4), (128, 16, 32, 4, 3),  # narrow C_out (the U-Net's last decoder layers, shapes a, c)
        (128, 32, 64, 4, 4), (256, 32, 64, 8, 2),  # long flat K loops (k3/k4 kernels) at narrow C_out
        (128, 32, 16, 4, 4), (256, 32, 16, 8, 3),  # C_out/g = 16: c's grad_input 0.357 -> 0.245 ms (bf16, v3g probe)
    ]
]
# kernel = stride GEMM: N = taps · C_out/g columns (256 for the U-Net's 64 -> 32, k2s2), K = C_in/g.
_FWD_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [
        (128, 128, 64, 8, 3), (128, 256, 64, 8, 2), (256, 128, 64, 8, 2), (128, 64, 64, 4, 3), (64, 128, 64, 4, 4),
        (128, 128, 32, 4, 4), (64, 64, 32, 4, 3),
    ]
]
# Phase GEMM: N = (co, rW) columns of one (rD, rH) phase pair (C_out/g · sW: 32 and 64 on shapes c and d), K =
# C_in/g per input shift.
_FWD_PHASE_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "ALL_PAIRS": pairs}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s, pairs in [
        (128, 32, 32, 4, 3, False), (256, 32, 32, 8, 3, False), (128, 64, 32, 4, 3, False), (256, 64, 32, 8, 3, False),
        (128, 64, 64, 4, 3, False), (128, 128, 64, 8, 3, False),
        (128, 32, 32, 4, 3, True), (256, 32, 32, 8, 3, True), (128, 64, 64, 4, 3, True), (256, 64, 32, 8, 3, True),
    ]
]
# Every configuration must fit in fp32 too (a pinned configuration is launched without the autotuner's pruning):
# stages · (A tile + B tile) · 4 bytes <= 227 KiB of shared memory per block on H100/H200 (tests check it).
_WGRAD_CONFIGS = [
    triton.Config({"BLOCK_P": bp}, num_warps=w, num_stages=s)
    for bp, w, s in [(32, 4, 3), (64, 4, 3), (64, 8, 4), (128, 8, 2)]
]
# BLOCK_CI (the widest; a narrower C_in/g takes its next power of 2, at least 16), BLOCK_N of the grad_weight GEMM:
# fixed, so that the split count does not depend on the tuned configuration.
_WGRAD_TILE = (64, 128)
# The GEMM geometry with C_in/g >= 128 takes a 128-wide C_in tile (b's grad_weight 2.9x faster, kernel_notes.md
# v3d probe) with its own configurations: the 64-wide list's deepest pipelines do not fit it in fp32.
_WGRAD_WIDE_TILE = (128, 128)
_WGRAD_WIDE_CONFIGS = [
    triton.Config({"BLOCK_P": bp}, num_warps=w, num_stages=s)
    for bp, w, s in [(32, 4, 3), (64, 4, 3), (64, 8, 3), (32, 8, 4)]
]
# The phase GEMM by TMA (``_fwd_phase_tma_kernel``): tiles fixed by the host (the descriptors' block shapes,
# ``_fwd_tma_tile``): BOX_H · BOX_W = _FWD_TMA_TILE[0] positions, BLOCK_N the next power of 2 of sW·C_out up to [1],
# BLOCK_K of C_in up to [2] (both halved in fp32).
# On an H200 (graphed, kernel_notes.md v3h; the phase GEMM's figures from v3g's probe, same card and versions), ms,
# TMA against the phase GEMM on channels_last_3d: 2, 64 -> 32, 32^3, k4s2p1: bf16 0.090 / 0.113, fp32 0.257 / 0.260;
# 1, 32 -> 16, 96^3, k3s2p1op1: bf16 0.305 / 0.314, fp32 0.395 / 0.566; 2, 64 -> 32, 64^3, k2s2: bf16 0.176 / 0.161,
# fp32 0.300 / 0.367; 2, 256 -> 128, 16^3, k2s2: bf16 0.028 / 0.034, fp32 0.074 / 0.062 (TMA 0.062 with the fp32 tile
# of ``_fwd_tma_tile``). With the fp32 weight K-major (``_fwd_tma_weight_k_major``, probe 9), the TMA fp32 forward took
# b 0.057 -> 0.043, d 0.252 -> 0.162, c 0.397 -> 0.363, a 0.296 -> 0.293; K-major 16-bit weights were 1-3 % slower
# on b and d.
_FWD_TMA_CONFIGS = [triton.Config({}, num_warps=w, num_stages=s) for w, s in [(4, 3), (8, 3), (4, 4), (8, 4)]]
_FWD_TMA_TILE = (128, 128, 64)
# grad_weight by TMA (``_bwd_weight_tma_kernel``): the tiles are fixed by the host (the descriptors' block shapes),
# BLOCK_CI and BLOCK_N the next power of 2 of C_in and sW·C_out up to these, BLOCK_W the box width of QW up to 64.
_WGRAD_TMA_CONFIGS = [triton.Config({}, num_warps=w, num_stages=s) for w, s in [(4, 3), (8, 3), (4, 2), (8, 2)]]
_WGRAD_TMA_TILE = (128, 128, 64)
# On an H200 (graphed, kernel_notes.md v3h), against ``_bwd_weight_kernel`` on the same channels_last_3d tensors:
# 2, 64 -> 32, 32^3, k4s2p1: bf16 0.115 ms against 0.219 (0.114 / 0.216 in a second run), fp32 0.627 against
# 0.617; 1, 32 -> 16, 96^3, k3s2p1op1 (C_in 32: no 64-row tensor-core tile): bf16 0.642 against 0.371, fp32 0.865
# against 0.606.
_WGRAD_TMA_MIN_C_IN = 64
_INTERPRETER_GEMM = {"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 16}
_FIXED_PHASE_PAIRS = {"ALL_PAIRS": True}  # the phase GEMM's pair loop under the interpreter and in fp64
_FP64_GEMM = {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 8}  # fp64 uses a broadcast-sum, not tensor cores
_CHANNEL_SUM_TILE = 4096  # elements of grad_bias's [rows, channels] tile on a GPU (32 fp32 registers per thread)
# On an H200 (graphed, kernel_notes.md v3g) the channel-sum kernel took 0.030 / 0.037 ms against torch's 0.050 /
# 0.059 on d's grad_output (32 channels, bf16 / fp32: 64 / 128-byte voxels) and 0.136 against 0.140 on c's (16
# channels, fp32), but 0.114 against 0.092 on c's in bf16 (32-byte voxels): narrower voxels keep torch's sum.
_CHANNEL_SUM_MIN_ROW_BYTES = 64


def _smallest(block: str, configs: list[triton.Config]) -> int:
    """The smallest ``block`` size a kernel with these configurations (or a fixed one) can launch with."""
    return min([c.kwargs[block] for c in configs] + [_INTERPRETER_GEMM[block], _FP64_GEMM[block]])


# The kernel = stride GEMMs regroup kW columns (forward: its BLOCK_N; grad_input: its BLOCK_K) into runs along W.
_FWD_GEMM_MIN_COLUMNS = _smallest("BLOCK_N", _FWD_GEMM_CONFIGS)
_FWD_PHASE_MIN_COLUMNS = _smallest("BLOCK_N", _FWD_PHASE_CONFIGS)
_BWD_INPUT_GEMM_MIN_COLUMNS = _smallest("BLOCK_K", _GEMM_CONFIGS)

_fwd_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=_GEMM_KEY)(_fwd_kernel)
_fwd_gemm_tuned = triton.autotune(
    configs=_FWD_GEMM_CONFIGS,
    key=["C_IN_G", "C_OUT_G", "KD", "KH", "KW", "W_P2", "H_P2", "W_FLAT", "INDEX_64", "PRECISION"]
)(_fwd_gemm_kernel)
_fwd_phase_gemm_tuned = triton.autotune(
    configs=_FWD_PHASE_CONFIGS,
    key=["C_IN_G", "C_OUT_G", "KD", "KH", "KW", "SD", "SH", "SW", "PD", "PH", "PW", "W_P2", "H_P2", "Y_CL",
         "W_EXACT", "INDEX_64", "PRECISION"]
)(_fwd_phase_gemm_kernel)
_bwd_input_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=_GEMM_KEY)(_bwd_input_kernel)
_bwd_input_gemm_tuned = triton.autotune(
    configs=_GEMM_CONFIGS, key=["C_IN_G", "C_OUT_G", "KD", "KH", "KW", "W_P2", "H_P2", "W_FLAT", "INDEX_64", "PRECISION"]
)(_bwd_input_gemm_kernel)
_WGRAD_KEY = [*_GEMM_KEY, "PD", "PH", "PW", "TAP_FASTEST", "IN_BOUNDS", "SUM_BIAS", "BOXES", "W_P2", "H_P2"]
_bwd_weight_tuned = triton.autotune(configs=_WGRAD_CONFIGS, key=_WGRAD_KEY)(_bwd_weight_kernel)
_bwd_weight_wide_tuned = triton.autotune(configs=_WGRAD_WIDE_CONFIGS, key=_WGRAD_KEY)(_bwd_weight_kernel)


_bwd_input_tma_tuned = triton.autotune(
    configs=_FWD_TMA_CONFIGS,
    key=["KD", "KH", "SD", "SH", "PD", "PH", "UW", "UW_MAX", "BOX_H", "BOX_W", "BLOCK_N", "BLOCK_K", "PRECISION"],
)(_bwd_input_tma_kernel)
_fwd_phase_tma_tuned = triton.autotune(
    configs=_FWD_TMA_CONFIGS,
    key=["KD", "KH", "SD", "SH", "PD", "PH", "UW", "UW_MAX", "BOX_H", "BOX_W", "BLOCK_N", "BLOCK_K", "HAS_BIAS",
         "PRECISION"],
)(_fwd_phase_tma_kernel)
_bwd_weight_tma_tuned = triton.autotune(
    configs=_WGRAD_TMA_CONFIGS,
    key=["KD", "KH", "SD", "SH", "PD", "PH", "UW", "BLOCK_CI", "BLOCK_N", "BLOCK_W", "INDEX_64", "PRECISION"],
)(_bwd_weight_tma_kernel)


def _launch_hooks_active() -> bool:
    """Whether a Triton launch hook (a profiler such as Proton) is installed: such launches take Triton's path."""
    runtime = knobs.runtime
    return any(h is not None and getattr(h, "calls", True) for h in (runtime.launch_enter_hook,
                                                                      runtime.launch_exit_hook))


class _Launcher:
    """Launches one kernel: its autotuner on a GPU, or the kernel with fixed block sizes (interpreter, fp64, a
    kernel without an autotuner).

    The first launch of an argument signature (every int argument, the constexprs, the fixed block sizes, the
    tensors' dtypes and 16-byte alignment, the device, the autotuner's config list) goes through Triton, which
    tunes, specialises and compiles. Later launches of that signature call the compiled kernel directly with the
    same arguments, skipping the autotuner's and the JIT's per-call Python (0.1-0.3 ms per launch on a busy host,
    more than the GPU time of a small layer). The interpreter, and Triton launch hooks, always take Triton's path.
    ``args`` are the kernel's positional arguments, its ``n_tensors`` tensors first."""

    _MAX_PLANS = 4096

    def __init__(self, kernel: triton.JITFunction, tuned: Autotuner | None, n_tensors: int) -> None:
        self.kernel, self.tuned, self.n_tensors = kernel, tuned, n_tensors
        self.plans: dict[tuple, tuple] = {}

    def __call__(self, grid: Callable[[dict], tuple[int, ...]], args: tuple, consts: dict, fixed: dict | None) -> None:
        if interpreter_active() or _launch_hooks_active():
            self._triton_launch(grid, args, consts, fixed)
            return
        tensors = args[:self.n_tensors]
        device = torch.cuda.current_device()
        key = (device, args[self.n_tensors:], tuple(consts.values()), fixed and tuple(fixed.values()),
               tuple((t.dtype, t.data_ptr() % 16 == 0) for t in (getattr(t, "base", t) for t in tensors)))
        plan = self.plans.get(key)
        configs = self.tuned and self.tuned.configs
        if plan is None or plan[0] is not configs:
            compiled, blocks = self._triton_launch(grid, args, consts, fixed)
            if compiled is not None:
                if len(self.plans) >= self._MAX_PLANS:
                    self.plans.clear()
                values = {**dict(zip(self.kernel.arg_names, args)), **consts, **blocks}
                rest = tuple(values[name] for name in self.kernel.arg_names[self.n_tensors:])
                self.plans[key] = (configs, compiled, (*grid(blocks), 1, 1)[:3], rest)
            return
        _, compiled, (gx, gy, gz), rest = plan
        stream = triton.runtime.driver.active.get_current_stream(device)
        compiled.run(gx, gy, gz, stream, compiled.function, compiled.packed_metadata, None, None, None,
                     *tensors, *rest)

    def _triton_launch(self, grid: Callable[[dict], tuple[int, ...]], args: tuple, consts: dict,
                       fixed: dict | None) -> tuple[object, dict]:
        """Launch through Triton; the compiled kernel (None under the interpreter) and its block sizes."""
        if fixed is not None:
            compiled = self.kernel[grid(fixed)](*args, **consts, **fixed)
            blocks = fixed
        else:
            compiled = self.tuned[grid](*args, **consts)
            blocks = self.tuned.best_config.kwargs
        if hasattr(compiled, "result"):  # an asynchronous compilation's future
            compiled = compiled.result()
        return (compiled if hasattr(compiled, "packed_metadata") else None), blocks


_fwd = _Launcher(_fwd_kernel, _fwd_tuned, n_tensors=4)
_fwd_gemm = _Launcher(_fwd_gemm_kernel, _fwd_gemm_tuned, n_tensors=4)
_fwd_phase_gemm = _Launcher(_fwd_phase_gemm_kernel, _fwd_phase_gemm_tuned, n_tensors=4)
_bwd_input = _Launcher(_bwd_input_kernel, _bwd_input_tuned, n_tensors=3)
_bwd_input_gemm = _Launcher(_bwd_input_gemm_kernel, _bwd_input_gemm_tuned, n_tensors=3)
_bwd_weight = _Launcher(_bwd_weight_kernel, _bwd_weight_tuned, n_tensors=4)
_bwd_weight_wide = _Launcher(_bwd_weight_kernel, _bwd_weight_wide_tuned, n_tensors=4)
_bwd_input_tma = _Launcher(_bwd_input_tma_kernel, _bwd_input_tma_tuned, n_tensors=3)
_fwd_phase_tma = _Launcher(_fwd_phase_tma_kernel, _fwd_phase_tma_tuned, n_tensors=4)
_bwd_weight_tma = _Launcher(_bwd_weight_tma_kernel, _bwd_weight_tma_tuned, n_tensors=3)
_channel_sum = _Launcher(_channel_sum_kernel, None, n_tensors=2)  # always launched with a fixed BLOCK_R


def _next_pow2(n: int) -> int:
    """The smallest power of 2 >= n (1 for n <= 1): ``triton.next_power_of_2`` without its constexpr-function
    wrapper, which costs ~4 µs a call on the host."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) for host ints (``triton.cdiv`` is a slower constexpr function in recent Triton)."""
    return -(-a // b)


def _fixed_gemm_config(dtype: torch.dtype) -> dict | None:
    if dtype == torch.float64:
        return _FP64_GEMM
    return _INTERPRETER_GEMM if interpreter_active() else None


def _empty(shape: Sequence[int], *, device: torch.device, dtype: torch.dtype,
           memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Allocation of every kernel output (tests replace it with a NaN-filled buffer to catch unwritten elements)."""
    return torch.empty(shape, device=device, dtype=dtype, memory_format=memory_format)


def _span(t: torch.Tensor) -> int:
    """Number of elements between the first and the last addressed element, plus one."""
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def _needs_int64(*tensors: torch.Tensor) -> bool:
    """Whether a tensor's addressed elements span 2^31 or more (a storage smaller than that cannot: cheap check
    first, the host path is latency-bound)."""
    return any(t.untyped_storage().nbytes() >= _INT32_LIMIT * t.element_size() and _span(t) >= _INT32_LIMIT
               for t in tensors)


def _dtype_flags(dtype: torch.dtype, precision: str) -> dict:
    return {"IS_FP64": dtype == torch.float64, "IS_FP32": dtype == torch.float32, "PRECISION": precision,
            "UPCAST": dtype == torch.bfloat16 and interpreter_active()}


def _geometry(kernel: Sequence[int], stride: Triple, padding: Triple, dilation: Triple | None) -> dict:
    """The constexprs K*, S*, P* and (unless ``dilation`` is None) D* of a geometry, * = D, H, W."""
    consts = {}
    for prefix, values in (("K", kernel), ("S", stride), ("P", padding), ("D", dilation or ())):
        consts.update({f"{prefix}{axis}": int(v) for axis, v in zip("DHW", values)})
    return consts


@lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _split_count(positions: int, programs: int, device: torch.device) -> int:
    """How many chunks a reduction over ``positions`` is split into so that ~4 waves of programs fill the GPU."""
    if interpreter_active() or device.type != "cuda":
        return max(1, min(2, _cdiv(positions, 64)))
    want = _cdiv(4 * _sm_count(device.index), max(programs, 1))
    return max(1, min(want, _cdiv(positions, 256), 128))


def _interleaves(kw: int, min_columns: int) -> bool:
    """Whether a kernel = stride tile of at least ``min_columns`` columns can be regrouped into runs along W
    (``_regroup_runs``): kW a power of 2 that divides it."""
    return kw & (kw - 1) == 0 and kw <= min_columns


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out channels_last_3d (and not also plain contiguous, as size-1 dims can make it)."""
    return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()


# ----------------------------------------------------------------------------------------------------------
# Launchers: validated, shaped arguments in, freshly allocated results out.
# ----------------------------------------------------------------------------------------------------------
def is_gemm_geometry(kernel: Sequence[int], stride: Triple, padding: Triple, dilation: Triple,
                     in_size: Sequence[int], out_size: Sequence[int]) -> bool:
    """kernel = stride with no padding, dilation or output_padding (the U-Net's upsampling): every output voxel
    gets exactly one tap, so the forward is one GEMM (``_fwd_gemm_kernel``)."""
    return (tuple(kernel) == tuple(stride) and not any(padding) and all(d == 1 for d in dilation)
            and all(o == i * s for o, i, s in zip(out_size, in_size, stride)))


def forward_is_gemm(x: torch.Tensor, kernel: Sequence[int], stride: Triple, padding: Triple, dilation: Triple,
                    out_size: Sequence[int]) -> bool:
    """Whether the forward of x (N, C_in, D, H, W) runs as one GEMM (``_fwd_gemm_kernel``, weight in any layout):
    the GEMM geometry with x not channels_last_3d. In channels_last_3d the phase GEMM (``forward_uses_tma``, else
    ``forward_is_phase_gemm``) writes channels_last_3d y: on an H200, the phase GEMM without TMA took 0.161 ms
    (bf16) / 0.367 ms (fp32 TF32) on 2, 64 -> 32, 64^3, k2s2 (with TMA 0.176 / 0.300), against the NCDHW GEMM's
    0.144 / 0.630 ms and the phase kernel's 0.410 / 0.717 ms on channels_last_3d; 0.034 / 0.062 ms on 2, 256 -> 128,
    16^3 (TMA 0.028 / 0.074; phase kernel 0.035 / 0.076; benchmarks/kernel_notes.md v3e, v3g, v3h)."""
    return not is_channels_last(x) and is_gemm_geometry(kernel, stride, padding, dilation, x.shape[2:], out_size)


def tap_major(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """weight (C_in, C_out/g, kD, kH, kW) cast to ``dtype`` and stored tap-major, (kD, kH, kW, C_in, C_out/g)
    contiguous, viewed back in weight's shape: the kernels index it through its strides, and one tap's
    [C_in, C_out] block is contiguous for the forward's and grad_input's weight tiles. One copy (none if weight
    is already so)."""
    taps = weight.permute(2, 3, 4, 0, 1)
    # Tensor.to(dtype, memory_format=...) returns the view itself when the dtype already matches.
    taps = taps.contiguous() if taps.dtype == dtype else taps.to(dtype, memory_format=torch.contiguous_format)
    return taps.permute(3, 4, 0, 1, 2)


def forward_is_phase_gemm(x: torch.Tensor, stride: Triple, dilation: Triple, groups: int) -> bool:
    """Whether a forward outside the GEMM geometry runs as the phase GEMM (``_fwd_phase_gemm_kernel``): dilation 1,
    and either x channels_last_3d with groups 1 (y channels_last_3d, a run of channels per voxel) or x not
    channels_last_3d with sW a power of 2 that every configuration's column tile holds (y NCDHW, runs along W)."""
    if any(d != 1 for d in dilation):
        return False
    return groups == 1 if is_channels_last(x) else _interleaves(stride[2], _FWD_PHASE_MIN_COLUMNS)


def _phase_shifts(k: int, s: int, p: int) -> tuple[int, int]:
    """(U_MAX, U) along one axis of the phase GEMM (dilation 1): output S·q + r reads input q + U_MAX − v through
    tap k = S·v + r + p − S·U_MAX, for the U input shifts v in [0, U)."""
    u_max = (s - 1 + p) // s
    return u_max, _cdiv(k + s * u_max - p, s)


def phase_weight(weight: torch.Tensor, stride: Triple, padding: Triple, dtype: torch.dtype,
                 w_phase_major: bool = False, columns_first: bool = False
                 ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(weight (C_in, C_out/g, kD, kH, kW) as the phase GEMM reads it, its (U_MAX, U) per axis (``_phase_shifts``)).
    The tensor is (sD, sH, UD, UH, UW, C_in, C_out/g, sW) — (…, C_in, sW, C_out/g) when ``w_phase_major``, (…, sW,
    C_out/g, C_in) when ``columns_first`` (each column's C_in weights contiguous: K-major for the forward's dot) —
    contiguous, cast to ``dtype``, element [rd, rh, vd, vh, vw, ci, co, rw] = weight[ci, co, sD·vd + rd − lead_D,
    ...] (lead = s·U_MAX − p), zero where that tap is outside the kernel. Each axis is the kernel zero-padded to U·s
    taps and split into (U, s): one pad and one copy."""
    shifts = [_phase_shifts(k, s, p) for k, s, p in zip(weight.shape[2:], stride, padding)]
    pads, split = [], list(weight.shape[:2])
    for k, s, p, (u_max, u) in zip(weight.shape[2:], stride, padding, shifts):
        lead = s * u_max - p
        pads.append((lead, u * s - k - lead))
        split += [u, s]
    padded = torch.nn.functional.pad(weight.to(dtype), [v for pair in reversed(pads) for v in pair])
    order = (3, 5, 2, 4, 6, 7, 1, 0) if columns_first else (
        (3, 5, 2, 4, 6, 0, 7, 1) if w_phase_major else (3, 5, 2, 4, 6, 0, 1, 7))
    return padded.view(split).permute(order).contiguous(), shifts


def _box_width(w: int) -> int:
    """The box width (a power of 2) for W = ``w``: the widest whose tiles of W pad it by at most w/8 or one voxel
    (96 -> 32, 7 -> 8)."""
    width = _next_pow2(w)
    while width > 1 and _cdiv(w, width) * width - w > max(w / 8, 1):
        width //= 2
    return width


def _box_count(slabs: int, h: int, w: int, w_p2: int, h_p2: int, block: int) -> int:
    """Boxes of ``block`` positions (``_box_extent``) that tile ``slabs`` × h × w."""
    box_t, box_h, box_w = (_box_extent.fn(axis, w_p2, h_p2, block) for axis in range(3))
    return _cdiv(slabs, box_t) * _cdiv(h, box_h) * _cdiv(w, box_w)


def _box_gemm_launch(slabs: int, h: int, w: int, groups: int, columns: int,
                     weight: torch.Tensor) -> tuple[Callable[[dict], tuple[int, int]], dict]:
    """Grid and shared constexprs of a kernel = stride GEMM over boxes of BLOCK_M input positions (``_box_extent``)
    × groups · BLOCK_N tiles of ``columns`` per group (the forward's and grad_input's)."""
    w_p2, h_p2 = _next_pow2(w), _next_pow2(h)

    def grid(meta: dict) -> tuple[int, int]:
        return _box_count(slabs, h, w, w_p2, h_p2, meta["BLOCK_M"]), groups * _cdiv(columns, meta["BLOCK_N"])
    kd, kh, kw = weight.shape[2:]
    return grid, {"KD": kd, "KH": kh, "KW": kw, "W_P2": w_p2, "H_P2": h_p2, "W_FLAT": weight.is_contiguous()}


def _phase_gemm_forward(x: torch.Tensor, weight: torch.Tensor, b_arg: torch.Tensor, y: torch.Tensor, stride: Triple,
                        padding: Triple, groups: int, flags: dict, y_channels_last: bool) -> None:
    """y (N, C_out, OD, OH, OW) written by the phase GEMM from x (N, C_in, D, H, W) in any layout, weight
    (C_in, C_out/g, kD, kH, kW) in any layout (``phase_weight`` copies it), dilation 1 (``forward_is_phase_gemm``).
    y is NCDHW, or allocated channels_last_3d when ``y_channels_last`` (groups 1: a voxel's column (rW, co) is at
    offset rW·C_out + co)."""
    n, c_in = x.shape[:2]
    c_out_g, kernel = weight.shape[1], tuple(weight.shape[2:])
    od, oh, ow = y.shape[2:]
    qd, qh, qw = (_cdiv(o, s) for o, s in zip((od, oh, ow), stride))
    w_phases, shifts = phase_weight(weight, stride, padding, x.dtype, w_phase_major=y_channels_last)
    w_p2, h_p2 = _box_width(qw), _next_pow2(qh)
    columns, pairs = c_out_g * stride[2], stride[0] * stride[1]

    def grid(meta: dict) -> tuple[int, int]:
        return (_box_count(n * qd, qh, qw, w_p2, h_p2, meta["BLOCK_M"]),
                groups * (1 if meta["ALL_PAIRS"] else pairs) * _cdiv(columns, meta["BLOCK_N"]))
    args = (x, w_phases, b_arg, y, n * qd, *x.shape[2:], qd, qh, qw, od, oh, ow, c_in, c_in // groups, c_out_g,
            *x.stride(), *y.stride())
    consts = {**_geometry(kernel, stride, padding, None), **{f"U{axis}": u for axis, (_, u) in zip("DHW", shifts)},
              **{f"U{axis}_MAX": u_max for axis, (u_max, _) in zip("DHW", shifts)}, "W_P2": w_p2, "H_P2": h_p2,
              "Y_CL": y_channels_last, "W_EXACT": ow == qw * stride[2], **flags}
    fixed = _fixed_gemm_config(x.dtype)
    _fwd_phase_gemm(grid, args, consts, fixed and {**fixed, **_FIXED_PHASE_PAIRS})


@lru_cache(maxsize=None)
def _has_tma(device_index: int | None) -> bool:
    """Whether CUDA device ``device_index`` (None: the current one) has TMA (compute capability 9 or newer); cached,
    as ``torch.cuda.get_device_capability`` costs ~10 µs a call on the host."""
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def _tma_eligible(x: torch.Tensor, grad_y: torch.Tensor | None, stride: Triple, dilation: Triple, groups: int,
                  c_out: int) -> bool:
    """What both TMA kernels need: a Hopper (or newer) GPU or the interpreter; groups 1, dilation 1, not fp64; x
    (and grad_y, if given) channels_last_3d and 16-byte aligned, with 16-byte multiples of channels per voxel
    (C_in, and sW·C_out for y's rows)."""
    if groups != 1 or any(d != 1 for d in dilation) or x.dtype == torch.float64:
        return False
    if not (interpreter_active() or (x.is_cuda and _has_tma(x.device.index))):
        return False
    size = x.element_size()
    return all(is_channels_last(t) and t.data_ptr() % 16 == 0 for t in (x, grad_y) if t is not None) and (
        x.shape[1] * size % 16 == 0 and stride[2] * c_out * size % 16 == 0)


def _stride_multiples(out_size: Sequence[int], stride: Triple) -> bool:
    """Whether every output size is a multiple of its stride (the TMA phase GEMMs' y view (N·OD, QH, sH, QW, sW·C))."""
    return all(o % s == 0 for o, s in zip(out_size, stride))


def _pow2_tile(count: int, most: int) -> int:
    """A TMA block's extent over ``count`` channels or columns: the next power of 2, at least 16, at most ``most``."""
    return min(most, max(16, _next_pow2(count)))


def _fwd_tma_tile(dtype: torch.dtype) -> tuple[int, int, int]:
    """The TMA forward's (and grad_input's) widest tile (positions, BLOCK_N, BLOCK_K): ``_FWD_TMA_TILE``, with
    BLOCK_N and BLOCK_K halved in fp32 (4-byte elements: the same bytes per stage as 16-bit tiles); 16 each under the
    interpreter. On an H200 (graphed, kernel_notes.md v3h, probe 6) b's fp32 forward took 0.062 ms with 128 × 64 ×
    32 against 0.074 with 128 × 128 × 32; 64-position tiles were slower on every a-d shape and dtype."""
    if interpreter_active():
        return 16, 16, 16
    rows, columns, channels = _FWD_TMA_TILE
    return (rows, columns // 2, channels // 2) if dtype == torch.float32 else (rows, columns, channels)


def _fwd_tma_weight_k_major(dtype: torch.dtype) -> bool:
    """Whether the TMA forward reads its phase weight K-major (``phase_weight(columns_first=True)``): in fp32, whose
    TF32 dot takes only K-major shared-memory operands (an N-major weight tile is copied to a K-major one at every
    K step)."""
    return dtype == torch.float32


def _tma_box(rows: int, h: int, w: int) -> tuple[int, int]:
    """(BOX_H, BOX_W) of a TMA tile of ``rows`` positions over an h × w plane: BOX_W from ``_box_width``, BOX_H the
    rest up to the next power of 2 of h, at least 16 positions in all (the dot's minimum)."""
    box_w = min(rows, _box_width(w))
    return max(16 // box_w, min(rows // box_w, _next_pow2(h))), box_w


def _phase_rows_desc(t: torch.Tensor, stride: Triple, box_h: int, box_w: int, block_c: int) -> TensorDescriptor:
    """A TMA descriptor over a channels_last_3d (N, C, OD, OH, OW) y or grad_y (OH, OW multiples of the stride) seen
    as (N·OD, QH, sH, QW, sW·C): a voxel's channels of all its W phases are one row; blocks [1, BOX_H, 1, BOX_W,
    block_c]."""
    n, c, od, oh, ow = t.shape
    columns = stride[2] * c
    return TensorDescriptor(t, [n * od, oh // stride[1], stride[1], ow // stride[2], columns],
                            [t.stride(2), stride[1] * t.stride(3), t.stride(3), columns, 1],
                            [1, box_h, 1, box_w, block_c])


def _phase_consts(kernel: Sequence[int], stride: Triple, padding: Triple, shifts: list[tuple[int, int]]) -> dict:
    """The TMA phase kernels' geometry constexprs: kernel, stride and padding along D and H, (U, U_MAX) per axis."""
    (ud_max, ud), (uh_max, uh), (uw_max, uw) = shifts
    return {"KD": kernel[0], "KH": kernel[1], "SD": stride[0], "SH": stride[1], "PD": padding[0], "PH": padding[1],
            "UD": ud, "UH": uh, "UW": uw, "UD_MAX": ud_max, "UH_MAX": uh_max, "UW_MAX": uw_max}


def _channels_last_desc(t: torch.Tensor, block: list[int]) -> TensorDescriptor:
    """A TMA descriptor over a channels_last_3d (N, C, D, H, W) tensor seen as (N, D, H, W, C)."""
    n, c, d, h, w = t.shape
    return TensorDescriptor(t, [n, d, h, w, c], [t.stride(0), *t.stride()[2:], 1], block)


def forward_uses_tma(x: torch.Tensor, out_size: Sequence[int], stride: Triple, dilation: Triple, groups: int,
                     c_out: int) -> bool:
    """Whether the forward runs as the phase GEMM with TMA tiles (``_fwd_phase_tma_kernel``): ``_tma_eligible``
    and output sizes that are multiples of the stride."""
    return (_tma_eligible(x, None, stride, dilation, groups, c_out)
            and _stride_multiples(out_size, stride))


def _tma_phase_forward(x: torch.Tensor, weight: torch.Tensor, b_arg: torch.Tensor, y: torch.Tensor, stride: Triple,
                       padding: Triple, flags: dict) -> None:
    """y (N, C_out, OD, OH, OW), allocated channels_last_3d, written by the TMA phase GEMM from x (N, C_in, D, H, W)
    and weight (C_in, C_out, kD, kH, kW) in any layout (``forward_uses_tma``)."""
    n, c_in, d, h, w = x.shape
    c_out, kernel = weight.shape[1], tuple(weight.shape[2:])
    od, oh, ow = y.shape[2:]
    qd, qh, qw = od // stride[0], oh // stride[1], ow // stride[2]
    k_major = _fwd_tma_weight_k_major(x.dtype)
    w_phases, shifts = phase_weight(weight, stride, padding, x.dtype, w_phase_major=True, columns_first=k_major)
    columns = stride[2] * c_out
    rows, max_n, max_k = _fwd_tma_tile(x.dtype)
    block_n, block_k = _pow2_tile(columns, max_n), _pow2_tile(c_in, max_k)
    box_h, box_w = _tma_box(rows, qh, qw)
    x_desc = _channels_last_desc(x, [1, 1, box_h, box_w, block_k])
    w_rows = w_phases.view(-1, c_in if k_major else columns)
    w_desc = TensorDescriptor(w_rows, list(w_rows.shape), [w_rows.shape[1], 1],
                              [block_n, block_k] if k_major else [block_k, block_n])
    y_desc = _phase_rows_desc(y, stride, box_h, box_w, block_n)
    consts = {**_phase_consts(kernel, stride, padding, shifts), "W_K_MAJOR": k_major,
              **{k: v for k, v in flags.items() if k != "INDEX_64"}, "BOX_H": box_h, "BOX_W": box_w,
              "BLOCK_N": block_n, "BLOCK_K": block_k}
    grid = (n * qd * _cdiv(qh, box_h) * _cdiv(qw, box_w), stride[0] * stride[1] * _cdiv(columns, block_n))
    _fwd_phase_tma(lambda meta: grid, (x_desc, w_desc, y_desc, b_arg, qd, qh, qw, od, c_in, c_out, columns), consts,
                   {} if interpreter_active() else None)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_shape: Sequence[int],
            stride: Triple, padding: Triple, dilation: Triple, groups: int, precision: str) -> torch.Tensor:
    """y (N, C_out, OD, OH, OW) for x (N, C_in, D, H, W) and weight (C_in, C_out/g, kD, kH, kW) of x's dtype
    (any strides; ``tap_major`` is the fast layout); bias (C_out,) of any float dtype. y keeps x's memory format
    (channels_last_3d or not)."""
    fmt = torch.channels_last_3d if is_channels_last(x) else torch.contiguous_format
    y = _empty(out_shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    if y.numel() == 0:
        return y
    n, c_in = x.shape[:2]
    c_out_g = weight.shape[1]
    kernel = tuple(weight.shape[2:])
    b_arg = bias.contiguous() if bias is not None else weight
    flags = {"HAS_BIAS": bias is not None, "INDEX_64": _needs_int64(x, y), **_dtype_flags(x.dtype, precision)}
    if forward_is_gemm(x, kernel, stride, padding, dilation, out_shape[2:]):
        slabs, (d, h, w) = n * x.shape[2], x.shape[2:]
        grid, box_consts = _box_gemm_launch(slabs, h, w, groups, c_out_g * math.prod(kernel), weight)
        args = (x, weight, b_arg, y, slabs, d, h, w, c_in // groups, c_out_g, *x.stride(), *weight.stride(),
                *y.stride())
        consts = {**box_consts, "INTERLEAVE_W": _interleaves(kernel[2], _FWD_GEMM_MIN_COLUMNS), **flags}
        _fwd_gemm(grid, args, consts, _fixed_gemm_config(x.dtype))
        return y
    if forward_uses_tma(x, out_shape[2:], stride, dilation, groups, c_out_g):
        _tma_phase_forward(x, weight, b_arg, y, stride, padding, flags)
        return y
    if forward_is_phase_gemm(x, stride, dilation, groups):
        _phase_gemm_forward(x, weight, b_arg, y, stride, padding, groups, flags,
                            y_channels_last=fmt == torch.channels_last_3d)
        return y
    od, oh, ow = out_shape[2:]
    qd, qh, qw = (_cdiv(o, s) for o, s in zip((od, oh, ow), stride))
    m = n * qd * qh * qw
    phases = stride[0] * stride[1] * stride[2]
    grid = lambda meta: (_cdiv(m, meta["BLOCK_M"]) * phases, groups * _cdiv(c_out_g, meta["BLOCK_N"]))
    args = (x, weight, b_arg, y, m, *x.shape[2:], od, oh, ow, qd, qh, qw, c_in // groups, c_out_g, *x.stride(),
            *weight.stride(), *y.stride())
    tap_steps = {f"TS{axis}": s // math.gcd(s, d) for axis, s, d in zip("DHW", stride, dilation)}
    consts = {**_geometry(kernel, stride, padding, dilation), **tap_steps, **flags}
    _fwd(grid, args, consts, _fixed_gemm_config(x.dtype))
    return y


def grad_input_uses_tma(grad_y: torch.Tensor, c_in: int, channels_last: bool, stride: Triple, dilation: Triple,
                        groups: int) -> bool:
    """Whether grad_input runs as the TMA phase GEMM's transpose (``_bwd_input_tma_kernel``): grad_x
    channels_last_3d, grad_y under ``_tma_eligible`` (as x is for the forward: C_in, sW·C_out in 16-byte runs) with
    output sizes that are multiples of the stride. On an H200 (graphed, kernel_notes.md v3h), against the pointer
    kernels on the same tensors, ms bf16 / fp32: c 0.201 / 0.283 against 0.245 / 0.383, a 0.107 / 0.172 against
    0.110 / 0.211, b 0.026 / 0.036 against 0.028 / 0.040, d 0.085 / 0.142 against 0.078 / 0.151."""
    return (channels_last and c_in * grad_y.element_size() % 16 == 0
            and _stride_multiples(grad_y.shape[2:], stride)
            and _tma_eligible(grad_y, None, stride, dilation, groups, grad_y.shape[1]))


def _tma_grad_input(grad_y: torch.Tensor, weight: torch.Tensor, gx: torch.Tensor, stride: Triple, padding: Triple,
                    flags: dict) -> None:
    """grad_x (N, C_in, D, H, W), allocated channels_last_3d, written by ``_bwd_input_tma_kernel`` from grad_y
    (N, C_out, OD, OH, OW) and weight (C_in, C_out, kD, kH, kW) in any layout (``grad_input_uses_tma``)."""
    n, c_in, d, h, w = gx.shape
    c_out, kernel = weight.shape[1], tuple(weight.shape[2:])
    od = grad_y.shape[2]
    w_phases, shifts = phase_weight(weight, stride, padding, grad_y.dtype, w_phase_major=True)
    columns = stride[2] * c_out
    rows, max_n, max_k = _fwd_tma_tile(grad_y.dtype)
    block_n, block_k = _pow2_tile(c_in, max_n), _pow2_tile(columns, max_k)
    box_h, box_w = _tma_box(rows, h, w)
    w_rows = w_phases.view(-1, columns)
    g_desc = _phase_rows_desc(grad_y, stride, box_h, box_w, block_k)
    w_desc = TensorDescriptor(w_rows, list(w_rows.shape), [columns, 1], [block_n, block_k])
    gx_desc = _channels_last_desc(gx, [1, 1, box_h, box_w, block_n])
    consts = {**_phase_consts(kernel, stride, padding, shifts), **flags, "BOX_H": box_h, "BOX_W": box_w,
              "BLOCK_N": block_n, "BLOCK_K": block_k}
    grid = (n * d * _cdiv(h, box_h) * _cdiv(w, box_w), _cdiv(c_in, block_n))
    _bwd_input_tma(lambda meta: grid, (g_desc, w_desc, gx_desc, d, h, w, od // stride[0], od, c_in, columns), consts,
                   {} if interpreter_active() else None)


def grad_input(grad_y: torch.Tensor, weight: torch.Tensor, x_shape: Sequence[int], channels_last: bool,
               stride: Triple, padding: Triple, dilation: Triple, groups: int, precision: str) -> torch.Tensor:
    """grad_x of shape ``x_shape`` (N, C_in, D, H, W), channels_last_3d if ``channels_last`` else contiguous;
    weight of grad_y's dtype, any strides (``tap_major``)."""
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    gx = _empty(x_shape, device=grad_y.device, dtype=grad_y.dtype, memory_format=fmt)
    if gx.numel() == 0:
        return gx
    n, c_in, d, h, w_ = x_shape
    c_out_g = weight.shape[1]
    kernel = tuple(weight.shape[2:])
    if grad_input_uses_tma(grad_y, c_in, channels_last, stride, dilation, groups):
        _tma_grad_input(grad_y, weight, gx, stride, padding, _dtype_flags(grad_y.dtype, precision))
        return gx
    if (is_gemm_geometry(kernel, stride, padding, dilation, x_shape[2:], grad_y.shape[2:])
            and not is_channels_last(grad_y) and _interleaves(kernel[2], _BWD_INPUT_GEMM_MIN_COLUMNS)):
        grid, box_consts = _box_gemm_launch(n * d, h, w_, groups, c_in // groups, weight)
        args = (grad_y, weight, gx, n * d, d, h, w_, c_in // groups, c_out_g, *grad_y.stride(), *weight.stride(),
                *gx.stride())
        consts = {**box_consts, "INDEX_64": _needs_int64(grad_y, gx), **_dtype_flags(grad_y.dtype, precision)}
        _bwd_input_gemm(grid, args, consts, _fixed_gemm_config(grad_y.dtype))
        return gx
    m = n * d * h * w_
    grid = lambda meta: (_cdiv(m, meta["BLOCK_M"]), groups * _cdiv(c_in // groups, meta["BLOCK_N"]))
    args = (grad_y, weight, gx, m, d, h, w_, *grad_y.shape[2:], c_in // groups, c_out_g,
            *grad_y.stride(), *weight.stride(), *gx.stride())
    consts = {**_geometry(weight.shape[2:], stride, padding, dilation), "INDEX_64": _needs_int64(grad_y, gx),
              **_dtype_flags(grad_y.dtype, precision)}
    _bwd_input(grid, args, consts, _fixed_gemm_config(grad_y.dtype))
    return gx


def grad_weight_uses_tma(x: torch.Tensor, grad_y: torch.Tensor, stride: Triple, dilation: Triple, groups: int,
                         gemm: bool) -> bool:
    """Whether grad_weight runs as the phase GEMM's adjoint with TMA loads (``_bwd_weight_tma_kernel``):
    ``_tma_eligible`` for x and grad_y outside the GEMM geometry, OW a multiple of sW, 16-bit floats with C_in >=
    ``_WGRAD_TMA_MIN_C_IN`` (where it was measured faster, ``_WGRAD_TMA_CONFIGS``)."""
    return (not gemm and x.dtype in (torch.bfloat16, torch.float16) and x.shape[1] >= _WGRAD_TMA_MIN_C_IN
            and grad_y.shape[4] % stride[2] == 0
            and _tma_eligible(x, grad_y, stride, dilation, groups, grad_y.shape[1]))


def _tma_grad_weight(x: torch.Tensor, grad_y: torch.Tensor, weight_shape: Sequence[int], stride: Triple,
                     padding: Triple, flags: dict) -> torch.Tensor:
    """grad_w (C_in, C_out, kD, kH, kW) in fp32 of x (N, C_in, D, H, W) and grad_y (N, C_out, OD, OH, OW)
    (``grad_weight_uses_tma``): split-K partials per (kd, kh) tap and W input shift, summed, the W taps outside the
    kernel dropped."""
    c_in, c_out, kd, kh, kw = weight_shape
    n, od, oh, ow = grad_y.shape[0], *grad_y.shape[2:]
    qd, qh, qw = (_cdiv(o, s) for o, s in zip((od, oh, ow), stride))
    (ud_max, _), (uh_max, _), (uw_max, uw) = (_phase_shifts(k, s, p) for k, s, p in
                                              zip(weight_shape[2:], stride, padding))
    columns = stride[2] * c_out
    max_ci, max_n, max_w = (16, 16, 16) if interpreter_active() else _WGRAD_TMA_TILE
    block_ci, block_n = _pow2_tile(c_in, max_ci), _pow2_tile(columns, max_n)
    block_w = max(16, min(max_w, _box_width(qw)))  # the dot's K: at least 16
    w_steps = _cdiv(qw, block_w)
    steps = n * qd * qh * w_steps
    programs = kd * kh * uw * _cdiv(c_in, block_ci) * _cdiv(columns, block_n)
    chunk = _cdiv(steps, _split_count(steps * block_w, programs, x.device))
    splits = _cdiv(steps, chunk)
    part = _empty((splits, kd, kh, uw, c_in, stride[2], c_out), device=x.device, dtype=torch.float32)
    x_desc = _channels_last_desc(x, [1, 1, 1, block_w, block_ci])
    g_desc = TensorDescriptor(grad_y, [n, od, oh, qw, columns], [*grad_y.stride()[:1], *grad_y.stride()[2:4],
                                                                 columns, 1], [1, 1, 1, block_w, block_n])
    consts = {"KD": kd, "KH": kh, "SD": stride[0], "SH": stride[1], "PD": padding[0], "PH": padding[1], "UW": uw,
              "UD_MAX": ud_max, "UH_MAX": uh_max, "UW_MAX": uw_max, **flags, "INDEX_64": _needs_int64(part),
              "BLOCK_CI": block_ci, "BLOCK_N": block_n, "BLOCK_W": block_w}
    fixed = {} if interpreter_active() else None
    _bwd_weight_tma(lambda meta: (programs, splits), (x_desc, g_desc, part, steps, chunk, qd, qh, w_steps, c_in,
                                                      columns), consts, fixed)
    gw = part.sum(0) if splits > 1 else part[0]  # (kD, kH, UW, C_in, sW, C_out)
    lead_w = stride[2] * uw_max - padding[2]  # W tap kw is padded column sW·vw + rW = kw + lead_w
    gw = gw.permute(3, 5, 0, 1, 2, 4).reshape(c_in, c_out, kd, kh, uw * stride[2])
    return gw[..., lead_w:lead_w + kw]


def grad_weight(x: torch.Tensor, grad_y: torch.Tensor, weight_shape: Sequence[int], weight_dtype: torch.dtype,
                bias_dtype: torch.dtype | None, stride: Triple, padding: Triple, dilation: Triple, groups: int,
                precision: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(grad_w (C_in, C_out/g, kD, kH, kW) of ``weight_dtype``, grad_b (C_out,) of ``bias_dtype`` or None), reduced
    in fp32 split-K partials (deterministic). grad_b is summed in the same pass over grad_y in the GEMM geometry
    when ``bias_dtype`` is given; otherwise it is None (the caller uses ``grad_bias``)."""
    c_in, c_out_g, kd, kh, kw = weight_shape
    n, _, d, h, w_ = x.shape
    positions = n * d * h * w_
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    taps = kd * kh * kw
    if positions == 0 or c_in * c_out_g * taps == 0:
        return torch.zeros(weight_shape, device=x.device, dtype=weight_dtype), None
    gemm = is_gemm_geometry((kd, kh, kw), stride, padding, dilation, x.shape[2:], grad_y.shape[2:])
    if grad_weight_uses_tma(x, grad_y, stride, dilation, groups, gemm):
        gw = _tma_grad_weight(x, grad_y, weight_shape, stride, padding, _dtype_flags(x.dtype, precision))
        return gw.to(weight_dtype).contiguous(), None  # one copy: the W taps are a strided slice
    small = x.dtype == torch.float64 or interpreter_active()
    fixed = {"BLOCK_P": 16 if x.dtype == torch.float64 else 64} if small else None
    c_in_g = c_in // groups
    launch = _bwd_weight
    if small:
        tile_ci, tile_n = 16, 16
    elif gemm and c_in_g >= _WGRAD_WIDE_TILE[0]:
        (tile_ci, tile_n), launch = _WGRAD_WIDE_TILE, _bwd_weight_wide
    else:  # a C_in tile no wider than C_in/g needs (tensor-core dots take 16 and up)
        tile_ci, tile_n = min(_WGRAD_TILE[0], max(16, _next_pow2(c_in_g))), _WGRAD_TILE[1]
    tiles = groups * _cdiv(c_in_g, tile_ci) * _cdiv(taps * c_out_g, tile_n)
    splits = _split_count(positions, tiles, x.device)
    tap_fastest = not is_channels_last(grad_y)
    boxes = gemm and tap_fastest and _interleaves(kw, tile_n)
    w_p2, h_p2 = _next_pow2(w_), _next_pow2(h)
    if boxes:  # splits take whole (n, d) slabs, as many as the widest box spans
        widest = fixed["BLOCK_P"] if fixed else max(c.kwargs["BLOCK_P"] for c in launch.tuned.configs)
        unit = _box_extent.fn(0, w_p2, h_p2, widest)
        units, slabs = n * d, n * d
        chunk = _cdiv(_cdiv(slabs, splits), unit) * unit
        splits = _cdiv(slabs, chunk)
    else:
        units, chunk = positions, _cdiv(positions, splits)
    part = _empty((splits, c_in, c_out_g, kd, kh, kw), device=x.device, dtype=acc_dtype)
    sum_bias = gemm and bias_dtype is not None
    bias_part = _empty((splits, groups * c_out_g, taps), device=x.device, dtype=acc_dtype) if sum_bias else part
    args = (x, grad_y, part, bias_part, units, chunk, d, h, w_, *grad_y.shape[2:], c_in, c_in_g, c_out_g,
            *x.stride(), *grad_y.stride())
    consts = {**_geometry((kd, kh, kw), stride, padding, dilation), "TAP_FASTEST": tap_fastest,
              "IN_BOUNDS": gemm, "SUM_BIAS": sum_bias, "BOXES": boxes, "W_P2": w_p2 if boxes else 1,
              "H_P2": h_p2 if boxes else 1, "INDEX_64": _needs_int64(x, grad_y, part),
              **_dtype_flags(x.dtype, precision), "BLOCK_CI": tile_ci, "BLOCK_N": tile_n}
    launch(lambda meta: (tiles, splits), args, consts, fixed)
    gw = part.sum(0) if splits > 1 else part[0]
    gw = gw if gw.dtype == weight_dtype else gw.to(weight_dtype)
    if not sum_bias:
        return gw, None
    gb = bias_part.sum((0, 2))
    return gw, gb if gb.dtype == bias_dtype else gb.to(bias_dtype)


def grad_bias(grad_y: torch.Tensor, bias_dtype: torch.dtype) -> torch.Tensor:
    """grad_b (C_out,) = grad_y (N, C_out, OD, OH, OW) summed over batch and space, accumulated in fp32
    (deterministic). A channels_last_3d grad_y whose voxels hold at least ``_CHANNEL_SUM_MIN_ROW_BYTES`` of channels:
    split row sums of its [voxels, C_out] matrix (``_channel_sum_kernel``); otherwise torch's sum."""
    acc_dtype = torch.float64 if grad_y.dtype == torch.float64 else torch.float32
    row_bytes = grad_y.shape[1] * grad_y.element_size()
    if is_channels_last(grad_y) and row_bytes >= _CHANNEL_SUM_MIN_ROW_BYTES and grad_y.numel() > 0:
        c = grad_y.shape[1]
        rows = grad_y.numel() // c
        small = interpreter_active() or grad_y.device.type != "cuda"
        block_c = 16 if small else min(64, _next_pow2(c))
        block_r = 16 if small else _CHANNEL_SUM_TILE // block_c
        most = 3 if small else 4 * _sm_count(grad_y.device.index)  # ~4 waves of programs on a GPU
        chunk = _cdiv(_cdiv(rows, min(most, _cdiv(rows, 8 * block_r))), block_r) * block_r
        splits = _cdiv(rows, chunk)
        part = _empty((splits, c), device=grad_y.device, dtype=acc_dtype)
        consts = {"BLOCK_C": block_c, "INDEX_64": _needs_int64(grad_y), "IS_FP64": acc_dtype == torch.float64}
        _channel_sum(lambda meta: (splits, _cdiv(c, block_c)), (grad_y, part, rows, c, chunk), consts,
                     {"BLOCK_R": block_r})
        gb = part.sum(0) if splits > 1 else part[0]
    else:
        gb = grad_y.sum(dim=(0, 2, 3, 4), dtype=acc_dtype)
    return gb if gb.dtype == bias_dtype else gb.to(bias_dtype)
