#!/usr/bin/env python
"""Profile one forward+backward of the Triton ConvTranspose3d (host and device time per op) on a GPU.

python scripts/profile_conv_transpose3d.py [--shape 2,256,128,8] [--kernel 2] [--stride 2] [--dtype bf16]
Prints torch.profiler's table (sorted by CPU total) and the wall time per call with and without a sync;
--cprofile adds the Python functions that take the host time (cProfile, sorted by own time).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.kernels import conv_transpose3d  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="2,256,128,8", help="N,C_in,C_out,size")
    p.add_argument("--kernel", type=int, default=2)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--cprofile", action="store_true", help="also print the Python host-time profile")
    args = p.parse_args()
    n, c_in, c_out, size = (int(v) for v in args.shape.split(","))
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    x = torch.randn(n, c_in, size, size, size, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(c_in, c_out, args.kernel, args.kernel, args.kernel, device="cuda", dtype=dtype,
                    requires_grad=True)
    b = torch.randn(c_out, device="cuda", dtype=dtype, requires_grad=True)
    y = conv_transpose3d(x, w, b, stride=args.stride)
    gy = torch.randn_like(y)

    def step() -> None:
        torch.autograd.grad(conv_transpose3d(x, w, b, stride=args.stride), (x, w, b), gy)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    for label, fn in (("forward", lambda: conv_transpose3d(x, w, b, stride=args.stride)), ("fwd+bwd", step)):
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        host = (time.perf_counter() - t0) / 50
        torch.cuda.synchronize()
        total = (time.perf_counter() - t0) / 50
        print(f"{label}: host {host * 1e3:.3f} ms/call, with device {total * 1e3:.3f} ms/call")
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [step() for _ in range(100)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
