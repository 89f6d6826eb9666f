#!/usr/bin/env python
"""Model-level benchmark: the SR U-Net with Triton vs torch (cuDNN) upsampling, same weights, side by side.

  * training step (forward + backward + AdamW step, bf16 autocast on CUDA) on a batch of LR patches, at each
    ``--batch`` (CUDA default 16 and 64; an H200 waits on the host at both, benchmarks/ddp_notes.md);
  * whole-volume inference through ``app.infer.super_resolve`` (MONAI sliding window, Gaussian blending) of a
    2 mm (96x116x96) and a 1 mm (182x218x182) brain-sized volume, x2 per axis.
Inputs are fresh random values (never zeros); medians over repeats after warm-up, the modes interleaved in every
repeat (order reversed every other repeat); times with device syncs.
Writes JSON + a markdown table (card, torch, Triton, cuDNN versions) to --out.

GPU:  python scripts/bench_model.py [--ckpt run/checkpoints/last.ckpt] --out benchmarks/model_bench_gpu.json
CPU:  python scripts/bench_model.py --device cpu --volumes 2mm --out benchmarks/model_bench_cpu.json
--profile DIR adds torch.profiler op tables of one more run of every job (where the time goes, per mode).
--compile MODE times both nets compiled (torch.compile, e.g. reduce-overhead: CUDA graphs against the host cost).
--memory-format channels_last_3d runs both nets (weights and inputs) in channels_last_3d (NDHWC) instead of NCDHW.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from app.infer import WindowSettings, super_resolve  # noqa: E402
from app.nn.checkpoint import load_sr_model  # noqa: E402
from app.nn.unet import SRUNet  # noqa: E402
from app.train import compose_train_config  # noqa: E402
from bench_env import environment, own_time_attribute, profile_ops  # noqa: E402

VOLUMES = {"2mm": (96, 116, 96), "1mm": (182, 218, 182)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int,
                    warmup: int) -> dict[str, float]:
    """Median wall seconds of each of ``fns`` (by name), the names interleaved in every repeat and their order
    reversed every other repeat, so that drift of the host or the card's clocks during the run reaches all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _profile(fn, device: torch.device, path: Path | None) -> None:
    """One more run of ``fn`` (already warm) under torch.profiler: its op table, by own device time, to ``path``."""
    if path is None:
        return
    table = profile_ops(fn, device).table(sort_by=own_time_attribute(device), row_limit=30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)


def _model_kwargs(args: argparse.Namespace) -> tuple[dict, dict]:
    """(U-Net kwargs, meta) from a checkpoint, or from the composed x2_iso experiment preset."""
    if args.ckpt:
        _, meta = load_sr_model(args.ckpt)
        return dict(meta["model"]), meta
    cfg = compose_train_config(["experiment=x2_iso"])
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    meta = {"scale": kwargs["scale"], "intensity": {"lower_percentile": 0.5, "upper_percentile": 99.5},
            "model": kwargs}
    return kwargs, meta


def _nets(kwargs: dict, device: torch.device, ckpt: str | None, modes: list[str],
          compile_mode: str | None = None, memory_format: torch.memory_format = torch.contiguous_format,
          ) -> dict[str, SRUNet]:
    """The net with each upsampling mode in ``modes``, all with identical weights in ``memory_format``; compiled in
    place (``nn.Module.compile``, the Triton layers as one custom op each) when ``compile_mode`` is given."""
    reference = SRUNet(**kwargs)
    if ckpt:
        reference.load_state_dict(load_sr_model(ckpt)[0].state_dict())
    nets = {}
    for mode in modes:
        nets[mode] = SRUNet(**{**kwargs, "upsample": mode}).to(device, memory_format=memory_format)
        nets[mode].load_state_dict(reference.state_dict())
        if compile_mode:
            nets[mode].compile(mode=compile_mode, fullgraph=True, dynamic=False)  # static shapes: the few there are
    return nets


def _ratio(row: dict, unit: str) -> float | None:
    return row[f"triton_{unit}"] / row[f"torch_{unit}"] if f"triton_{unit}" in row and f"torch_{unit}" in row else None


