"""Triton ConvTranspose3d against a float64 torch reference, under the interpreter (CPU) or on a GPU."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import app.kernels.triton_kernels as triton_kernels
from app.kernels import TritonConvTranspose3d, backend_name, conv_transpose3d

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative-norm error bounds: the interpreter computes fp32 exactly; on a GPU fp32 runs TF32 dots.
BOUNDS = {torch.float64: 1e-10, torch.float32: 2e-3 if DEVICE == "cuda" else 1e-5,
          torch.float16: 5e-3, torch.bfloat16: 2e-2}

# (x shape, weight shape, kwargs, dtype, layout) — layout: contiguous | channels_last | sliced | weight_t |
# bias_strided
CASES = [
    ((1, 3, 4, 4, 4), (3, 2, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),
    ((2, 3, 3, 4, 5), (3, 5, 2, 2, 2), dict(stride=2, bias=False), torch.float32, "contiguous"),
    ((1, 4, 3, 3, 3), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.float32, "contiguous"),
    ((2, 4, 3, 3, 3), (4, 3, 4, 4, 4), dict(stride=2, padding=1), torch.float32, "contiguous"),
    ((1, 2, 3, 4, 2), (2, 3, 1, 2, 3), dict(stride=(1, 2, 3)), torch.float32, "contiguous"),
    ((1, 3, 4, 3, 3), (3, 2, 3, 3, 3), dict(padding=(0, 1, 2)), torch.float32, "contiguous"),
    ((1, 2, 4, 4, 4), (2, 3, 3, 3, 3), dict(dilation=2), torch.float32, "contiguous"),
    ((1, 2, 3, 3, 4), (2, 2, 2, 2, 2), dict(stride=2, dilation=(1, 2, 3), output_padding=(1, 1, 2)),
     torch.float32, "contiguous"),
    ((2, 4, 3, 3, 3), (4, 3, 2, 2, 2), dict(stride=2, groups=2), torch.float32, "contiguous"),
    ((1, 4, 3, 4, 3), (4, 1, 3, 3, 3), dict(stride=2, padding=1, groups=4), torch.float32, "contiguous"),
    ((1, 2, 3, 3, 3), (2, 3, 3, 3, 3), dict(stride=3), torch.float32, "contiguous"),
    ((1, 2, 3, 2, 3), (2, 3, 2, 2, 2), dict(stride=3, output_padding=2), torch.float32, "contiguous"),
    ((2, 5, 3, 2, 4), (5, 3, 1, 1, 1), {}, torch.float32, "contiguous"),
    ((1, 3, 2, 3, 2), (3, 2, 1, 1, 1), dict(stride=2, output_padding=1), torch.float32, "contiguous"),
    ((1, 3, 4, 5, 3), (3, 2, 3, 3, 3), dict(padding=1), torch.float32, "contiguous"),
    ((1, 2, 3, 3, 3), (2, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=(0, 1, 0)), torch.float32,
     "contiguous"),
    ((2, 2, 5, 7, 3), (2, 2, 2, 3, 2), dict(stride=(2, 1, 2)), torch.float32, "contiguous"),
    ((2, 20, 2, 3, 2), (20, 18, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),
    ((1, 2, 3, 3, 3), (2, 2, 3, 3, 3), dict(stride=2, dilation=2, padding=1), torch.float32, "contiguous"),
    ((1, 2, 3, 3, 3), (2, 2, 4, 4, 4), dict(stride=2, padding=2), torch.float32, "contiguous"),
    ((1, 3, 4, 4, 4), (3, 2, 2, 2, 2), dict(stride=2), torch.float32, "sliced"),
    ((2, 3, 3, 4, 3), (3, 4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.float32,
     "channels_last"),
    ((1, 3, 3, 3, 3), (3, 2, 2, 3, 2), dict(stride=(2, 3, 2)), torch.float32, "weight_t"),
    ((3, 4, 3, 3), (3, 2, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),  # unbatched input
    ((1, 4, 3, 3, 3), (4, 3, 2, 2, 2), dict(stride=2), torch.float16, "contiguous"),
    ((2, 4, 3, 3, 3), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.bfloat16,
     "contiguous"),
    ((1, 2, 3, 3, 2), (2, 2, 3, 2, 3), dict(stride=(2, 1, 2), padding=(1, 0, 1)), torch.float64, "contiguous"),
    ((2, 4, 3, 2, 3), (4, 1, 3, 2, 3), dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(2, 1, 2), groups=2,
                                            output_padding=(1, 0, 1)), torch.float32, "contiguous"),
    ((1, 2, 3, 2, 3), (2, 2, 3, 1, 2), dict(stride=(1, 3, 2), padding=(1, 0, 0), output_padding=(0, 2, 1)),
     torch.float32, "contiguous"),
    ((1, 33, 2, 2, 2), (33, 17, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),
    # the GEMM forward's position boxes: several H tiles of one slab; boxes spanning (n, d) slabs, kW = 4
    ((2, 3, 3, 5, 9), (3, 4, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),
    ((3, 2, 4, 2, 3), (2, 3, 1, 2, 4), dict(stride=(1, 2, 4)), torch.float32, "contiguous"),
    ((2, 3, 1, 1, 1), (3, 2, 3, 3, 3), dict(stride=2), torch.float32, "contiguous"),
    ((1, 6, 2, 3, 2), (6, 2, 2, 2, 2), dict(stride=2, groups=3, bias=False), torch.bfloat16, "channels_last"),
    ((1, 2, 2, 2, 2), (2, 3, 2, 2, 2), dict(stride=2, groups=2), torch.float32, "bias_strided"),
    # the phase GEMM: two C_in blocks, two column tiles per phase pair, boxes 4 wide (W = 12) spanning two slabs;
    # sW = 4 with padding; groups with a strided bias in bf16
    ((1, 20, 3, 5, 12), (20, 9, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.float32, "contiguous"),
    ((2, 3, 2, 3, 5), (3, 2, 3, 2, 6), dict(stride=(1, 2, 4), padding=(1, 0, 1)), torch.float32, "contiguous"),
    ((1, 4, 3, 3, 4), (4, 3, 4, 4, 4), dict(stride=2, padding=1, groups=2), torch.bfloat16, "bias_strided"),
    # the phase GEMM on channels_last_3d x and y: sW = 3 with an output W that is not a multiple of it; two C_in
    # blocks and two column tiles in bf16
    ((1, 3, 3, 2, 4), (3, 5, 3, 2, 5), dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2)),
     torch.float32, "channels_last"),
    ((1, 20, 3, 5, 6), (20, 9, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.bfloat16,
     "channels_last"),
]


def _case_id(case) -> str:
    xs, ws, kw, dtype, layout = case
    args = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"x{list(xs)}-w{list(ws)}-{args}-{str(dtype)[6:]}-{layout}"


def _count_launches(monkeypatch: pytest.MonkeyPatch, launcher: str) -> list[int]:
    """A list that grows by one at each call of ``triton_kernels.<launcher>`` (which still launches)."""
    launches: list[int] = []
    launch = getattr(triton_kernels, launcher)
    monkeypatch.setattr(triton_kernels, launcher, lambda *args: launches.append(1) or launch(*args))
    return launches


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a = a.detach().cpu().double()
    if not torch.isfinite(a).all():
        return math.inf
    return ((a - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer a launcher allocates starts as NaN, so an unwritten element fails the comparison."""
    def nan_empty(shape, *, device, dtype, memory_format=torch.contiguous_format):
        return torch.full(shape, math.nan, device=device, dtype=dtype).contiguous(memory_format=memory_format)

    monkeypatch.setattr(triton_kernels, "_empty", nan_empty)


