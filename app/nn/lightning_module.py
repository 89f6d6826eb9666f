"""LightningModule: LR -> SR U-Net training with a configurable loss, val PSNR/SSIM against trilinear, montage."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from monai.metrics import MSEMetric, SSIMMetric
from torch import nn

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
        # per-patch values accumulated over an epoch, for the SR output and the trilinear baseline
        self.metrics = {
            f"{kind}{suffix}": MSEMetric() if kind == "mse" else SSIMMetric(3, data_range=data_range)
            for kind in ("mse", "ssim") for suffix in ("", "_trilinear")
        }
        self._montage_batch: dict[str, torch.Tensor] | None = None

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def on_fit_start(self) -> None:
        log.info("upsampling backend: %s", upsample_backend(self.net, self.device))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["hr"].shape[0])
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        lr, hr = batch["lr"].float(), batch["hr"].float()
        sr = self(lr).float()
        with torch.autocast(device_type=self.device.type, enabled=False):  # metrics in fp32 under bf16-mixed
            trilinear = F.interpolate(lr, scale_factor=tuple(self.scale), mode="trilinear", align_corners=False)
            for name, metric in self.metrics.items():
                metric(trilinear if name.endswith("_trilinear") else sr, hr)
        self.log(f"{stage}/loss", self.loss_fn(sr, hr), batch_size=hr.shape[0], sync_dist=True)
        return sr

    def _log_metrics(self, stage: str) -> None:
        """Log the epoch's SSIM (mean over patches) and PSNR of the pooled MSE (finite on empty patches, unlike
        a mean of per-patch PSNRs), gathered over ranks by MONAI; then reset the accumulators."""
        for name, metric in self.metrics.items():
            if metric.get_buffer() is not None:
                value = metric.aggregate().item()
                if name.startswith("mse"):
                    name, value = name.replace("mse", "psnr"), 10.0 * math.log10(self.data_range**2 / max(value, 1e-12))
                self.log(f"{stage}/{name}", value, prog_bar=name == "psnr", sync_dist=True)
            metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        sr = self._evaluate(batch, "val")
        if batch_idx == 0:
            self._montage_batch = {"lr": batch["lr"][0].float().cpu(), "sr": sr[0].cpu(), "hr": batch["hr"][0].float().cpu()}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if self._montage_batch is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        fig = slice_montage(scale=self.scale, **self._montage_batch)
        out = Path(self.trainer.default_root_dir) / "montages" / f"val_epoch{self.current_epoch:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/montage", fig, global_step=self.global_step)
        self._montage_batch = None

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer given: pass a callable params -> torch.optim.Optimizer (a Hydra partial)")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
