#!/usr/bin/env python
"""Benchmark ``app.kernels.conv_transpose3d`` against cuDNN and the seed kernel (issues 2 and 6).

Shapes: the U-Net decoder shapes of issue 2 (N=2; 256->128 at 8^3, 128->64 at 16^3, 64->32 at 32^3 and 64^3;
k2s2, k3s2p1op1, k4s2p1) and issue 6's a) 2, 64->32, 64^3, k2s2  b) 2, 256->128, 16^3, k2s2
c) 1, 32->16, 96^3, k3s2p1op1  d) 2, 64->32, 32^3, k4s2p1 (a and d are decoder shapes too); bias on; fp32 (TF32
dots for both, the default of each) and bf16.

Per shape and dtype, the median time of
  * ours, forward and forward+backward (grad_input, grad_weight, grad_bias), NCDHW and channels_last_3d inputs;
  * cuDNN (torch.backends.cudnn.benchmark on), the same four; its best configuration is the faster layout;
  * the seed kernel (scripts/baselines), forward, NCDHW, with its error: it is wrong for k2s2 on the GPU;
  * fp32 only: the op's exact-fp32 precisions (forward, in our faster layout) against cuDNN with TF32 off.
Timing: triton.testing.do_bench (median; L2 flushed before every rep) after warm-up, on fresh seeded torch.randn
inputs (never zeros); cuDNN and ours run in the same process on the same tensors. The card's copy bandwidth
(device-to-device copy, bytes read + written) gives each case's memory floor = bytes(x + w + b + y) / bandwidth
(forward; forward+backward adds reading grad_y, x, w and writing grad_x, grad_w, grad_b) and %-of-floor.
Before measuring, worker processes compile every autotune configuration of the kernels the shapes need (Triton
compilation, not the GPU, is what takes time); the measuring process then autotunes as users get it.

GPU:  python scripts/bench_conv_transpose3d.py [--out benchmarks/conv_transpose3d_bench.json]
CPU:  python scripts/bench_conv_transpose3d.py --smoke --out /tmp/bench.json  (interpreter; timings meaningless,
      torch's CPU operator stands in for cuDNN)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

if "--smoke" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import triton  # noqa: E402
import triton.testing  # noqa: E402

import app.kernels as ops  # noqa: E402
import app.kernels.functional as functional  # noqa: E402
import app.kernels.triton_kernels as kernels  # noqa: E402
from bench_env import (  # noqa: E402
    autotune_choices, autotuners, channels_last_backward_from, environment, own_times_us, pinned_configs)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BOUNDS = {"fp32": 2e-3, "bf16": 2e-2}
EXACT_PRECISIONS = tuple(p for p in getattr(ops, "PRECISIONS", ()) if p != "tf32")
LAYOUTS = ("ncdhw", "channels_last")
WARMUP_MS, REP_MS = 10, 60
SEED = 20261127


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: N, C_in -> C_out at a cubic input size, cubic kernel/stride/padding/output_padding."""

    name: str
    n: int
    c_in: int
    c_out: int
    size: int
    k: int
    s: int
    p: int
    op: int
    tags: tuple[str, ...]

    @property
    def out(self) -> int:
        return (self.size - 1) * self.s - 2 * self.p + self.k + self.op

    def conv(self) -> dict:
        return {"stride": self.s, "padding": self.p, "output_padding": self.op}


DECODER = ((256, 128, 8), (128, 64, 16), (64, 32, 32), (64, 32, 64))