def _make_inputs(case, generator: torch.Generator):
    xs, ws, kw, dtype, layout = case
    kw = dict(kw)
    has_bias = kw.pop("bias", True)
    groups = kw.get("groups", 1)
    x = torch.randn(xs, generator=generator, dtype=torch.float64)
    w = torch.randn(ws, generator=generator, dtype=torch.float64) / math.sqrt(ws[0] * math.prod(ws[2:]))
    b = torch.randn(ws[1] * groups, generator=generator, dtype=torch.float64) if has_bias else None
    return x, w, b, kw, dtype, layout


def _to_device(x, w, b, dtype, layout):
    x_d = x.to(DEVICE, dtype, copy=True)
    w_d = w.to(DEVICE, dtype, copy=True)
    if layout == "channels_last":
        x_d = x_d.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "sliced":  # a non-contiguous view: every other element along W of a wider tensor
        wide = torch.zeros((*x_d.shape[:-1], 2 * x_d.shape[-1]), device=DEVICE, dtype=dtype)
        wide[..., ::2] = x_d
        x_d = wide[..., ::2]
    elif layout == "weight_t":  # weight stored with swapped spatial axes, presented as a transposed view
        w_d = w_d.transpose(2, 4).contiguous().transpose(2, 4)
    b_d = None if b is None else b.to(DEVICE, dtype, copy=True)
    if layout == "bias_strided":  # a bias view with stride 2
        b_d = torch.stack([b_d, torch.full_like(b_d, math.nan)], dim=1)[:, 0]
    return [t if t is None else t.requires_grad_() for t in (x_d, w_d, b_d)]


