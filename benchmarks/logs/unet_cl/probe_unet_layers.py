"""Probe (sixteenth session): the SR U-Net's three upsampling layers (x2_iso preset, LR patch 16: 128->64 at 4^3,
64->32 at 8^3, 32->32 at 16^3, kernel = stride = 2) at batches 16 and 64, bf16, NCDHW and channels_last_3d,
graphed forward and forward+backward, ours against cuDNN; grad_output either contiguous in the layout or, as the
U-Net's torch.cat hands it back, a channel slice of a twice-as-wide tensor; then each kernel our f+b launches
(torch.profiler, one eager call) in channels_last_3d.
Usage on the GPU machine:  python benchmarks/logs/unet_cl/probe_unet_layers.py OUT"""
import json, sys, time
sys.path[:0] = ["scripts"]
import torch
from torch.profiler import ProfilerActivity, profile
from bench_conv_transpose3d import Problem, Shape, graphed, timeit

DEV, OUT, T0, rows = torch.device("cuda"), sys.argv[1], time.time(), []
torch.backends.cudnn.benchmark = True
LAYERS = [(128, 64, 4), (64, 32, 8), (32, 32, 16)]
for batch in (64, 16):
    for ci, co, size in LAYERS:
        shape = Shape(f"{batch}, {ci}->{co}, {size}^3, k2s2", batch, ci, co, size, 2, 2, 0, 0, ())
        prob = Problem(shape, torch.bfloat16, DEV)
        for layout in ("ncdhw", "channels_last"):
            for grad in ("dense", "cat_slice"):
                if grad == "cat_slice":  # the U-Net's cat: grad_y is channels [0, C_out) of a 2*C_out tensor
                    wide = torch.randn(batch, 2 * co, *(shape.out,) * 3, device=DEV, dtype=torch.bfloat16)
                    if layout == "channels_last":
                        wide = wide.contiguous(memory_format=torch.channels_last_3d)
                    prob.gy[layout] = wide[:, :co]
                for impl in ("ours", "cudnn"):
                    for mode in ("fwd", "fwdbwd"):
                        if mode == "fwd" and grad == "cat_slice":
                            continue
                        rec = dict(batch=batch, layer=f"{ci}->{co} {size}^3", layout=layout, grad=grad, impl=impl,
                                   mode=mode)
                        try:
                            rec["ms"] = timeit(graphed(prob.fn(impl, mode, layout), DEV), DEV)
                        except Exception as e:
                            rec["error"] = f"{type(e).__name__}: {str(e)[-300:]}"
                        rec["t"] = round(time.time() - T0, 1)
                        print(json.dumps(rec), flush=True)
                        rows.append(rec)
                        json.dump(rows, open(OUT + "/probe_unet_layers.json", "w"), indent=1)
                if layout == "channels_last" and batch == 64:
                    replay = prob.fn("ours", "fwdbwd", layout)  # eager: the same kernels, named
                    replay()
                    torch.cuda.synchronize()
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        replay()
                        torch.cuda.synchronize()
                    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=70)
                    with open(OUT + "/probe_unet_layers_kernels.txt", "a") as f:
                        f.write(f"== {shape.name}, {layout}, grad {grad}\n{table}\n")
            prob.gy[layout] = prob.gy[layout].contiguous(memory_format=torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format)
