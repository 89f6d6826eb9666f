"""LightningModule: LR -> SR U-Net training with a configurable loss, val PSNR/SSIM against trilinear, montage."""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from monai.metrics import MSEMetric, SSIMMetric
from torch import nn
from torch.utils.data import DistributedSampler

from app.nn.unet import SRUNet, upsample_backend

log = logging.getLogger(__name__)

LOSSES: dict[str, Callable[[], nn.Module]] = {"l1": nn.L1Loss, "mse": nn.MSELoss, "huber": nn.HuberLoss}


def slice_montage(lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor, scale: Sequence[int]) -> Figure:
    """Figure of the middle axial slice: LR (nearest on the HR grid), trilinear, SR, HR, |SR - HR|.

    lr (1, X, Y, Z), sr and hr (1, sx*X, sy*Y, sz*Z), all on CPU.
    """
    trilinear = F.interpolate(lr[None], scale_factor=tuple(scale), mode="trilinear", align_corners=False)[0]
    nearest = F.interpolate(lr[None], scale_factor=tuple(scale), mode="nearest")[0]
    z = hr.shape[-1] // 2
    panels = {"LR": nearest, "trilinear": trilinear, "SR": sr, "HR": hr, "|SR - HR|": (sr - hr).abs()}
    fig = Figure(figsize=(3 * len(panels), 3.2))
    for ax, (title, vol) in zip(fig.subplots(1, len(panels)), panels.items()):
        vmax = 0.25 if title.startswith("|") else 1.0
        ax.imshow(vol[0, :, :, z].T.float().numpy(), cmap="gray", origin="lower", vmin=0.0, vmax=vmax)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


class SRLightningModule(L.LightningModule):
    """Batches {"lr": (B, 1, X, Y, Z), "hr": (B, 1, sx*X, sy*Y, sz*Z)} in percentile-scaled units.

    Logs ``{val,test}/{psnr,ssim}`` and the same for trilinear interpolation of the LR (``*_trilinear``),
    with the fixed ``data_range``.

    Hyper-parameters are plain python (checkpoints load with ``torch.load(weights_only=True)``):
    ``model`` holds the SRUNet kwargs; ``intensity`` and ``degradation`` are recorded for inference.
    ``optimizer``/``scheduler`` are callables (Hydra partials) taking params / the optimizer.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        intensity: Mapping[str, float],
        degradation: Mapping[str, Any],
        loss: str = "l1",
        data_range: float = 1.0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = SRUNet(**model)
        self.scale = list(self.net.scale)
        self.loss_fn = LOSSES[loss]()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.data_range = data_range
        # per-patch metrics (used per batch, no state kept) for the SR output and the trilinear baseline
        self.metrics = {
            f"{kind}{suffix}": MSEMetric() if kind == "mse" else SSIMMetric(3, data_range=data_range)
            for kind in ("mse", "ssim") for suffix in ("", "_trilinear")
        }
        # this rank's epoch sums of per-patch values (and "loss"), plus the patch count; summed over ranks at epoch end
        self._sums: dict[str, torch.Tensor] = {}
        self._montage_batch: dict[str, torch.Tensor] | None = None

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def setup(self, stage: str) -> None:
        """Give each DDP rank > 0 its own random stream before the training loader is built (rank 0 keeps the
        single-process one, so a 1-GPU run is unchanged).

        ``seed_everything`` seeds every rank alike, and MONAI's DataLoader seeds its random transforms from torch's
        RNG (at construction without workers, else per worker from the base seed drawn when the iterator starts):
        without this, every rank drew the same crops, contrasts and noise, and N GPUs trained on N copies of one
        batch. The weights need no common seed (DDP broadcasts rank 0's when it wraps the model); ``PL_GLOBAL_SEED``
        is left alone, as the distributed sampler needs the same seed on every rank to split the items."""
        if stage == "fit" and self.trainer.world_size > 1 and self.global_rank > 0:
            seed = int(np.random.SeedSequence([torch.initial_seed(), self.global_rank]).generate_state(1)[0])
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

    def on_fit_start(self) -> None:
        log.info("upsampling backend: %s", upsample_backend(self.net, self.device))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["hr"].shape[0])
        return loss

    def _is_padding(self, stage: str, batch_idx: int) -> bool:
        """True for an eval batch that Lightning's ``DistributedSampler`` (no shuffle, batch size 1) added only to
        give every rank the same number of batches: it repeats an item another rank evaluates.

        Such a batch still runs (every rank must take part in the same collectives) but is not counted, so the
        per-case numbers are those of each val/test volume exactly once, whatever the world size."""
        loader = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, DistributedSampler) or sampler.shuffle or getattr(loader, "batch_size", None) != 1:
            return False
        return sampler.rank + batch_idx * sampler.num_replicas >= len(sampler.dataset)

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str, batch_idx: int) -> torch.Tensor:
        lr, hr = batch["lr"].float(), batch["hr"].float()
        sr = self(lr).float()
        if self._is_padding(stage, batch_idx):
            return sr
        values = {"loss": self.loss_fn(sr, hr).detach() * hr.shape[0]}  # patches have one size: batch mean x count
        with torch.autocast(device_type=self.device.type, enabled=False):  # metrics in fp32 under bf16-mixed
            trilinear = F.interpolate(lr, scale_factor=tuple(self.scale), mode="trilinear", align_corners=False)
            for name, metric in self.metrics.items():
                values[name] = metric(trilinear if name.endswith("_trilinear") else sr, hr).sum()
                metric.reset()
        values["count"] = torch.tensor(float(hr.shape[0]), device=hr.device)
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.double()
        return sr

    def _log_metrics(self, stage: str) -> None:
        """Log the epoch's loss and SSIM (means over patches) and PSNR of the pooled MSE (finite on empty patches,
        unlike a mean of per-patch PSNRs), with the sums taken over all ranks; then reset the sums."""
        names = ["count", "loss", *self.metrics]
        local = torch.stack([torch.as_tensor(self._sums.get(n, 0.0), dtype=torch.float64, device=self.device)
                             for n in names])
        self._sums = {}
        total = dict(zip(names, self.trainer.strategy.reduce(local, reduce_op="sum").tolist()))
        if total["count"] == 0:
            return
        for name in names[1:]:
            value = total[name] / total["count"]
            if name.startswith("mse"):
                name, value = name.replace("mse", "psnr"), 10.0 * math.log10(self.data_range**2 / max(value, 1e-12))
            # the value is already the same on every rank; sync_dist only keeps Lightning's epoch-level check quiet
            self.log(f"{stage}/{name}", value, prog_bar=name == "psnr", sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        sr = self._evaluate(batch, "val", batch_idx)
        if batch_idx == 0:
            self._montage_batch = {"lr": batch["lr"][0].float().cpu(), "sr": sr[0].cpu(), "hr": batch["hr"][0].float().cpu()}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        montage, self._montage_batch = self._montage_batch, None
        if montage is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return  # only rank 0 writes montages
        fig = slice_montage(scale=self.scale, **montage)
        out = Path(self.trainer.default_root_dir) / "montages" / f"val_epoch{self.current_epoch:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/montage", fig, global_step=self.global_step)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer given: pass a callable params -> torch.optim.Optimizer (a Hydra partial)")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
