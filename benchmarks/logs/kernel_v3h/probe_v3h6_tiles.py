"""Probe 6 (kernel_notes v3h): the TMA forward's and grad_input's host-fixed tile (positions, BLOCK_N max, BLOCK_K max)
swept on a-d, channels_last_3d, bf16 and fp32 (graphed, L2 flushed; error against float64 torch on the GPU).
Writes OUT/probe_v3h6.json after every record."""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
from app.kernels.functional import conv_transpose3d
dev = torch.device("cuda"); CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32}
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
out, T0, OUT = [], time.time(), sys.argv[1]
def emit(rec):
    rec["t"] = round(time.time() - T0, 1)
    print(json.dumps(rec), flush=True); out.append(rec); json.dump(out, open(OUT + "/probe_v3h6.json", "w"), indent=1)
SH = {"b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
      "d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "a": (2, 64, 32, (64,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3)}
TILES = {"bf16": [(128, 128, 64), (64, 128, 64), (128, 64, 64), (64, 64, 64), (128, 128, 32)],
         "fp32": [(128, 128, 32), (64, 128, 32), (128, 64, 32), (64, 64, 32), (64, 64, 64)]}
ORIG = tk._fwd_tma_tile
def host_us(fn, calls=300):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return host
for name in ("d", "b"):  # host cost per forward call after caching the capability lookup (probe 5: d 210-238 us)
    n, ci, co, size, k, s, p, op = SH[name]
    x = torch.randn(n, ci, *size, device=dev).to(torch.bfloat16).contiguous(memory_format=CL)
    w = (torch.randn(ci, co, *k, device=dev) / 8).to(torch.bfloat16); b = torch.randn(co, device=dev).to(torch.bfloat16)
    with torch.no_grad():
        emit(dict(part="host_fwd", shape=name, host_us=[round(host_us(lambda: conv_transpose3d(x, w, b, s, p, op)), 1)
                                                        for _ in range(3)]))
BUDGET = float(sys.argv[2]) if len(sys.argv) > 2 else 330
for name, dt in (("d", "bf16"), ("b", "fp32"), ("d", "fp32"), ("b", "bf16"), ("c", "bf16"), ("c", "fp32"),
                 ("a", "bf16"), ("a", "fp32")):
    if True:
        n, ci, co, size, k, s, p, op = SH[name]
        g = torch.Generator(device=dev).manual_seed(5)
        x64 = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
        w64 = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64) / 8
        b64 = torch.randn(co, device=dev, generator=g, dtype=torch.float64)
        ref = F.conv_transpose3d(x64, w64, b64, s, p, op)
        x = x64.to(T[dt]).contiguous(memory_format=CL); w = w64.to(T[dt]); b = b64.to(T[dt])
        gy64 = torch.randn_like(ref); gyc = gy64.to(T[dt]).contiguous(memory_format=CL)
        gref = torch.ops.aten.convolution_backward(gy64, x64, w64, None, s, p, (1,) * 3, True, op, 1, (True, False, False))[0]
        wt = tk.tap_major(w, T[dt])
        for tile in TILES[dt]:
            if time.time() - T0 > BUDGET:
                break
            tk._fwd_tma_tile = lambda dtype, tile=tile: tile
            rec = dict(shape=name, dtype=dt, tile=tile)
            for part, fn, r in (("fwd", lambda: conv_transpose3d(x, w, b, s, p, op), ref),
                                ("gi", lambda: tk.grad_input(gyc, wt, x.shape, True, s, p, (1,) * 3, 1, "tf32"), gref)):
                try:
                    y = fn(); y2 = fn(); torch.cuda.synchronize()
                    rec[part + "_err"] = ((y.double() - r).norm() / r.norm()).item()
                    rec[part + "_same"] = bool(torch.equal(y, y2))
                    rec[part + "_ms"] = bench(fn)
                except Exception as e:
                    rec[part + "_error"] = f"{type(e).__name__}: {str(e)[-200:]}"
            emit(rec)
        tk._fwd_tma_tile = ORIG
