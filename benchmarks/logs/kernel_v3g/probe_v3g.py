"""Probe (kernel_notes.md v3g): on channels_last_3d x, the forward through the phase GEMM writing channels_last_3d y
("new") against the phase kernel _fwd_kernel ("old", a and b only: c and d's old figures are in v3f's bench), and
cuDNN; grad_weight on channels_last_3d tensors of c and d as routed, and with its output-bound masks dropped
(IN_BOUNDS forced: wrong near the borders, timed only, to price the masks); grad_input of c and d as tuned and with
each of a few pinned configurations. Each call replayed from a CUDA graph, L2 flushed by do_bench.
Ran from the repo root as scripts/_tmp_probe_v3g.py (commit b7252d8): python scripts/_tmp_probe_v3g.py OUT.json BUDGET_S"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda")
BF, FP = torch.bfloat16, torch.float32
CL = torch.channels_last_3d
SHAPES = {"a": ((2, 64, 32, 64), 2, 2, 0, 0), "b": ((2, 256, 128, 16), 2, 2, 0, 0),
          "c": ((1, 32, 16, 96), 3, 2, 1, 1), "d": ((2, 64, 32, 32), 4, 2, 1, 0)}
out, T0, budget = [], time.time(), float(sys.argv[2])
torch.backends.cudnn.benchmark = True
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
def timings(tuner):
    return {str(c): (v[0] if isinstance(v, (list, tuple)) else v) for c, v in (getattr(tuner, "configs_timings", None) or {}).items()}
is_phase = tk.forward_is_phase_gemm
for part in ("fwd", "bwd"):
    for dt in (BF, FP):
        for name, ((n, ci, co, size), k, s, p, op) in SHAPES.items():
            if part == "bwd" and name in "ab":
                continue
            if time.time() - T0 > budget:
                print("budget reached", flush=True); break
            g = torch.Generator(device=dev).manual_seed(1)
            x = torch.randn(n, ci, size, size, size, device=dev, generator=g)
            w = torch.randn(ci, co, k, k, k, device=dev, generator=g) / (ci * k ** 3 / 8) ** 0.5
            b = torch.randn(co, device=dev, generator=g)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            ref = F.conv_transpose3d(x, w, b, stride=s, padding=p, output_padding=op)
            torch.backends.cudnn.allow_tf32 = True
            xc, wd, bd = x.to(dt).contiguous(memory_format=CL), w.to(dt), b.to(dt)
            wt = tk.tap_major(wd, dt)
            rec = dict(part=part, shape=name, dtype=str(dt)[6:])
            geo = ((s,) * 3, (p,) * 3, (1,) * 3)
            if part == "fwd":
                for label, route in (("new", is_phase), ("old", lambda *a: False)):
                    if label == "old" and name in "cd":
                        continue
                    tk.forward_is_phase_gemm = route
                    fwd = lambda: tk.forward(xc, wt, bd, ref.shape, *geo, 1, "tf32")
                    y = fwd(); torch.cuda.synchronize()
                    rec[f"{label}_err"] = ((y.float() - ref).norm() / ref.norm()).item()
                    rec[f"{label}_cl_out"] = y.is_contiguous(memory_format=CL)
                    rec[f"{label}_ms"] = bench(fwd)
                tk.forward_is_phase_gemm = is_phase
                rec["new_config"] = str(tk._fwd_phase_gemm_tuned.best_config)
                rec["new_timings"] = timings(tk._fwd_phase_gemm_tuned)
                cud = lambda: F.conv_transpose3d(xc, wd, bd, stride=s, padding=p, output_padding=op)
                cud(); rec["cudnn_cl_ms"] = bench(cud)
                rec["floor_bytes"] = (x.numel() + w.numel() + b.numel() + ref.numel()) * xc.element_size()
            else:
                # grad_y inside a buffer twice its size (the unmasked probe reads up to two voxels past its ends)
                cl_strides = torch.empty(ref.shape, device="meta").contiguous(memory_format=CL).stride()
                gy = torch.randn(2 * ref.numel(), device=dev, dtype=dt).as_strided(ref.shape, cl_strides, ref.numel() // 2)
                xr = x.double().contiguous(memory_format=CL)
                # references: float64 torch on the GPU
                gw_ref = torch.ops.aten.convolution_backward(gy.double(), xr, w.double(), None, (s,)*3, (p,)*3, (1,)*3, True, (op,)*3, 1, (True, True, False))
                gx_ref, gw_ref = gw_ref[0], gw_ref[1]
                wgrad = lambda: tk.grad_weight(xc, gy, w.shape, dt, None, *geo, 1, "tf32")
                gw, _ = wgrad(); torch.cuda.synchronize()
                rec["wgrad_err"] = ((gw.double() - gw_ref).norm() / gw_ref.norm()).item()
                rec["wgrad_ms"] = bench(wgrad)
                rec["wgrad_config"] = str(tk._bwd_weight_tuned.best_config)
                gemm = tk.is_gemm_geometry
                tk.is_gemm_geometry = lambda *a: True
                try:
                    tk._bwd_weight_tuned.cache.clear()
                    wgrad()
                    rec["wgrad_no_mask_ms"] = bench(wgrad)
                    rec["wgrad_no_mask_config"] = str(tk._bwd_weight_tuned.best_config)
                finally:
                    tk.is_gemm_geometry = gemm
                tk._bwd_weight_tuned.cache.clear()
                dgrad = lambda: tk.grad_input(gy, wt, x.shape, True, *geo, 1, "tf32")
                gx = dgrad(); torch.cuda.synchronize()
                rec["dgrad_err"] = ((gx.double() - gx_ref).norm() / gx_ref.norm()).item()
                rec["dgrad_ms"] = bench(dgrad)
                rec["dgrad_config"] = str(tk._bwd_input_tuned.best_config)
                rec["dgrad_timings"] = timings(tk._bwd_input_tuned)
                for bm, bn, bk, nw, ns in [(128, 32, 16, 4, 4), (64, 32, 16, 4, 3), (128, 64, 16, 4, 3), (256, 32, 16, 8, 3)]:
                    fixed = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns)
                    orig = tk._fixed_gemm_config
                    tk._fixed_gemm_config = lambda dtype: fixed
                    try:
                        gx2 = dgrad(); torch.cuda.synchronize()
                        key = f"dgrad_{bm}_{bn}_{bk}_{nw}_{ns}"
                        rec[key + "_err"] = ((gx2.double() - gx_ref).norm() / gx_ref.norm()).item()
                        rec[key + "_ms"] = bench(dgrad)
                    except Exception as e:
                        rec[key + "_error"] = repr(e)[:200]
                    finally:
                        tk._fixed_gemm_config = orig
                gb = lambda: tk.grad_bias(gy, dt)
                rec["grad_bias_ms"] = bench(gb)
            out.append(rec)
            print(json.dumps({kk: (round(v, 5) if isinstance(v, float) else v) for kk, v in rec.items() if "timings" not in kk}), flush=True)
            json.dump(out, open(sys.argv[1], "w"), indent=1)
