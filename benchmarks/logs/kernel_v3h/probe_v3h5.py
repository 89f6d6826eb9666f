"""Probe 5 (kernel_notes v3h): grad_input TMA against the old kernel in one process (graphed), host cost per call of
the TMA forward against the v3g phase GEMM (eager, no sync, cProfile), f+b with/without TMA grad_input."""
import cProfile, io, json, pstats, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
from app.kernels.functional import conv_transpose3d
dev = torch.device("cuda"); CL = torch.channels_last_3d
T = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
torch.backends.cudnn.benchmark = True
bench = lambda f: triton.testing.do_bench(graphed(f, dev), warmup=25, rep=100, return_mode="median")
eager = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
out, T0 = [], time.time()
OUT = sys.argv[1]
def emit(rec):
    rec["t"] = round(time.time() - T0, 1)
    print(json.dumps(rec), flush=True); out.append(rec); json.dump(out, open(OUT + "/probe_v3h5.json", "w"), indent=1)
SH = {"c": (1, 32, 16, (96,) * 3, (3,) * 3, (2,) * 3, (1,) * 3, (1,) * 3),
      "d": (2, 64, 32, (32,) * 3, (4,) * 3, (2,) * 3, (1,) * 3, (0,) * 3),
      "a": (2, 64, 32, (64,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3),
      "b": (2, 256, 128, (16,) * 3, (2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3)}
ORIG = {n: getattr(tk, n) for n in ("grad_input_uses_tma", "forward_uses_tma")}
def tma(name, on):
    setattr(tk, name, ORIG[name] if on else (lambda *a, **k: False))
def sizes(name):
    n, ci, co, size, k, s, p, op = SH[name]
    return [(i - 1) * st - 2 * pp + kk + o for i, st, pp, kk, o in zip(size, s, p, k, op)]
# A: grad_input TMA vs old, same process
for name in ("d", "c", "a", "b"):
    for dt in ("bf16", "fp32", "fp16"):
        n, ci, co, size, k, s, p, op = SH[name]
        g = torch.Generator(device=dev).manual_seed(3)
        x = torch.randn(n, ci, *size, device=dev, generator=g, dtype=torch.float64)
        w = torch.randn(ci, co, *k, device=dev, generator=g, dtype=torch.float64)
        gy = torch.randn(n, co, *sizes(name), device=dev, generator=g, dtype=torch.float64)
        ref = torch.ops.aten.convolution_backward(gy, x, w, None, s, p, (1,) * 3, True, op, 1, (True, False, False))[0]
        gyc = gy.to(T[dt]).contiguous(memory_format=CL); wt = tk.tap_major(w.to(T[dt]), T[dt])
        rec = dict(part="grad_input", shape=name, dtype=dt, eligible=ORIG["grad_input_uses_tma"](gyc, ci, True, s, (1,) * 3, 1))
        for label, on in (("tma", True), ("old", False)):
            tma("grad_input_uses_tma", on)
            fn = lambda: tk.grad_input(gyc, wt, x.shape, True, s, p, (1,) * 3, 1, "tf32")
            try:
                gx = fn(); torch.cuda.synchronize()
                rec[label + "_err"] = ((gx.double() - ref).norm() / ref.norm()).item()
                rec[label + "_ms"] = bench(fn)
            except Exception as e:
                rec[label + "_error"] = f"{type(e).__name__}: {str(e)[-300:]}"
        tma("grad_input_uses_tma", True)
        emit(rec)
# B: host cost of the forward per call (eager loop, no sync inside), TMA vs v3g
def host_us(fn, calls=300):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return host
for name in ("d", "b", "a"):
    n, ci, co, size, k, s, p, op = SH[name]
    x = torch.randn(n, ci, *size, device=dev).to(torch.bfloat16).contiguous(memory_format=CL)
    w = (torch.randn(ci, co, *k, device=dev) / 8).to(torch.bfloat16); b = torch.randn(co, device=dev).to(torch.bfloat16)
    rec = dict(part="host_fwd", shape=name, dtype="bf16")
    with torch.no_grad():
        fn = lambda: conv_transpose3d(x, w, b, s, p, op)
        for label, on in (("tma", True), ("v3g", False)):
            tma("forward_uses_tma", on)
            rec[label + "_host_us"] = [round(host_us(fn), 1) for _ in range(3)]
            rec[label + "_eager_ms"] = eager(fn)
        tma("forward_uses_tma", True)
        if name == "d":
            pr = cProfile.Profile(); fn(); torch.cuda.synchronize(); pr.enable()
            for _ in range(200):
                fn()
            pr.disable(); torch.cuda.synchronize()
            sio = io.StringIO(); pstats.Stats(pr, stream=sio).sort_stats("tottime").print_stats(30)
            open(OUT + "/cprofile_d_fwd_tma.txt", "w").write(sio.getvalue())
            sio = io.StringIO(); pstats.Stats(pr, stream=sio).sort_stats("cumulative").print_stats(40)
            open(OUT + "/cprofile_d_fwd_tma_cum.txt", "w").write(sio.getvalue())
    emit(rec)
# C: f+b bf16 CL, grad_input TMA on/off, graphed and eager, against cuDNN
for name in ("d", "c"):
    n, ci, co, size, k, s, p, op = SH[name]
    g = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(n, ci, *size, device=dev, generator=g).to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_()
    w = (torch.randn(ci, co, *k, device=dev, generator=g) / 8).to(torch.bfloat16).requires_grad_()
    b = torch.randn(co, device=dev, generator=g).to(torch.bfloat16).requires_grad_()
    gy = torch.randn(n, co, *sizes(name), device=dev, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
    rec = dict(part="fwd+bwd", shape=name, dtype="bf16")
    for label, conv, on in (("ours_tma_gi", conv_transpose3d, True), ("ours_old_gi", conv_transpose3d, False),
                            ("cudnn", F.conv_transpose3d, True)):
        tma("grad_input_uses_tma", on)
        def step(conv=conv):
            x.grad = w.grad = b.grad = None
            conv(x, w, b, stride=s, padding=p, output_padding=op).backward(gy)
        rec[label + "_ms"] = bench(step); rec[label + "_eager_ms"] = eager(step)
    tma("grad_input_uses_tma", True)
    emit(rec)