def _assert_grads_within(leaves, refs, bound: float) -> None:
    """Each gradient of the op's leaves (x, w, b) against the float64 reference's, within ``bound``."""
    for name, got, ref in zip(("grad_input", "grad_weight", "grad_bias"), leaves, refs):
        if ref is None:
            continue
        assert got.grad is not None and got.grad.shape == ref.shape, name
        assert _rel(got.grad, ref.grad) <= bound, f"{name} error {_rel(got.grad, ref.grad):.2e}"


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_forward_and_gradients_match_float64_reference(case) -> None:
    gen = torch.Generator().manual_seed(hash(_case_id(case)) % 2**31)
    x, w, b, kw, dtype, layout = _make_inputs(case, gen)
    x_d, w_d, b_d = _to_device(x, w, b, dtype, layout)
    if layout == "sliced":
        assert not x_d.is_contiguous()

    y = conv_transpose3d(x_d, w_d, b_d, **kw)
    refs = [t if t is None else t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv_transpose3d(refs[0], refs[1], refs[2], **kw)
    assert y.shape == y_ref.shape and y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    bound = BOUNDS[dtype]
    assert _rel(y, y_ref) <= bound, f"forward error {_rel(y, y_ref):.2e}"

    grad_y = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    y.backward(grad_y.to(DEVICE, dtype))
    y_ref.backward(grad_y)
    _assert_grads_within((x_d, w_d, b_d), refs, bound)


COMPILE_CASES = [CASES[i] for i in (0, 1, 2, 21, 23, 31)]  # k2s2, no bias, k3s2p1op1, CL, unbatched, bf16 CL groups


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("case", COMPILE_CASES, ids=[_case_id(c) for c in COMPILE_CASES])
def test_torch_compile_keeps_one_graph_and_matches_eager(case) -> None:
    """Under torch.compile the op is the custom op ``sr3d::conv_transpose3d`` (fullgraph: no graph break): the eager
    op's output bit for bit, in its memory format, and gradients within the dtype's bound of float64 (AOT autograd
    may hand the backward grad_output in the output's layout, which changes grad_bias's summation order)."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(7)
    x, w, b, kw, dtype, layout = _make_inputs(case, gen)
    refs = [t if t is None else t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv_transpose3d(refs[0], refs[1], refs[2], **kw)
    grad_y = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    y_ref.backward(grad_y)
    fn = lambda x_, w_, b_: conv_transpose3d(x_, w_, b_, **kw)  # noqa: E731
    eager = fn(*_to_device(x, w, b, dtype, layout))
    x_d, w_d, b_d = _to_device(x, w, b, dtype, layout)
    y = torch.compile(fn, backend="aot_eager", fullgraph=True)(x_d, w_d, b_d)
    torch.testing.assert_close(y, eager, rtol=0, atol=0)
    assert y.stride() == eager.stride()
    y.backward(grad_y.to(DEVICE, dtype))
    _assert_grads_within((x_d, w_d, b_d), refs, BOUNDS[dtype])


def test_custom_op_passes_torch_library_opcheck() -> None:
    """Schema, fake (shape) function and autograd registration of the custom op agree with its kernels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, 3, 2, 3, 2), generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn((3, 2, 3, 3, 3), generator=gen).to(DEVICE).requires_grad_()
    b = torch.randn(2, generator=gen).to(DEVICE).requires_grad_()
    out_shape = list(F.conv_transpose3d(x.detach().cpu(), w.detach().cpu(), None, 2, 1, 1).shape)
    args = (x, w, b, out_shape, [2, 2, 2], [1, 1, 1], [1, 1, 1], 1, "ieee")
    torch.library.opcheck(torch.ops.sr3d.conv_transpose3d.default, args)


def test_compiled_module_follows_a_new_batch_size() -> None:
    """A compiled TritonConvTranspose3d recompiles (or goes dynamic) for a new batch size and stays right."""
    torch._dynamo.reset()
    layer = TritonConvTranspose3d(3, 2, 2, stride=2).to(DEVICE)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    for n in (2, 1, 3):
        x = torch.randn((n, 3, 2, 3, 2), device=DEVICE)
        want = F.conv_transpose3d(x.cpu().double(), layer.weight.detach().cpu().double(),
                                  layer.bias.detach().cpu().double(), stride=2)
        assert _rel(compiled(x), want) <= BOUNDS[torch.float32]


