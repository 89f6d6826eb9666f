"""Hydra configs compose; a 2-step run(cfg) writes loadable checkpoints; ckpt_path=last resumes the step count."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from app.data.datamodule import check_patch_geometry
from app.nn.checkpoint import load_sr_model
from app.nn.unet import SRUNet
from app.train import run

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "degradation", "model", "trainer", "callbacks", "logger", "paths", "experiment", "debug"]
OPTIONS = sorted((g, p.stem) for g in GROUPS for p in (CONF / g).glob("*.yaml") if p.stem != "default" or g != "trainer")
FAST = [  # tiny model, tiny patches, 2 steps, 1 val batch
    "model.channels=[4,8]", "model.strides=[2]", "data.patch_size=[16,16,16]", "data.batch_size=2",
    "data.samples_per_volume=2", "data.patches_per_epoch=4", "data.val_patches=2", "data.num_workers=0",
    "data.cache=none", "trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1", "test=false",
]


def compose_cfg(tmp_path: Path, overrides: list[str]):
    """Compose conf/train.yaml like @hydra.main does, with every output under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # as @hydra.main hands it over: resolvable through HydraConfig only
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
    return cfg


def test_all_configs_are_listed():
    assert {g for g, _ in OPTIONS} == set(GROUPS)
    assert {"x2_iso", "x4_thick"} <= {o for g, o in OPTIONS if g == "experiment"}
    assert {"cpu", "gpu", "ddp"} <= {o for g, o in OPTIONS if g == "trainer"}


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_config_composes_and_builds(tmp_path, group, option):
    if (group, option) == ("logger", "tensorboard"):
        pytest.importorskip("tensorboard")  # optional extra: pip install -e ".[tensorboard]"
    overrides = [f"{group}={option}"] + (["data.root=/some/where"] if (group, option) == ("data", "nifti") else [])
    cfg = compose_cfg(tmp_path, overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert Path(plain["paths"]["root_dir"], "conf").is_dir()
    net = SRUNet(**plain["model"])
    check_patch_geometry(plain["data"]["patch_size"], net.scale, net.divisor)  # presets are self-consistent
    assert plain["model"]["scale"] == plain["data"]["scale"]
    for name in ("callbacks", "logger"):
        assert all(instantiate(c) is not None for c in cfg[name].values())
    if group == "trainer":
        assert cfg.trainer.precision == ("32-true" if option == "cpu" else "bf16-mixed")


def test_two_step_run_writes_checkpoints_and_resume_continues(tmp_path, torch_cpu_ops):
    cfg = compose_cfg(tmp_path, FAST + ["trainer.limit_train_batches=2"])
    metrics, objects = run(cfg)
    assert objects["trainer"].global_step == 2
    assert {"val/psnr", "val/psnr_trilinear", "val/ssim"} <= set(metrics)
    last = tmp_path / "checkpoints" / "last.ckpt"
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert last.is_file() and len(best) == 1
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2
    net, meta = load_sr_model(best[0])
    assert meta["scale"] == [2, 2, 2] and meta["model"]["channels"] == [4, 8]
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file() and list((tmp_path / "montages").glob("*.png"))

    cfg = compose_cfg(tmp_path, FAST + ["trainer.limit_train_batches=2", "trainer.max_epochs=2", "ckpt_path=last"])
    _, objects = run(cfg)
    assert objects["trainer"].global_step == 4
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()  # the first run's log is kept


def test_resume_from_missing_checkpoint_fails_clearly(tmp_path):
    cfg = compose_cfg(tmp_path, FAST + ["ckpt_path=last"])
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        run(cfg)
