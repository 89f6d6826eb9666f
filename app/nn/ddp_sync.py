"""Fewer CPU-GPU synchronisations per DDP training step than Lightning 2.6 makes.

Before every training batch, Lightning 2.6's ``_TrainingEpochLoop`` broadcasts rank 0's SIGTERM flag as a CUDA
tensor and reads it with ``.item()`` (PR #20825, so that every rank stops at the same step on preemption). That
read waits until the GPU has finished all queued work: the host cannot prepare step k+1 while the GPU runs step k,
and every step waits for the slowest rank. Only runs with more than one process pay it (Lightning issue #21487;
its proposed fix, PR #21640, broadcasts every n steps, which is what :func:`check_sigterm_every` does).
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop


class SparseSigtermEpochLoop(_TrainingEpochLoop):
    """Lightning's training epoch loop, broadcasting the SIGTERM flag only before every ``every_n``-th batch.

    The batch counter is the same on every rank, so all ranks still take part in the same broadcasts and stop at
    the same step; a SIGTERM is acted on at most ``every_n - 1`` batches later than with Lightning's default.
    """

    def __init__(self, trainer: L.Trainer, min_steps: int | None, max_steps: int, every_n: int):
        super().__init__(trainer, min_steps=min_steps, max_steps=max_steps)
        self.every_n = every_n

    def _broadcast_sigterm_tensor(self) -> None:
        if self.batch_progress.total.ready % self.every_n == 0:
            super()._broadcast_sigterm_tensor()


def check_sigterm_every(trainer: L.Trainer, every_n: int) -> None:
    """Replace ``trainer``'s training epoch loop (before ``fit``) by one that broadcasts the SIGTERM flag every
    ``every_n`` batches (1: Lightning's behaviour, every batch)."""
    if every_n < 1:
        raise ValueError(f"sigterm_check_every_n_steps must be >= 1, got {every_n}")
    if every_n == 1:
        return
    old = trainer.fit_loop.epoch_loop
    if type(old) is not _TrainingEpochLoop:
        raise TypeError(f"the trainer's epoch loop is already a {type(old).__name__}; not replacing it")
    trainer.fit_loop.epoch_loop = SparseSigtermEpochLoop(trainer, old.min_steps, old.max_steps, every_n)