CHANNELS_LAST_ROUTE = [c for c in CASES if c[4] in ("sliced", "channels_last", "weight_t")] + [
    CASES[3], CASES[8], CASES[25]]  # + k4s2p1, groups, bf16 (all NCDHW)


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("case", CHANNELS_LAST_ROUTE, ids=[_case_id(c) for c in CHANNELS_LAST_ROUTE])
def test_backward_on_channels_last_copies_matches_reference(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the size threshold at 0, every backward runs on channels_last_3d copies (the route large NCDHW problems
    take): same gradients, and grad_input comes back in x's layout."""
    import app.kernels.functional as functional

    monkeypatch.setattr(functional, "CHANNELS_LAST_BACKWARD_MIN_NUMEL", {"gemm": 0, "other": 0})
    seen = []
    real = triton_kernels.grad_input

    def spy(grad_y, *args, **kwargs):
        seen.append(grad_y.is_contiguous(memory_format=torch.channels_last_3d))
        return real(grad_y, *args, **kwargs)

    monkeypatch.setattr(triton_kernels, "grad_input", spy)
    gen = torch.Generator().manual_seed(hash(_case_id(case)) % 2**31)
    x, w, b, kw, dtype, layout = _make_inputs(case, gen)
    x_d, w_d, b_d = _to_device(x, w, b, dtype, layout)
    y = conv_transpose3d(x_d, w_d, b_d, **kw)
    refs = [t if t is None else t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv_transpose3d(refs[0], refs[1], refs[2], **kw)
    grad_y = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    y.backward(grad_y.to(DEVICE, dtype))
    y_ref.backward(grad_y)
    assert seen == [True], "grad_input did not run on a channels_last_3d grad_output"
    want = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
    assert x_d.grad.is_contiguous(memory_format=want)
    _assert_grads_within((x_d, w_d, b_d), refs, BOUNDS[dtype])


@pytest.mark.parametrize("kw", [dict(stride=2), dict(stride=(2, 1, 2), padding=(1, 0, 1), output_padding=(1, 0, 0)),
                                dict(stride=2, dilation=2, groups=2)])
def test_gradcheck_float64(kw) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((1, 2, 2, 3, 2), generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    w = torch.randn((2, 1, 3, 2, 2), generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    b = torch.randn((kw.get("groups", 1),), generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: conv_transpose3d(x, w, b, **kw), (x, w, b), fast_mode=True)


def test_empty_batch_returns_empty_tensor() -> None:
    w = torch.randn(3, 2, 2, 2, 2, device=DEVICE)
    y = conv_transpose3d(torch.randn(0, 3, 4, 4, 4, device=DEVICE), w, stride=2)
    assert y.shape == (0, 2, 8, 8, 8)


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("case", [CASES[2], CASES[-5], CASES[-4], CASES[-2], CASES[-1]],
                         ids=["k3s2p1op1", "tiles", "sw4", "channels_last_sw3", "channels_last_tiles_bf16"])
def test_phase_gemm_one_pair_per_program_matches_reference(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The phase GEMM with one (rD, rH) phase pair per program (its other configurations; the interpreter's fixed
    configuration loops over all pairs in one program)."""
    monkeypatch.setattr(triton_kernels, "_FIXED_PHASE_PAIRS", {"ALL_PAIRS": False})
    x, w, b, kw, dtype, layout = _make_inputs(case, torch.Generator().manual_seed(0))
    x_d, w_d, b_d = _to_device(x, w, b, dtype, layout)
    y_ref = F.conv_transpose3d(x, w, b, **kw)
    assert _rel(conv_transpose3d(x_d, w_d, b_d, **kw), y_ref) <= BOUNDS[dtype]


@pytest.mark.parametrize("case", [
    ((2, 3, 3, 3, 3), (3, 2, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.float32, "contiguous"),
    ((2, 3, 3, 3, 3), (3, 2, 2, 2, 2), dict(stride=2), torch.float32, "contiguous"),  # both GEMM kernels
    ((2, 3, 3, 3, 3), (3, 2, 2, 2, 2), dict(stride=2), torch.float32, "channels_last"),  # phase GEMM, GEMM grad_weight
    ((2, 3, 3, 3, 3), (3, 2, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), torch.float32, "channels_last"),
], ids=["phase_gemm", "gemm", "gemm_channels_last", "phases_channels_last"])
def test_int64_offsets_path_matches_reference(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int64 index path (taken for tensors spanning 2^31 elements) computes the same result."""
    monkeypatch.setattr(triton_kernels, "_INT32_LIMIT", 64)
    x, w, b, kw, dtype, layout = _make_inputs(case, torch.Generator().manual_seed(0))
    x_d, w_d, b_d = _to_device(x, w, b, dtype, layout)
    y = conv_transpose3d(x_d, w_d, b_d, **kw)
    y.backward(torch.ones_like(y))
    refs = [t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv_transpose3d(*refs, **kw)
    y_ref.backward(torch.ones_like(y_ref))
    assert _rel(y, y_ref) <= BOUNDS[dtype]
    for got, ref in zip((x_d, w_d, b_d), refs):
        assert _rel(got.grad, ref.grad) <= BOUNDS[dtype]


INVALID = [
    dict(stride=0), dict(padding=-1), dict(dilation=0), dict(stride=2, output_padding=2), dict(groups=3),
    dict(stride=(1, 2)), dict(groups=0),
]


@pytest.mark.parametrize("kw", INVALID, ids=[str(k) for k in INVALID])
def test_invalid_arguments_raise_torchs_error_type(kw) -> None:
    x, w = torch.randn(1, 4, 3, 3, 3), torch.randn(4, 2, 2, 2, 2)
    with pytest.raises(Exception) as expected:
        F.conv_transpose3d(x, w, None, **kw)
    with pytest.raises(expected.type) as got:
        conv_transpose3d(x.to(DEVICE), w.to(DEVICE), None, **kw)
    assert str(got.value)


@pytest.mark.parametrize("x_shape,w_shape,b_shape,dtypes", [
    ((1, 5, 3, 3, 3), (4, 2, 2, 2, 2), None, (torch.float32,) * 2),   # channel mismatch
    ((1, 4, 3, 3, 3), (4, 2, 2, 2, 2), (3,), (torch.float32,) * 3),   # bias size
    ((1, 4, 3, 3, 3), (4, 2, 2, 2, 2), None, (torch.float32, torch.float16)),  # dtype mismatch
    ((4, 3, 3), (4, 2, 2, 2, 2), None, (torch.float32,) * 2),         # 3-D input
])
def test_invalid_tensors_raise_torchs_error_type(x_shape, w_shape, b_shape, dtypes) -> None:
    x, w = torch.randn(x_shape, dtype=dtypes[0]), torch.randn(w_shape, dtype=dtypes[1])
    b = None if b_shape is None else torch.randn(b_shape, dtype=dtypes[2])
    with pytest.raises(Exception) as expected:
        F.conv_transpose3d(x, w, b)
    with pytest.raises(expected.type) as got:
        conv_transpose3d(x.to(DEVICE), w.to(DEVICE), None if b is None else b.to(DEVICE))
    assert str(got.value)


def test_module_is_drop_in_for_nn_convtranspose3d() -> None:
    kwargs = dict(stride=(2, 1, 2), padding=(1, 0, 1), output_padding=(1, 0, 0), groups=2, dilation=1)
    torch.manual_seed(0)
    ours = TritonConvTranspose3d(4, 6, (3, 2, 3), **kwargs).to(DEVICE)
    ref = torch.nn.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs).to(DEVICE)
    ref.load_state_dict(ours.state_dict())  # ours -> torch
    ours.load_state_dict(ref.state_dict())  # torch -> ours
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 4, 3, 3, 3, device=DEVICE)
    assert _rel(ours(x), ref(x).double().cpu()) <= BOUNDS[torch.float32]
    out = ours(x, output_size=[5, 4, 6])  # output_size picks output_padding, as in torch
    assert out.shape == ref(x, output_size=[5, 4, 6]).shape == (2, 6, 5, 4, 6)


def test_training_step_and_autocast_match_torch_module() -> None:
    """Inside nn.Module.backward of a training step, and under autocast (bf16 compute, fp32 parameters)."""
    torch.manual_seed(1)
    ours = TritonConvTranspose3d(3, 2, 2, stride=2).to(DEVICE)
    ref = torch.nn.ConvTranspose3d(3, 2, 2, stride=2).to(DEVICE)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 3, 3, 3, device=DEVICE)
    target = torch.randn(2, 2, 6, 6, 6, device=DEVICE)
    for module in (ours, ref):
        F.mse_loss(module(x), target).backward()
    for p_ours, p_ref in zip(ours.parameters(), ref.parameters()):
        assert _rel(p_ours.grad, p_ref.grad.double().cpu()) <= BOUNDS[torch.float32]
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = ours(x)
        loss = F.mse_loss(y.float(), target)
    loss.backward()
    assert y.dtype == torch.bfloat16
    assert ours.weight.grad.dtype == torch.float32 and torch.isfinite(ours.weight.grad).all()


def test_cpu_dispatch_uses_torch_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if DEVICE == "cuda":
        pytest.skip("CPU dispatch only")

    def fail(*args, **kwargs):
        raise AssertionError("Triton kernel launched")

    monkeypatch.setattr(triton_kernels, "forward", fail)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, w = torch.randn(1, 2, 3, 3, 3), torch.randn(2, 2, 2, 2, 2)
    torch.testing.assert_close(conv_transpose3d(x, w, stride=2), F.conv_transpose3d(x, w, stride=2))
    assert backend_name("cpu") == "torch (CPU)"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(AssertionError, match="Triton kernel launched"):
        conv_transpose3d(x, w, stride=2)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_tensor_on_second_gpu_launches_there() -> None:
    """With cuda:0 current, a layer on cuda:1 computes on cuda:1 (forward and backward)."""
    torch.cuda.set_device(0)
    layer = TritonConvTranspose3d(8, 4, 2, stride=2).to("cuda:1")
    ref = torch.nn.ConvTranspose3d(8, 4, 2, stride=2).to("cuda:1")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 8, 8, 8, device="cuda:1")
    y = layer(x)
    y.sum().backward()
    y_ref = ref(x)
    y_ref.sum().backward()
    assert y.device == torch.device("cuda:1")
    assert _rel(y, y_ref.double().cpu()) <= BOUNDS[torch.float32]
    assert _rel(layer.weight.grad, ref.weight.grad.double().cpu()) <= BOUNDS[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tap_major_weight_is_one_tap_major_copy(dtype: torch.dtype) -> None:
    """The kernels read weight tiles from a (kD, kH, kW, C_in, C_out/g)-contiguous copy (coalesced along C_out);
    a view with weight's own strides would be correct but slow, so only this test would notice."""
    weight = torch.randn(6, 5, 2, 3, 4)
    taps = triton_kernels.tap_major(weight, dtype)
    assert taps.shape == weight.shape and taps.dtype == dtype
    assert taps.permute(2, 3, 4, 0, 1).is_contiguous()
    assert taps.data_ptr() != weight.data_ptr()
    torch.testing.assert_close(taps, weight.to(dtype))


@pytest.mark.parametrize("gy_shape,gemm,route", [
    ((2, 32, 64, 64, 64), False, True),     # 2^24 grad_output elements, k != s: channels_last_3d copies
    ((2, 32, 32, 32, 32), False, False),    # 2^21: launch-bound, no copies
    ((2, 32, 128, 128, 128), True, False),  # the GEMM geometry (kernel = stride) never copies
])
def test_channels_last_backward_route_thresholds(gy_shape, gemm, route) -> None:
    import app.kernels.functional as functional

    grad_y = torch.empty(gy_shape, device="meta")
    x = torch.empty((gy_shape[0], 64, *(s // 2 for s in gy_shape[2:])), device="meta")
    gy_k, x_k, channels_last = functional._backward_operands(grad_y, x, False, True, gemm)
    assert channels_last is route
    assert triton_kernels.is_channels_last(gy_k) is route and triton_kernels.is_channels_last(x_k) is route


@pytest.mark.parametrize("kernel, stride, padding, dilation, in_size, out_size, gemm", [
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), (4, 5, 6), (8, 10, 12), True),   # the U-Net's upsampling
    ((2, 2, 1), (2, 2, 1), (0, 0, 0), (1, 1, 1), (4, 5, 6), (8, 10, 6), True),    # x4_thick's first layer
    ((1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), (4, 5, 6), (4, 5, 6), True),
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), (4, 5, 6), (9, 10, 12), False),  # output_padding
    ((2, 2, 2), (2, 2, 2), (1, 0, 0), (1, 1, 1), (4, 5, 6), (6, 10, 12), False),  # padding
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (2, 1, 1), (4, 5, 6), (9, 10, 12), False),  # dilation
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (4, 5, 6), (8, 10, 12), False),
])
def test_gemm_geometry_is_kernel_equal_stride_only(kernel, stride, padding, dilation, in_size, out_size,
                                                    gemm) -> None:
    assert triton_kernels.is_gemm_geometry(kernel, stride, padding, dilation, in_size, out_size) is gemm


