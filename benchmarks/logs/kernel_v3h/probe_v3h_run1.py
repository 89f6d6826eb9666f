"""Probe (kernel_notes.md v3h): grad_weight on channels_last_3d x and grad_y by the TMA phase kernel ("tma")
against the routed-before kernel ("old", _bwd_weight_kernel), graphed, L2 flushed by do_bench; errors against
float64 torch on the GPU; plus eligible odd shapes for correctness (several C_in / column tiles, ragged W runs,
anisotropic geometry, fp16). Ran from the repo root as scripts/_tmp_probe_v3h.py on the first, uncommitted TMA
grad_weight (routed for every dtype and C_in, BLOCK_W from 8; kernel_notes.md v3h): python scripts/_tmp_probe_v3h.py OUT.json"""
import json, sys, time, torch, triton
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda")
CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
# name: (N, C_in, C_out, size, kernel, stride, padding, output_padding)
SHAPES = {"c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
          "d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
          "wide": (1, 256, 64, (12, 10, 20), (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
          "aniso": (2, 48, 40, (7, 9, 11), (3, 4, 2), (2, 2, 2), (1, 1, 0), (0, 1, 0)),
          "k5s3": (1, 16, 8, (6, 5, 13), (5, 5, 5), (3, 3, 3), (2, 1, 2), (1, 2, 2)),
          "ragged": (1, 24, 12, (5, 6, 70), (4, 3, 4), (2, 2, 2), (1, 1, 1), (0, 1, 0))}
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
uses = tk.grad_weight_uses_tma
out = []
for name, (n, ci, co, size, k, s, p, op) in SHAPES.items():
    for dt in (("bf16", "fp32") if name in "cd" else ("bf16", "fp32", "fp16")):
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
        w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64)
        ys = [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
        gy = torch.randn(n, co, *ys, device=dev, generator=g, dtype=torch.float64)
        ref = torch.ops.aten.convolution_backward(gy, x, w, None, s, p, (1,) * 3, True, op, 1, (False, True, False))[1]
        xc = x.to(T[dt]).contiguous(memory_format=CL)
        gyc = gy.to(T[dt]).contiguous(memory_format=CL)
        gemm = tk.is_gemm_geometry(k, s, p, (1,) * 3, size, ys)
        rec = dict(shape=name, dtype=dt, eligible=uses(xc, gyc, s, (1,) * 3, 1, gemm))
        fn = lambda: tk.grad_weight(xc, gyc, w.shape, T[dt], None, s, p, (1,) * 3, 1, "tf32")
        for label, route in (("tma", uses), ("old", lambda *a: False)):
            tk.grad_weight_uses_tma = route
            try:
                gw, _ = fn(); torch.cuda.synchronize()
                rec[f"{label}_err"] = ((gw.double() - ref).norm() / ref.norm()).item()
                rec[f"{label}_finite"] = bool(torch.isfinite(gw).all())
                if name in "cd":
                    rec[f"{label}_ms"] = bench(fn)
            except Exception as e:
                rec[f"{label}_error"] = f"{type(e).__name__}: {str(e)[:400]}"
            finally:
                tk.grad_weight_uses_tma = uses
        rec["tma_config"] = str(tk._bwd_weight_tma_tuned.best_config) if tk._bwd_weight_tma_tuned.cache else None
        rec["tma_timings"] = {str(c): v for c, v in (getattr(tk._bwd_weight_tma_tuned, "configs_timings", None) or {}).items()}
        rec["floor_bytes"] = (x.numel() + gy.numel() + w.numel()) * xc.element_size()
        print(json.dumps(rec), flush=True)
        out.append(rec)
json.dump(out, open(sys.argv[1], "w"), indent=1)
