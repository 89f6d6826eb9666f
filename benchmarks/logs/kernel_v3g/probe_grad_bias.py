"""Probe (kernel_notes.md v3g): grad_bias of c's and d's channels_last_3d grad_output, torch's channel sum against
the split channel-sum kernel, graphed, L2 flushed; error against float64. Ran from the repo root as
scripts/_tmp_probe_gb.py (commit 1e595b0): python scripts/_tmp_probe_gb.py OUT.json"""
import json, sys, torch, triton
sys.path.insert(0, "scripts")
from bench_conv_transpose3d import graphed
from app.kernels import triton_kernels as tk
dev = torch.device("cuda")
out = []
for name, shape in (("c", (1, 16, 192, 192, 192)), ("d", (2, 32, 64, 64, 64))):
    for dt in (torch.bfloat16, torch.float32):
        gy = torch.randn(shape, device=dev, dtype=dt).contiguous(memory_format=torch.channels_last_3d)
        ref = gy.double().sum(dim=(0, 2, 3, 4))
        rec = dict(shape=name, dtype=str(dt)[6:], mbytes=gy.numel() * gy.element_size() / 1e6)
        for label, fn in (("torch", lambda: gy.sum(dim=(0, 2, 3, 4), dtype=torch.float32)),
                          ("kernel", lambda: tk.grad_bias(gy, torch.float32))):
            got = fn(); torch.cuda.synchronize()
            rec[label + "_err"] = ((got.double() - ref).norm() / ref.norm()).item()
            rec[label + "_ms"] = triton.testing.do_bench(graphed(fn, dev), warmup=25, rep=100, return_mode="median")
        out.append(rec)
        print(json.dumps(rec), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
