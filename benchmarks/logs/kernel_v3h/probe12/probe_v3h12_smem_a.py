"""Probe 12 (kernel_notes.md v3h, written in the fifteenth session, run in the sixteenth: probe_v3h12.json): the TMA
forward with its x tile kept in shared memory. ptxas (Triton 3.6, sm_90a, `ptxas -v`) warns C7515 "wgmma.mma_async instructions are serialized" for every
shipped configuration of ``_fwd_phase_tma_kernel`` and for no other kernel: with BOX_H > 1 the 5-D x block is
reshaped to [BOX_H·BOX_W, BLOCK_K] in registers (local_load, convert_layout to the dot operand), so each wgmma waits
for the previous one. With BOX_H = 1 and BOX_W 64 or 128 the tile stays in shared memory, the wgmma is async and
C7515 is gone (BOX_W 32 falls back to mma.sync). Variants, pinned by patching the host's tile rules:
  shipped   : the current rules (BOX_H > 1 where W is narrow);
  h1        : BOX_H = 1, BOX_W = max(64, min(128, next_pow2(W))) (W < 64 wastes part of the tile on zeros);
  n256      : BLOCK_N 256 (fp32 (128, 256, 32), bf16 (128, 256, 64)): x re-read for fewer column tiles;
  h1n256    : both.
Prediction (before any run): h1 makes d and c's forwards 1.2-1.5x faster in bf16 (the async wgmma overlaps the
loads; d was latency-bound: SM 39 %, L2 49 %), the decoder shapes at 8^3 and 16^3 (W 8, 16: BOX_W 64 mostly zeros)
slower; n256 helps the deep decoder shapes (fp32 columns 256 in one tile) and nothing else.
Usage on the GPU machine:  python benchmarks/logs/kernel_v3h/probe12/probe_v3h12_smem_a.py OUT"""
import sys, time
sys.path[:0] = ["scripts", "benchmarks/logs/kernel_v3h/next"]
from probe_problem import run_case, stride2_problem
from app.kernels import triton_kernels as tk
SH = {"d": (2, 64, 32, 32, 4, 1, 0), "c": (1, 32, 16, 96, 3, 1, 1), "a": (2, 64, 32, 64, 2, 0, 0),
      "b": (2, 256, 128, 16, 2, 0, 0), "dec8k4": (2, 256, 128, 8, 4, 1, 0), "dec16k3": (2, 128, 64, 16, 3, 1, 1),
      "dec32k3": (2, 64, 32, 32, 3, 1, 1)}
BOX, TILE = tk._tma_box, tk._fwd_tma_tile
H1 = lambda rows, h, w: (1, max(64, min(128, tk._next_pow2(w))))
N256 = lambda dtype: (128, 256, 32) if dtype == tk.torch.float32 else (128, 256, 64)
VARIANTS = {"shipped": (BOX, TILE), "h1": (H1, TILE), "n256": (BOX, N256), "h1n256": (H1, N256)}
OUT, out, T0 = sys.argv[1], [], time.time()
for name, (n, ci, co, size, k, p, op) in SH.items():
    for dt in ("bf16", "fp32"):
        xd, wd, bd, y, flags, ref = stride2_problem(n, ci, co, size, k, p, op, dt)
        fn = lambda: tk._tma_phase_forward(xd, wd, bd, y, (2,) * 3, (p,) * 3, flags)
        for variant, (box, tile) in VARIANTS.items():
            tk._tma_box, tk._fwd_tma_tile = box, tile
            tk._fwd_phase_tma.plans.clear()
            run_case(out, OUT + "/probe_v3h12.json", dict(shape=name, dtype=dt, variant=variant), fn, y, ref, T0,
                     lambda: {"chosen": str(tk._fwd_phase_tma_tuned.best_config)})
        tk._tma_box, tk._fwd_tma_tile = BOX, TILE
