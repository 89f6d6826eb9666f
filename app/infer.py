"""Super-resolve NIfTI files: ``python -m app.infer input=<file|folder|glob> output=<file|folder> [ckpt=...]``.

``super_resolve`` is the one inference path (also used by ``app.evaluate``): percentile scaling from the
checkpoint, MONAI Gaussian-blended sliding windows (bf16 autocast on CUDA, optional CPU stitching, a
retry with CPU stitching and batch 1 on CUDA out-of-memory), inverse scaling to the input's units.
``tta=flip`` averages each window's prediction over the 8 flips of the three spatial axes; with
``uncertainty=true`` the per-voxel standard deviation of those 8 predictions is written beside the SR file.
``run(cfg)`` plans (input, output) pairs, checks the output folder before any work, and writes each
result atomically; a failing file is reported and skipped, the others go on.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue
from tqdm import tqdm

from app.cli import one_line_errors
from app.data.intensity import percentile_scale, percentile_unscale
from app.io import (
    NiftiError,
    check_nan_policy,
    Volume,
    from_ras,
    load_volume,
    nifti_suffix,
    save_volume,
    scale_in_file_order,
    to_ras,
    upscaled_affine,
)
from app.nn.checkpoint import load_sr_model

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
STITCH_MODES = ("auto", "device", "cpu")
TTA_MODES = ("none", "flip")
FLIP_DIMS = [dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r)]  # the 8 flips of (X, Y, Z)
UNCERTAINTY_TAG = "_uncertainty"


class InferenceError(RuntimeError):
    """A job that cannot run as configured (no model, unwritable output, out of memory); one-line message."""


@dataclass(frozen=True)
class WindowSettings:
    """Sliding-window settings; ``roi_size`` is in input (LR) voxels of the RAS-oriented volume."""

    roi_size: tuple[int, int, int]
    overlap: float
    sw_batch_size: int
    device: torch.device
    stitch: str = "auto"  # where the output is assembled: auto (CPU when large), device, cpu
    tta: str = "none"  # test-time augmentation: none, or flip (mean over the 8 flips of the spatial axes)


def window_settings(cfg: DictConfig, meta: dict) -> WindowSettings:
    """Validate the window config against the model before any work; raises ``ValueError`` naming the key."""
    roi = [int(v) for v in cfg.roi_size] if not isinstance(cfg.roi_size, int) else [int(cfg.roi_size)] * 3
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi_size must be 3 positive ints (LR voxels), got {list(cfg.roi_size)}")
    multiple = _total_stride(meta)
    if any(r % m for r, m in zip(roi, multiple)):
        raise ValueError(f"roi_size {roi} must be a multiple of the U-Net's total stride {multiple} per axis")
    overlap = float(cfg.overlap)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if any(int(r * (1.0 - overlap)) < 1 for r in roi):
        raise ValueError(f"overlap {overlap} with roi_size {roi} gives a window step below one voxel")
    if int(cfg.sw_batch_size) < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {cfg.sw_batch_size}")
    if cfg.stitch not in STITCH_MODES:
        raise ValueError(f"stitch must be one of {STITCH_MODES}, got {cfg.stitch!r}")
    check_tta(cfg.tta)
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    except RuntimeError as exc:
        raise ValueError(f"device={cfg.device}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} but no CUDA GPU is available; use device=cpu")
    return WindowSettings(tuple(roi), overlap, int(cfg.sw_batch_size), device, cfg.stitch,  # type: ignore[arg-type]
                          cfg.tta)


def check_tta(tta: Any, uncertainty: Any = False) -> None:
    """Validate ``tta`` (and ``uncertainty``, which needs ``tta=flip``); raises ``ValueError`` naming the key."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if not isinstance(uncertainty, bool):
        raise ValueError(f"uncertainty must be true or false, got {uncertainty!r}")
    if uncertainty and tta != "flip":
        raise ValueError("uncertainty=true needs tta=flip (the map is the spread of the 8 flip predictions)")


def _total_stride(meta: dict) -> list[int]:
    """Product of the U-Net's encoder strides per axis (windows must be multiples of it)."""
    total = [1, 1, 1]
    for stride in meta.get("model", {}).get("strides", []) or []:
        per_axis = [int(stride)] * 3 if isinstance(stride, (int, float)) else [int(s) for s in stride]
        total = [t * s for t, s in zip(total, per_axis)]
    return total


