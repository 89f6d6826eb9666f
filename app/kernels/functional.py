"""``conv_transpose3d``: a drop-in for ``torch.nn.functional.conv_transpose3d`` backed by Triton.

Dispatch: CUDA tensors run the Triton kernels (forward and backward); CPU tensors run torch's operator, unless
``TRITON_INTERPRET=1`` is set (then the Triton kernels run in the interpreter, which is how the CPU tests
exercise them). fp32 inputs use TF32 tensor-core dots when ``torch.backends.cudnn.allow_tf32`` is on (torch's
default for convolutions, relative error ~1e-3) and exact fp32 otherwise; ``precision=`` overrides.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.amp import custom_bwd, custom_fwd
from torch.autograd.function import once_differentiable

from app.kernels import triton_kernels as kernels

IntOrTriple = int | Sequence[int]
PRECISIONS = ("tf32", "tf32x3", "ieee")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def uses_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor ``t`` runs this project's Triton kernels (else torch's operator)."""
    return t.is_cuda or (t.device.type == "cpu" and kernels.interpreter_active())


def backend_name(device: torch.device | str) -> str:
    """Human-readable backend for the transposed convolutions on ``device`` (for start-up log lines)."""
    device = torch.device(device)
    if device.type == "cuda":
        return "triton (CUDA)"
    return "triton (interpreter)" if kernels.interpreter_active() else "torch (CPU)"


def _triple(value: IntOrTriple) -> tuple[int, ...]:
    return (int(value),) * 3 if isinstance(value, int) else tuple(int(v) for v in value)


@lru_cache(maxsize=1024)
@torch.compiler.assume_constant_result  # torch.compile runs it while tracing: a plain check of static sizes
def _checked_output_shape(x_shape: tuple[int, ...], x_dtype: torch.dtype, w_shape: tuple[int, ...],
                          w_dtype: torch.dtype, b_shape: tuple[int, ...] | None, b_dtype: torch.dtype | None,
                          stride: tuple[int, ...], padding: tuple[int, ...], output_padding: tuple[int, ...],
                          groups: int, dilation: tuple[int, ...]) -> tuple[int, ...]:
    """Validate arguments the way torch does and return the output shape (C_out, OD, OH, OW) for an input of shape
    (N, *x_shape) (x_shape: C_in, D, H, W; the batch size stays out, so that it may vary under torch.compile).

    torch's own checks run on empty CPU tensors with batch 0 (cheap, same messages); the few it skips at
    batch 0 (dtype agreement, dilation > 0, output_padding < stride or dilation) are checked here."""
    if x_dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"conv_transpose3d: unsupported input dtype {x_dtype}; expected one of {_FLOAT_DTYPES}")
    if w_dtype != x_dtype or (b_dtype is not None and b_dtype != x_dtype):
        raise RuntimeError(
            f"Input type ({x_dtype}), weight type ({w_dtype}) and bias type ({b_dtype}) should be the same"
        )
    for name, value in (("stride", stride), ("padding", padding), ("output_padding", output_padding),
                        ("dilation", dilation)):
        if len(value) not in (1, 3):
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of 3 values to match the "
                f"convolution dimensions, but got {name}={list(value)}"
            )
    dil = dilation * 3 if len(dilation) == 1 else dilation
    if any(d <= 0 for d in dil):
        raise RuntimeError(f"dilation should be greater than zero, but got dilation={list(dilation)}")
    st = stride * 3 if len(stride) == 1 else stride
    op = output_padding * 3 if len(output_padding) == 1 else output_padding
    if any(o >= s and o >= d for o, s, d in zip(op, st, dil)):
        raise RuntimeError(
            f"output padding must be smaller than either stride or dilation, but got output_padding={list(op)}, "
            f"stride={list(st)}, dilation={list(dil)}"
        )
    probe = torch.empty((0, *x_shape), dtype=x_dtype)
    bias = None if b_shape is None else torch.empty(b_shape, dtype=b_dtype)
    out = F.conv_transpose3d(probe, torch.empty(w_shape, dtype=w_dtype), bias, stride, padding, output_padding,
                             groups, dilation)
    return tuple(out.shape[1:])


