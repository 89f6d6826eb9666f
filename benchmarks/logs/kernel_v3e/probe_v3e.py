"""Probe (kernel_notes.md v3e): the kernels before and after v3e side by side on kernel = stride shapes, each
call replayed from a CUDA graph (L2 flushed): forward, grad_weight (with the bias sum), grad_input; outputs and
gradients checked against cuDNN in fp32. "old" is app/kernels/triton_kernels.py of commit 50e1563, saved for the
run as scripts/_tmp_old_triton_kernels.py (git show 50e1563:app/kernels/triton_kernels.py > ...). Ran from the repo
root as: python scripts/_tmp_probe9.py probe_v3e.json 120   (arguments: output JSON, time budget in s)"""
import json, sys, time, torch, triton
import torch.nn.functional as F
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as new
import _tmp_old_triton_kernels as old
dev = torch.device("cuda")
BF, FP = torch.bfloat16, torch.float32
SHAPES = [("a", (2, 64, 32, 64), BF), ("b", (2, 256, 128, 16), BF), ("a", (2, 64, 32, 64), FP),
          ("b", (2, 256, 128, 16), FP), ("to_hr-b16", (16, 32, 32, 16), BF), ("a-W40", (2, 64, 32, 40), BF),
          ("dec256-8", (2, 256, 128, 8), BF)]
out, T0 = [], time.time()
budget = float(sys.argv[2])
for name, (n, ci, co, size), dt in SHAPES:
    for _ in (0,):
        if time.time() - T0 > budget:
            break
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(n, ci, size, size, size, device=dev, generator=g).to(dt)
        w = (torch.randn(ci, co, 2, 2, 2, device=dev, generator=g) / (ci * 8) ** 0.5).to(dt)
        b = torch.randn(co, device=dev, generator=g).to(dt)
        osz = 2 * size
        gy = torch.randn(n, co, osz, osz, osz, device=dev, generator=g).to(dt)
        ref = F.conv_transpose3d(x.float(), w.float(), b.float(), stride=2)
        rec = dict(shape=name, dtype=str(dt)[6:])
        for label, mod in (("old", old), ("new", new)):
            fwd = lambda: mod.forward(x, w, b, ref.shape, (2,) * 3, (0,) * 3, (1,) * 3, 1, "tf32")
            y = fwd()
            rec[f"{label}_fwd_err"] = ((y.float() - ref).norm() / ref.norm()).item()
            rec[f"{label}_fwd_ms"] = triton.testing.do_bench(graphed(fwd, dev), warmup=25, rep=100, return_mode="median")
            wg = lambda: mod.grad_weight(x, gy, (ci, co, 2, 2, 2), dt, dt, (2,) * 3, (0,) * 3, (1,) * 3, 1, "tf32")
            gw, gb = wg()
            rec[f"{label}_wgrad_ms"] = triton.testing.do_bench(graphed(wg, dev), warmup=25, rep=100, return_mode="median")
            rec[f"{label}_gw"] = gw.float()
            gi = lambda: mod.grad_input(gy, w, x.shape, False, (2,) * 3, (0,) * 3, (1,) * 3, 1, "tf32")
            rec[f"{label}_gx"] = gi().float()
            rec[f"{label}_gin_ms"] = triton.testing.do_bench(graphed(gi, dev), warmup=25, rep=100, return_mode="median")
        refgw = torch.ops.aten.convolution_backward(gy.float(), x.float(), w.float(), None, (2,) * 3, (0,) * 3, (1,) * 3,
                                                    True, (0,) * 3, 1, (False, True, False))[1]
        refgx = torch.ops.aten.convolution_backward(gy.float(), x.float(), w.float(), None, (2,) * 3, (0,) * 3,
                                                    (1,) * 3, True, (0,) * 3, 1, (True, False, False))[0]
        for label in ("old", "new"):
            gw = rec.pop(f"{label}_gw")
            rec[f"{label}_wgrad_err"] = ((gw - refgw).norm() / refgw.norm()).item()
            gx = rec.pop(f"{label}_gx")
            rec[f"{label}_gin_err"] = ((gx - refgx).norm() / refgx.norm()).item()
        torch.backends.cudnn.benchmark = True
        cud = lambda: F.conv_transpose3d(x, w, b, stride=2)
        rec["cudnn_fwd_ms"] = triton.testing.do_bench(graphed(cud, dev), warmup=25, rep=100, return_mode="median")
        rec["new_fwd_config"] = str(new._fwd_gemm_tuned.best_config)
        rec["new_gin_config"] = str(new._bwd_input_gemm_tuned.best_config)
        rec["new_wgrad_config"] = str((new._bwd_weight_wide_tuned if ci >= 128 else new._bwd_weight_tuned).best_config)
        out.append(rec)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