def _stitch_device(window: WindowSettings, out_shape: Sequence[int]) -> torch.device:
    """Where sliding_window_inference assembles the output (its ``device`` argument)."""
    if window.stitch == "cpu" or window.device.type != "cuda":
        return torch.device("cpu")
    if window.stitch == "device":
        return window.device
    free, _ = torch.cuda.mem_get_info(window.device)
    needed = 2 * 4 * math.prod(out_shape)  # float32 output + blending-weight map
    return window.device if needed < free // 2 else torch.device("cpu")


def _flip_predictions(model: torch.nn.Module, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population standard deviation of the model over the 8 flips of the patch's spatial axes.

    Each prediction is flipped back before it is combined (exact on the centred voxel grid for any per-axis
    scale); Welford's update keeps only two extra window-sized tensors, whatever the number of flips.
    """
    mean = m2 = torch.zeros(())
    for k, dims in enumerate(FLIP_DIMS, start=1):
        pred = model(patch.flip(dims) if dims else patch).float()
        pred = pred.flip(dims) if dims else pred
        delta = pred - mean
        mean = mean + delta / k
        m2 = m2 + delta * (pred - mean)
    return mean, (m2 / len(FLIP_DIMS)).clamp_min(0).sqrt()


def _sliding_window(model: torch.nn.Module, x: torch.Tensor, window: WindowSettings, stitch: torch.device,
                    sw_batch_size: int, uncertainty: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x (1, 1, X, Y, Z) scaled LR on CPU -> (1, 1, sX, sY, sZ) float32 on ``stitch``.

    With ``window.tta == "flip"`` every window is predicted under the 8 flips and averaged; with ``uncertainty``
    the result is (mean, std), the per-window flip standard deviation blended with the same Gaussian weights.
    """
    on_cuda = window.device.type == "cuda"

    def predictor(patch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_cuda):
            if window.tta == "none":
                return model(patch).float()
            mean, std = _flip_predictions(model, patch)
            return (mean, std) if uncertainty else mean

    out = sliding_window_inference(
        x, roi_size=window.roi_size, sw_batch_size=sw_batch_size, predictor=predictor,
        overlap=window.overlap, mode="gaussian", padding_mode="replicate", sw_device=window.device, device=stitch,
    )
    if uncertainty:
        return torch.as_tensor(out[0]), torch.as_tensor(out[1])
    return torch.as_tensor(out)  # drop the MetaTensor metadata MONAI copies from the input


def super_resolve(model: torch.nn.Module, meta: dict, lr: torch.Tensor, window: WindowSettings) -> torch.Tensor:
    """lr (X, Y, Z) float, RAS-closest voxel order, input units -> sr (sx*X, sy*Y, sz*Z) float32 CPU, same units.

    The intensity percentiles and scale come from the checkpoint's ``meta``; ``window.tta`` chooses flip
    averaging. Raises ``InferenceError`` when CUDA runs out of memory even with CPU stitching and batch 1, or
    when the model returns non-finite voxels.
    """
    return _super_resolve(model, meta, lr, window, uncertainty=False)[0]


def super_resolve_with_uncertainty(model: torch.nn.Module, meta: dict, lr: torch.Tensor,
                                   window: WindowSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`super_resolve` (``window.tta`` must be "flip") -> (sr, std): std is the per-voxel standard
    deviation of the 8 flip predictions (Gaussian-blended across overlapping windows), in the input's units."""
    check_tta(window.tta, True)
    sr, std = _super_resolve(model, meta, lr, window, uncertainty=True)
    assert std is not None
    return sr, std


def _super_resolve(model: torch.nn.Module, meta: dict, lr: torch.Tensor, window: WindowSettings,
                   uncertainty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    scale = [int(s) for s in meta["scale"]]
    out_shape = [n * s for n, s in zip(lr.shape, scale)]
    x, lo, hi = percentile_scale(lr.float().cpu(), **_intensity_args(meta))
    x = x[None, None]
    extra = {"uncertainty": True} if uncertainty else {}
    with torch.inference_mode():
        try:
            out = _sliding_window(model, x, window, _stitch_device(window, out_shape), window.sw_batch_size, **extra)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory; retrying with CPU stitching and sw_batch_size=1")
            try:
                out = _sliding_window(model, x, window, torch.device("cpu"), 1, **extra)
            except torch.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise InferenceError(
                    f"CUDA out of memory even with CPU stitching and sw_batch_size=1; try a smaller roi_size "
                    f"than {list(window.roi_size)} or device=cpu"
                ) from exc
    out, spread = out if uncertainty else (out, None)
    sr = percentile_unscale(out[0, 0].float().cpu(), lo, hi)
    if list(sr.shape) != out_shape:
        raise InferenceError(f"model returned shape {list(sr.shape)}, expected {out_shape} (scale {scale})")
    if not torch.isfinite(sr).all():
        raise InferenceError("model produced non-finite voxels (NaN/Inf)")
    std = None
    if spread is not None:  # a spread scales by the same factor as the intensities (no offset)
        std = percentile_unscale(spread[0, 0].float().cpu(), 0.0, hi - lo)
        if not torch.isfinite(std).all():
            raise InferenceError("model produced a non-finite uncertainty map")
    return sr, std


def _intensity_args(meta: dict) -> dict[str, float]:
    """percentile_scale keyword arguments from the checkpoint meta."""
    intensity = meta["intensity"]
    return {"lower_percentile": float(intensity["lower_percentile"]),
            "upper_percentile": float(intensity["upper_percentile"])}


def super_resolve_volume(model: torch.nn.Module, meta: dict, volume: Volume, window: WindowSettings,
                         uncertainty: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A loaded file -> (SR data in the file's voxel order (sX, sY, sZ) float32, centred-grid affine (4, 4),
    uncertainty map in the same order and units, or None unless ``uncertainty``)."""
    lr_ras, _ = to_ras(volume.data, volume.affine)
    lr_t = torch.from_numpy(lr_ras)
    if uncertainty:
        sr_ras, std_ras = super_resolve_with_uncertainty(model, meta, lr_t, window)
        std = from_ras(std_ras.numpy(), volume.affine)
    else:
        sr_ras, std = super_resolve(model, meta, lr_t, window), None
    sr = from_ras(sr_ras.numpy(), volume.affine)
    affine = upscaled_affine(volume.affine, volume.data.shape, scale_in_file_order(meta["scale"], volume.affine))
    return sr, affine, std


def uncertainty_path(dst: Path) -> Path:
    """``<name>_uncertainty.nii.gz`` beside ``dst`` (``.nii`` when ``dst`` is an uncompressed ``.nii``)."""
    suffix = nifti_suffix(dst) or ".nii.gz"
    return dst.with_name(dst.name[: -len(suffix)] + UNCERTAINTY_TAG + suffix)


def resolve_checkpoint(ckpt: str | None, scale: str | None, models_dir: str | os.PathLike | None) -> Path:
    """The checkpoint to use: ``ckpt`` if given, else the shipped one from ``<models_dir>/models.json``."""
    if ckpt:
        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise InferenceError(f"ckpt={ckpt}: no such file")
        return path
    models_dir = Path(models_dir) if models_dir else MODELS_DIR
    index = models_dir / "models.json"
    if not index.is_file():
        raise InferenceError(f"no ckpt= given and no shipped model ({index} does not exist); pass ckpt=<file>")
    try:
        shipped = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{index}: unreadable model index ({exc})") from exc
    if not isinstance(shipped, dict) or not shipped:
        raise InferenceError(f"no ckpt= given and no shipped model listed in {index}; pass ckpt=<file>")
    if scale is None:
        if len(shipped) > 1:
            raise InferenceError(f"several shipped models {sorted(shipped)}; choose one with scale=<e.g. 2x2x2>")
        scale = next(iter(shipped))
    if scale not in shipped:
        raise InferenceError(f"no shipped model for scale={scale}; available: {sorted(shipped)}")
    if not isinstance(shipped[scale], str):  # a file name only: nothing in the index is ever instantiated
        raise InferenceError(f"{index}: the entry for scale={scale} is not a file name: {shipped[scale]!r}")
    path = models_dir / shipped[scale]
    if not path.is_file():
        raise InferenceError(f"shipped model for scale={scale} is missing: {path}")
    return path


def plan_jobs(input_spec: str, output: str) -> list[tuple[Path, Path]]:
    """(source, destination) pairs for a file, folder or glob; refuses to overwrite an input."""
    spec = Path(input_spec).expanduser()
    if spec.is_file():
        sources = [spec]
    elif spec.is_dir():
        sources = sorted(p for p in spec.iterdir() if p.is_file() and nifti_suffix(p))
    else:
        sources = sorted(Path(p) for p in glob.glob(str(spec), recursive=True)
                         if Path(p).is_file() and nifti_suffix(p))
    if not sources:
        raise InferenceError(f"input={input_spec}: no .nii/.nii.gz files found")
    out = Path(output).expanduser()
    if nifti_suffix(out):
        if len(sources) > 1:
            raise InferenceError(f"output={output} is a file name but input={input_spec} has {len(sources)} files")
        jobs = [(sources[0], out)]
    else:
        jobs = [(src, out / src.name) for src in sources]
    names = [dst.resolve() for _, dst in jobs]
    if len(set(names)) != len(names):
        raise InferenceError(f"input={input_spec}: several files share a name; give one folder at a time")
    for src, dst in jobs:
        if dst.resolve() == src.resolve():
            raise InferenceError(f"output {dst} would overwrite its input; choose another output folder")
    return jobs


def _check_uncertainty_names(jobs: list[tuple[Path, Path]]) -> None:
    """Uncertainty maps must not land on an input or on another job's output."""
    inputs = {src.resolve() for src, _ in jobs}
    outputs = {dst.resolve() for _, dst in jobs}
    for _, dst in jobs:
        unc = uncertainty_path(dst).resolve()
        if unc in inputs or unc in outputs:
            raise InferenceError(f"uncertainty map {unc} would overwrite an input or an SR output; "
                                 "choose another output folder")


def check_writable(folder: Path) -> Path | None:
    """Create ``folder`` if needed and prove a file can be written there, before any expensive work. Returns the
    outermost folder this created (None if ``folder`` existed), for ``remove_empty_folders``."""
    created = next((p for p in reversed((folder, *folder.parents)) if not p.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".partial"):
            pass
    except OSError as exc:
        raise InferenceError(f"output folder {folder}: not writable ({exc.strerror or exc})") from exc
    return created


def remove_empty_folders(tops: Iterable[Path]) -> None:
    """Remove each of ``tops`` and the folders under it, deepest first, where they are empty: what a run that wrote
    nothing leaves of the output folders it created."""
    for top in tops:
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def check_free_space(path: Path, n_voxels: int) -> None:
    """Refuse before inference when the output folder cannot hold an uncompressed float32 result."""
    needed = 4 * n_voxels + 352
    stat = os.statvfs(path.parent)
    free = stat.f_bavail * stat.f_frsize
    if free < needed:
        raise InferenceError(f"{path.parent}: only {free / 2**20:.1f} MiB free, {needed / 2**20:.1f} MiB needed")


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    return "x".join(f"{v:.{digits}g}" for v in values)


def process_file(model: torch.nn.Module, meta: dict, src: Path, dst: Path, window: WindowSettings,
                 nan_policy: str, uncertainty: bool = False) -> dict[str, Any]:
    """Super-resolve one file to ``dst`` atomically; returns the per-file record.

    With ``uncertainty`` the map is written (atomically) to ``uncertainty_path(dst)`` first, so an existing
    ``dst`` always means the job finished.
    """
    start = time.perf_counter()
    volume = load_volume(src, nan_policy=nan_policy)
    scale = scale_in_file_order(meta["scale"], volume.affine)
    check_free_space(dst, math.prod(volume.data.shape) * math.prod(scale) * (2 if uncertainty else 1))
    sr, affine, std = super_resolve_volume(model, meta, volume, window, uncertainty)
    extra: dict[str, Any] = {}
    if std is not None:
        unc = save_volume(uncertainty_path(dst), std, affine, volume.sform_code, volume.qform_code)
        extra["uncertainty"] = str(unc)
    save_volume(dst, sr, affine, volume.sform_code, volume.qform_code)
    return {
        "input": str(src), "output": str(dst), "status": "written", **extra,
        "shape_in": list(volume.data.shape), "shape_out": list(sr.shape),
        "spacing_in": list(volume.spacing), "spacing_out": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "seconds": time.perf_counter() - start,
    }


def run(cfg: DictConfig) -> tuple[dict[str, int], dict[str, Any]]:
    """Plan, validate and run a job; returns ({"written", "skipped", "failed"}, {"records", "meta"}).

    Raises (before any file is processed) ``InferenceError``/``ValueError`` for a bad configuration,
    checkpoint, input spec or output folder. Per-file failures are recorded, printed and counted. Output folders
    this run created are removed again if it wrote nothing.
    """
    check_nan_policy(cfg.nan_policy)
    check_tta(cfg.tta, cfg.uncertainty)
    jobs = plan_jobs(str(cfg.input), str(cfg.output))
    if cfg.uncertainty:
        _check_uncertainty_names(jobs)
    created = [top for top in (check_writable(folder) for folder in sorted({dst.parent for _, dst in jobs})) if top]
    counts: dict[str, int] = {"written": 0}
    try:
        counts, result = _run_jobs(cfg, jobs)
    finally:
        if not counts["written"]:
            remove_empty_folders(created)
    return counts, result


def _run_jobs(cfg: DictConfig, jobs: list[tuple[Path, Path]]) -> tuple[dict[str, int], dict[str, Any]]:
    """``run`` after the checks: load the model, super-resolve each (input, output) job that is not done yet."""
    model, meta = load_sr_model(resolve_checkpoint(cfg.ckpt, cfg.scale, cfg.models_dir), map_location="cpu")
    window = window_settings(cfg, meta)
    model = model.to(window.device).eval()
    log.info("scale %s (RAS axes) on %s, roi %s, overlap %s, tta %s", meta["scale"], window.device,
             list(window.roi_size), window.overlap, window.tta)
    records: list[dict[str, Any]] = []
    for src, dst in tqdm(jobs, desc="super-resolving", unit="file", disable=None):
        if dst.exists() and not cfg.overwrite:
            records.append({"input": str(src), "output": str(dst), "status": "skipped"})
            missing = cfg.uncertainty and not uncertainty_path(dst).exists()
            tqdm.write(f"skip {src.name}: {dst} exists (overwrite=true to redo"
                       f"{'; it has no uncertainty map' if missing else ''})")
            continue
        try:
            record = process_file(model, meta, src, dst, window, cfg.nan_policy, cfg.uncertainty)
        except Exception as exc:  # noqa: BLE001 -- one bad file must not stop a folder run
            message = str(exc) if str(exc).startswith(str(src)) else f"{src}: {exc}"
            records.append({"input": str(src), "output": str(dst), "status": "failed", "error": message})
            tqdm.write(f"FAILED {message}")
            if cfg.traceback:
                tqdm.write(traceback.format_exc())
            continue
        records.append(record)
        tqdm.write(
            f"{src.name}: {_fmt(record['shape_in'])} -> {_fmt(record['shape_out'])} voxels, "
            f"{_fmt(record['spacing_in'])} -> {_fmt(record['spacing_out'])} mm, {record['seconds']:.1f} s -> {dst}"
        )
    counts = {status: sum(r["status"] == status for r in records) for status in ("written", "skipped", "failed")}
    tqdm.write(f"done: {counts['written']} written, {counts['skipped']} skipped (already there), "
               f"{counts['failed']} failed")
    return counts, {"records": records, "meta": meta}


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    """CLI: one line per problem (full traceback with traceback=true); exit 1 if any file failed, 2 if nothing ran."""
    with one_line_errors(cfg.traceback, (InferenceError, NiftiError, ValueError, OSError)):
        try:
            counts, _ = run(cfg)
        except MissingMandatoryValue as exc:
            print(f"error: {str(exc).splitlines()[0]}; usage: python -m app.infer input=<file|folder|glob> "
                  "output=<file|folder> [ckpt=<file>]", file=sys.stderr)
            sys.exit(2)
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
