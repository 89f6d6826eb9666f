"""Train the SR U-Net: ``python -m app.train [overrides]`` (Hydra config in conf/train.yaml)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from app.cli import one_line_errors
from app.data.datamodule import check_patch_geometry
from app.nn.checkpoint import CheckpointError, read_checkpoint
from app.nn.ddp_sync import check_sigterm_every
from app.nn.lightning_module import LOSSES, SRLightningModule
from app.nn.unet import SRUNet

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def compose_train_config(overrides: Sequence[str], output_dir: Path | str | None = None) -> DictConfig:
    """conf/train.yaml with Hydra ``overrides``, composed as ``@hydra.main`` hands it to :func:`run` (for scripts
    and tests): the Hydra node set as the current HydraConfig and removed; ``paths.output_dir`` = ``output_dir``
    when given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
    return cfg


def _plain(cfg: DictConfig) -> Any:
    """Resolved plain python containers (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True)


def resume_path(cfg: DictConfig) -> str | None:
    """cfg.ckpt_path -> checkpoint file: "last" = this run's last.ckpt, else the newest under log_dir/task_name.

    The file is read (``torch.load(weights_only=True)``) and checked for training state here, before anything
    is built: a missing, truncated, corrupt, foreign or code-carrying checkpoint raises ``FileNotFoundError``
    or ``CheckpointError`` with one line naming the file.
    """
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path != "last":
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
    else:
        own = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        found = [own] if own.is_file() else sorted(
            Path(cfg.paths.log_dir, cfg.task_name).glob("*runs/**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(
                f"ckpt_path=last: no last.ckpt in {own.parent} or under {Path(cfg.paths.log_dir, cfg.task_name)}")
        path = found[-1]
        if path != own:
            log.info("resuming from the newest run's last checkpoint: %s", path)
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {exc}; delete it or pass ckpt_path=<another .ckpt>") from exc
    if "global_step" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {path} holds no training state to resume "
                              "(weights only?); pass a last.ckpt or best-*.ckpt written by training")
    return str(path)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_config(cfg: DictConfig) -> None:
    """Check the values that need no data or checkpoint; raises ``ValueError`` naming the key. :func:`run` calls it
    first; on the command line conf/train.yaml's Hydra callback calls it before the run folder is made."""
    if cfg.compile and cfg.compile not in COMPILE_MODES:
        raise ValueError(f"compile must be null or one of {list(COMPILE_MODES)}, got {cfg.compile!r}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {cfg.loss!r}")
    if cfg.sigterm_check_every_n_steps < 1:
        raise ValueError(f"sigterm_check_every_n_steps must be >= 1, got {cfg.sigterm_check_every_n_steps}")
    with torch.device("meta"):  # the U-Net's checks of its kwargs, with no memory allocated
        net = SRUNet(**_plain(cfg.model))
    check_patch_geometry(cfg.data.patch_size, net.scale, net.divisor)


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and optionally test) the model described by ``cfg``; returns (metrics, objects)."""
    check_config(cfg)
    ckpt_path = resume_path(cfg)  # a bad checkpoint fails here, before anything is built or written
    L.seed_everything(cfg.seed, workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    module = SRLightningModule(
        model=_plain(cfg.model),
        intensity=_plain(cfg.data.intensity),
        degradation=_plain(cfg.degradation),
        loss=cfg.loss,
        data_range=cfg.data_range,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
    )
    if cfg.compile:  # in place: parameter names and checkpoints stay those of the eager net
        module.net.compile(mode=cfg.compile, dynamic=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    check_sigterm_every(trainer, cfg.sigterm_check_every_n_steps)
    for logger in loggers:
        logger.log_hyperparams({"config": _plain(cfg)})

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test and "test" in datamodule.datasets:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if trainer.is_global_zero:
        log.info("metrics: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return metrics, {"cfg": cfg, "model": module, "datamodule": datamodule, "trainer": trainer}


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns val PSNR for sweepers. A bad config value (``ValueError``, also from the data
    while training) or ``ckpt_path`` is one line on stderr and exit 2 (the full traceback with ``traceback=true``)."""
    with one_line_errors(bool(cfg.get("traceback")), (CheckpointError, FileNotFoundError, ValueError),
                         one_line_warnings=False):
        metrics, _ = run(cfg)
    return metrics.get("val/psnr")


if __name__ == "__main__":
    main()
