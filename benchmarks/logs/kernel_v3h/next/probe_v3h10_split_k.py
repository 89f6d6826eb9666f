"""Probe 10 (kernel_notes.md v3h, fourteenth session's Next 3; not run yet): split-K of the TMA forward for small
grids. Apply first:  git apply benchmarks/logs/kernel_v3h/next/split_k_forward.patch
(written and tested under the interpreter and the sm_90 compile on the CPU machine; no GPU run yet).

Prediction (before any run): the deep decoder layers with k != s run 128-512 programs with 32-96 K steps each
(256 -> 128 at 8^3, k4s2p1: 256 fp32 programs of 96 steps) and are latency-bound; 3-5 splits should make them 2-3x
faster (fp32 0.123 -> ~0.05 ms against cuDNN's 0.037), the fp32 workspace sum costing a few us; a-d unchanged
(their grids are large enough that the rule keeps 1 split).
Usage on the GPU machine:  python benchmarks/logs/kernel_v3h/next/probe_v3h10_split_k.py OUT"""
import json, sys, time
sys.path[:0] = ["scripts", "benchmarks/logs/kernel_v3h/next"]
from probe_problem import DEVICE as dev, check_and_time, stride2_problem
from app.kernels import triton_kernels as tk
SH = {"dec8k4": (2, 256, 128, 8, 4, 1, 0), "dec8k3": (2, 256, 128, 8, 3, 1, 1),
      "dec16k4": (2, 128, 64, 16, 4, 1, 0), "dec16k3": (2, 128, 64, 16, 3, 1, 1),
      "dec32k3": (2, 64, 32, 32, 3, 1, 1), "d": (2, 64, 32, 32, 4, 1, 0), "c": (1, 32, 16, 96, 3, 1, 1)}
OUT, out, T0 = sys.argv[1], [], time.time()
RULE = tk._fwd_tma_splits
for name, (n, ci, co, size, k, p, op) in SH.items():
    for dt in ("fp32", "bf16"):
        xd, wd, bd, y, flags, ref = stride2_problem(n, ci, co, size, k, p, op, dt)
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
                rec.update(check_and_time(fn, y, ref))
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
            rec["t"] = round(time.time() - T0, 1)
            print(json.dumps(rec), flush=True); out.append(rec)
            json.dump(out, open(OUT + "/probe_v3h10.json", "w"), indent=1)
        tk._fwd_tma_splits = RULE