def _launch_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's (a tensor on cuda:1 under cuda:0)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _kernel_weight(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                   dilation: tuple[int, ...], out_size: Sequence[int]) -> torch.Tensor:
    """weight as the kernels read it: cast to x's dtype (autocast) and, unless the forward is one GEMM
    (``kernels.forward_is_gemm``, which reads any weight layout well), re-laid out tap-major, in one copy."""
    if kernels.forward_is_gemm(x, weight.shape[2:], stride, padding, dilation, out_size):
        return weight if weight.dtype == x.dtype else weight.to(x.dtype)
    return kernels.tap_major(weight, x.dtype)


def _backward(grad_y: torch.Tensor, x: torch.Tensor, w_kernel: torch.Tensor, weight_meta: tuple,
              bias_dtype: torch.dtype | None, conv: tuple, needs: Sequence[bool]) -> tuple:
    """(grad_x, grad_w, grad_b) for grad_y (N, C_out, OD, OH, OW), x (N, C_in, D, H, W) and the forward's
    ``_kernel_weight``; ``needs`` says which of the three to compute (the others are None), ``weight_meta`` is the
    weight's (shape, dtype), ``conv`` (stride, padding, dilation, groups, precision)."""
    stride, padding, dilation, groups, precision = conv
    need_gx, need_gw, need_gb = needs
    gemm = kernels.is_gemm_geometry(weight_meta[0][2:], stride, padding, dilation, x.shape[2:], grad_y.shape[2:])
    x_channels_last = kernels.is_channels_last(x)
    gy_k, x_k, channels_last = _backward_operands(grad_y, x, x_channels_last, need_gw, gemm)
    gx = gw = gb = None
    with _launch_device(grad_y):
        if need_gx:
            gx = kernels.grad_input(gy_k, w_kernel, x.shape, channels_last, stride, padding, dilation, groups,
                                    precision)
            if channels_last and not x_channels_last:
                gx = gx.contiguous()  # back to x's (NCDHW) layout, as torch returns it
        bias_dtype = bias_dtype if need_gb else None
        if need_gw:  # grad_bias too where the same pass over grad_y gives it (the GEMM geometry)
            gw, gb = kernels.grad_weight(x_k, gy_k, *weight_meta, bias_dtype, stride, padding, dilation, groups,
                                         precision)
        if gb is None and bias_dtype is not None:
            gb = kernels.grad_bias(gy_k, bias_dtype)
    return gx, gw, gb


class _ConvTranspose3dFunction(torch.autograd.Function):
    """Eager mode: forward and backward through the Triton kernels without the dispatcher round trips of the
    custom op below (host time per forward + backward with the launches stubbed, on the 2-core CPU machine: about
    half the custom op's; benchmarks/kernel_notes.md v3d). The forward's ``_kernel_weight`` copy is reused by the
    backward; bias is read in its own dtype. Gradients come back in the dtypes of weight and bias."""

    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, out_shape, stride, padding, dilation, groups, precision):
        w_kernel = _kernel_weight(x, weight, stride, padding, dilation, out_shape[2:])
        ctx.save_for_backward(x, w_kernel)
        ctx.conv = (stride, padding, dilation, groups, precision)
        ctx.weight_meta = (weight.shape, weight.dtype)
        ctx.bias_dtype = None if bias is None else bias.dtype
        with _launch_device(x):
            return kernels.forward(x, w_kernel, bias, out_shape, stride, padding, dilation, groups, precision)

    @staticmethod
    @once_differentiable
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_y):
        x, w_kernel = ctx.saved_tensors
        gx, gw, gb = _backward(grad_y, x, w_kernel, ctx.weight_meta, ctx.bias_dtype, ctx.conv,
                               ctx.needs_input_grad[:3])
        return gx, gw, gb, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# The same op for torch.compile: a custom op (opaque to Dynamo, with shape functions), so that a compiled model