@pytest.mark.parametrize("memory_format, gemm", [(torch.contiguous_format, True), (torch.channels_last_3d, False)])
def test_forward_is_gemm_only_off_channels_last(memory_format, gemm) -> None:
    """kernel = stride: one GEMM for NCDHW x; the phase kernel for channels_last_3d x (kernel_notes.md v3b)."""
    x = torch.empty((2, 8, 4, 5, 6), device="meta").contiguous(memory_format=memory_format)
    three = lambda v: (v,) * 3  # noqa: E731
    assert triton_kernels.forward_is_gemm(x, three(2), three(2), three(0), three(1), (8, 10, 12)) is gemm
    assert not triton_kernels.forward_is_gemm(x, three(2), three(2), three(1), three(1), (6, 8, 10))


@pytest.mark.parametrize("memory_format, stride, dilation, groups, phase_gemm", [
    (torch.contiguous_format, (2, 2, 2), (1, 1, 1), 1, True), (torch.contiguous_format, (1, 3, 4), (1, 1, 1), 2, True),
    (torch.channels_last_3d, (2, 2, 2), (1, 1, 1), 1, True), (torch.channels_last_3d, (2, 2, 3), (1, 1, 1), 1, True),
    (torch.channels_last_3d, (2, 2, 2), (1, 1, 1), 2, False), (torch.contiguous_format, (2, 2, 3), (1, 1, 1), 1, False),
    (torch.contiguous_format, (2, 2, 2), (1, 2, 1), 1, False), (torch.channels_last_3d, (2, 2, 2), (2, 1, 1), 1, False),
])
def test_forward_is_phase_gemm_for_dilation_1_and_a_layout_it_stores_in_runs(memory_format, stride, dilation, groups,
                                                                              phase_gemm) -> None:
    """NCDHW y takes runs along W (sW a power of 2); channels_last_3d y takes runs of channels (groups 1)."""
    x = torch.empty((2, 8, 4, 5, 6), device="meta").contiguous(memory_format=memory_format)
    assert triton_kernels.forward_is_phase_gemm(x, stride, dilation, groups) is phase_gemm


