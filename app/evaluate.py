"""Evaluate checkpoints against interpolation baselines: ``python -m app.evaluate [ckpt=...] [hr=...]``.

For each HR volume (RAS-closest voxel order, cropped to a multiple of the scale) the LR input is
simulated with the checkpoint's nominal degradation (or read from a paired LR file); every method
(each checkpoint through ``app.infer.super_resolve``, with the same ``tta``, nearest, trilinear, cubic B-spline) upsamples the
same LR, and PSNR/SSIM are measured against the HR with one fixed data range per case. Writes a
per-case CSV, a JSON summary, plots and an HTML report to ``out_dir``.
"""

from __future__ import annotations

import glob
import json
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from app.baselines import BASELINES
from app.cli import one_line_errors
from app.data.degradation import simulate_lr
from app.data.intensity import percentile_apply, percentile_scale, percentile_unscale
from app.infer import (
    InferenceError,
    resolve_checkpoint,
    super_resolve,
    window_settings,
)
from app.io import NiftiError, check_nan_policy, load_volume, nifti_suffix, to_ras
from app.metrics import all_metrics, data_range_of, foreground_mask
from app.nn.checkpoint import load_sr_model
from app.report import gain_line, montage, write_report

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
DEGRADATION_KEYS = ("profile", "noise_std", "kspace_fraction")


@dataclass(frozen=True)
class Case:
    """One evaluation pair in RAS-closest voxel order: hr (sx*X, sy*Y, sz*Z), lr (X, Y, Z), HR spacing (mm)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    spacing: tuple[float, float, float]


def _paths(spec: Any) -> list[Path]:
    """A file, folder, glob or list of them -> NIfTI paths (order kept for lists, sorted otherwise)."""
    if isinstance(spec, (list, tuple, ListConfig)):
        return [p for item in spec for p in _paths(str(item))]
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and nifti_suffix(p))
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if nifti_suffix(p))
    if not matches:
        raise InferenceError(f"{spec}: no .nii/.nii.gz files found")
    return matches


def demo_test_split(demo_dir: Path = DEMO_DIR) -> list[Path]:
    """The "image" entries of the "test" split in ``<demo_dir>/splits.json``."""
    index = demo_dir / "splits.json"
    try:
        entries = json.loads(index.read_text())["test"]
        return [demo_dir / entry["image"] for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InferenceError(f"{index}: cannot read the demo test split ({exc}); pass hr=<folder|glob|list>") from exc


def _case_name(path: Path) -> str:
    return path.name[: -len(nifti_suffix(path) or "")]


def _ras(path: Path, nan_policy: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load a file in RAS-closest voxel order -> (data, spacing in mm)."""
    vol = load_volume(path, nan_policy=nan_policy)
    data, affine = to_ras(vol.data, vol.affine)
    return data, tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


def simulated_case(path: Path, scale: Sequence[int], degradation: dict, intensity: dict, seed: int,
                   nan_policy: str) -> Case:
    """HR file -> Case with HR cropped to a multiple of ``scale`` and LR = simulate_lr(HR) (seeded noise).

    As in training, the degradation acts on percentile-scaled intensities (percentiles of the noise-free LR),
    so ``noise_std`` means the same as in the checkpoint; the LR is returned in the file's units.
    """
    hr, spacing = _ras(path, nan_policy)
    crop = tuple(slice(0, n - n % s) for n, s in zip(hr.shape, scale))
    hr = np.ascontiguousarray(hr[crop])
    if min(hr.shape) == 0:
        raise InferenceError(f"{path}: shape {hr.shape} is smaller than the scale {list(scale)}")
    hr_t = torch.from_numpy(hr)
    _, lo, hi = percentile_scale(simulate_lr(hr_t, scale, degradation.get("profile", "gaussian")), **intensity)
    generator = torch.Generator().manual_seed(seed)
    lr = percentile_unscale(simulate_lr(percentile_apply(hr_t, lo, hi), scale, generator=generator, **degradation), lo, hi)
    return Case(_case_name(path), hr, lr.numpy().astype(np.float32), spacing)


def paired_case(hr_path: Path, lr_path: Path, scale: Sequence[int], nan_policy: str) -> Case:
    """HR and LR files -> Case; the HR must be exactly scale x LR in RAS-closest voxel order."""
    hr, spacing = _ras(hr_path, nan_policy)
    lr, _ = _ras(lr_path, nan_policy)
    if tuple(n * s for n, s in zip(lr.shape, scale)) != hr.shape:
        raise InferenceError(f"{lr_path}: LR shape {lr.shape} x scale {list(scale)} != HR shape {hr.shape} of {hr_path}")
    return Case(_case_name(hr_path), hr, lr, spacing)


def load_models(cfg: DictConfig) -> dict[str, tuple[torch.nn.Module, dict]]:
    """Checkpoints named by file stem -> (model, meta); all must share one scale."""
    specs = cfg.ckpt if isinstance(cfg.ckpt, (list, ListConfig)) else [cfg.ckpt]
    models: dict[str, tuple[torch.nn.Module, dict]] = {}
    for spec in specs:
        path = resolve_checkpoint(spec, cfg.scale, cfg.models_dir)
        name = path.name.split(".")[0]
        name = name if name not in models and name not in BASELINES else f"{name}_{len(models)}"
        models[name] = load_sr_model(path, map_location="cpu")
    scales = {tuple(meta["scale"]) for _, meta in models.values()}
    if len(scales) > 1:
        raise InferenceError(f"checkpoints have different scales {sorted(scales)}; evaluate one scale at a time")
    return models