# keeps one graph (fullgraph=True works, and CUDA graphs can capture the step).
# ----------------------------------------------------------------------------------------------------------
@torch.library.custom_op("sr3d::conv_transpose3d", mutates_args=())
def _conv_transpose3d_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_shape: list[int],
                         stride: list[int], padding: list[int], dilation: list[int], groups: int,
                         precision: str) -> torch.Tensor:
    """Forward through the Triton kernels; arguments validated by ``conv_transpose3d``. weight is cast to x's dtype
    (autocast) inside; bias is read in its own dtype. The backward gives gradients in weight's and bias's dtypes."""
    conv = (tuple(stride), tuple(padding), tuple(dilation))
    w_kernel = _kernel_weight(x, weight, *conv, out_shape[2:])
    with _launch_device(x):
        return kernels.forward(x, w_kernel, bias, out_shape, *conv, groups, precision)


@_conv_transpose3d_op.register_fake
def _(x, weight, bias, out_shape, stride, padding, dilation, groups, precision):
    fmt = torch.channels_last_3d if kernels.is_channels_last(x) else torch.contiguous_format
    return torch.empty(out_shape, dtype=x.dtype, device=x.device, memory_format=fmt)


@torch.library.custom_op("sr3d::conv_transpose3d_backward", mutates_args=())
def _conv_transpose3d_backward_op(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                  bias_dtype: torch.dtype | None, stride: list[int], padding: list[int],
                                  dilation: list[int], groups: int, precision: str,
                                  needs: list[bool]) -> list[torch.Tensor]:
    """[grad_x, grad_w, grad_b] of ``_conv_transpose3d_op``; an empty tensor stands for each one not needed."""
    conv = (tuple(stride), tuple(padding), tuple(dilation), groups, precision)
    w_kernel = _kernel_weight(x, weight, *conv[:3], grad_y.shape[2:])
    grads = _backward(grad_y, x, w_kernel, (weight.shape, weight.dtype), bias_dtype, conv, needs)
    return [g if g is not None else grad_y.new_empty(0) for g in grads]


@_conv_transpose3d_backward_op.register_fake
def _(grad_y, x, weight, bias_dtype, stride, padding, dilation, groups, precision, needs):
    gx = torch.empty_like(x) if needs[0] else grad_y.new_empty(0)
    gw = torch.empty(weight.shape, dtype=weight.dtype, device=x.device) if needs[1] else grad_y.new_empty(0)
    has_gb = needs[2] and bias_dtype is not None
    gb = torch.empty(grad_y.shape[1], dtype=bias_dtype, device=x.device) if has_gb else grad_y.new_empty(0)
    return [gx, gw, gb]


def _op_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, _, stride, padding, dilation, groups, precision = inputs
    ctx.save_for_backward(x, weight)
    ctx.conv = (stride, padding, dilation, groups, precision)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _op_backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    needs[2] = needs[2] and ctx.bias_dtype is not None
    grads = torch.ops.sr3d.conv_transpose3d_backward(grad_y, x, weight, ctx.bias_dtype, *ctx.conv, needs)
    gx, gw, gb = (g if need else None for g, need in zip(grads, needs))
    return gx, gw, gb, None, None, None, None, None, None


_conv_transpose3d_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# grad_output elements from which a backward whose tensors are not channels_last_3d runs the kernels on
# channels_last_3d copies, for the GEMM geometry (kernel = stride, no padding/dilation/output_padding) and the
# others. Measured (H200, benchmarks/conv_transpose3d_bench.json and kernel_notes.md v3, NCDHW f+b): 2 x 64 -> 32
# channels, 32^3 -> 64^3 (2^24 grad_output elements), k4s2p1, bf16: 0.77 ms on copies against 3.8 ms on the NCDHW
# tensors; 1 x 32 -> 16, 96^3, k3s2p1op1: 3.7 against 15.1 ms; at <= 2^23 both layouts took the same launch-bound
# ~0.5-1 ms (v2). The GEMM kernels read NCDHW well: 64^3 -> 128^3 k2s2 (2^27) took 1.05 ms on the NCDHW tensors
# against 1.86 ms with the copies, so they never copy.
CHANNELS_LAST_BACKWARD_MIN_NUMEL = {"gemm": math.inf, "other": 2**24}


