"""Probe 7 (kernel_notes.md v3h Next, not run yet): is d's TMA forward bound by L2 traffic?

Prediction (written before any run): d (2, 64 -> 32, 32^3, k4s2p1, bf16) runs 2,048 programs of 128 positions ×
64 columns; each loads 12 x tiles of 128 × 64 (one per D/H tap and W shift, 16 KB) and 12 weight tiles of 64 × 64
(8 KB): ~590 MB from L2 per forward, ~6.5 TB/s at the measured 0.091 ms, near the H200's L2 bandwidth, while DRAM
moves ~42 MB. If so, ncu shows L2 throughput near its peak and DRAM far below it; 256-position tiles (half the
weight traffic per position, ~17 % less in all) should then be ~10-15 % faster on d, and no faster on c.

Usage on the GPU machine (copy to scripts/ first):
  python scripts/_tmp_probe_v3h7.py sweep OUT            # tiles with 256 positions against the shipped ones
  python scripts/_tmp_probe_v3h7.py one PIN              # one pinned forward of d, for ncu:
  ncu -k regex:_fwd_phase_tma --launch-skip 1 --launch-count 1 --section SpeedOfLight \\
      --metrics lts__t_bytes.sum,dram__bytes.sum,gpu__time_duration.sum python scripts/_tmp_probe_v3h7.py one 0
"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from bench_env import pinned_configs
from app.kernels import triton_kernels as tk
from app.kernels.functional import conv_transpose3d
dev = torch.device("cuda"); CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32}
SH = {"d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3)}


def tensors(name: str, dt: str):
    n, ci, co, size, k, s, p, op = SH[name]
    g = torch.Generator(device=dev).manual_seed(5)
    x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
    w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64) / 8
    b = torch.randn(co, device=dev, generator=g, dtype=torch.float64)
    return x, w, b, (s, p, op)


if sys.argv[1] == "one":  # one warm-up (compiles) and one profiled forward of d, bf16, pinned configuration
    x, w, b, (s, p, op) = tensors("d", "bf16")
    x, w, b = x.to(torch.bfloat16).contiguous(memory_format=CL), w.to(torch.bfloat16), b.to(torch.bfloat16)
    with pinned_configs(int(sys.argv[2])):
        for _ in range(2):
            conv_transpose3d(x, w, b, s, p, op)
        torch.cuda.synchronize()
    sys.exit(0)
out, T0, OUT = [], time.time(), sys.argv[2]
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
TILES = {"bf16": [(128, 128, 64), (256, 64, 64), (256, 128, 64)], "fp32": [(128, 64, 32), (256, 64, 32)]}
ORIG = tk._fwd_tma_tile
for name, dt in (("d", "bf16"), ("d", "fp32"), ("c", "bf16"), ("b", "bf16")):
    x64, w64, b64, (s, p, op) = tensors(name, dt)
    ref = F.conv_transpose3d(x64, w64, b64, s, p, op)
    x, w, b = x64.to(T[dt]).contiguous(memory_format=CL), w64.to(T[dt]), b64.to(T[dt])
    for tile in TILES[dt]:
        tk._fwd_tma_tile = lambda dtype, tile=tile: tile
        rec = dict(shape=name, dtype=dt, tile=tile)
        fn = lambda: conv_transpose3d(x, w, b, s, p, op)
        try:
            y = fn(); y2 = fn(); torch.cuda.synchronize()
            rec.update(err=((y.double() - ref).norm() / ref.norm()).item(), same=bool(torch.equal(y, y2)),
                       ms=bench(fn), config=str(tk._fwd_phase_tma_tuned.best_config))
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
        rec["t"] = round(time.time() - T0, 1)
        print(json.dumps(rec), flush=True); out.append(rec)
        json.dump(out, open(OUT + "/probe_v3h7.json", "w"), indent=1)
    tk._fwd_tma_tile = ORIG
