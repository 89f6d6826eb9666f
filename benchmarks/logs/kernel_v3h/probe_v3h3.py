"""Probe 3 (kernel_notes.md v3h): the TMA forward (_fwd_phase_tma_kernel) against cuDNN on a-d (graphed, L2 flushed by do_bench), errors against float64 torch on the GPU;
correctness of odd eligible shapes with one pinned configuration each; the TMA grad_weight (C_in >= 64, 16-bit)
on its eligible shapes; d's and c's forward+backward (autograd, channels_last_3d) of ours against cuDNN.
Ran from the repo root as scripts/_tmp_probe_v3h3.py (the tree of commit acddf34): python scripts/_tmp_probe_v3h3.py
OUT.json (writes OUT.json after every record)"""
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
def tensors(n, ci, co, size, k, s, p, op, bias=True, seed=1):
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
    w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64) / (ci * (k[0] * k[1] * k[2]) / 8) ** 0.5
    b = torch.randn(co, device=dev, generator=g, dtype=torch.float64) if bias else None
    return x, w, b
MAIN = {"a": (2, 64, 32, (64,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
        "b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
        "c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
        "d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3)}
ODD = {"dec256_k4": (2, 256, 128, (8,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
       "dec256_k3": (2, 256, 128, (8,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
       "dec128_k2": (2, 128, 64, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
       "aniso": (2, 64, 40, (7, 9, 11), (3, 4, 2), (2, 2, 2), (1, 1, 0), (0, 1, 0)),
       "k5s3": (1, 16, 16, (2, 3, 4), (5, 5, 5), (3, 3, 3), (2, 2, 2), (2, 2, 2)),
       "ragged": (1, 64, 12, (5, 6, 70), (4, 3, 4), (2, 2, 2), (1, 1, 1), (0, 1, 0)),
       "wide": (1, 256, 64, (12, 10, 20), (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3)}
fwd_tma = tk.forward_uses_tma
def forward_case(name, shape, dt, timed, pin=None):
    n, ci, co, size, k, s, p, op = shape
    x, w, b = tensors(*shape, bias=(pin is None or pin % 2 == 0))
    ref = F.conv_transpose3d(x, w, b, s, p, op)
    xc = x.to(T[dt]).contiguous(memory_format=CL); wd = w.to(T[dt]); bd = None if b is None else b.to(T[dt])
    rec = dict(part="fwd", shape=name, dtype=dt, eligible=fwd_tma(xc, ref.shape[2:], s, (1,) * 3, 1, co))
    fn = lambda: conv_transpose3d(xc, wd, bd, s, p, op)
    for label, route in (("tma", fwd_tma),):  # the old phase GEMM's times: logs/kernel_v3g/probe_v3g.json
        tk.forward_uses_tma = route
        try:
            with pinned_configs(pin):
                y = fn(); y2 = fn(); torch.cuda.synchronize()
                rec[f"{label}_err"] = ((y.double() - ref).norm() / ref.norm()).item()
                rec[f"{label}_finite"] = bool(torch.isfinite(y).all()); rec[f"{label}_repeat_equal"] = bool(torch.equal(y, y2))
                rec[f"{label}_cl"] = tk.is_channels_last(y)
                if timed:
                    rec[f"{label}_ms"] = bench(fn)
        except Exception as e:
            rec[f"{label}_error"] = f"{type(e).__name__}: {str(e)[-500:]}"
        finally:
            tk.forward_uses_tma = fwd_tma
    if timed:
        cud = lambda: F.conv_transpose3d(xc, wd, bd, stride=s, padding=p, output_padding=op)
        rec["cudnn_cl_ms"] = bench(cud)
        rec["tma_config"] = str(getattr(tk._fwd_phase_tma_tuned, "best_config", None))
    emit(rec)
for dt in ("bf16", "fp32"):
    for name, shape in MAIN.items():
        forward_case(name, shape, dt, True)
# grad_weight by TMA: eligible shapes, correctness; d timed against the old kernel
wg_tma = tk.grad_weight_uses_tma
for name, shape in [("d", MAIN["d"]), *[(k, ODD[k]) for k in ("dec256_k4", "dec256_k3", "aniso", "ragged", "wide")]]:
    n, ci, co, size, k, s, p, op = shape
    x, w, _ = tensors(*shape)
    ys = [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
    gy = torch.randn(n, co, *ys, device=dev, dtype=torch.float64)
    ref = torch.ops.aten.convolution_backward(gy, x, w, None, s, p, (1,) * 3, True, op, 1, (False, True, False))[1]
    xc, gyc = (t.to(torch.bfloat16).contiguous(memory_format=CL) for t in (x, gy))
    rec = dict(part="wgrad", shape=name, dtype="bf16", eligible=wg_tma(xc, gyc, s, (1,) * 3, 1, False))
    fn = lambda: tk.grad_weight(xc, gyc, w.shape, torch.bfloat16, None, s, p, (1,) * 3, 1, "tf32")
    for label, route in (("tma", wg_tma), ("old", lambda *a: False)):
        tk.grad_weight_uses_tma = route
        try:
            gw, _ = fn(); gw2, _ = fn(); torch.cuda.synchronize()
            rec[f"{label}_err"] = ((gw.double() - ref).norm() / ref.norm()).item()
            rec[f"{label}_repeat_equal"] = bool(torch.equal(gw, gw2))
            if name == "d":
                rec[f"{label}_ms"] = bench(fn)
        except Exception as e:
            rec[f"{label}_error"] = f"{type(e).__name__}: {str(e)[-500:]}"
        finally:
            tk.grad_weight_uses_tma = wg_tma
    emit(rec)
# forward + backward, channels_last_3d, bf16, ours (as routed) against cuDNN
for name in ("d", "c"):
    n, ci, co, size, k, s, p, op = MAIN[name]
    x, w, b = (t.float() for t in tensors(*MAIN[name], seed=2))
    x = x.to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_()
    w = w.to(torch.bfloat16).requires_grad_(); b = b.to(torch.bfloat16).requires_grad_()
    ys = [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
    gy = torch.randn(n, co, *ys, device=dev).to(torch.bfloat16).contiguous(memory_format=CL)
    rec = dict(part="fwd+bwd", shape=name, dtype="bf16")
    for label, conv in (("ours", conv_transpose3d), ("cudnn", F.conv_transpose3d)):
        def step(conv=conv):
            x.grad = w.grad = b.grad = None
            conv(x, w, b, stride=s, padding=p, output_padding=op).backward(gy)
        rec[f"{label}_ms"] = bench(step)
    rec["cudnn_over_ours"] = rec["cudnn_ms"] / rec["ours_ms"]
    emit(rec)

for i, (name, shape) in enumerate(ODD.items()):
    for j, dt in enumerate(("bf16", "fp32", "fp16")):
        forward_case(name, shape, dt, False, pin=i + j)
