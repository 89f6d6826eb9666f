"""Probe 13 (kernel_notes.md v3h, sixteenth session's Next 1; not run yet): grad_weight of kernel = stride on
channels_last_3d tensors by the TMA kernel (``_bwd_weight_tma_kernel``) instead of the pointer kernel. The shipped rule
(``grad_weight_uses_tma``) excludes the GEMM geometry; the variant drops that exclusion (C_in >= 64 and 16-bit
floats still required, so the U-Net's 32 -> 32 layer keeps the pointer kernel). Checked on the CPU machine: float64
error 2.9e-3 in bf16 under the interpreter (k2s2, C_in 64), and every configuration compiles for sm_90 with Triton
3.6 at k2s2 (UW 1, U_MAX 0; 33-98 KB of shared memory).
Prediction (before any run): the U-Net's 64 -> 32 layer at 8^3 (batch 64) grad_weight 50 -> ~20 us, 128 -> 64 at 4^3
32 -> ~12 us, b 2-3x faster in grad_weight; f+b of those layers 20-30 % faster; a level or better.
Usage on the GPU machine:  python benchmarks/logs/kernel_v3h/next/probe_v3h13_wgrad_gemm.py OUT"""
import sys, time
sys.path[:0] = ["scripts", "benchmarks/logs/kernel_v3h/next"]
import torch
import torch.nn.functional as F
from bench_conv_transpose3d import Problem, Shape, graphed, timeit
from probe_problem import record
from app.kernels import triton_kernels as tk

DEV, OUT, T0, rows = torch.device("cuda"), sys.argv[1], time.time(), []
SHIPPED = tk.grad_weight_uses_tma
VARIANTS = {"shipped": SHIPPED,
            "tma_gemm": lambda x, gy, stride, dilation, groups, gemm: SHIPPED(x, gy, stride, dilation, groups, False)}
SHAPES = [(64, 128, 64, 4), (64, 64, 32, 8), (64, 32, 32, 16), (16, 64, 32, 8), (2, 64, 32, 64), (2, 256, 128, 16)]
for n, ci, co, size in SHAPES:
    shape = Shape(f"{n}, {ci}->{co}, {size}^3, k2s2", n, ci, co, size, 2, 2, 0, 0, ())
    prob = Problem(shape, torch.bfloat16, DEV)
    x, gy = prob.x["channels_last"], prob.gy["channels_last"]
    w64 = prob.w.double().requires_grad_()
    ref = torch.autograd.grad(F.conv_transpose3d(x.double(), w64, stride=2), w64, gy.double())[0]
    for variant, rule in VARIANTS.items():
        tk.grad_weight_uses_tma = rule
        args = (x, gy, prob.w.shape, torch.bfloat16, None, (2,) * 3, (0,) * 3, (1,) * 3, 1, "ieee")

        def measure() -> dict:
            gw = tk.grad_weight(*args)[0]
            return {"err": ((gw.double() - ref).norm() / ref.norm()).item(),
                    "same": bool(torch.equal(gw, tk.grad_weight(*args)[0])),
                    "grad_weight_ms": timeit(graphed(lambda: tk.grad_weight(*args), DEV), DEV),
                    "fwdbwd_ms": timeit(graphed(prob.fn("ours", "fwdbwd", "channels_last"), DEV), DEV)}
        record(rows, OUT + "/probe_v3h13.json", dict(shape=shape.name, variant=variant,
                                                     tma=rule(x, gy, (2,) * 3, (1,) * 3, 1, True)), measure, T0)
    tk.grad_weight_uses_tma = SHIPPED