def _training_step(net: SRUNet, x: torch.Tensor, target: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """One AdamW training step of ``net`` on (x, target), bf16 autocast on CUDA, as a closure."""
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.l1_loss(net(x).float(), target)
        loss.backward()
        opt.step()

    return step


def bench_training_step(nets: dict[str, SRUNet], kwargs: dict, device: torch.device, batch: int,
                        lr_patch: int, repeats: int, profile_dir: Path | None = None,
                        memory_format: torch.memory_format = torch.contiguous_format) -> dict:
    scale = kwargs["scale"]
    x = torch.rand(batch, 1, lr_patch, lr_patch, lr_patch, device=device).contiguous(memory_format=memory_format)
    target = torch.rand(batch, 1, *(lr_patch * s for s in scale), device=device).contiguous(memory_format=memory_format)
    out = {"batch": batch, "lr_patch": [lr_patch] * 3, "hr_patch": [lr_patch * s for s in scale]}
    steps = {mode: _training_step(net, x, target, device) for mode, net in nets.items()}
    for mode, ms in _median_seconds(steps, device, repeats, warmup=5).items():
        out[f"{mode}_ms"] = 1e3 * ms
    for mode, step in steps.items():
        _profile(step, device, profile_dir and profile_dir / f"train_batch{batch}_{mode}.txt")
        if device.type == "cuda":  # one more step alone: its peak memory
            torch.cuda.reset_peak_memory_stats(device)
            step()
            out[f"{mode}_peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    out["triton_over_torch"] = _ratio(out, "ms")
    return out


def _infer(net: SRUNet, meta: dict, volume: torch.Tensor, window: WindowSettings) -> None:
    net.eval()
    super_resolve(net, meta, volume, window)


def bench_inference(nets: dict[str, SRUNet], meta: dict, device: torch.device, name: str, repeats: int, roi: int,
                    sw_batch: int, profile_dir: Path | None = None) -> dict:
    """Whole-volume x-scale inference of the ``name`` volume (VOLUMES) with each net, same window settings."""
    shape = VOLUMES[name]
    volume = torch.rand(shape) * 1000.0
    window = WindowSettings((roi, roi, roi), 0.25, sw_batch, device, "auto")
    out = {"input_shape": list(shape), "output_shape": [n * s for n, s in zip(shape, meta["scale"])],
           "roi_size": [roi] * 3, "sw_batch_size": sw_batch, "overlap": 0.25}
    runs = {mode: functools.partial(_infer, net, meta, volume, window) for mode, net in nets.items()}
    for mode, seconds in _median_seconds(runs, device, repeats, warmup=1 if device.type == "cuda" else 0).items():
        out[f"{mode}_s"] = seconds
    for mode, run in runs.items():
        _profile(run, device, profile_dir and profile_dir / f"infer_{name}_{mode}.txt")
    out["triton_over_torch"] = _ratio(out, "s")
    return out


def _fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=None, help="trained checkpoint (default: x2_iso preset, random weights)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--volumes", nargs="*", default=list(VOLUMES), choices=list(VOLUMES),
                   help="whole-volume inference jobs (none: training steps only)")
    p.add_argument("--modes", nargs="+", default=["triton", "torch"], choices=["triton", "torch"],
                   help="upsampling layers to time (on CPU both run torch's operator: one is enough)")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="training-step batch sizes (default: 16, x4_thick's, and on CUDA also 64, x2_iso's)")
    p.add_argument("--lr-patch", type=int, default=16, help="LR patch edge (HR = scale x this)")
    p.add_argument("--roi", type=int, default=64)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=None, help="default: 20 steps / 3 volumes on CUDA, fewer on CPU")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "model_bench_gpu.json")
    p.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile both nets with this mode (reduce-overhead: CUDA graphs) before timing; the "
                        "warm-up runs hold the compilation")
    p.add_argument("--memory-format", default="contiguous", choices=["contiguous", "channels_last_3d"],
                   help="memory format of both nets' weights and inputs (NCDHW or NDHWC)")
    p.add_argument("--profile", type=Path, default=None,
                   help="folder for torch.profiler op tables (by own device time) of one extra run of every job")
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    kwargs, meta = _model_kwargs(args)
    formats = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
    memory_format = formats[args.memory_format]
    nets = _nets(kwargs, device, args.ckpt, args.modes, args.compile, memory_format)
    on_cuda = device.type == "cuda"
    result = {
        "script": "scripts/bench_model.py", **environment(device), "cpu_threads": torch.get_num_threads(),
        "model": kwargs, "ckpt": args.ckpt, "autocast": "bf16" if on_cuda else "off (fp32)",
        "compile": args.compile, "memory_format": args.memory_format,
    }
    result["training_steps"] = []
    for batch in args.batch or ([16, 64] if on_cuda else [16]):
        step = bench_training_step(nets, kwargs, device, batch, args.lr_patch, args.repeats or (20 if on_cuda else 3),
                                   args.profile, memory_format)
        result["training_steps"].append(step)
        print(f"training step: {json.dumps(step)}", flush=True)
    result["inference"] = {}
    for name in args.volumes:
        result["inference"][name] = bench_inference(nets, meta, device, name, args.repeats or (3 if on_cuda else 1),
                                                    args.roi, args.sw_batch, args.profile)
        print(f"inference {name}: {json.dumps(result['inference'][name])}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lines = [
        "# SR U-Net: Triton vs torch (cuDNN) upsampling", "",
        f"{result['date'][:10]} · {result['device']} · torch {result['torch']} · Triton {result['triton']} · "
        f"cuDNN {result['cudnn']} · autocast {result['autocast']} · torch.compile {args.compile or 'off'} · "
        f"memory format {args.memory_format} · "
        f"model channels {kwargs['channels']}, "
        f"strides {kwargs['strides']}, scale {kwargs['scale']}", "",
        "| job | " + " | ".join(args.modes) + " | triton / torch |", "|---" * (len(args.modes) + 2) + "|",
    ]
    for step in result["training_steps"]:
        lines.append(f"| training step, batch {step['batch']}, HR patch {step['hr_patch']} | "
                     + " | ".join(f"{step[f'{m}_ms']:.2f} ms" for m in args.modes)
                     + f" | {_fmt_ratio(step['triton_over_torch'])} |")
    for name, row in result["inference"].items():
        lines.append(f"| inference {name} {row['input_shape']} -> {row['output_shape']} | "
                     + " | ".join(f"{row[f'{m}_s']:.2f} s" for m in args.modes)
                     + f" | {_fmt_ratio(row['triton_over_torch'])} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
