"""Probe 8 (kernel_notes.md v3h): the persistent TMA forward (tile loop flattened with the K loop where every
phase pair has all its shifts) against the shipped (HEAD 9808c76) one-tile-per-program kernel, same process, graphed,
L2 flushed; programs per SM 1 / 2 / 4 / one per tile; 256-position tiles; c with ALL_SHIFTS forced (dead taps).

Prediction (before any run): flattening hides each tile's pipeline fill and store behind the next tile's loads:
the shapes with short K loops gain most: a (1 K step per tile) and b (4 bf16 / 8 fp32 steps) 15-30 %, d (12
steps) ~10 %; c (not flattened, dynamic K loop) level. 256-position tiles: d ~10 % (L2 traffic), c level.
Usage: python scripts/_tmp_probe_v3h8.py sweep OUT | one SHAPE DTYPE (for ncu)"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
from app.kernels import _tmp_tk_old as old
dev = torch.device("cuda"); CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32}
SH = {"d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
      "a": (2, 64, 32, (64,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3)}


def setup(name, dt):
    n, ci, co, size, k, s, p, op = SH[name]
    g = torch.Generator(device=dev).manual_seed(5)
    x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
    w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64) / 8
    b = torch.randn(co, device=dev, generator=g, dtype=torch.float64)
    ref = F.conv_transpose3d(x, w, b, s, p, op)
    xd, wd, bd = x.to(T[dt]).contiguous(memory_format=CL), w.to(T[dt]), b.to(T[dt])
    y = torch.empty(ref.shape, device=dev, dtype=T[dt]).contiguous(memory_format=CL)
    flags = {"HAS_BIAS": True, "INDEX_64": False, **tk._dtype_flags(T[dt], "tf32")}
    return xd, wd, bd, y, s, p, flags, ref


if sys.argv[1] == "one":
    xd, wd, bd, y, s, p, flags, ref = setup(sys.argv[2], sys.argv[3])
    for _ in range(2):
        tk._tma_phase_forward(xd, wd, bd, y, s, p, flags)
    torch.cuda.synchronize()
    sys.exit(0)

OUT, out, T0 = sys.argv[2], [], time.time()
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
TILE, PPS, ALL = tk._fwd_tma_tile, tk._PERSISTENT_PROGRAMS_PER_SM, tk._all_phase_shifts
BIG = {"bf16": [(256, 64, 64), (256, 128, 64)], "fp32": [(256, 64, 32)]}
for name, dt in [("d", "bf16"), ("b", "bf16"), ("a", "bf16"), ("c", "bf16"), ("d", "fp32"), ("b", "fp32"),
                 ("a", "fp32"), ("c", "fp32")]:
    xd, wd, bd, y, s, p, flags, ref = setup(name, dt)
    variants = [("old", None, None, False)] + [("new", None, pps, False) for pps in (2, 1, 3, 4, 8, 10**6)]
    for mod, tile, pps, force_all in variants:
        tk._fwd_tma_tile = (lambda dtype, tile=tile: tile) if tile else TILE
        tk._PERSISTENT_PROGRAMS_PER_SM = pps or PPS
        tk._all_phase_shifts = (lambda *a: True) if force_all else ALL
        m = old if mod == "old" else tk
        tk._fwd_phase_tma.plans.clear()  # the launcher caches each signature's grid
        fn = lambda: m._tma_phase_forward(xd, wd, bd, y, s, p, flags)
        rec = dict(shape=name, dtype=dt, kernel=mod, tile=tile, pps=pps, all_shifts_forced=force_all)
        try:
            y.zero_(); fn(); y1 = y.clone(); fn(); torch.cuda.synchronize()
            rec.update(err=((y.double() - ref).norm() / ref.norm()).item(), same=bool(torch.equal(y, y1)))
            rec["ms"] = bench(fn)
            tuner = (old if mod == "old" else tk)._fwd_phase_tma_tuned
            rec["config"] = str(tuner.best_config)
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e)[-400:]}"
        rec["t"] = round(time.time() - T0, 1)
        print(json.dumps(rec), flush=True); out.append(rec)
        json.dump(out, open(OUT + "/probe_v3h8b.json", "w"), indent=1)
    tk._fwd_tma_tile, tk._PERSISTENT_PROGRAMS_PER_SM, tk._all_phase_shifts = TILE, PPS, ALL