def shapes(smoke: bool) -> list[Shape]:
    """Issue 2's decoder shapes and issue 6's a-d (deduplicated, tagged with where they come from)."""
    kernels = {"k2s2": (2, 2, 0, 0), "k3s2p1op1": (3, 2, 1, 1), "k4s2p1": (4, 2, 1, 0)}
    if smoke:
        return [Shape("smoke 1, 3->2, 2^3, k2s2", 1, 3, 2, 2, 2, 2, 0, 0, ("decoder", "issue6-a"))]
    issue6 = {(2, 64, 32, 64, "k2s2"): "a", (2, 256, 128, 16, "k2s2"): "b", (1, 32, 16, 96, "k3s2p1op1"): "c",
              (2, 64, 32, 32, "k4s2p1"): "d"}
    keys = [(2, ci, co, sz, kn) for ci, co, sz in DECODER for kn in kernels]
    keys += [k for k in issue6 if k not in keys]
    out = []
    for n, ci, co, sz, kn in keys:
        tags = (("decoder",) if (n, ci, co, sz) in [(2, *d) for d in DECODER] else ()) + (
            (f"issue6-{issue6[(n, ci, co, sz, kn)]}",) if (n, ci, co, sz, kn) in issue6 else ())
        out.append(Shape(f"{n}, {ci}->{co}, {sz}^3, {kn}", n, ci, co, sz, *kernels[kn], tags))
    return out


