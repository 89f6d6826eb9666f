"""Host time per forward + backward of the Triton op's two autograd wirings, with the kernel launches stubbed
(CPU machine, no GPU): the custom op ``sr3d::conv_transpose3d`` (what torch.compile sees) against the
autograd.Function that eager calls use. Tiny tensors, so torch's own CPU ops (allocations, the split-K sums) cost
little. Run from the repo root:  python benchmarks/logs/session8_probe/host_cost_ab.py"""
import os
import statistics
import time

os.environ["TRITON_INTERPRET"] = "1"  # CPU tensors take the Triton path (its host code), launches stubbed below
import torch  # noqa: E402

from app.kernels import functional as fm  # noqa: E402
from app.kernels import triton_kernels as tk  # noqa: E402

tk._Launcher.__call__ = lambda self, grid, args, consts, fixed: None
tk.interpreter_active = lambda: False  # the GPU's host path (autotuned launch, GPU tile sizes)
tk._split_count = lambda positions, programs, device: 8

args = ([1, 16, 4, 4, 4], [2, 2, 2], [0, 0, 0], [1, 1, 1], 1, "tf32")
x, w, b = (torch.randn(s).bfloat16().requires_grad_() for s in ((1, 16, 2, 2, 2), (16, 16, 2, 2, 2), (16,)))
gy = torch.randn(args[0]).bfloat16()
paths = {"custom op": lambda: fm._conv_transpose3d_op(x, w, b, *args),
         "autograd.Function": lambda: fm._ConvTranspose3dFunction.apply(x, w, b, *args)}
times: dict[str, list[float]] = {name: [] for name in paths}
for rep in range(10):
    for name in (list(paths) if rep % 2 == 0 else list(paths)[::-1]):
        n, start = 300, time.perf_counter()
        for _ in range(n):
            torch.autograd.grad(paths[name](), (x, w, b), gy)
        times[name].append((time.perf_counter() - start) / n * 1e6)
for name, ts in times.items():
    print(f"{name:<18} median {statistics.median(ts):.0f} us per forward + backward (10 rounds of 300; "
          f"min {min(ts):.0f}, max {max(ts):.0f})")
