"""Probe 11 (kernel_notes.md v3h, fourteenth session's Next 2; not run yet): deeper pipelines for the TMA forward.
The sm_90 TTGIR gives the x tile (a 5-D TMA block with BOX_H > 1, reshaped, read through registers) num_stages - 1
buffers and the weight tile num_stages; ncu put d's bf16 forward at L2 49 %, SM 39 % (latency-bound). The shipped
configurations stop at 4 stages. Shared memory per program (CPU compile, Triton 3.6): bf16 BLOCK_N 64: 57 / 82 /
107 / 131 KB for 3 / 4 / 5 / 6 stages; BLOCK_N 128: 82 / 115 / 148 / 180 KB.

Prediction (before any run): 5-6 stages take d bf16 from 0.088 to ~0.075 ms (x loads 4-5 deep, 2 programs per SM
still resident at 5 stages with BLOCK_N 64) and leave a and c level (their grids are large; fewer resident
programs offset the deeper pipeline).
Usage on the GPU machine:  python benchmarks/logs/kernel_v3h/next/probe_v3h11_stages.py OUT"""
import json, sys, time, triton
sys.path[:0] = ["scripts", "benchmarks/logs/kernel_v3h/next"]
from probe_problem import check_and_time, stride2_problem
from app.kernels import triton_kernels as tk
SH = {"d": (2, 64, 32, 32, 4, 1, 0), "c": (1, 32, 16, 96, 3, 1, 1), "b": (2, 256, 128, 16, 2, 0, 0)}  # a dropped (time)
CONFIGS = [(w, s) for s in (3, 4, 5, 6) for w in (4, 8)]
OUT, out, T0 = sys.argv[1], [], time.time()
SHIPPED = tk._fwd_phase_tma_tuned.configs
for name, (n, ci, co, size, k, p, op) in SH.items():
    for dt in ("bf16", "fp32"):
        xd, wd, bd, y, flags, ref = stride2_problem(n, ci, co, size, k, p, op, dt)
        fn = lambda: tk._tma_phase_forward(xd, wd, bd, y, (2,) * 3, (p,) * 3, flags)
        for warps, stages in [(None, None)] + CONFIGS:
            tk._fwd_phase_tma_tuned.configs = SHIPPED if warps is None else [
                triton.Config({}, num_warps=warps, num_stages=stages)]
            tk._fwd_phase_tma_tuned.cache.clear()
            tk._fwd_phase_tma.plans.clear()
            rec = dict(shape=name, dtype=dt, config="autotuned" if warps is None else [warps, stages])
            try:
                rec.update(check_and_time(fn, y, ref))
                if warps is None:
                    rec["chosen"] = str(tk._fwd_phase_tma_tuned.best_config)
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
            rec["t"] = round(time.time() - T0, 1)
            print(json.dumps(rec), flush=True); out.append(rec)
            json.dump(out, open(OUT + "/probe_v3h11.json", "w"), indent=1)
        tk._fwd_phase_tma_tuned.configs = SHIPPED