@pytest.mark.parametrize("shape, dtype, summed_by_kernel", [
    ((2, 20, 3, 5, 7), torch.float32, True), ((1, 40, 4, 3, 2), torch.bfloat16, True),
    ((1, 8, 2, 2, 3), torch.float64, True), ((1, 16, 9, 8, 5), torch.float32, True),
    ((1, 16, 3, 4, 5), torch.bfloat16, False), ((2, 3, 2, 3, 2), torch.float32, False)])
@pytest.mark.parametrize("int64", [False, True])
def test_grad_bias_of_channels_last_grad_output_matches_float64_sum(shape, dtype, summed_by_kernel: bool,
                                                                     int64: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_bias of a channels_last_3d grad_output: the split channel-sum kernel where a voxel holds >= 64 bytes of
    channels (two channel tiles for 20 and 40 channels, three row splits with a ragged last one for 360 voxels,
    int64 offsets), torch's sum below that."""
    if int64:
        monkeypatch.setattr(triton_kernels, "_INT32_LIMIT", 64)
    launches = _count_launches(monkeypatch, "_channel_sum")
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gy_d = gy.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last_3d)
    assert triton_kernels.is_channels_last(gy_d)
    gb = triton_kernels.grad_bias(gy_d, torch.float32)
    assert bool(launches) is summed_by_kernel
    assert gb.dtype == torch.float32 and gb.shape == (shape[1],)
    assert _rel(gb, gy_d.double().sum(dim=(0, 2, 3, 4))) <= 1e-5  # fp32 accumulation of the same values


@pytest.mark.parametrize("w, width", [(96, 32), (64, 64), (12, 4), (40, 8), (100, 16), (1, 1), (7, 8), (3, 4)])
def test_box_width_pads_w_by_at_most_an_eighth_or_one_voxel(w: int, width: int) -> None:
    assert triton_kernels._box_width(w) == width


@pytest.mark.slow
def test_every_kernel_configuration_compiles_for_hopper_and_fits_shared_memory() -> None:
    """Each autotune configuration of every kernel, compiled for sm_90 by Triton's real compiler (the interpreter
    runs none of its passes; the check and benchmark scripts launch each configuration pinned, with no autotuner
    pruning), in fp32 and bf16, within a block's shared memory: ``scripts/check_kernel_compile.py``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_kernel_compile.py"
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "; 0 failures;" in result.stdout


def _skip_without_tma() -> None:
    """Skip on a CUDA GPU older than Hopper (the interpreter runs the TMA kernels on the CPU)."""
    if DEVICE == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs a Hopper GPU")


def _backward_reference(n, c_in, c_out, size, kernel, stride, padding, output_padding, seed: int):
    """Random float64 x (N, C_in, *size), weight (C_in, C_out, *kernel), grad_y of the transposed convolution's
    output size, and torch's float64 (grad_x, grad_weight) for them (dilation 1, groups 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(c_in, c_out, *kernel, generator=gen, dtype=torch.float64)
    out = [(i - 1) * s - 2 * p + k + op for i, s, p, k, op in zip(size, stride, padding, kernel, output_padding)]
    gy = torch.randn(n, c_out, *out, generator=gen, dtype=torch.float64)
    grads = torch.ops.aten.convolution_backward(gy, x, w, None, stride, padding, (1, 1, 1), True, output_padding, 1,
                                                (True, True, False))
    return x, w, gy, grads[:2]


