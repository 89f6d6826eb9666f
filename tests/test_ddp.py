"""Issue 9: ``trainer=ddp`` trains on several processes (CPU + gloo here, as in CI): one set of checkpoints and logs
(rank 0), the expected global step, per-epoch stats summed over ranks, eval batches that the distributed sampler
repeats are not counted, and each rank draws its own random training patches."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from app.nn.lightning_module import SRLightningModule

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # tiny model and patches, 2 steps per rank, 1 val batch per rank, no test
    "model.channels=[4,8]", "model.strides=[2]", "data.patch_size=[16,16,16]", "data.batch_size=2",
    "data.samples_per_volume=2", "data.patches_per_epoch=8", "data.val_patches=2", "data.num_workers=0",
    "data.cache=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
    "test=false",
]


def test_ddp_spawn_two_cpu_processes_gloo(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "app.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp_spawn", "trainer.precision=32-true", f"hydra.run.dir={out}", *TINY,
           "+callbacks.epoch_stats._target_=app.callbacks.EpochStats"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "0"}  # torch's CPU ops, as a CPU run uses
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # two processes joined one gloo group
    ckpts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.ckpt"))
    assert len(ckpts) == 2 and "checkpoints/last.ckpt" in ckpts and re.fullmatch(
        r"checkpoints/best-epoch000-psnr[\d.]+\.ckpt", next(c for c in ckpts if "best" in c)), ckpts
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 2 steps on each rank, in lockstep (each on its half of the patches)
    assert [p.relative_to(out).as_posix() for p in out.rglob("metrics.csv")] == ["csv/version_0/metrics.csv"]
    assert [p.name for p in (out / "montages").iterdir()] == ["val_epoch000.png"]
    header, *rows = (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert {"val/psnr", "val/ssim", "val/psnr_trilinear", "val/loss", "train/loss"} <= set(header.split(","))
    assert "metrics: " in log and "val/psnr=" in log  # the launching process gets rank 0's metrics back
    (stats,) = [json.loads(line) for line in (out / "epoch_stats.jsonl").read_text().splitlines()]  # rank 0 only
    assert stats["world_size"] == 2 and stats["batches_rank0"] == 2
    assert stats["patches_per_rank"] == [4, 4] and stats["patches"] == 8  # 2 batches of 2 patches on each rank
    assert len(stats["train_s_per_rank"]) == 2 and stats["train_s"] == max(stats["train_s_per_rank"]) > 0
    waits = stats["input_wait_s_per_rank"]  # each rank's time between batches: fetching from its loader
    assert len(waits) == 2 and all(0 < w < t for w, t in zip(waits, stats["train_s_per_rank"]))
    csv_psnr = next(float(r.split(",")[header.split(",").index("val/psnr")]) for r in rows
                    if r.split(",")[header.split(",").index("val/psnr")])
    assert abs(stats["val"]["val/psnr"] - csv_psnr) < 1e-4
    print(f"2-process ddp_spawn run: {elapsed:.1f} s")


def test_eval_batches_repeated_by_the_distributed_sampler_are_not_counted():
    """3 val volumes on 2 ranks: Lightning's sampler gives rank 1 a repeat of volume 0; it must not count."""
    module = SRLightningModule(model={"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8],
                                      "strides": [2], "scale": [2, 2, 2]},
                               intensity={}, degradation={})
    counted = []
    for rank in range(2):
        loader = DataLoader(list(range(3)), batch_size=1,
                            sampler=DistributedSampler(list(range(3)), num_replicas=2, rank=rank, shuffle=False))
        module._trainer = SimpleNamespace(val_dataloaders=loader)
        counted += [int(item) for i, item in enumerate(loader) if not module._is_padding("val", i)]
    assert sorted(counted) == [0, 1, 2]
    module._trainer = SimpleNamespace(val_dataloaders=DataLoader(list(range(3)), batch_size=1))  # one process
    assert not any(module._is_padding("val", i) for i in range(3))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_ranks_draw_different_random_training_patches(num_workers):
    """``seed_everything`` seeds every rank alike and MONAI's DataLoader seeds its random transforms from torch's RNG,
    so without ``setup("fit")`` offsetting ranks > 0 every rank trained on the same random patches."""
    from monai.data import DataLoader as MonaiDataLoader
    from monai.data import Dataset
    from monai.transforms import RandGaussianNoised

    dataset = Dataset([{"x": torch.zeros(1, 4, 4, 4)} for _ in range(4)], RandGaussianNoised(keys="x", prob=1.0))
    module = SRLightningModule(model={"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8],
                                      "strides": [2], "scale": [2, 2, 2]},
                               intensity={}, degradation={})

    def first_batch(rank: int, world_size: int, setup: bool) -> torch.Tensor:
        L.seed_everything(42, workers=True, verbose=False)  # as app.train.run does on every rank
        module._trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        if setup:
            module.setup("fit")
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        return next(iter(MonaiDataLoader(dataset, batch_size=2, sampler=sampler, num_workers=num_workers)))["x"]

    # the premise: same seed on both ranks -> the same noise on different items
    assert torch.equal(first_batch(0, 2, setup=False), first_batch(1, 2, setup=False))
    rank0, rank1 = first_batch(0, 2, setup=True), first_batch(1, 2, setup=True)
    assert not torch.allclose(rank0, rank1)
    assert torch.equal(rank0, first_batch(0, 1, setup=True))  # rank 0 (and a 1-process run) keep their stream


def test_sigterm_flag_is_broadcast_every_n_batches(monkeypatch):
    """Lightning 2.6 broadcasts rank 0's SIGTERM flag (a CPU-GPU sync) before every batch; app.train makes it
    every ``sigterm_check_every_n_steps`` batches, on a counter every rank shares, keeping the loop's settings."""
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    from app.nn.ddp_sync import SparseSigtermEpochLoop, check_sigterm_every

    broadcasts = []
    monkeypatch.setattr(_TrainingEpochLoop, "_broadcast_sigterm_tensor",
                        lambda self: broadcasts.append(self.batch_progress.total.ready))
    trainer = L.Trainer(accelerator="cpu", min_steps=3, max_steps=7, logger=False, enable_checkpointing=False)
    check_sigterm_every(trainer, 3)
    loop = trainer.fit_loop.epoch_loop
    assert isinstance(loop, SparseSigtermEpochLoop) and (loop.min_steps, loop.max_steps) == (3, 7)
    for ready in range(8):  # batches done so far, before the next one
        loop.batch_progress.total.ready = ready
        loop._broadcast_sigterm_tensor()
    assert broadcasts == [0, 3, 6]
    with pytest.raises(TypeError, match="already"):
        check_sigterm_every(trainer, 3)

    every_batch = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    check_sigterm_every(every_batch, 1)  # Lightning's own loop stays
    assert type(every_batch.fit_loop.epoch_loop) is _TrainingEpochLoop
    with pytest.raises(ValueError, match=">= 1"):
        check_sigterm_every(every_batch, 0)
