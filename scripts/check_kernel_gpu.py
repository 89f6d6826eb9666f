#!/usr/bin/env python
"""GPU correctness check of ``app.kernels.conv_transpose3d`` (the proof of issue 2).

Forward and all three gradients (grad_input, grad_weight, grad_bias, via autograd with a random grad_output)
against a float64 torch reference, in fp32 (TF32 dots, the default), bf16, fp16 and the op's exact-fp32
precisions, over
  * random argument combinations (seeded): anisotropic kernel 1-4, stride 1-3, padding, output_padding,
    dilation 1-2, groups 1/2/4, N 1-2, bias on/off, channels that are not multiples of 16, odd sizes,
    contiguous / channels_last_3d / sliced / permuted inputs, permuted weights, strided biases and grad_outputs,
    every third case with its backward forced onto channels_last_3d copies (the route of large problems), every
    fourth shaped for the TMA kernels (channels_last_3d, groups 1, dilation 1, 16-byte channel runs, output sizes
    multiples of the stride);
    reference: float64 torch on the CPU;
  * the U-Net decoder shapes (N=2; 256->128 at 8^3, 128->64 at 16^3, 64->32 at 32^3 and 64^3; k2s2, k3s2p1op1,
    k4s2p1), NCDHW in every dtype plus bf16 channels_last_3d; reference: float64 torch on the GPU; in bf16 (both
    layouts) also under torch.compile (the custom op), whose forward must equal eager's bit for bit;
  * one forward with more than 2^31 output elements (bf16, NCDHW and channels_last_3d); reference: cuDNN fp32
    with TF32 off over D-chunks (bf16 inputs and their products are exact in fp32).
Metric: relative norm error ||out - ref|| / ||ref|| per tensor, and per stride phase of the output (an error
confined to odd positions, like the seed kernel's, cannot hide in the norm). Outputs must be finite; the CUDA
caching allocator is poisoned with NaN before each launch so that unwritten elements show up. Every variant runs
twice and the second run (the launcher's cached direct-launch path) must equal the first bit for bit.

Random cases run in a pool of worker processes (Triton compilation is the bottleneck), each case with every
autotuned kernel pinned to one of its configurations (rotating over the configurations with the case's
geometry), so every configuration is exercised; the decoder shapes autotune as users get them.

GPU:  python scripts/check_kernel_gpu.py [--out benchmarks/kernel_check_gpu.json]
CPU:  python scripts/check_kernel_gpu.py --smoke --out /tmp/check.json   (sets TRITON_INTERPRET=1 itself)
Exit status: 0 when every check passes, 1 on any failure, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

if "--smoke" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triton.runtime.errors import OutOfResources  # noqa: E402

import app.kernels as ops  # noqa: E402
from bench_env import autotuners, channels_last_backward_from, environment, pinned_configs  # noqa: E402

Triple = tuple[int, int, int]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BOUNDS = {"fp32": 2e-3, "bf16": 2e-2, "fp16": 2e-2}
EXACT_BOUND = 1e-5
EXACT_PRECISIONS = tuple(p for p in getattr(ops, "PRECISIONS", ()) if p != "tf32")
DECODER = [(2, 256, 128, 8), (2, 128, 64, 16), (2, 64, 32, 32), (2, 64, 32, 64)]
DECODER_SMOKE = [(1, 4, 2, 2)]
KERNELS = {"k2s2": (2, 2, 0, 0), "k3s2p1op1": (3, 2, 1, 1), "k4s2p1": (4, 2, 1, 0)}
PER_GROUP_CHANNELS = (1, 2, 3, 5, 7, 8, 12, 16, 17, 24, 32)
# Every fourth random case is shaped for the TMA kernels (kernel v3h): channels_last_3d x, groups 1, dilation 1,
# channels in 16-byte runs, output sizes multiples of the stride.
TMA_C_IN, TMA_C_OUT = (8, 24, 64, 72), (4, 8, 16, 40)
X_LAYOUTS = ("contiguous", "channels_last", "slice", "permute")
G_LAYOUTS = ("contiguous", "channels_last", "slice")
TENSORS = ("y", "grad_input", "grad_weight", "grad_bias")


def variant_spec(variant: str) -> tuple[torch.dtype, str | None, float]:
    """(dtype, precision keyword or None for the op's default, error bound) of a variant name such as
    ``bf16`` or ``fp32-ieee``."""
    if variant in DTYPES:
        return DTYPES[variant], None, BOUNDS[variant]
    return torch.float32, variant.split("-", 1)[1], EXACT_BOUND


@dataclass(frozen=True)
class Case:
    """One argument combination of ``conv_transpose3d``, the layouts of its tensors and what to run on it."""

    name: str
    kind: str
    n: int
    c_in: int
    c_out: int
    size: Triple
    kernel: Triple
    stride: Triple
    padding: Triple
    output_padding: Triple
    dilation: Triple
    groups: int
    bias: bool
    variants: tuple[str, ...]
    x_layout: str = "contiguous"
    w_layout: str = "contiguous"
    b_layout: str = "contiguous"
    g_layout: str = "contiguous"
    ref_on_device: bool = False
    cl_backward: bool = False  # backward on channels_last_3d copies whatever the size (threshold 0)
    compiled: tuple[str, ...] = ()  # variants also run under torch.compile (the custom op): y as eager's
    pin: int | None = None
    seed: int = 0

    @property
    def out_size(self) -> Triple:
        return _out_size(self.size, self.kernel, self.stride, self.padding, self.dilation, self.output_padding)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward pass (each backward pass costs about as much)."""
        return (self.n * math.prod(self.size) * self.c_in * (self.c_out // self.groups)
                * math.prod(self.kernel))

    def describe(self) -> str:
        def t(v: Triple) -> str:
            return "x".join(map(str, v))
        parts = [f"N{self.n} {self.c_in}->{self.c_out} in {t(self.size)} k{t(self.kernel)} s{t(self.stride)}",
                 f"p{t(self.padding)} op{t(self.output_padding)} d{t(self.dilation)} g{self.groups}",
                 "bias" if self.bias else "nobias",
                 f"x:{self.x_layout} w:{self.w_layout} g:{self.g_layout}" + (" b:strided" if self.bias and
                                                                            self.b_layout != "contiguous" else "")
                 + (" bwd:cl-copies" if self.cl_backward else "") + (f" compiled:{','.join(self.compiled)}" if self.compiled else "")]
        return " ".join(parts)


# --------------------------------------------------------------------------------------------------------
# Case generation
# --------------------------------------------------------------------------------------------------------
def _out_size(size: Triple, kernel: Triple, stride: Triple, padding: Triple, dilation: Triple,
              output_padding: Triple) -> Triple:
    return tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in zip(
        size, stride, padding, dilation, kernel, output_padding))


def _random_geometry(rng: random.Random, max_kernel: int) -> tuple[Triple, Triple, Triple, Triple]:
    """(kernel, stride, dilation, padding): the compile-time part of a case (Triton constexprs)."""
    kernel = tuple(rng.randint(1, max_kernel) for _ in range(3))
    stride = tuple(rng.randint(1, 3) for _ in range(3))
    dilation = tuple(rng.choice((1, 1, 2)) for _ in range(3))
    padding = tuple(rng.randint(0, d * (k - 1)) for k, d in zip(kernel, dilation))
    return kernel, stride, dilation, padding


def _input_size(rng: random.Random, k: int, s: int, p: int, d: int, op: int, max_out: int) -> int | None:
    """A random input size along one axis whose output size lies in [1, max_out] (None if there is none)."""
    sizes = [i for i in range(1, max_out + 1) if 1 <= (i - 1) * s - 2 * p + d * (k - 1) + op + 1 <= max_out]
    return rng.choice(sizes) if sizes else None


def random_cases(count: int, seed: int, geometries: int, smoke: bool) -> list[Case]:
    """``count`` seeded random cases. Their (kernel, stride, dilation, padding) come from a pool of
    ``geometries`` random ones (0: a fresh one per case) so that compiled kernels are shared between cases;
    everything else is drawn per case. Autotuned kernels are pinned per geometry."""
    rng = random.Random(seed)
    max_kernel, max_out, max_ch, mac_cap = (2, 5, 4, 10**4) if smoke else (4, 32, 64, 5 * 10**7)
    pool = [_random_geometry(rng, max_kernel) for _ in range(geometries)]
    dilation_1 = [g for g, (_, _, dilation, _) in enumerate(pool) if dilation == (1, 1, 1)]
    variant_cycle = list(DTYPES) + [f"fp32-{p}" for p in EXACT_PRECISIONS]
    cases: list[Case] = []
    while len(cases) < count:
        i = len(cases)
        tma = not smoke and dilation_1 and i % 4 == 3
        geo_id = (dilation_1[i // 4 % len(dilation_1)] if tma else i % len(pool)) if pool else i
        kernel, stride, dilation, padding = pool[geo_id] if pool else _random_geometry(rng, max_kernel)
        output_padding = tuple(rng.randrange(max(s, d)) for s, d in zip(stride, dilation))
        groups = 1 if tma else rng.choice((1, 1, 2, 4))
        per_group = [c for c in PER_GROUP_CHANNELS if c * groups <= max_ch]
        if not per_group:
            continue
        c_in, c_out = groups * rng.choice(per_group), groups * rng.choice(per_group)
        if tma:  # channels in 16-byte runs (C_in >= 64 also takes the TMA grad_weight in 16-bit floats)
            c_in, c_out = rng.choice(TMA_C_IN), rng.choice(TMA_C_OUT)
            output_padding = (0, 0, 0)
        size = tuple(_input_size(rng, *a, max_out) for a in zip(kernel, stride, padding, dilation, output_padding))
        if None in size:
            continue
        if tma:  # the output_padding that makes every output size a multiple of its stride
            unpadded = _out_size(size, kernel, stride, padding, dilation, (0, 0, 0))
            output_padding = tuple(-o % s for o, s in zip(unpadded, stride))
        if smoke:
            variants = (variant_cycle[i % len(variant_cycle)],)
        else:  # every dtype; exact fp32 on every other case, alternating between the exact precisions
            exact = EXACT_PRECISIONS[(i // 2) % len(EXACT_PRECISIONS)] if EXACT_PRECISIONS and i % 2 == 0 else None
            variants = (*DTYPES, *((f"fp32-{exact}",) if exact else ()))
        case = Case(
            name=f"rand-{i:03d}", kind="random", n=rng.choice((1, 2)), c_in=c_in, c_out=c_out, size=size,
            kernel=kernel, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
            groups=groups, bias=rng.random() < 0.6, variants=variants,
            x_layout="channels_last" if tma else rng.choice(X_LAYOUTS),
            w_layout=rng.choice(("contiguous", "contiguous", "permute")),
            b_layout=rng.choice(("contiguous", "contiguous", "strided")), g_layout=rng.choice(G_LAYOUTS),
            cl_backward=i % 3 == 1, pin=geo_id, seed=seed * 100_000 + i,
        )
        if case.macs <= mac_cap:
            cases.append(case)
    return cases


def decoder_tasks(smoke: bool, seed: int) -> list[list[Case]]:
    """The U-Net decoder shapes, one task (run in one process, sharing its autotuning) per shape and kernel:
    NCDHW in every variant, then bf16 in channels_last_3d; the bf16 runs (fp32 in smoke mode, which has no NCDHW
    bf16) also under torch.compile."""
    tasks = []
    shapes = DECODER_SMOKE if smoke else DECODER
    kernels = dict(list(KERNELS.items())[:1]) if smoke else KERNELS
    for n, c_in, c_out, size in shapes:
        for kname, (k, s, p, op) in kernels.items():
            base = Case(
                name=f"dec-{c_in}to{c_out}-{size}^3-{kname}", kind="decoder", n=n, c_in=c_in, c_out=c_out,
                size=(size,) * 3, kernel=(k,) * 3, stride=(s,) * 3, padding=(p,) * 3, output_padding=(op,) * 3,
                dilation=(1, 1, 1), groups=1, bias=True,
                variants=(("fp32",) if smoke else tuple(DTYPES)) + tuple(f"fp32-{e}" for e in EXACT_PRECISIONS),
                ref_on_device=True, seed=seed + 7 * size + k, compiled=("fp32",) if smoke else ("bf16",),
            )
            cl = replace(base, name=base.name + "-cl", variants=("bf16",), x_layout="channels_last",
                         g_layout="channels_last", compiled=("bf16",))
            tasks.append([base, cl])
    return tasks


# --------------------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------------------
def _poison(nbytes: int, device: torch.device) -> None:
    """Leave a block of NaN bytes (0xFF: NaN in fp32, bf16 and fp16) in the CUDA caching allocator, so that the
    next allocation of this size (the op's output) starts as NaN. Best effort; no-op on the CPU."""
    if device.type == "cuda" and nbytes > 0:
        torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(0xFF)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` with the same values laid out as ``layout``, detached as a leaf."""
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "channels_last":
        out = t.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "slice":  # a view into a wider buffer: non-contiguous, non-zero storage offset
        wide = torch.randn((*t.shape[:-1], t.shape[-1] + 3), dtype=t.dtype, device=t.device)
        out = wide[..., 1:1 + t.shape[-1]]
        out.copy_(t)
    elif layout == "permute":  # storage order (0, 2, 4, 3, 1), viewed back in the logical order
        out = t.permute(0, 2, 4, 3, 1).contiguous().permute(0, 4, 1, 3, 2)
    elif layout == "strided":  # 1-D: every other element of a buffer twice as long
        wide = torch.randn(2 * t.numel(), dtype=t.dtype, device=t.device)
        out = wide[::2]
        out.copy_(t)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out.detach()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (the absolute norm when ref is zero); NaN if out is not finite."""
    diff = (out.detach().to(ref.device, torch.float64) - ref).norm().item()
    den = ref.norm().item()
    return diff / den if den > 0 else diff


def phase_errors(out: torch.Tensor, ref: torch.Tensor, stride: Triple) -> dict[str, float]:
    """Relative error per stride phase of the output ("101": odd d, even h, odd w for stride 2)."""
    errs = {}
    sd, sh, sw = stride
    for rd in range(sd):
        for rh in range(sh):
            for rw in range(sw):
                r = ref[:, :, rd::sd, rh::sh, rw::sw]
                if r.numel():
                    errs[f"{rd}{rh}{rw}"] = rel_err(out[:, :, rd::sd, rh::sh, rw::sw], r)
    return errs


def _master(case: Case) -> dict[str, torch.Tensor]:
    """Seeded fp32 values of x, weight, bias and grad_output on the CPU (never zeros)."""
    gen = torch.Generator().manual_seed(case.seed)
    fan = case.c_in // case.groups * math.prod(case.kernel) / math.prod(case.stride)
    vals = {
        "x": torch.randn(case.n, case.c_in, *case.size, generator=gen),
        "w": torch.randn(case.c_in, case.c_out // case.groups, *case.kernel, generator=gen) / math.sqrt(fan),
        "gy": torch.randn(case.n, case.c_out, *case.out_size, generator=gen),
    }
    if case.bias:
        vals["b"] = torch.randn(case.c_out, generator=gen)
    return vals


def _conv_args(case: Case) -> dict:
    return {"stride": case.stride, "padding": case.padding, "output_padding": case.output_padding,
            "groups": case.groups, "dilation": case.dilation}


def reference(case: Case, vals: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """float64 torch forward and gradients on ``device`` from the (already dtype-rounded) values."""
    t = {k: v.to(device, torch.float64).requires_grad_(k != "gy") for k, v in vals.items()}
    y = F.conv_transpose3d(t["x"], t["w"], t.get("b"), **_conv_args(case))
    leaves = [t["x"], t["w"]] + ([t["b"]] if case.bias else [])
    grads = torch.autograd.grad(y, leaves, t["gy"])
    return dict(zip(TENSORS, (y.detach(), *grads)))


def _compiled_op() -> Callable[..., torch.Tensor]:
    """``conv_transpose3d`` under a fresh torch.compile (fullgraph: the custom op; aot_eager: no inductor code, so
    that what runs is the op's own kernels)."""
    torch._dynamo.reset()  # a new graph per case: no recompile limit can fall back to eager unnoticed
    return torch.compile(ops.conv_transpose3d, backend="aot_eager", fullgraph=True)


def run_op(case: Case, vals: dict[str, torch.Tensor], device: torch.device,
           precision: str | None, compiled: bool = False) -> dict[str, torch.Tensor]:
    """The op under test (under torch.compile when ``compiled``), forward and backward, on tensors laid out as the
    case says."""
    x = _layout(vals["x"].to(device), case.x_layout).requires_grad_()
    w = _layout(vals["w"].to(device), case.w_layout).requires_grad_()
    b = _layout(vals["b"].to(device), case.b_layout).requires_grad_() if case.bias else None
    gy = _layout(vals["gy"].to(device), case.g_layout)
    kwargs = {} if precision is None else {"precision": precision}
    _poison(gy.numel() * gy.element_size(), device)
    op = _compiled_op() if compiled else ops.conv_transpose3d
    y = op(x, w, b, **_conv_args(case), **kwargs)
    _poison(x.numel() * x.element_size(), device)
    with channels_last_backward_from(0) if case.cl_backward else contextlib.nullcontext():
        grads = torch.autograd.grad(y, [x, w] + ([b] if b is not None else []), gy)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return dict(zip(TENSORS, (y.detach(), *grads)))


def check_variant(case: Case, variant: str, vals: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                  device: torch.device) -> dict:
    """Run one variant of a case and compare it with the reference; a JSON-able result."""
    dtype, precision, bound = variant_spec(variant)
    result = {"case": case.name, "kind": case.kind, "variant": variant, "desc": case.describe(), "bound": bound,
              "errors": {}, "phase_errors": {}, "problems": [], "warnings": []}
    start = time.perf_counter()
    try:
        try:
            with pinned_configs(case.pin):
                got = run_op(case, vals, device, precision)
                again = run_op(case, vals, device, precision)
        except OutOfResources as exc:  # a pinned config the autotuner would have skipped
            result["warnings"].append(f"pinned config out of resources ({exc}); autotuned instead")
            got = run_op(case, vals, device, precision)
            again = run_op(case, vals, device, precision)
        result["problems"] += [f"{name}: the second (cached-launch) run differs from the first"
                               for name in TENSORS if name in got and not torch.equal(got[name], again[name])]
        if variant in case.compiled:
            result["errors_compiled"] = _check_compiled(case, vals, ref, got, device, precision, bound,
                                                        result["problems"])
        for name in TENSORS:
            if name not in ref:
                continue
            out = got.get(name)
            if out is None:
                result["problems"].append(f"{name} missing")
                continue
            if out.shape != ref[name].shape or out.dtype != dtype:
                result["problems"].append(f"{name}: {tuple(out.shape)} {out.dtype}, expected "
                                          f"{tuple(ref[name].shape)} {dtype}")
                continue
            if not bool(torch.isfinite(out).all()):
                result["problems"].append(f"{name} has non-finite values (unwritten or overflow)")
            err = rel_err(out, ref[name])
            result["errors"][name] = err
            if not err <= bound:
                result["problems"].append(f"{name} error {err:.2e} > {bound:.0e}")
        if "y" in result["errors"] and math.prod(case.stride) > 1:
            phases = phase_errors(got["y"], ref["y"], case.stride)
            result["phase_errors"] = phases
            bad = {p: e for p, e in phases.items() if not e <= bound}
            if bad:
                result["problems"].append("y wrong in stride phases (d,h,w parity) "
                                          + ", ".join(f"{p}: {e:.2e}" for p, e in bad.items()))
        want = torch.channels_last_3d if case.x_layout == "channels_last" else torch.contiguous_format
        if not got["y"].is_contiguous(memory_format=want):
            result["warnings"].append(f"output is not {want} like torch's would be")
    except Exception as exc:  # noqa: BLE001 - every failure of the op is a finding to report, not a crash
        result["problems"].append(f"{type(exc).__name__}: {exc}".strip()[:500])
        result["traceback"] = traceback.format_exc(limit=6)
    result["ok"] = not result["problems"]
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _check_compiled(case: Case, vals: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                    eager: dict[str, torch.Tensor], device: torch.device, precision: str | None, bound: float,
                    problems: list[str]) -> dict[str, float]:
    """The case under torch.compile: the same forward as eager bit for bit (same kernels), gradients within the
    bound of the reference (grad_output may reach the backward in another layout). Appends to ``problems``."""
    got = run_op(case, vals, device, precision, compiled=True)
    if not torch.equal(got["y"], eager["y"]) or got["y"].stride() != eager["y"].stride():
        problems.append("compiled: y differs from eager (values or strides)")
    errors = {name: rel_err(got[name], ref[name]) for name in TENSORS[1:] if name in got and name in ref}
    problems += [f"compiled {name} error {e:.2e} > {bound:.0e}" for name, e in errors.items() if not e <= bound]
    return errors


def run_job(job: tuple[int, list[Case], str]) -> tuple[int, list[dict]]:
    """(index, cases, device name) -> (index, results): every variant of every case of one unit of work."""
    index, cases, device_name = job
    device = torch.device(device_name)
    results = []
    for case in cases:
        torch.manual_seed(case.seed)  # the padding around sliced / strided views
        masters = _master(case)
        refs: dict[torch.dtype, tuple[dict, dict]] = {}
        for variant in case.variants:
            dtype = variant_spec(variant)[0]
            if dtype not in refs:
                vals = {k: v.to(dtype) for k, v in masters.items()}
                ref_device = device if case.ref_on_device else torch.device("cpu")
                refs[dtype] = (vals, reference(case, vals, ref_device))
            results.append(check_variant(case, variant, *refs[dtype], device))
        del refs
    if device.type == "cuda":
        torch.cuda.empty_cache()  # workers share the card: give back what this job cached
    return index, results


def not_run(case: Case, variant: str) -> dict:
    """The failed result of a run that the time budget left out."""
    return {"case": case.name, "kind": case.kind, "variant": variant, "desc": case.describe(),
            "bound": variant_spec(variant)[2], "errors": {}, "phase_errors": {}, "ok": False, "seconds": 0.0,
            "problems": ["not run: time budget (--budget-s) exceeded"], "warnings": []}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------
# The > 2^31-element case
# --------------------------------------------------------------------------------------------------------
def large_case(device: torch.device, smoke: bool, seed: int) -> list[dict]:
    """bf16 forward, k2s2 with bias, whose output has more than 2^31 elements (tiny in smoke mode), in NCDHW
    and channels_last_3d; compared over D-chunks with cuDNN fp32 (TF32 off), overall and per stride phase."""
    n, c_in, c_out, size, chunk = (1, 3, 2, (6, 5, 4), 2) if smoke else (1, 32, 16, (272, 272, 256), 16)
    out_size = tuple(2 * s for s in size)
    numel = n * c_out * math.prod(out_size)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, c_in, *size, generator=gen, device=device).to(torch.bfloat16)
    w = (torch.randn(c_in, c_out, 2, 2, 2, generator=gen, device=device) / math.sqrt(c_in)).to(torch.bfloat16)
    b = torch.randn(c_out, generator=gen, device=device).to(torch.bfloat16)
    results = []
    for layout in ("channels_last", "contiguous"):
        name = f"large-{layout}"
        res = {"case": name, "kind": "large", "variant": "bf16", "bound": BOUNDS["bf16"], "errors": {},
               "phase_errors": {}, "problems": [], "warnings": [], "output_elements": numel,
               "desc": f"N{n} {c_in}->{c_out} in {size} k2 s2 bias x:{layout} -> out {out_size} "
                       f"({numel / 2**31:.2f} x 2^31 elements)"}
        start = time.perf_counter()
        try:
            xl = _layout(x, layout)
            _poison(numel * 2, device)
            y = ops.conv_transpose3d(xl, w, b, stride=2)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if tuple(y.shape) != (n, c_out, *out_size) or y.dtype != torch.bfloat16:
                raise RuntimeError(f"output {tuple(y.shape)} {y.dtype}")
            sq = {f"{d}{h}{w_}": [0.0, 0.0] for d in range(2) for h in range(2) for w_ in range(2)}
            finite = True
            tf32 = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
            try:
                for d0 in range(0, size[0], chunk):
                    ref = F.conv_transpose3d(x[:, :, d0:d0 + chunk].float(), w.float(), b.float(), stride=2)
                    out = y[:, :, 2 * d0:2 * d0 + ref.shape[2]].float()
                    finite &= bool(torch.isfinite(out).all())
                    for p, acc in sq.items():
                        sl = (slice(None), slice(None), *(slice(int(r), None, 2) for r in p))
                        acc[0] += (out[sl] - ref[sl]).double().pow(2).sum().item()
                        acc[1] += ref[sl].double().pow(2).sum().item()
                    del ref, out
            finally:
                torch.backends.cudnn.allow_tf32 = tf32
            res["phase_errors"] = {p: math.sqrt(e / r) for p, (e, r) in sq.items()}
            res["errors"]["y"] = math.sqrt(sum(e for e, _ in sq.values()) / sum(r for _, r in sq.values()))
            if not finite:
                res["problems"].append("y has non-finite values (unwritten or overflow)")
            bad = {p: e for p, e in res["phase_errors"].items() if not e <= BOUNDS["bf16"]}
            if not res["errors"]["y"] <= BOUNDS["bf16"] or bad:
                res["problems"].append(f"y error {res['errors']['y']:.2e}; phases over the bound: {bad}")
            del y, xl
        except Exception as exc:  # noqa: BLE001 - a crash here (e.g. an illegal address) is the finding
            res["problems"].append(f"{type(exc).__name__}: {exc}".strip()[:500])
            res["traceback"] = traceback.format_exc(limit=6)
        res["ok"] = not res["problems"]
        res["seconds"] = round(time.perf_counter() - start, 3)
        results.append(res)
        print(_line(res), flush=True)
        if not res["ok"] and "CUDA" in " ".join(res["problems"]):
            break  # a CUDA error is sticky: nothing more can run in this process
    return results


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------
def _line(res: dict) -> str:
    errs = " ".join(f"{k.replace('grad_', 'g')}={v:.1e}" for k, v in res["errors"].items())
    worst = max(res["phase_errors"].values(), default=float("nan"))
    phase = f" phase-max={worst:.1e}" if res["phase_errors"] else ""
    status = "ok  " if res["ok"] else "FAIL"
    msg = "" if res["ok"] else "  <- " + "; ".join(res["problems"])[:300]
    return f"{status} {res['case']:<28} {res['variant']:<11} {errs}{phase}{msg}"


def summarize(results: list[dict]) -> dict:
    """Per variant: runs, failures, bound and the maximum error per tensor and per direction."""
    summary: dict[str, dict] = {}
    for res in results:
        s = summary.setdefault(res["variant"], {"runs": 0, "failed": 0, "bound": res["bound"],
                                                "max_error": {}})
        s["runs"] += 1
        s["failed"] += not res["ok"]
        errs = dict(res["errors"])
        if res["phase_errors"]:
            errs["y_phase"] = max(res["phase_errors"].values())
        for k, v in errs.items():
            s["max_error"][k] = max(s["max_error"].get(k, 0.0), v)
        fwd = [v for k, v in errs.items() if k.startswith("y")]
        bwd = [v for k, v in errs.items() if k.startswith("grad")]
        for key, vals in (("forward", fwd), ("backward", bwd)):
            if vals:
                s["max_error"][key] = max(s["max_error"].get(key, 0.0), *vals)
    return summary


def coverage(cases: list[Case]) -> dict:
    """How often each argument feature occurs among the random cases."""
    def count(pred) -> int:
        return sum(1 for c in cases if pred(c))
    return {
        "cases": len(cases),
        "geometries": len({(c.kernel, c.stride, c.dilation, c.padding) for c in cases}),
        "anisotropic_kernel": count(lambda c: len(set(c.kernel)) > 1),
        "anisotropic_stride": count(lambda c: len(set(c.stride)) > 1),
        "stride_gt1": count(lambda c: max(c.stride) > 1),
        "output_padding": count(lambda c: max(c.output_padding) > 0),
        "dilation2": count(lambda c: max(c.dilation) > 1),
        "padding": count(lambda c: max(c.padding) > 0),
        "groups": {g: count(lambda c, g=g: c.groups == g) for g in (1, 2, 4)},
        "batch2": count(lambda c: c.n == 2),
        "bias": count(lambda c: c.bias),
        "channels_not_mult16": count(lambda c: c.c_in % 16 or c.c_out % 16),
        "tma_shaped": count(lambda c: c.x_layout == "channels_last" and c.groups == 1 and c.dilation == (1, 1, 1)
                            and c.c_in % 8 == 0 and c.c_out % 4 == 0
                            and all(o % s == 0 for o, s in zip(c.out_size, c.stride))),
        "odd_size": count(lambda c: any(s % 2 for s in c.size)),
        "x_layout": {lay: count(lambda c, lay=lay: c.x_layout == lay) for lay in X_LAYOUTS},
        "g_layout": {lay: count(lambda c, lay=lay: c.g_layout == lay) for lay in G_LAYOUTS},
        "weight_permuted": count(lambda c: c.w_layout == "permute"),
        "bias_strided": count(lambda c: c.bias and c.b_layout == "strided"),
        "max_output": max((max(c.out_size) for c in cases), default=0),
        "max_channels": max((max(c.c_in, c.c_out) for c in cases), default=0),
    }


def write_reports(report: dict, out: Path) -> None:
    """JSON at ``out`` and a short markdown summary beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    env = report["environment"]
    lines = [
        "# ConvTranspose3d GPU correctness check",
        "",
        f"{env['date']} · {env['device']} · torch {env['torch']} · Triton {env['triton']} · cuDNN {env['cudnn']}"
        f" · backend {env['backend']} · mode {report['mode']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}**: {report['counts']['runs']} runs over "
        f"{report['counts']['cases']} argument combinations ({report['counts']['random']} random, "
        f"{report['counts']['decoder']} decoder, {report['counts']['large']} > 2^31), "
        f"{report['counts']['failures']} failed, {report['elapsed_s']:.0f} s.",
        "",
        "Relative norm error ||out - ref|| / ||ref|| (max over runs). References: " + "; ".join(
            f"{k}: {v}" for k, v in report["reference"].items()) + ".",
        "",
        "| variant | runs | failed | bound | y | y worst phase | grad_input | grad_weight | grad_bias |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in report["summary"].items():
        e = s["max_error"]
        cells = [f"{e[k]:.1e}" if k in e else "-" for k in ("y", "y_phase", "grad_input", "grad_weight",
                                                             "grad_bias")]
        lines.append(f"| {variant} | {s['runs']} | {s['failed']} | {s['bound']:.0e} | " + " | ".join(cells) + " |")
    lines += ["", "| > 2^31 case | output elements | error | worst phase | ok |", "|---|---|---|---|---|"]
    for res in report["large"]:
        err = res["errors"].get("y")
        worst = max(res["phase_errors"].values(), default=None)
        lines.append(f"| {res['desc']} | {res['output_elements']:,} | {'-' if err is None else f'{err:.1e}'} | "
                     f"{'-' if worst is None else f'{worst:.1e}'} | {'yes' if res['ok'] else 'NO'} |")
    if report["failures"]:
        lines += ["", "## Failures", ""]
        lines += [f"- `{f['case']}` {f['variant']} ({f['desc']}): {'; '.join(f['problems'])}"
                  for f in report["failures"][:40]]
        if len(report["failures"]) > 40:
            lines.append(f"- … and {len(report['failures']) - 40} more (see the JSON)")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def print_table(summary: dict) -> None:
    print(f"\n{'variant':<12}{'runs':>6}{'fail':>6}{'bound':>8}" + "".join(f"{k:>13}" for k in (
        "y", "y_phase", "grad_input", "grad_weight", "grad_bias")))
    for variant, s in summary.items():
        e = s["max_error"]
        print(f"{variant:<12}{s['runs']:>6}{s['failed']:>6}{s['bound']:>8.0e}" + "".join(
            f"{e[k]:>13.2e}" if k in e else f"{'-':>13}" for k in ("y", "y_phase", "grad_input", "grad_weight",
                                                                   "grad_bias")))


# --------------------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "kernel_check_gpu.json",
                   help="JSON report path; a .md summary is written beside it")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes and few cases; on a machine without CUDA runs the Triton interpreter")
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--random", type=int, default=None, help="random cases (default 200; smoke 3)")
    p.add_argument("--geometries", type=int, default=None,
                   help="distinct (kernel, stride, dilation, padding) among the random cases; 0 = one per case "
                        "(default 40; smoke 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes for the random and decoder cases (default: CPU count, at most 16, on "
                        "CUDA; 0 in smoke mode = run in this process)")
    p.add_argument("--no-large", action="store_true", help="skip the > 2^31-element case")
    p.add_argument("--budget-s", type=float, default=285.0,
                   help="wall-clock budget; cases not finished by then count as failures (default 285)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
    device = torch.device("cuda" if torch.cuda.is_available() and not interp else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("check_kernel_gpu.py needs a CUDA GPU; use --smoke to exercise it on the CPU", file=sys.stderr)
        return 2
    n_random = args.random if args.random is not None else (3 if args.smoke else 200)
    geometries = args.geometries if args.geometries is not None else (0 if args.smoke else 40)
    workers = args.workers if args.workers is not None else (0 if args.smoke else min(16, os.cpu_count() or 1))
    start = time.perf_counter()
    env = environment(device)
    print(f"{env['device']} | torch {env['torch']} | Triton {env['triton']} | cuDNN {env['cudnn']} | "
          f"backend {env['backend']} | workers {workers}", flush=True)

    cases = random_cases(n_random, args.seed, geometries, args.smoke)
    dec = decoder_tasks(args.smoke, args.seed)
    tasks = dec + [[c] for c in cases]  # heaviest first
    deadline = start + args.budget_s
    results: list[dict] = []
    done: set[int] = set()

    def collect(index: int, task_results: list[dict]) -> None:
        done.add(index)
        for res in task_results:
            results.append(res)
            print(f"[{time.perf_counter() - start:6.1f}s] {_line(res)}", flush=True)

    jobs = [(i, t, device.type) for i, t in enumerate(tasks)]
    if workers > 0:
        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
            pending = pool.imap_unordered(run_job, jobs)
            large = [] if args.no_large else large_case(device, args.smoke, args.seed)
            try:
                for _ in jobs:
                    collect(*pending.next(timeout=max(0.0, deadline - time.perf_counter())))
            except mp.TimeoutError:
                pool.terminate()
    else:
        for job in jobs:
            if time.perf_counter() > deadline:
                break
            collect(*run_job(job))
        large = [] if args.no_large else large_case(device, args.smoke, args.seed)
    results += [not_run(case, variant) for i, t in enumerate(tasks) if i not in done for case in t
                for variant in case.variants]
    order = {t[0].name: i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: (order.get(r["case"].removesuffix("-cl"), 0), r["case"], r["variant"]))

    everything = results + large
    failures = [{k: r[k] for k in ("case", "variant", "desc", "problems")} for r in everything if not r["ok"]]
    summary = summarize(everything)
    print_table(summary)
    report = {
        "script": "scripts/check_kernel_gpu.py",
        "mode": "smoke" if args.smoke else "full",
        "environment": env,
        "device": env["device"], "torch": env["torch"], "triton": env["triton"], "cudnn": env["cudnn"],
        "reference": {
            "random": "float64 torch on the CPU",
            "decoder": f"float64 torch on the {device.type.upper()} (cuDNN/torch float64: exact enough, "
                       "rounding ~1e-16)",
            "large": f"{'cuDNN' if device.type == 'cuda' else 'torch CPU'} fp32 with TF32 off over D-chunks (bf16 "
                     "inputs and their products are exact in fp32)",
        },
        "bounds": {**BOUNDS, **{f"fp32-{p}": EXACT_BOUND for p in EXACT_PRECISIONS}},
        "settings": {"seed": args.seed, "random_cases": n_random, "geometries": geometries, "workers": workers,
                     "random_cases_autotune": "pinned per geometry, rotating over each autotuner's configs",
                     "autotuners_found": len(autotuners())},
        "coverage": coverage(cases),
        "summary": summary,
        "large": large,
        "counts": {"cases": len(cases) + sum(len(t) for t in dec) + len(large), "random": len(cases),
                   "decoder": sum(len(t) for t in dec), "large": len(large), "runs": len(everything),
                   "failures": len(failures)},
        "failures": failures,
        "warnings": sorted({f"{r['case']} {r['variant']}: {w}" for r in everything for w in r["warnings"]}),
        "passed": not failures and bool(everything),
        "elapsed_s": round(time.perf_counter() - start, 1),
        "results": results,
    }
    write_reports(report, args.out)
    print(f"\n{'PASSED' if report['passed'] else 'FAILED'}: {len(everything)} runs, {len(failures)} failed, "
          f"{report['elapsed_s']:.0f} s -> {args.out} (+ .md)")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