# (N, C_in, C_out, input size, kernel, stride, padding, output_padding, dtype): under the interpreter the TMA tiles
# are 16 channels × 16 columns × 16 positions, so C_in 64 takes four tiles, 40 columns three, and the W runs (QW =
# 5, 7, 10 and 4 positions) one ragged, zero-filled step.
TMA_CASES = [
    (2, 64, 8, (3, 4, 5), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), torch.bfloat16),
    (1, 64, 20, (3, 4, 7), (4, 4, 4), (2, 2, 2), (1, 1, 1), (0, 0, 0), torch.float16),
    (1, 64, 8, (3, 4, 10), (3, 2, 5), (2, 3, 2), (0, 1, 2), (1, 0, 1), torch.bfloat16),
    (1, 64, 8, (2, 3, 4), (5, 5, 5), (3, 3, 3), (2, 2, 2), (0, 1, 2), torch.float16),
]


@pytest.mark.parametrize("n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype", TMA_CASES)
def test_grad_weight_by_tma_matches_float64(n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_weight of channels_last_3d x and grad_y through the TMA phase kernel (several C_in and column tiles,
    ragged W runs, taps outside the kernel on some W phases, stride 3) against float64 torch."""
    _skip_without_tma()
    launches = _count_launches(monkeypatch, "_bwd_weight_tma")
    x, w, gy, (_, ref) = _backward_reference(n, c_in, c_out, size, kernel, stride, padding, output_padding, seed=5)
    cl = torch.channels_last_3d
    x_d, gy_d = (t.to(DEVICE, dtype).contiguous(memory_format=cl) for t in (x, gy))
    gw, gb = triton_kernels.grad_weight(x_d, gy_d, w.shape, dtype, None, stride, padding, (1, 1, 1), 1, "ieee")
    assert launches and gb is None
    assert gw.dtype == dtype and gw.shape == w.shape and gw.is_contiguous()
    assert _rel(gw, ref) <= BOUNDS[dtype]


@pytest.mark.parametrize("change, uses_tma", [
    ({}, True), ({"dtype": torch.float16}, True), ({"groups": 2}, False),
    ({"memory_format": torch.contiguous_format}, False), ({"out_w": 11}, False), ({"c_in": 32}, False),
    ({"c_in": 68}, False), ({"dtype": torch.float32}, False), ({"dilation": 2}, False),
    ({"out_w": 8, "kernel": 2, "padding": 0}, False)])
def test_grad_weight_takes_tma_for_aligned_channels_last_dilation_1(change: dict, uses_tma: bool) -> None:
    """The TMA grad_weight needs groups 1, dilation 1, channels_last_3d tensors, OW a multiple of sW, 16-bit floats,
    C_in >= 64 in 16-byte runs (68 in bf16 is 136 bytes), and not the GEMM geometry (kernel = stride: 4 -> 8)."""
    c = {"groups": 1, "memory_format": torch.channels_last_3d, "out_w": 10, "c_in": 64, "dtype": torch.bfloat16,
         "dilation": 1, "kernel": 3, "padding": 1, **change}
    fmt = c["memory_format"]
    x = torch.empty((1, c["c_in"], 4, 4, 4), dtype=c["dtype"]).contiguous(memory_format=fmt)
    gy = torch.empty((1, 8, 8, 8, c["out_w"]), dtype=c["dtype"]).contiguous(memory_format=fmt)
    three = lambda v: (v,) * 3  # noqa: E731
    gemm = triton_kernels.is_gemm_geometry(three(c["kernel"]), three(2), three(c["padding"]), three(c["dilation"]),
                                           x.shape[2:], gy.shape[2:])
    if not triton_kernels.interpreter_active():
        pytest.skip("routing of the interpreter (a GPU also needs compute capability 9)")
    assert triton_kernels.grad_weight_uses_tma(x, gy, three(2), three(c["dilation"]), c["groups"], gemm) is uses_tma


# (N, C_in, C_out, input size, kernel, stride, padding, output_padding, dtype, bias): under the interpreter the TMA
# forward's tiles are boxes of at least 16 positions (BOX_W from QW, BOX_H the rest) × 16 columns × 16 input
# channels, so 20 input channels take two K blocks, 40 columns three tiles, and QH or QW of 3, 5 and 7 ragged boxes.
TMA_FORWARD_CASES = [
    (2, 16, 8, (3, 4, 5), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), torch.float32, True),
    (1, 20, 20, (3, 5, 7), (4, 4, 4), (2, 2, 2), (1, 1, 1), (0, 0, 0), torch.float32, True),
    (1, 8, 8, (3, 4, 10), (3, 2, 4), (2, 3, 2), (0, 1, 1), (1, 0, 0), torch.bfloat16, True),
    (1, 16, 16, (2, 3, 4), (5, 5, 5), (3, 3, 3), (2, 2, 2), (2, 2, 2), torch.float16, False),
    (2, 32, 8, (3, 4, 5), (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), torch.float32, True),
]


@pytest.mark.parametrize("n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype, bias",
                         TMA_FORWARD_CASES)
def test_forward_by_tma_matches_float64(n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype, bias,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels_last_3d forward through the TMA phase GEMM (several K blocks and column tiles, ragged boxes,
    zero taps on some W phases, stride 3, kernel = stride, bias on and off) against float64 torch; y keeps
    channels_last_3d."""
    _skip_without_tma()
    launches = _count_launches(monkeypatch, "_fwd_phase_tma")
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(n, c_in, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(c_in, c_out, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(c_out, generator=gen, dtype=torch.float64) if bias else None
    ref = F.conv_transpose3d(x, w, b, stride, padding, output_padding)
    x_d = x.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last_3d)
    y = conv_transpose3d(x_d, w.to(DEVICE, dtype), None if b is None else b.to(DEVICE, dtype), stride, padding,
                         output_padding)
    assert launches and triton_kernels.is_channels_last(y)
    assert _rel(y, ref) <= BOUNDS[dtype]


@pytest.mark.parametrize("change, uses_tma", [
    ({}, True), ({"dtype": torch.bfloat16}, True), ({"groups": 2}, False), ({"dilation": 2}, False),
    ({"memory_format": torch.contiguous_format}, False), ({"out_w": 11}, False), ({"c_in": 6}, False),
    ({"c_out": 5}, False), ({"dtype": torch.float64}, False)])
def test_forward_takes_tma_for_aligned_channels_last_dilation_1(change: dict, uses_tma: bool) -> None:
    """The TMA forward needs channels_last_3d x, groups 1, dilation 1, output sizes that are multiples of the stride,
    16-byte multiples of channels per voxel (fp32: C_in 6 is 24 bytes, sW·C_out = 2 · 5 is 40), and no fp64."""
    c = {"groups": 1, "memory_format": torch.channels_last_3d, "out_w": 10, "c_in": 8, "c_out": 8,
         "dtype": torch.float32, "dilation": 1, **change}
    x = torch.empty((1, c["c_in"], 4, 4, 5), dtype=c["dtype"]).contiguous(memory_format=c["memory_format"])
    if not triton_kernels.interpreter_active():
        pytest.skip("routing of the interpreter (a GPU also needs compute capability 9)")
    got = triton_kernels.forward_uses_tma(x, (8, 8, c["out_w"]), (2, 2, 2), (c["dilation"],) * 3, c["groups"],
                                          c["c_out"])
    assert got is uses_tma


# (N, C_in, C_out, input size, kernel, stride, padding, output_padding, dtype): under the interpreter the TMA
# grad_input's tiles are boxes of at least 16 input positions × 16 input channels × 16 (rW, C_out) columns, so C_in
# 40 takes three channel tiles, sW·C_out = 40 three K blocks, and H or W of 3, 5 and 7 ragged boxes.
TMA_GRAD_INPUT_CASES = [
    (2, 16, 8, (3, 4, 5), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), torch.float32),
    (1, 40, 20, (3, 5, 7), (4, 4, 4), (2, 2, 2), (1, 1, 1), (0, 0, 0), torch.float32),
    (1, 8, 8, (3, 4, 10), (3, 2, 4), (2, 3, 2), (0, 1, 1), (1, 0, 0), torch.bfloat16),
    (1, 16, 16, (2, 3, 4), (5, 5, 5), (3, 3, 3), (2, 2, 2), (2, 2, 2), torch.float16),
    (2, 32, 8, (3, 4, 5), (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), torch.float32),
]


@pytest.mark.parametrize("n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype",
                         TMA_GRAD_INPUT_CASES)
def test_grad_input_by_tma_matches_float64(n, c_in, c_out, size, kernel, stride, padding, output_padding, dtype,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_input of a channels_last_3d grad_y through the TMA phase GEMM's transpose (several channel tiles and K
    blocks, ragged boxes, zero taps on some W phases, D shifts at the batch items' edges, stride 3, kernel = stride)
    against float64 torch; grad_x is channels_last_3d."""
    _skip_without_tma()
    launches = _count_launches(monkeypatch, "_bwd_input_tma")
    x, w, gy, (ref, _) = _backward_reference(n, c_in, c_out, size, kernel, stride, padding, output_padding, seed=7)
    gy_d = gy.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last_3d)
    w_d = triton_kernels.tap_major(w.to(DEVICE, dtype), dtype)
    gx = triton_kernels.grad_input(gy_d, w_d, x.shape, True, stride, padding, (1, 1, 1), 1, "ieee")
    assert launches and triton_kernels.is_channels_last(gx) and gx.dtype == dtype
    assert _rel(gx, ref) <= BOUNDS[dtype]


@pytest.mark.parametrize("change, uses_tma", [
    ({}, True), ({"dtype": torch.bfloat16}, True), ({"channels_last": False}, False), ({"groups": 2}, False),
    ({"dilation": 2}, False), ({"memory_format": torch.contiguous_format}, False), ({"out_w": 11}, False),
    ({"c_in": 6}, False), ({"c_out": 5}, False), ({"dtype": torch.float64}, False)])
def test_grad_input_takes_tma_for_aligned_channels_last_dilation_1(change: dict, uses_tma: bool) -> None:
    """The TMA grad_input needs a channels_last_3d grad_x and grad_y, groups 1, dilation 1, output sizes that are
    multiples of the stride, 16-byte runs of C_in and sW·C_out (fp32: C_in 6 is 24 bytes, 2 · 5 is 40), no fp64."""
    c = {"groups": 1, "memory_format": torch.channels_last_3d, "channels_last": True, "out_w": 10, "c_in": 8,
         "c_out": 8, "dtype": torch.float32, "dilation": 1, **change}
    gy = torch.empty((1, c["c_out"], 8, 8, c["out_w"]), dtype=c["dtype"]).contiguous(memory_format=c["memory_format"])
    if not triton_kernels.interpreter_active():
        pytest.skip("routing of the interpreter (a GPU also needs compute capability 9)")
    got = triton_kernels.grad_input_uses_tma(gy, c["c_in"], c["channels_last"], (2, 2, 2), (c["dilation"],) * 3,
                                             c["groups"])
    assert got is uses_tma
