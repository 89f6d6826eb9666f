"""The next probes' shared problem set-up: a channels_last_3d stride-2 transposed convolution on the GPU, its
operands in a dtype and its float64 reference."""
import torch
import torch.nn.functional as F

from app.kernels import triton_kernels as tk

DEVICE = torch.device("cuda")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def stride2_problem(n: int, c_in: int, c_out: int, size: int, k: int, p: int, op: int, dt: str) -> tuple:
    """(x, w, b, y, flags, ref): seeded x (n, c_in, size³) channels_last_3d, w (c_in, c_out, k³), b in ``dt``, an
    empty channels_last_3d y, the TMA forward's flags (bias, TF32) and the float64 reference of stride 2, padding p,
    output_padding op."""
    g = torch.Generator(device=DEVICE).manual_seed(5)
    x = torch.randn(n, c_in, size, size, size, device=DEVICE, generator=g, dtype=torch.float64)
    w = torch.randn(c_in, c_out, k, k, k, device=DEVICE, generator=g, dtype=torch.float64) / 8
    b = torch.randn(c_out, device=DEVICE, generator=g, dtype=torch.float64)
    ref = F.conv_transpose3d(x, w, b, 2, p, op)
    dtype = DTYPES[dt]
    y = torch.empty(ref.shape, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
    flags = {"HAS_BIAS": True, "INDEX_64": False, **tk._dtype_flags(dtype, "tf32")}
    return (x.to(dtype).contiguous(memory_format=torch.channels_last_3d), w.to(dtype), b.to(dtype), y, flags, ref)


def check_and_time(fn, y: torch.Tensor, ref: torch.Tensor) -> dict:
    """``fn`` (which writes y) run twice on a zeroed y: its relative error against ``ref``, whether the repeat is
    bit-equal, and its graphed median time (ms, L2 flushed)."""
    import triton
    from bench_conv_transpose3d import graphed

    y.zero_()
    fn()
    first = y.clone()
    fn()
    torch.cuda.synchronize()
    return {"err": ((y.double() - ref).norm() / ref.norm()).item(), "same": bool(torch.equal(y, first)),
            "ms": triton.testing.do_bench(graphed(fn, DEVICE), warmup=25, rep=100, return_mode="median")}


def record(out: list, path: str, rec: dict, measure, start: float) -> None:
    """``rec`` completed by ``measure()`` (a dict; or the error it raised) and the elapsed time since ``start``;
    printed, appended to ``out`` and the whole list rewritten to ``path`` (a run cut short keeps what it did)."""
    import json
    import time

    try:
        rec.update(measure())
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
    rec["t"] = round(time.time() - start, 1)
    print(json.dumps(rec), flush=True)
    out.append(rec)
    json.dump(out, open(path, "w"), indent=1)


def run_case(out: list, path: str, rec: dict, fn, y: torch.Tensor, ref: torch.Tensor, start: float, extra=dict) -> None:
    """``record`` of ``check_and_time(fn, y, ref)`` and ``extra()``."""
    record(out, path, rec, lambda: {**check_and_time(fn, y, ref), **extra()}, start)
