"""Probe (kernel_notes.md v3f): the forward of kernel != stride shapes c and d through the phase kernel
(``_fwd_kernel``, "old") and the phase GEMM (``_fwd_phase_gemm_kernel``, "new") in one process, each call replayed
from a CUDA graph (L2 flushed by do_bench), with cuDNN's NCDHW and channels_last_3d forwards; errors against an
fp32 cuDNN reference with TF32 off; the second run (commit 85322d9) also times the phase GEMM reading x from a
channels_last_3d copy, with and without the copy, each tuned afresh. Ran from the repo root as
scripts/_tmp_probe_v3f.py: python scripts/_tmp_probe_v3f.py OUT.json BUDGET_S (call1_59f1de8/: the first version,
without the channels_last rows, at commit 59f1de8)"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda")
BF, FP = torch.bfloat16, torch.float32
# name, (N, C_in, C_out, size), kernel, stride, padding, output_padding
SHAPES = [("c", (1, 32, 16, 96), 3, 2, 1, 1), ("d", (2, 64, 32, 32), 4, 2, 1, 0)]
out, T0, budget = [], time.time(), float(sys.argv[2])
is_phase = tk.forward_is_phase_gemm
torch.backends.cudnn.benchmark = True
for dt in (BF, FP):
    for name, (n, ci, co, size), k, s, p, op in SHAPES:
        if time.time() - T0 > budget:
            print("budget reached", flush=True)
            break
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(n, ci, size, size, size, device=dev, generator=g)
        w = torch.randn(ci, co, k, k, k, device=dev, generator=g) / (ci * k ** 3 / 8) ** 0.5
        b = torch.randn(co, device=dev, generator=g)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ref = F.conv_transpose3d(x, w, b, stride=s, padding=p, output_padding=op)
        torch.backends.cudnn.allow_tf32 = True
        x, w, b = x.to(dt), w.to(dt), b.to(dt)
        rec = dict(shape=name, dtype=str(dt)[6:])
        wt = tk.tap_major(w, dt)
        for label, route in (("old", lambda *a: False), ("new", is_phase)):
            tk.forward_is_phase_gemm = route
            fwd = lambda: tk.forward(x, wt, b, ref.shape, (s,) * 3, (p,) * 3, (1,) * 3, 1, "tf32")
            y = fwd()
            torch.cuda.synchronize()
            rec[f"{label}_err"] = ((y.float() - ref).norm() / ref.norm()).item()
            rec[f"{label}_ms"] = triton.testing.do_bench(graphed(fwd, dev), warmup=25, rep=100, return_mode="median")
        tk.forward_is_phase_gemm = is_phase
        tuner = tk._fwd_phase_gemm_tuned
        rec["new_config"] = str(tuner.best_config)
        rec["new_timings"] = {str(c): v[0] if isinstance(v, (list, tuple)) else v
                              for c, v in (getattr(tuner, "configs_timings", None) or {}).items()}
        # x read from a channels_last_3d copy (copy timed in "new_cl", not in "new_cl_given"); tuned afresh
        tuner.cache.clear()
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        flags = {"HAS_BIAS": True, "INDEX_64": False, **tk._dtype_flags(dt, "tf32")}
        y_cl = torch.empty(ref.shape, device=dev, dtype=dt)
        for label, xin in (("new_cl_given", lambda: x_cl), ("new_cl", lambda: x.contiguous(memory_format=torch.channels_last_3d))):
            fwd = lambda: tk._phase_gemm_forward(xin(), wt, b, y_cl, (s,) * 3, (p,) * 3, 1, flags)
            fwd()
            torch.cuda.synchronize()
            rec[f"{label}_err"] = ((y_cl.float() - ref).norm() / ref.norm()).item()
            rec[f"{label}_ms"] = triton.testing.do_bench(graphed(fwd, dev), warmup=25, rep=100, return_mode="median")
        rec["new_cl_config"] = str(tuner.best_config)
        rec["new_cl_timings"] = {str(c): v[0] if isinstance(v, (list, tuple)) else v
                                 for c, v in (getattr(tuner, "configs_timings", None) or {}).items()}
        tuner.cache.clear()
        for layout, xx in (("ncdhw", x), ("cl", x.contiguous(memory_format=torch.channels_last_3d))):
            cud = lambda: F.conv_transpose3d(xx, w, b, stride=s, padding=p, output_padding=op)
            cud()
            rec[f"cudnn_{layout}_ms"] = triton.testing.do_bench(graphed(cud, dev), warmup=25, rep=100,
                                                                return_mode="median")
        floor_bytes = (x.numel() + w.numel() + b.numel() + ref.numel()) * x.element_size()
        rec["floor_bytes"] = floor_bytes
        out.append(rec)
        print(json.dumps({kk: (round(v, 5) if isinstance(v, float) else v) for kk, v in rec.items() if "timings" not in kk}), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
