"""Probe 10 (kernel_notes.md v3h, fourteenth session's Next 3; not run yet): split-K of the TMA forward for small
grids. Apply first:  git apply benchmarks/logs/kernel_v3h/next/split_k_forward.patch
(written and tested under the interpreter and the sm_90 compile on the CPU machine; no GPU run yet).

Prediction (before any run): the deep decoder layers with k != s run 128-512 programs with 32-96 K steps each
(256 -> 128 at 8^3, k4s2p1: 256 fp32 programs of 96 steps) and are latency-bound; 3-5 splits should make them 2-3x
faster (fp32 0.123 -> ~0.05 ms against cuDNN's 0.037), the fp32 workspace sum costing a few us; a-d unchanged
(their grids are large enough that the rule keeps 1 split).
Usage on the GPU machine:  python benchmarks/logs/kernel_v3h/next/probe_v3h10_split_k.py OUT"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda"); CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32}
SH = {"dec8k4": (2, 256, 128, 8, 4, 1, 0), "dec8k3": (2, 256, 128, 8, 3, 1, 1),
      "dec16k4": (2, 128, 64, 16, 4, 1, 0), "dec16k3": (2, 128, 64, 16, 3, 1, 1),
      "dec32k3": (2, 64, 32, 32, 3, 1, 1), "d": (2, 64, 32, 32, 4, 1, 0), "c": (1, 32, 16, 96, 3, 1, 1)}
OUT, out, T0 = sys.argv[1], [], time.time()
RULE = tk._fwd_tma_splits
for name, (n, ci, co, size, k, p, op) in SH.items():
    for dt in ("fp32", "bf16"):
        g = torch.Generator(device=dev).manual_seed(5)
        x = torch.randn(n, ci, size, size, size, device=dev, generator=g, dtype=torch.float64)
        w = torch.randn(ci, co, k, k, k, device=dev, generator=g, dtype=torch.float64) / 8
        b = torch.randn(co, device=dev, generator=g, dtype=torch.float64)
        ref = F.conv_transpose3d(x, w, b, 2, p, op)
        xd, wd, bd = x.to(T[dt]).contiguous(memory_format=CL), w.to(T[dt]), b.to(T[dt])
        y = torch.empty(ref.shape, device=dev, dtype=T[dt]).contiguous(memory_format=CL)
        flags = {"HAS_BIAS": True, "INDEX_64": False, **tk._dtype_flags(T[dt], "tf32")}
        chosen = []
        tk._fwd_tma_splits = lambda programs, steps, device: chosen.append((programs, steps)) or RULE(programs, steps,
                                                                                                        device)
        tk._tma_phase_forward(xd, wd, bd, y, (2,) * 3, (p,) * 3, flags)
        rule = RULE(*chosen[0], dev)
        for splits in (1, 2, 3, 4, 6, 8):
            tk._fwd_tma_splits = lambda programs, steps, device, s=splits: s
            tk._fwd_phase_tma.plans.clear()
            fn = lambda: tk._tma_phase_forward(xd, wd, bd, y, (2,) * 3, (p,) * 3, flags)
            rec = dict(shape=name, dtype=dt, splits=splits, rule=rule, programs=chosen[0][0], steps=chosen[0][1])
            try:
                y.zero_(); fn(); y1 = y.clone(); fn(); torch.cuda.synchronize()
                rec.update(err=((y.double() - ref).norm() / ref.norm()).item(), same=bool(torch.equal(y, y1)))
                rec["ms"] = triton.testing.do_bench(graphed(fn, dev), warmup=25, rep=100, return_mode="median")
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
            rec["t"] = round(time.time() - T0, 1)
            print(json.dumps(rec), flush=True); out.append(rec)
            json.dump(out, open(OUT + "/probe_v3h10.json", "w"), indent=1)
        tk._fwd_tma_splits = RULE