def load_seed():
    """The seed kernel module from scripts/baselines (not a package)."""
    path = REPO / "scripts" / "baselines" / "seed_conv_transpose3d.py"
    spec = importlib.util.spec_from_file_location("seed_conv_transpose3d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED_MODULE = load_seed()


def interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# --------------------------------------------------------------------------------------------------------
# Problems and timed callables
# --------------------------------------------------------------------------------------------------------
class Problem:
    """Seeded random tensors of one shape and dtype in both layouts, and the callables to time on them."""

    def __init__(self, shape: Shape, dtype: torch.dtype, device: torch.device) -> None:
        gen = torch.Generator(device=device).manual_seed(SEED + 1000 * shape.size + 10 * shape.k + shape.c_in)
        fan = shape.c_in * shape.k**3 / shape.s**3

        def randn(*size: int, scale: float = 1.0) -> torch.Tensor:
            return (torch.randn(size, generator=gen, device=device) * scale).to(dtype)
        self.shape = shape
        self.x = {"ncdhw": randn(shape.n, shape.c_in, *(shape.size,) * 3)}
        self.w = randn(shape.c_in, shape.c_out, *(shape.k,) * 3, scale=1 / math.sqrt(fan))
        self.b = randn(shape.c_out)
        self.gy = {"ncdhw": randn(shape.n, shape.c_out, *(shape.out,) * 3)}
        cl = torch.channels_last_3d
        self.x["channels_last"] = self.x["ncdhw"].contiguous(memory_format=cl)
        self.gy["channels_last"] = self.gy["ncdhw"].contiguous(memory_format=cl)
        self.w_cl = self.w.contiguous(memory_format=cl)

    def nbytes(self) -> dict[str, int]:
        """Bytes a perfect forward and forward+backward must move (each tensor read or written once)."""
        x, w, b, y = (t.numel() * t.element_size() for t in (self.x["ncdhw"], self.w, self.b, self.gy["ncdhw"]))
        fwd = x + w + b + y
        return {"fwd": fwd, "fwdbwd": fwd + (y + x + w) + (x + w + b)}

    def fn(self, impl: str, mode: str, layout: str, precision: str | None = None) -> Callable[[], object]:
        """The callable to time: impl "ours" / "cudnn" / "seed", mode "fwd" / "fwdbwd"."""
        x = self.x[layout]
        w = self.w_cl if impl == "cudnn" and layout == "channels_last" else self.w
        conv = self.shape.conv()
        if impl == "ours":
            kw = {} if precision is None else {"precision": precision}
            op = lambda x_, w_, b_: ops.conv_transpose3d(x_, w_, b_, **conv, **kw)  # noqa: E731
        elif impl == "cudnn":
            op = lambda x_, w_, b_: F.conv_transpose3d(x_, w_, b_, **conv)  # noqa: E731
        else:
            op = lambda x_, w_, b_: SEED_MODULE.triton_conv_transpose3d(x_, w_, b_, groups=1, **conv)  # noqa: E731
        if mode == "fwd":
            return lambda: op(x, w, self.b)
        leaves = tuple(t.detach().requires_grad_() for t in (x, w, self.b))
        gy = self.gy[layout]
        return lambda: torch.autograd.grad(op(*leaves), leaves, gy)


def takes_channels_last_route(shape: Shape) -> bool:
    """Whether an NCDHW backward of ``shape`` runs on channels_last_3d copies (``functional._backward_operands``)."""
    gemm = kernels.is_gemm_geometry((shape.k,) * 3, (shape.s,) * 3, (shape.p,) * 3, (1, 1, 1), (shape.size,) * 3,
                                    (shape.out,) * 3)
    return functional.backward_on_channels_last(shape.n * shape.c_out * shape.out ** 3, gemm)


def timeit(fn: Callable[[], object], device: torch.device) -> float:
    """Median milliseconds of ``fn`` (do_bench: warm-up, then L2 flushed before each rep). On the CPU, one
    wall-clock call: the smoke run only exercises the code, its numbers mean nothing."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return float(triton.testing.do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median"))


def graphed(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` captured in a CUDA graph (after warm-up calls on a side stream: autotuning, cudnn.benchmark), as its
    replay: the GPU work without the host's per-call cost (Python, dispatch, launches), as the layers run under
    ``compile=reduce-overhead``. On the CPU, ``fn`` itself."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


@contextlib.contextmanager
def cudnn_tf32(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


def reference(prob: Problem) -> torch.Tensor:
    """Forward reference: torch in fp32 with TF32 off (float64 on the CPU) from the same rounded values."""
    ref_dtype = torch.float32 if prob.w.is_cuda else torch.float64
    with cudnn_tf32(False):
        y = F.conv_transpose3d(prob.x["ncdhw"].to(ref_dtype), prob.w.to(ref_dtype), prob.b.to(ref_dtype),
                               **prob.shape.conv())
    return y.double()


# --------------------------------------------------------------------------------------------------------
# Precompilation (workers) and measurement (this process)
# --------------------------------------------------------------------------------------------------------
def precompile(unit: tuple[Shape, str, str]) -> None:
    """Run every callable of (shape, dtype name, device name) once under each autotune configuration index, so
    that the Triton disk cache holds every binary the measuring process's autotuning will ask for."""
    shape, dtype_name, device_name = unit
    device = torch.device(device_name)
    prob = Problem(shape, DTYPES[dtype_name], device)
    # under the interpreter nothing is compiled or tuned: one pass only exercises this path
    count = 1 if interpreter() else max((len(t.configs) for t in autotuners([SEED_MODULE]).values()), default=1)
    for index in range(count):
        with pinned_configs(index, [SEED_MODULE]):
            for layout in LAYOUTS:
                prob.fn("ours", "fwd", layout)()
                prob.fn("ours", "fwdbwd", layout)()
            if takes_channels_last_route(shape):
                with channels_last_backward_from(math.inf):
                    prob.fn("ours", "fwdbwd", "ncdhw")()
                if dtype_name == "fp32":
                    for precision in EXACT_PRECISIONS:
                        prob.fn("ours", "fwd", layout, precision)()
            prob.fn("seed", "fwd", "ncdhw")()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(shape: Shape, dtype_name: str, device: torch.device, bandwidth: float) -> dict:
    """Times, errors, floors and ratios of one shape and dtype."""
    prob = Problem(shape, DTYPES[dtype_name], device)
    bound = BOUNDS[dtype_name]
    ref = reference(prob)
    times: dict[str, dict] = {"ours": {}, "cudnn": {}}
    for impl in ("ours", "cudnn"):
        for mode in ("fwd", "fwdbwd"):
            times[impl][mode] = {lay: timeit(prob.fn(impl, mode, lay), device) for lay in LAYOUTS}
    errors = {f"ours_{lay}": rel_err(prob.fn("ours", "fwd", lay)(), ref) for lay in LAYOUTS}
    errors["seed"] = rel_err(prob.fn("seed", "fwd", "ncdhw")(), ref)
    times["seed"] = {"fwd": {"ncdhw": timeit(prob.fn("seed", "fwd", "ncdhw"), device)}}
    best = {impl: {mode: min(t.values()) for mode, t in modes.items()} for impl, modes in times.items()}
    graph_times = {impl: {mode: {lay: timeit(graphed(prob.fn(impl, mode, lay), device), device) for lay in LAYOUTS}
                          for mode in ("fwd", "fwdbwd")} for impl in ("ours", "cudnn")}
    graph_best = {impl: {mode: min(t.values()) for mode, t in modes.items()} for impl, modes in graph_times.items()}
    native_fwdbwd = None  # the NCDHW f+b without the channels_last_3d copies, where they are taken
    if takes_channels_last_route(shape):
        with channels_last_backward_from(math.inf):
            native_fwdbwd = timeit(prob.fn("ours", "fwdbwd", "ncdhw"), device)
    best_layout = min(LAYOUTS, key=lambda lay: times["ours"]["fwd"][lay])
    fwdbwd_layout = min(LAYOUTS, key=lambda lay: times["ours"]["fwdbwd"][lay])
    row = {
        **asdict(shape), "out": shape.out, "dtype": dtype_name, "bytes": prob.nbytes(), "times_ms": times,
        "best_ms": best, "ours_best_fwd_layout": best_layout,
        "ratio_cudnn_over_ours": {m: best["cudnn"][m] / best["ours"][m] for m in ("fwd", "fwdbwd")},
        "graphed_times_ms": graph_times, "graphed_best_ms": graph_best,
        "ratio_cudnn_over_ours_graphed": {m: graph_best["cudnn"][m] / graph_best["ours"][m]
                                          for m in ("fwd", "fwdbwd")},
        "errors_fwd": errors, "bound": bound, "ours_fwdbwd_ncdhw_without_cl_copies_ms": native_fwdbwd,
        "ours_ok": all(errors[f"ours_{lay}"] <= bound for lay in LAYOUTS), "seed_ok": errors["seed"] <= bound,
        "seed_over_ours_fwd": best["seed"]["fwd"] / best["ours"]["fwd"],
        "ours_fwdbwd_own_times_us": {"layout": fwdbwd_layout,
                                     "by_op": own_times_us(prob.fn("ours", "fwdbwd", fwdbwd_layout), device)},
    }
    floor = {m: b / bandwidth * 1e3 for m, b in row["bytes"].items()}
    row["floor_ms"] = floor
    row["pct_of_floor"] = {f"{impl}_{m}": 100 * floor[m] / best[impl][m] for impl in ("ours", "cudnn")
                           for m in ("fwd", "fwdbwd")}
    if dtype_name == "fp32" and EXACT_PRECISIONS:
        with cudnn_tf32(False):
            exact = {p: timeit(prob.fn("ours", "fwd", best_layout, p), device) for p in EXACT_PRECISIONS}
            cudnn_exact = {lay: timeit(prob.fn("cudnn", "fwd", lay), device) for lay in LAYOUTS}
            exact_err = {p: rel_err(prob.fn("ours", "fwd", best_layout, p)(), ref) for p in EXACT_PRECISIONS}
        row["exact_fp32"] = {"ours_ms": exact, "ours_layout": best_layout, "ours_errors": exact_err,
                             "cudnn_ms": cudnn_exact,
                             "ratio_cudnn_over_ours": {p: min(cudnn_exact.values()) / t for p, t in exact.items()}}
    return row


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (bytes read + bytes written)."""
    n = 2**28 if device.type == "cuda" else 2**22
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = timeit(lambda: dst.copy_(src), device)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """Geometric means of cuDNN/ours per dtype and mode, over all shapes and over issue 6's a-d; seed speed-ups
    where the seed is right; the exact-fp32 ratio."""
    out: dict[str, dict] = {}
    for dtype in DTYPES:
        rs = [r for r in rows if r["dtype"] == dtype]
        i6 = [r for r in rs if any(t.startswith("issue6") for t in r["tags"])]
        if not rs:
            continue
        seed_ok = [r["seed_over_ours_fwd"] for r in rs if r["seed_ok"]]
        out[dtype] = {
            **{f"cudnn_over_ours_{m}": {"all": geomean([r["ratio_cudnn_over_ours"][m] for r in rs]),
                                        "issue6_a_d": geomean([r["ratio_cudnn_over_ours"][m] for r in i6])}
               for m in ("fwd", "fwdbwd")},
            **{f"cudnn_over_ours_{m}_graphed": {
                "all": geomean([r["ratio_cudnn_over_ours_graphed"][m] for r in rs]),
                "issue6_a_d": geomean([r["ratio_cudnn_over_ours_graphed"][m] for r in i6])}
               for m in ("fwd", "fwdbwd")},
            "seed_over_ours_fwd_where_seed_correct": {"geomean": geomean(seed_ok),
                                                      "min": min(seed_ok) if seed_ok else None,
                                                      "shapes": len(seed_ok)},
            "seed_wrong_on": [r["name"] for r in rs if not r["seed_ok"]],
            "ours_wrong_on": [r["name"] for r in rs if not r["ours_ok"]],
        }
        exact = [r["exact_fp32"]["ratio_cudnn_over_ours"] for r in rs if "exact_fp32" in r]
        if exact:
            out[dtype]["exact_fp32_cudnn_over_ours_fwd"] = {p: geomean([e[p] for e in exact])
                                                            for p in EXACT_PRECISIONS}
    return out


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# ConvTranspose3d benchmark: ours (Triton) vs cuDNN vs the seed kernel",
        "",
        f"{env['date']} · {env['device']} · torch {env['torch']} · Triton {env['triton']} · cuDNN {env['cudnn']}"
        f" · mode {report['mode']} · copy bandwidth {report['copy_bandwidth_gbs']:.0f} GB/s",
        *(["", "Merged from runs of the same code (date and copy bandwidth above: the first run's):"]
          if "merged_from" in report else []),
        *[f"- run {i} ({run['date']}, `--only {run['only']}`, copy bandwidth {run['copy_bandwidth_gbs']:.0f} GB/s): "
          f"{'; '.join(run['rows'])}" for i, run in enumerate(report.get("merged_from", []), 1)],
        "",
        "Median ms (do_bench, L2 flushed per rep). cuDNN: benchmark=True, best of NCDHW / channels_last_3d (CL); "
        "fp32 = TF32 dots on both sides. ratio = cuDNN best / ours best (> 1: ours faster). %floor = memory "
        "floor (x + w + b + y bytes [+ backward tensors] / copy bandwidth) / time. Seed: forward, NCDHW; "
        "'wrong' = error above the dtype's bound.",
        "",
        "| shape | dtype | ours fwd NCDHW / CL | cuDNN fwd NCDHW / CL | fwd ratio | ours / cuDNN %floor | "
        "ours f+b NCDHW / CL | cuDNN f+b NCDHW / CL | f+b ratio | seed fwd (error) | seed / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        t = r["times_ms"]
        seed = f"{t['seed']['fwd']['ncdhw']:.3f} ({r['errors_fwd']['seed']:.1e}{'' if r['seed_ok'] else ' wrong'})"
        ours_flag = "" if r["ours_ok"] else " **WRONG**"
        lines.append(
            f"| {r['name']}{ours_flag} | {r['dtype']} | {t['ours']['fwd']['ncdhw']:.3f} / "
            f"{t['ours']['fwd']['channels_last']:.3f} | {t['cudnn']['fwd']['ncdhw']:.3f} / "
            f"{t['cudnn']['fwd']['channels_last']:.3f} | {r['ratio_cudnn_over_ours']['fwd']:.2f} | "
            f"{r['pct_of_floor']['ours_fwd']:.0f} / {r['pct_of_floor']['cudnn_fwd']:.0f} | "
            f"{t['ours']['fwdbwd']['ncdhw']:.3f} / {t['ours']['fwdbwd']['channels_last']:.3f} | "
            f"{t['cudnn']['fwdbwd']['ncdhw']:.3f} / {t['cudnn']['fwdbwd']['channels_last']:.3f} | "
            f"{r['ratio_cudnn_over_ours']['fwdbwd']:.2f} | {seed} | {r['seed_over_ours_fwd']:.2f} |")
    lines += ["", "| dtype | fwd ratio geomean (all / issue 6 a-d) | f+b ratio geomean (all / a-d) | "
              "seed/ours where seed right (geomean, min, n) | seed wrong on |", "|---|---|---|---|---|"]
    for dtype, s in report["summary"].items():
        sd = s["seed_over_ours_fwd_where_seed_correct"]
        lines.append(
            f"| {dtype} | {_f(s['cudnn_over_ours_fwd']['all'], '.2f')} / "
            f"{_f(s['cudnn_over_ours_fwd']['issue6_a_d'], '.2f')} | {_f(s['cudnn_over_ours_fwdbwd']['all'], '.2f')}"
            f" / {_f(s['cudnn_over_ours_fwdbwd']['issue6_a_d'], '.2f')} | {_f(sd['geomean'], '.2f')}, "
            f"{_f(sd['min'], '.2f')}, {sd['shapes']} | {len(s['seed_wrong_on'])} shapes |")
    lines += ["", "Host cost removed: each call replayed from a CUDA graph (as the layers run under "
              "`compile=reduce-overhead`), the same do_bench median with L2 flushed; best layout per side, ms:",
              "", "| shape | dtype | ours / cuDNN fwd | fwd ratio | ours / cuDNN f+b | f+b ratio |",
              "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        g, q = r["graphed_best_ms"], r["ratio_cudnn_over_ours_graphed"]
        lines.append(f"| {r['name']} | {r['dtype']} | {g['ours']['fwd']:.3f} / {g['cudnn']['fwd']:.3f} | "
                     f"{q['fwd']:.2f} | {g['ours']['fwdbwd']:.3f} / {g['cudnn']['fwdbwd']:.3f} | {q['fwdbwd']:.2f} |")
    lines += ["", "| dtype | graphed fwd ratio geomean (all / a-d) | graphed f+b ratio geomean (all / a-d) |",
              "|---|---|---|"]
    for dtype, s in report["summary"].items():
        gf, gb = s["cudnn_over_ours_fwd_graphed"], s["cudnn_over_ours_fwdbwd_graphed"]
        lines.append(f"| {dtype} | {_f(gf['all'], '.2f')} / {_f(gf['issue6_a_d'], '.2f')} | "
                     f"{_f(gb['all'], '.2f')} / {_f(gb['issue6_a_d'], '.2f')} |")
    for f in report["failed"]:
        lines.append(f"\nFAILED {f['shape']} {f['dtype']}: {f['error']}")
    if report["skipped_for_time_budget"]:
        lines += ["", "Not measured (time budget): " + ", ".join(report["skipped_for_time_budget"])]
    route_rows = [r for r in report["rows"] if r.get("ours_fwdbwd_ncdhw_without_cl_copies_ms") is not None]
    if route_rows:
        lines += ["", "NCDHW forward + backward of ours, ms: the backward on channels_last_3d copies (taken from "
                  "`CHANNELS_LAST_BACKWARD_MIN_NUMEL` grad_output elements) against the same on the NCDHW tensors:",
                  "", "| shape | dtype | on CL copies (default) | on NCDHW tensors |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['dtype']} | {r['times_ms']['ours']['fwdbwd']['ncdhw']:.3f} | "
                  f"{r['ours_fwdbwd_ncdhw_without_cl_copies_ms']:.3f} |" for r in route_rows]
    lines += ["", "Where ours' forward + backward spends its time, in its faster layout: own device time per call by "
              "kernel (µs, torch.profiler, 5 calls, L2 not flushed; CPU op time in smoke mode), the largest first:",
              "", "| shape | dtype | layout | f+b ms | kernels |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        parts = r["ours_fwdbwd_own_times_us"]
        lines.append(f"| {r['name']} | {r['dtype']} | {parts['layout']} | {r['best_ms']['ours']['fwdbwd']:.3f} | "
                     + ", ".join(f"{name[:40]} {us:.0f}" for name, us in parts["by_op"].items()) + " |")
    exact_rows = [r for r in report["rows"] if "exact_fp32" in r]
    if exact_rows:
        names = list(exact_rows[0]["exact_fp32"]["ours_ms"])
        lines += ["", "Exact fp32 (cuDNN with TF32 off, best layout; ours in its faster layout), forward ms:", "",
                  "| shape | " + " | ".join(f"ours {p} (error)" for p in names) + " | cuDNN NCDHW / CL | ratios |",
                  "|---|" + "---|" * (len(names) + 2)]
        for r in exact_rows:
            e = r["exact_fp32"]
            lines.append(f"| {r['name']} | " + " | ".join(
                f"{e['ours_ms'][p]:.3f} ({e['ours_errors'][p]:.0e})" for p in names)
                + f" | {e['cudnn_ms']['ncdhw']:.3f} / {e['cudnn_ms']['channels_last']:.3f} | "
                + ", ".join(f"{p} {v:.2f}" for p, v in e["ratio_cudnn_over_ours"].items()) + " |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "conv_transpose3d_bench.json",
                   help="JSON path; the markdown table is written beside it (.md)")
    p.add_argument("--smoke", action="store_true",
                   help="one tiny shape; on a machine without CUDA runs the Triton interpreter")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that precompile the Triton kernels first (default: CPU count, at most 16, on "
                        "CUDA; 0 in smoke mode)")
    p.add_argument("--only", default=None,
                   help="measure only the shapes with a tag starting with this, e.g. issue6 (a-d) or decoder")
    p.add_argument("--budget-s", type=float, default=225.0,
                   help="no new shape is started after this many seconds; skipped ones are listed (default 225)")
    p.add_argument("--precompile-budget-s", type=float, default=90.0,
                   help="the precompile phase stops after this many seconds (default 90)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="measure nothing: merge these reports of one card and software (e.g. a run and a second run "
                        "of the shapes its budget skipped) into --out; a shape measured twice keeps the first row")
    return p.parse_args()


def merge_reports(paths: list[Path]) -> dict:
    """One report from several runs' reports (same device, torch, Triton, cuDNN): their rows in shape order (the
    first file's row where several measured a shape and dtype), what none measured as skipped, the runs listed."""
    reports = [json.loads(path.read_text()) for path in paths]
    versions = {tuple(r[k] for k in ("device", "torch", "triton", "cudnn")) for r in reports}
    if len(versions) != 1:
        raise SystemExit(f"--merge: the reports come from different cards or software: {sorted(versions)}")
    rows: dict[tuple[str, str], dict] = {}
    for report in reports:
        for row in report["rows"]:
            rows.setdefault((row["name"], row["dtype"]), row)
    order = {(shape.name, dt): i for i, (shape, dt) in enumerate((s, d) for s in shapes(False) for d in DTYPES)}
    merged_rows = sorted(rows.values(), key=lambda r: order.get((r["name"], r["dtype"]), len(order)))
    skipped = sorted({name for r in reports for name in r["skipped_for_time_budget"]}
                     - {f"{name} {dt}" for name, dt in rows})
    first = reports[0]
    return {**first, "rows": merged_rows, "skipped_for_time_budget": skipped,
            "failed": [f for r in reports for f in r["failed"]], "summary": summarize(merged_rows),
            "merged_from": [{"file": path.name, "date": r["date"], "only": r["settings"]["only"],
                             "copy_bandwidth_gbs": r["copy_bandwidth_gbs"], "elapsed_s": r["elapsed_s"]["total"],
                             "rows": [f"{row['name']} {row['dtype']}" for row in r["rows"]]}
                            for path, r in zip(paths, reports)]}


def write_report(report: dict, out: Path) -> None:
    """The report as JSON at ``out`` and as markdown beside it (.md)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def main() -> int:
    args = parse_args()
    if args.merge:
        report = merge_reports(args.merge)
        write_report(report, args.out)
        print(f"-> {args.out} (+ .md): {len(report['rows'])} rows from {len(args.merge)} runs")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not interpreter() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("bench_conv_transpose3d.py needs a CUDA GPU; use --smoke to exercise it on the CPU", file=sys.stderr)
        return 2
    if interpreter():  # the seed's autotuner cannot benchmark in the interpreter: one fixed config
        SEED_MODULE.conv_transpose3d_gemm_kernel.configs = SEED_MODULE.conv_transpose3d_gemm_kernel.configs[:1]
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    workers = args.workers if args.workers is not None else (0 if args.smoke else min(16, os.cpu_count() or 1))
    start = time.perf_counter()
    env = environment(device)
    print(f"{env['device']} | torch {env['torch']} | Triton {env['triton']} | cuDNN {env['cudnn']} | "
          f"backend {env['backend']}", flush=True)
    chosen = [s for s in shapes(args.smoke) if args.only is None or any(t.startswith(args.only) for t in s.tags)]
    if not chosen:
        print(f"no shape has a tag starting with {args.only!r}", file=sys.stderr)
        return 2
    units = [(shape, dt) for shape in chosen for dt in DTYPES]
    if workers > 0:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            pending = pool.imap_unordered(precompile, [(shape, dt, device.type) for shape, dt in units])
            try:
                for _ in units:
                    pending.next(timeout=max(0.0, start + args.precompile_budget_s - time.perf_counter()))
            except mp.TimeoutError:
                pool.terminate()  # what is left compiles lazily while measuring
        print(f"precompile phase {time.perf_counter() - start:.0f} s", flush=True)
    t_measure = time.perf_counter()
    bandwidth = copy_bandwidth(device)
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
    rows, skipped, failed = [], [], []
    for shape, dt in units:
        if time.perf_counter() > start + args.budget_s:
            skipped.append(f"{shape.name} {dt}")
            continue
        try:
            row = measure(shape, dt, device, bandwidth)
        except Exception as exc:  # noqa: BLE001 - record it and go on with the other shapes
            failed.append({"shape": shape.name, "dtype": dt, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(f"{shape.name:<28} {dt}  FAILED: {failed[-1]['error']}", flush=True)
            continue
        rows.append(row)
        t = row["best_ms"]
        print(f"{shape.name:<28} {dt}  fwd ours {t['ours']['fwd']:.3f} cuDNN {t['cudnn']['fwd']:.3f} "
              f"x{row['ratio_cudnn_over_ours']['fwd']:.2f} | f+b ours {t['ours']['fwdbwd']:.3f} cuDNN "
              f"{t['cudnn']['fwdbwd']:.3f} x{row['ratio_cudnn_over_ours']['fwdbwd']:.2f} | seed "
              f"{t['seed']['fwd']:.3f} err {row['errors_fwd']['seed']:.1e}"
              f"{'' if row['ours_ok'] else '  OURS WRONG ' + str(row['errors_fwd'])}", flush=True)
    report = {
        "script": "scripts/bench_conv_transpose3d.py",
        "mode": "smoke" if args.smoke else "full",
        "environment": env,
        "device": env["device"], "torch": env["torch"], "triton": env["triton"], "cudnn": env["cudnn"],
        "date": env["date"],
        "settings": {
            "timer": "triton.testing.do_bench median" if device.type == "cuda" else "one wall-clock call (CPU)",
            "warmup_ms": WARMUP_MS, "rep_ms": REP_MS, "l2": "flushed by do_bench before every rep",
            "inputs": "seeded torch.randn per shape and dtype, never zeros", "cudnn_benchmark": True,
            "cudnn_allow_tf32": True, "bias": True, "precompile_workers": workers, "only": args.only,
            "reference_for_errors": "torch fp32 with TF32 off (float64 on the CPU)",
        },
        "copy_bandwidth_gbs": bandwidth / 1e9,
        "rows": rows,
        "skipped_for_time_budget": skipped,
        "autotune_choices": autotune_choices(),
        "failed": failed,
        "summary": summarize(rows),
        "elapsed_s": {"total": round(time.perf_counter() - start, 1),
                      "precompile": round(t_measure - start, 1),
                      "measure": round(time.perf_counter() - t_measure, 1)},
    }
    write_report(report, args.out)
    print(markdown(report))
    print(f"-> {args.out} (+ .md), {report['elapsed_s']['total']:.0f} s"
          + (f"; SKIPPED (time budget): {skipped}" if skipped else "") + (f"; FAILED: {failed}" if failed else ""))
    return 1 if skipped or failed else 0


if __name__ == "__main__":
    sys.exit(main())
