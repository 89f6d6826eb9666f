"""Hydra configs compose; a 2-step run(cfg) writes loadable checkpoints; ckpt_path=last resumes the step count."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from app.data.datamodule import check_patch_geometry
from app.nn.checkpoint import CheckpointError, load_sr_model
from app.nn.unet import SRUNet
from app.train import compose_train_config, run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
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
    cfg = compose_train_config(overrides, output_dir=tmp_path)
    with open_dict(cfg):
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
    if group == "experiment":  # GPU presets: the bar reads the loss on the host (a GPU sync) every 20 steps, not 1
        assert cfg.callbacks.progress_bar.refresh_rate == 20


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
    assert len(list((tmp_path / "checkpoints").glob("*.ckpt"))) == 2  # last + the one best, no versions
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()  # the first run's log is kept


def test_compile_option_trains_the_compiled_net_and_keeps_checkpoint_names(tmp_path, torch_cpu_ops, monkeypatch):
    """compile=<mode> compiles the U-Net in place: training runs through Dynamo and the checkpoint's parameter names
    are the eager net's. (The mode is recorded; the graphs run on aot_eager here: inductor's C++ build is slow.)"""
    modes = []
    eager_compile = torch.nn.Module.compile

    def compile_on_aot_eager(self, *args, mode=None, **kwargs):
        modes.append(mode)
        return eager_compile(self, *args, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_on_aot_eager)
    torch._dynamo.reset()
    cfg = compose_cfg(tmp_path, FAST + ["trainer.limit_train_batches=2", "compile=reduce-overhead"])
    metrics, objects = run(cfg)
    assert modes == ["reduce-overhead"] and objects["trainer"].global_step == 2 and "val/psnr" in metrics
    assert objects["model"].net._compiled_call_impl is not None
    keys = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert keys and not any("_orig_mod" in k for k in keys)
    load_sr_model(tmp_path / "checkpoints" / "last.ckpt")  # loads into a plain (eager) net


@pytest.mark.parametrize(("override", "message"), [
    ("compile=fast", "compile must be null or one of ['default', 'reduce-overhead', 'max-autotune', "
                     "'max-autotune-no-cudagraphs'], got 'fast'"),
    ("loss=l3", "loss must be one of ['huber', 'l1', 'mse'], got 'l3'"),
    ("sigterm_check_every_n_steps=0", "sigterm_check_every_n_steps must be >= 1, got 0"),
    ("data.patch_size=[18,16,16]", "patch_size[0]=18 must be a multiple of scale[0]=2 and give an LR size divisible by 2"),
    ("model.upsample=x", "upsample must be one of ['triton', 'torch'], got 'x'"),
])
def test_bad_config_value_fails_before_anything_is_built(tmp_path, monkeypatch, override, message):
    import app.train as train

    monkeypatch.setattr(train, "instantiate", lambda *a, **k: pytest.fail("something was built before the check"))
    monkeypatch.setattr(train, "SRLightningModule", lambda *a, **k: pytest.fail("the model was built before the check"))
    with pytest.raises(ValueError, match=re.escape(message)):
        run(compose_cfg(tmp_path, FAST + [override]))
    assert list(tmp_path.iterdir()) == []


def test_last_checkpoint_is_written_every_epoch_not_only_on_a_new_best(tmp_path):
    """Lightning 2.6's save_last=true rewrites last.ckpt only when a new best is saved, so a resume could go back
    to the best epoch: a separate unmonitored checkpoint writes last.ckpt after every training epoch."""
    cfg = compose_cfg(tmp_path, FAST)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    last = [c for c in checkpoints if c.monitor is None]
    assert len(last) == 1 and last[0].filename == "last" and last[0].save_top_k == 1
    assert last[0]._every_n_epochs == 1 and last[0]._save_on_train_epoch_end
    assert not any(c.save_last for c in checkpoints)


def test_resume_from_missing_checkpoint_fails_clearly(tmp_path):
    cfg = compose_cfg(tmp_path, FAST + ["ckpt_path=last"])
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        run(cfg)


# --- case 12: a bad checkpoint to resume from is one clear line, and nothing starts ----------------------

class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _bad_checkpoint(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2, "optimizer_states": []}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "malicious pickle":
        torch.save({"state_dict": {}, "global_step": 2, "optimizer_states": [], "hyper_parameters": _Evil()}, path)
    else:  # weights only: an inference checkpoint has no training state
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {}}, path)
    return path


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "empty", "malicious pickle", "weights only"])
def test_resume_from_corrupt_last_checkpoint_fails_before_anything_starts(tmp_path, monkeypatch, kind):
    """(Resuming at the same global step from a good last.ckpt: test_two_step_run_writes_checkpoints_and_resume_continues.)"""
    last = _bad_checkpoint(tmp_path / "checkpoints" / "last.ckpt", kind)
    import app.train as train

    monkeypatch.setattr(train, "instantiate", lambda *a, **k: pytest.fail("something was built before the check"))
    monkeypatch.setattr(train, "SRLightningModule", lambda *a, **k: pytest.fail("the model was built before the check"))
    cfg = compose_cfg(tmp_path, FAST + ["ckpt_path=last"])
    with pytest.raises(CheckpointError) as info:
        run(cfg)
    text = str(info.value)
    assert str(last) in text and "ckpt_path=last" in text and "\n" not in text
    assert ("no training state" if kind == "weights only" else "not a readable checkpoint") in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no logs, csv, montages


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_corrupt_last_checkpoint_one_line_exit_2(tmp_path):
    old = _bad_checkpoint(tmp_path / "logs" / "train" / "runs" / "old" / "checkpoints" / "last.ckpt", "truncated")
    proc = _cli("app.train", f"paths.log_dir={tmp_path / 'logs'}", "ckpt_path=last", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path=last: ") and str(old) in lines[0]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt")] == [old.relative_to(tmp_path).as_posix()]
    assert not list(tmp_path.rglob("metrics.csv"))


# --- a bad config value is one line and exit 2, checked before Hydra makes the run folder -------------------

@pytest.mark.parametrize(("module", "arg", "message"), [
    ("app.train", "compile=fast", "compile must be null or one of ['default', 'reduce-overhead', 'max-autotune', "
                                  "'max-autotune-no-cudagraphs'], got 'fast'"),
    ("app.evaluate", "tta=bogus", "tta must be one of ('none', 'flip'), got 'bogus'"),
], ids=["train", "evaluate"])
def test_cli_bad_config_value_one_line_exit_2_and_no_run_folder(tmp_path, module, arg, message):
    proc = _cli(module, arg, cwd=tmp_path)  # the run folder would be tmp_path/outputs/<module>/...
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_config_value_with_traceback_true_is_the_full_traceback(tmp_path):
    proc = _cli("app.train", "compile=fast", "traceback=true", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: compile must be null or one of" in proc.stderr
    assert "Callback CheckConfig" not in proc.stderr  # the check is left to run(), not turned into a warning


# --- case 14: a wrong override or unknown key is Hydra's error, and nothing starts ----------------------

@pytest.mark.parametrize(("module", "args"), [
    ("app.train", ["model.chanels=[1]"]),
    ("app.infer", ["input=x.nii.gz", "output=out", "bogus=1"]),
    ("app.evaluate", ["hydra.run.dir=report", "ckpt=x.ckpt", "roi_sise=[4,4,4]"]),
], ids=["train", "infer", "evaluate"])
def test_cli_unknown_key_is_hydras_error_and_starts_nothing(tmp_path, module, args):
    key = args[-1].split("=")[0]
    proc = _cli(module, *args, cwd=tmp_path)  # every output would land under tmp_path (relative defaults)
    assert proc.returncode != 0
    assert f"Could not override '{key}'" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, logs, report or output
