"""Lightning callbacks of our own: per-epoch timing and throughput records (used by scripts/bench_ddp.py).

Enable on any training run with a Hydra override:
``python -m app.train +callbacks.epoch_stats._target_=app.callbacks.EpochStats`` (writes
``<run dir>/epoch_stats.jsonl``; ``+callbacks.epoch_stats.path=...`` to put it elsewhere).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class EpochStats(L.Callback):
    """One JSON line per training epoch, written by rank 0 and flushed at once (a killed run keeps what it wrote).

    Each line holds ``epoch``, ``global_step``, ``world_size``; ``train_s``: the wall time of the epoch's training
    batches (from the epoch start to the last optimizer step, CUDA synchronised at both ends; validation and
    checkpointing excluded), the slowest rank's; ``patches``: HR patches trained on this epoch, summed over ranks
    (counted from the batches, so the distributed sampler's padding and a short last batch are counted as run);
    ``elapsed_s``: seconds since training started (validation included); ``val``: the ``val/*`` metrics when
    this epoch validated, else null; ``peak_mem_gb``: each rank's peak allocated CUDA memory (null on CPU);
    ``input_wait_s_per_rank``: each rank's host time between the end of one training batch (or the epoch start) and
    the start of the next, summed over the epoch: fetching the batch from the loader and moving it to the device,
    with no CUDA sync (so a rank waiting on its loader shows here, a rank waiting on the GPU does not).
    """

    def __init__(self, path: str | None = None):
        super().__init__()
        self.path = path
        self._t0 = self._epoch_start = 0.0
        self._train_s: float | None = None
        self._patches = self._batches = 0
        self._val: dict[str, float] | None = None
        self._input_wait_s = self._last_batch_end = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _out(self, trainer: L.Trainer) -> Path:
        return Path(self.path) if self.path else Path(trainer.default_root_dir) / "epoch_stats.jsonl"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._now(pl_module)
        if trainer.is_global_zero:
            self._out(trainer).parent.mkdir(parents=True, exist_ok=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._patches = self._batches = 0
        self._train_s, self._val = None, None
        self._epoch_start = self._last_batch_end = self._now(pl_module)
        self._input_wait_s = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._input_wait_s += time.perf_counter() - self._last_batch_end

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        hr = batch["hr"] if isinstance(batch, dict) else batch[0]
        self._patches += int(hr.shape[0])
        self._batches += 1
        self._last_batch_end = time.perf_counter()

    def _mark_train_end(self, pl_module: L.LightningModule) -> None:
        if self._train_s is None:
            self._train_s = self._now(pl_module) - self._epoch_start

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # in fit, validation runs inside the train epoch, after its last batch
            self._mark_train_end(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark_train_end(pl_module)
        mem = torch.cuda.max_memory_allocated(pl_module.device) / 1e9 if pl_module.device.type == "cuda" else -1.0
        local = torch.tensor([self._patches, self._train_s, mem, self._input_wait_s], dtype=torch.float64,
                             device=pl_module.device)
        ranks = trainer.strategy.all_gather(local).reshape(-1, 4).cpu()  # every rank takes part
        if not trainer.is_global_zero:
            return
        record = {
            "epoch": trainer.current_epoch, "global_step": trainer.global_step, "world_size": trainer.world_size,
            "train_s": float(ranks[:, 1].max()), "patches": int(ranks[:, 0].sum()), "batches_rank0": self._batches,
            "elapsed_s": self._now(pl_module) - self._t0,
            "train_s_per_rank": [float(s) for s in ranks[:, 1]],
            "patches_per_rank": [int(p) for p in ranks[:, 0]],
            "peak_mem_gb": [float(m) for m in ranks[:, 2]] if pl_module.device.type == "cuda" else None,
            "input_wait_s_per_rank": [float(w) for w in ranks[:, 3]],
            "train_loss": float(trainer.callback_metrics["train/loss"]) if "train/loss" in trainer.callback_metrics
            else None,
            "val": self._val,
        }
        with self._out(trainer).open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