def backward_on_channels_last(grad_y_numel: int, gemm: bool) -> bool:
    """Whether a backward with ``grad_y_numel`` grad_output elements runs on channels_last_3d operands
    (``CHANNELS_LAST_BACKWARD_MIN_NUMEL``, for the GEMM geometry or not)."""
    return grad_y_numel >= CHANNELS_LAST_BACKWARD_MIN_NUMEL["gemm" if gemm else "other"]


def _backward_operands(grad_y: torch.Tensor, x: torch.Tensor, x_channels_last: bool, need_x: bool,
                       gemm: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(grad_y, x, channels_last) for the backward kernels, grad_y (N, C_out, OD, OH, OW), x (N, C_in, D, H, W).

    channels_last_3d operands (copies where they are not already; x only when grad_weight needs it) and True when
    ``backward_on_channels_last``; else the tensors as they are and whether x is channels_last_3d (grad_input then
    takes x's layout)."""
    if not backward_on_channels_last(grad_y.numel(), gemm):
        return grad_y, x, x_channels_last
    cl = torch.channels_last_3d
    return grad_y.contiguous(memory_format=cl), (x.contiguous(memory_format=cl) if need_x else x), True


def conv_transpose3d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: IntOrTriple = 1, padding: IntOrTriple = 0, output_padding: IntOrTriple = 0,
                     groups: int = 1, dilation: IntOrTriple = 1, *, precision: str | None = None) -> torch.Tensor:
    """Same signature and result as ``torch.nn.functional.conv_transpose3d``.

    input (N, C_in, D, H, W) or unbatched (C_in, D, H, W); weight (C_in, C_out/groups, kD, kH, kW);
    bias (C_out,) or None -> (N, C_out, OD, OH, OW). ``precision`` ("tf32", "tf32x3" or "ieee") sets how fp32
    dots run on CUDA; by default it follows ``torch.backends.cudnn.allow_tf32``."""
    if not uses_triton(input):
        return F.conv_transpose3d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    if precision is None:
        precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if input.dim() not in (4, 5):
        raise RuntimeError(
            f"Expected 4D (unbatched) or 5D (batched) input to conv_transpose3d, but got input of size: "
            f"{list(input.shape)}"
        )
    if input.dim() == 4:
        out = conv_transpose3d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups,
                               dilation, precision=precision)
        return out.squeeze(0)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise RuntimeError(f"Expected input ({input.device}) and {name} ({t.device}) to be on the same device")
    device_type = input.device.type
    w_dtype, b_dtype = weight.dtype, None if bias is None else bias.dtype
    if torch.is_autocast_enabled(device_type):  # weight and bias are cast inside the op (no separate copies)
        input = input.to(torch.get_autocast_dtype(device_type))
        w_dtype, b_dtype = input.dtype, None if bias is None else input.dtype
    compiling = torch.compiler.is_compiling()
    # while compiling, the uncached check (assume_constant_result: Dynamo runs it once and keeps its result)
    check = _checked_output_shape.__wrapped__ if compiling else _checked_output_shape
    out_shape = (input.shape[0], *check(
        tuple(input.shape[1:]), input.dtype, tuple(weight.shape), w_dtype,
        None if bias is None else tuple(bias.shape), b_dtype,
        _triple(stride), _triple(padding), _triple(output_padding), int(groups), _triple(dilation),
    ))
    stride3, padding3, dilation3 = (tuple(v) * (3 // len(v)) for v in map(_triple, (stride, padding, dilation)))
    if compiling:
        return _conv_transpose3d_op(input, weight, bias, list(out_shape), list(stride3), list(padding3),
                                    list(dilation3), int(groups), precision)
    return _ConvTranspose3dFunction.apply(input, weight, bias, out_shape, stride3, padding3, dilation3,
                                          int(groups), precision)
