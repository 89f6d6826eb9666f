"""Probe 9 (kernel_notes.md v3h): the TMA forward's phase weight K-major (columns_first) against the shipped N-major
one, same process, graphed, L2 flushed, old/new alternated three times. The TTGIR of the shipped fp32 kernel copies
the [BLOCK_K, BLOCK_N] weight tile into a K-major buffer at every K step (TF32 wgmma takes K-major operands only),
and pipelines that operand 2 deep instead of 3.

Prediction (before any run): fp32 forward 15-30 % faster on a-d (more on b: 8 K steps of 32 channels per tile);
bf16 unchanged by K-major (wgmma reads N-major 16-bit tiles). Usage: python scripts/_tmp_probe_v3h9.py OUT"""
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
      "a": (2, 64, 32, (64,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
      "dec8k4": (2, 256, 128, (8,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "dec16k3": (2, 128, 64, (16,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3)}


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


OUT, out, T0 = sys.argv[1], [], time.time()
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
KM = tk._fwd_tma_weight_k_major
cases = [(n, "fp32") for n in ("b", "d", "a", "c", "dec8k4", "dec16k3")] + [(n, "bf16") for n in ("b", "d", "a", "c", "dec8k4")]
for name, dt in cases:
    xd, wd, bd, y, s, p, flags, ref = setup(name, dt)
    variants = [("old", None), ("new", None)] + ([("new_kmajor_bf16", True)] if dt == "bf16" else [])
    fns = {}
    for label, force in variants:
        m = old if label == "old" else tk
        tk._fwd_tma_weight_k_major = (lambda d: True) if force else KM
        tk._fwd_phase_tma.plans.clear()
        fn = lambda m=m: m._tma_phase_forward(xd, wd, bd, y, s, p, flags)
        rec = dict(shape=name, dtype=dt, variant=label)
        try:
            y.zero_(); fn(); y1 = y.clone(); fn(); torch.cuda.synchronize()
            rec.update(err=((y.double() - ref).norm() / ref.norm()).item(), same=bool(torch.equal(y, y1)))
            fns[label] = graphed(fn, dev)
            rec["config"] = str((old if label == "old" else tk)._fwd_phase_tma_tuned.best_config)
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e)[-400:]}"
        rec["ms"] = []
        out.append(rec)
    tk._fwd_tma_weight_k_major = KM
    recs = out[-len(variants):]
    for _ in range(3):
        for rec in recs:
            if rec["variant"] in fns:
                rec["ms"].append(bench(fns[rec["variant"]]))
    for rec in recs:
        rec["t"] = round(time.time() - T0, 1)
        print(json.dumps(rec), flush=True)
    json.dump(out, open(OUT + "/probe_v3h9.json", "w"), indent=1)
