"""Probe (kernel_notes.md v3e): host cost of the eager op (autograd.Function) on shapes b and a against cuDNN:
eager and graphed times, host enqueue time per forward + backward, and a torch.profiler CPU table for b.
Ran from the repo root on the GPU machine as: python scripts/_tmp_host9.py"""
import sys, time, torch, triton
import torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels.functional import conv_transpose3d
dev = torch.device("cuda")
torch.backends.cudnn.benchmark = True
for name, (n, ci, co, size) in {"b": (2, 256, 128, 16), "a": (2, 64, 32, 64)}.items():
    for dt in (torch.bfloat16,):
        x = torch.randn(n, ci, size, size, size, device=dev).to(dt).requires_grad_()
        w = (torch.randn(ci, co, 2, 2, 2, device=dev) / (ci * 8) ** 0.5).to(dt).requires_grad_()
        b = torch.randn(co, device=dev).to(dt).requires_grad_()
        gy = torch.randn(n, co, 2 * size, 2 * size, 2 * size, device=dev).to(dt)
        for label, op in (("ours", conv_transpose3d), ("torch", F.conv_transpose3d)):
            def fb():
                y = op(x, w, b, stride=2)
                return torch.autograd.grad(y, (x, w, b), gy)
            fwd = lambda: op(x.detach(), w.detach(), b.detach(), stride=2)
            fb(); fb(); fwd()
            e_fb = triton.testing.do_bench(fb, warmup=25, rep=200, return_mode="median")
            e_f = triton.testing.do_bench(fwd, warmup=25, rep=200, return_mode="median")
            g_fb = triton.testing.do_bench(graphed(fb, dev), warmup=25, rep=200, return_mode="median")
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(200):
                fb()
            host = (time.perf_counter() - t) / 200 * 1e3
            torch.cuda.synchronize()
            loop = (time.perf_counter() - t) / 200 * 1e3
            print(f"{name} {str(dt)[6:]} {label}: eager fwd {e_f:.3f} ms, eager f+b {e_fb:.3f}, graphed f+b {g_fb:.3f}, "
                  f"host enqueue per f+b {host:.3f} ms, loop per f+b {loop:.3f} ms", flush=True)
            if name == "b":
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(50):
                        fb()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=60))
