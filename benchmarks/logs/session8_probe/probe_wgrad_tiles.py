"""Probe (temporary): grad_weight kernel time per layout and tile, host cost removed (CUDA graph replay)."""
import json, sys, torch, triton
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda")
SHAPES = {"a": (2, 64, 32, 64, 2, 2, 0), "b": (2, 256, 128, 16, 2, 2, 0), "c": (1, 32, 16, 96, 3, 2, 1), "d": (2, 64, 32, 32, 4, 2, 1)}
out = []
import time
T0 = time.time()
for name, (n, ci, co, size, k, s, p) in SHAPES.items():
    op = 1 if name == "c" else 0
    osz = (size - 1) * s - 2 * p + k + op
    for dt in (torch.bfloat16, torch.float32):
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(n, ci, size, size, size, device=dev, generator=g).to(dt)
        gy = torch.randn(n, co, osz, osz, osz, device=dev, generator=g).to(dt)
        for tile in [(64, 128), (128, 128), (64, 64), (128, 64), (32, 128), (64, 256)]:
            tk._WGRAD_TILE = tile
            tk._bwd_weight_tuned.cache.clear()
            for layout in ("ncdhw", "cl_copies", "cl_given"):
                for bias in (torch.float32,):
                    if time.time() - T0 > float(sys.argv[2]): break
                    def fn():
                        xx, gg = x, gy
                        if layout != "ncdhw":
                            xx = x.contiguous(memory_format=torch.channels_last_3d) if layout == "cl_copies" else xcl
                            gg = gy.contiguous(memory_format=torch.channels_last_3d) if layout == "cl_copies" else gycl
                        return tk.grad_weight(xx, gg, (ci, co, k, k, k), dt, bias, (s,) * 3, (p,) * 3, (1,) * 3, 1, "tf32")
                    xcl = x.contiguous(memory_format=torch.channels_last_3d); gycl = gy.contiguous(memory_format=torch.channels_last_3d)
                    try:
                        ms = triton.testing.do_bench(graphed(fn, dev), warmup=25, rep=100, return_mode="median")
                    except Exception as e:
                        ms = None; print("ERR", name, tile, layout, repr(e)[:200])
                    best = tk._bwd_weight_tuned.best_config
                    rec = dict(shape=name, dtype=str(dt)[6:], tile=tile, layout=layout, bias=bias is not None, ms=ms, config=str(best))
                    out.append(rec); print(json.dumps(rec), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
