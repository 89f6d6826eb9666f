"""Probe 4 (kernel_notes.md v3h): grad_input by TMA (_bwd_input_tma_kernel) on channels_last_3d c and d (graphed,
L2 flushed; errors against float64 torch on the GPU; the v3g kernel's times are in logs/kernel_v3g/probe_v3g.json),
b's fp32 forward by TMA with BLOCK_K 64 against 32, forward+backward of d and c (bf16, channels_last_3d) against
cuDNN, and odd shapes' grad_input for correctness. Writes OUT.json after every record.
Ran in the thirteenth session (2026-12-03, H200) from scripts/ with the TMA grad_input applied: probe_v3h4.json."""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from bench_env import pinned_configs
from app.kernels import triton_kernels as tk
from app.kernels.functional import conv_transpose3d
dev = torch.device("cuda")
CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
torch.backends.cudnn.benchmark = True
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
out, T0 = [], time.time()
def emit(rec):
    rec["t"] = round(time.time() - T0, 1)
    print(json.dumps(rec), flush=True); out.append(rec); json.dump(out, open(sys.argv[1], "w"), indent=1)
SH = {"c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
      "dec256_k3": (2, 256, 128, (8,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "k5s3": (2, 16, 16, (2, 3, 4), (5, 5, 5), (3, 3, 3), (2, 2, 2), (2, 2, 2)),
      "aniso_k": (2, 64, 40, (7, 9, 11), (3, 4, 2), (2, 2, 2), (1, 1, 0), (1, 0, 0))}
def grad_input_case(name, dt, timed, pin=None):
    n, ci, co, size, k, s, p, op = SH[name]
    g = torch.Generator(device=dev).manual_seed(3)
    x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
    w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64)
    ys = [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
    gy = torch.randn(n, co, *ys, device=dev, generator=g, dtype=torch.float64)
    ref = torch.ops.aten.convolution_backward(gy, x, w, None, s, p, (1,) * 3, True, op, 1, (True, False, False))[0]
    gyc = gy.to(T[dt]).contiguous(memory_format=CL); wt = tk.tap_major(w.to(T[dt]), T[dt])
    rec = dict(part="grad_input", shape=name, dtype=dt, eligible=tk.grad_input_uses_tma(gyc, ci, True, s, (1,) * 3, 1))
    fn = lambda: tk.grad_input(gyc, wt, x.shape, True, s, p, (1,) * 3, 1, "tf32")
    try:
        with pinned_configs(pin):
            gx = fn(); gx2 = fn(); torch.cuda.synchronize()
            rec["err"] = ((gx.double() - ref).norm() / ref.norm()).item()
            rec["finite"] = bool(torch.isfinite(gx).all()); rec["repeat_equal"] = bool(torch.equal(gx, gx2))
            rec["cl"] = tk.is_channels_last(gx)
            if timed:
                rec["ms"] = bench(fn)
                rec["config"] = str(getattr(tk._bwd_input_tma_tuned, "best_config", None))
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {str(e)[-500:]}"
    emit(rec)
for dt in ("bf16", "fp32"):
    for name in ("d", "c"):
        grad_input_case(name, dt, True)
# b's fp32 forward: BLOCK_K 32 (as shipped) against 64
n, ci, co, size, k, s, p, op = SH["b"]
x = torch.randn(n, ci, *size, device=dev).contiguous(memory_format=CL)
w = torch.randn(ci, co, *k, device=dev) / 16
b = torch.randn(co, device=dev)
ref = F.conv_transpose3d(x.double(), w.double(), b.double(), s, p, op)
rec = dict(part="fwd_b_fp32_block_k")
for label, tile in (("k32", tk._FWD_TMA_TILE), ("k64", (128, 128, 128))):
    tk._FWD_TMA_TILE = tile
    try:
        fn = lambda: conv_transpose3d(x, w, b, s, p, op)
        y = fn(); torch.cuda.synchronize()
        rec[f"{label}_err"] = ((y.double() - ref).norm() / ref.norm()).item()
        rec[f"{label}_ms"] = bench(fn)
    except Exception as e:
        rec[f"{label}_error"] = f"{type(e).__name__}: {str(e)[-300:]}"
tk._FWD_TMA_TILE = (128, 128, 64)
emit(rec)
for name in ("d", "c"):
    n, ci, co, size, k, s, p, op = SH[name]
    g = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(n, ci, *size, device=dev, generator=g).to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_()
    w = (torch.randn(ci, co, *k, device=dev, generator=g) / 8).to(torch.bfloat16).requires_grad_()
    b = torch.randn(co, device=dev, generator=g).to(torch.bfloat16).requires_grad_()
    ys = [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
    gy = torch.randn(n, co, *ys, device=dev, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
    rec = dict(part="fwd+bwd", shape=name, dtype="bf16")
    for label, conv in (("ours", conv_transpose3d), ("cudnn", F.conv_transpose3d)):
        def step(conv=conv):
            x.grad = w.grad = b.grad = None
            conv(x, w, b, stride=s, padding=p, output_padding=op).backward(gy)
        rec[f"{label}_ms"] = bench(step)
    rec["cudnn_over_ours"] = rec["cudnn_ms"] / rec["ours_ms"]
    emit(rec)
for i, name in enumerate(("dec256_k3", "k5s3", "aniso_k")):
    for j, dt in enumerate(("bf16", "fp32", "fp16")):
        grad_input_case(name, dt, False, pin=i + j)