def _degradation(cfg: DictConfig, meta: dict) -> dict:
    """simulate_lr keyword arguments: cfg.degradation if given, else the checkpoint's nominal degradation."""
    source = OmegaConf.to_container(cfg.degradation) if cfg.degradation is not None else meta["degradation"]
    unknown = sorted(set(source) - set(DEGRADATION_KEYS) - {"train"})
    if unknown:
        raise ValueError(f"degradation has unknown keys {unknown}; expected {list(DEGRADATION_KEYS)}")
    return {k: source[k] for k in DEGRADATION_KEYS if k in source}


def _cases(cfg: DictConfig, scale: Sequence[int], degradation: dict, intensity: dict):
    """Yield (path, Case or exception) for every configured HR (and LR) volume."""
    hr_paths = demo_test_split() if cfg.hr is None else _paths(cfg.hr)
    lr_paths = None if cfg.lr is None else _paths(cfg.lr)
    if lr_paths is not None and len(lr_paths) != len(hr_paths):
        raise InferenceError(f"{len(lr_paths)} LR files for {len(hr_paths)} HR files; pair them in order")
    for i, hr_path in enumerate(tqdm(hr_paths, desc="evaluating", unit="case", disable=None)):
        try:
            if lr_paths is None:
                yield hr_path, simulated_case(hr_path, scale, degradation, intensity, int(cfg.seed) + i,
                                              cfg.nan_policy)
            else:
                yield hr_path, paired_case(hr_path, lr_paths[i], scale, cfg.nan_policy)
        except (NiftiError, InferenceError, ValueError) as exc:
            yield hr_path, exc


def evaluate_case(case: Case, models: dict, window_cfg: DictConfig, scale: Sequence[int], data_range: float | None,
                  mask_fraction: float, plot_dir: Path) -> list[dict[str, Any]]:
    """All methods on one case -> CSV rows; also writes the case's montage under ``plot_dir``."""
    value_range = float(data_range) if data_range is not None else data_range_of(case.hr)
    mask = foreground_mask(case.hr, mask_fraction)
    outputs: dict[str, np.ndarray] = {}
    rows = []
    methods = [(name, "model") for name in models] + [(name, "baseline") for name in BASELINES]
    for name, kind in methods:
        start = time.perf_counter()
        if kind == "model":
            model, meta = models[name]
            sr = super_resolve(model, meta, torch.from_numpy(case.lr), window_settings(window_cfg, meta)).numpy()
        else:
            sr = BASELINES[name](case.lr, scale)
        seconds = time.perf_counter() - start
        outputs[name] = sr
        rows.append({"case": case.name, "method": name, "kind": kind, "scale": "x".join(map(str, scale)),
                     **all_metrics(sr, case.hr, value_range, mask), "data_range": value_range,
                     "foreground_fraction": float(mask.mean()), "seconds": seconds})
    best = max((r for r in rows if r["kind"] == "baseline"), key=lambda r: r["psnr"])["method"]
    panels = {"LR": case.lr, f"{best} (best baseline)": outputs[best], **{m: outputs[m] for m in models}}
    montage(plot_dir / f"montage_{case.name}.png", panels, case.hr, scale, case.spacing)
    return rows


def check_config(cfg: DictConfig) -> None:
    """Check the values that need no checkpoint or data; raises ``ValueError`` naming the key. :func:`run` calls it
    first; on the command line conf/evaluate.yaml's Hydra callback calls it before the report folder is made."""
    check_nan_policy(cfg.nan_policy)
    window_settings(cfg, {})  # every window key; roi_size against the model's stride once the models are loaded
    if cfg.degradation is not None:
        _degradation(cfg, {})  # its keys (the checkpoint's meta is only read for degradation=null)


def run(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate every case -> (summary dict, {"rows", "report", "failed"}); writes the report to cfg.out_dir."""
    check_config(cfg)
    out_dir = Path(cfg.out_dir)
    models = load_models(cfg)
    first_meta = next(iter(models.values()))[1]
    scale = [int(s) for s in first_meta["scale"]]
    degradation = _degradation(cfg, first_meta)
    for model, meta in models.values():
        model.to(window_settings(cfg, meta).device)  # window_settings: config errors before any work
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for path, case in _cases(cfg, scale, degradation, first_meta["intensity"]):
        if isinstance(case, Exception):
            message = str(case) if str(case).startswith(str(path)) else f"{path}: {case}"
            failed.append(message)
            tqdm.write(f"FAILED {message}")
            if cfg.traceback:
                tqdm.write("".join(traceback.format_exception(case)))
            continue
        rows += evaluate_case(case, models, cfg, scale, cfg.data_range, float(cfg.mask_fraction), plot_dir)
    if not rows:
        raise InferenceError(f"no case could be evaluated ({len(failed)} failed)")
    settings = {"scale": scale, "degradation": degradation if cfg.lr is None else "paired LR files",
                "data_range": cfg.data_range if cfg.data_range is not None else "per case: HR max - min",
                "mask": f"HR > min + {cfg.mask_fraction} x range, holes filled",
                "ssim": "3D Gaussian window 7, sigma 1.5", "tta": cfg.tta, "failed": failed}
    summary, report = write_report(out_dir, rows, list(models), list(BASELINES), settings)
    return summary, {"rows": rows, "report": report, "failed": failed}


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """CLI: prints the report path and each model's gain over B-spline; exit 1 if a case failed."""
    with one_line_errors(cfg.traceback, (InferenceError, NiftiError, ValueError, OSError)):
        summary, objects = run(cfg)
    print(f"report: {objects['report']}")
    for model, gains in summary["gains"].items():
        print(f"{model} vs bspline: {gain_line(gains['bspline'])}")
    if objects["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
