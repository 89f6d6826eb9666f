#!/usr/bin/env python
"""Record one training run: ``app.train.run`` with Hydra overrides, timed, with its validation/test numbers.

python scripts/bench_train.py --out benchmarks/train_gpu_demo.json -- experiment=x2_iso trainer=gpu trainer.max_epochs=40
Writes JSON + a markdown table: device, versions, steps, patches/s, peak GPU memory, val/test PSNR and SSIM of the
model and of trilinear interpolation on the same patches, the run folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from app.train import compose_train_config, run  # noqa: E402
from bench_env import environment  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "train_gpu_demo.json")
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default: beside --out)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for conf/train.yaml")
    args = p.parse_args()
    run_dir = (args.run_dir or args.out.with_suffix("")).resolve()
    cfg = compose_train_config(args.overrides, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    on_cuda = torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics, objects = run(cfg)
    seconds = time.perf_counter() - start
    trainer = objects["trainer"]
    steps = int(trainer.global_step)
    batch = int(cfg.data.batch_size)
    result = {
        "script": "scripts/bench_train.py", "overrides": args.overrides,
        **environment(torch.device("cuda" if on_cuda else "cpu")),
        "precision": str(cfg.trainer.precision), "upsample": cfg.model.upsample,
        "wall_s": seconds, "global_steps": steps, "epochs": int(trainer.current_epoch),
        "steps_per_s_incl_validation": steps / seconds, "patches_per_s_incl_validation": steps * batch / seconds,
        "batch_size": batch, "patch_size": list(cfg.data.patch_size), "scale": list(cfg.data.scale),
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if on_cuda else None,
        "metrics": metrics, "run_dir": str(run_dir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    rows = [f"| {stage} | {metrics.get(f'{stage}/psnr', float('nan')):.2f} | "
            f"{metrics.get(f'{stage}/psnr_trilinear', float('nan')):.2f} | "
            f"{metrics.get(f'{stage}/ssim', float('nan')):.4f} | {metrics.get(f'{stage}/ssim_trilinear', float('nan')):.4f} |"
            for stage in ("val", "test")]
    mem = f"{result['peak_gpu_mem_gb']:.2f} GB" if on_cuda else "n/a"
    lines = [
        "# Training run", "",
        f"{result['date'][:10]} · {result['device']} · torch {result['torch']} · Triton {result['triton']} · "
        f"cuDNN {result['cudnn']} · precision {result['precision']} · upsample {result['upsample']}", "",
        f"`{' '.join(args.overrides)}`: {steps} steps ({result['epochs']} epochs) in {seconds:.0f} s = "
        f"{result['steps_per_s_incl_validation']:.1f} steps/s, {result['patches_per_s_incl_validation']:.0f} "
        f"patches/s (validation included); peak GPU memory {mem}.", "",
        "| split | PSNR model | PSNR trilinear | SSIM model | SSIM trilinear |", "|---|---|---|---|---|", *rows,
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
