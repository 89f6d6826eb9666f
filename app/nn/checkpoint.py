"""Load a training checkpoint as an inference-ready SR U-Net plus the metadata inference needs."""
from __future__ import annotations

import inspect
import os
import pickle
import zipfile
from pathlib import Path

import torch

from app.nn.unet import SRUNet

_NET_PREFIX = "net."


class CheckpointError(ValueError):
    """A file that is not a loadable sr3d training checkpoint."""


def _meta(hparams: dict) -> dict:
    """Pick and check the inference metadata from a checkpoint's hyper-parameters."""
    missing = [k for k in ("model", "intensity", "degradation") if not isinstance(hparams.get(k), dict)]
    if missing:
        raise CheckpointError(f"checkpoint hyper-parameters lack {missing}: not an sr3d training checkpoint")
    model = dict(hparams["model"])
    allowed = set(inspect.signature(SRUNet.__init__).parameters) - {"self"}
    unknown = sorted(set(model) - allowed)
    if unknown:
        raise CheckpointError(f"checkpoint model settings have unknown keys {unknown} (a different model class?)")
    scale = model.get("scale")
    scale = [int(scale)] * 3 if isinstance(scale, int) else [int(s) for s in scale or []]
    if len(scale) != 3:
        raise CheckpointError(f"checkpoint model scale {model.get('scale')!r} is not 3 per-axis factors")
    intensity = hparams["intensity"]
    try:
        intensity = {k: float(intensity[k]) for k in ("lower_percentile", "upper_percentile")}
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint intensity settings {intensity!r} are incomplete") from err
    return {"scale": scale, "intensity": intensity, "model": model, "degradation": dict(hparams["degradation"])}


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)`` of a Lightning checkpoint -> its dict (with a ``state_dict``).

    Raises CheckpointError with a one-line message naming the file for a missing, truncated, corrupt or
    foreign file, or a pickle that would run code (refused by ``weights_only=True``; nothing is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint: {first_line}") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict': not a Lightning training checkpoint")
    return ckpt


def load_sr_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a training checkpoint with torch.load(weights_only=True) -> (SR U-Net in eval mode, meta).

    meta = {"scale": [sx, sy, sz], "intensity": {"lower_percentile", "upper_percentile"},
    "model": SRUNet kwargs, "degradation": the degradation config}. Raises CheckpointError (a ValueError)
    for a missing, corrupt or foreign file. Builds only SRUNet; never instantiates anything named in the file.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path} has no hyper-parameters: not an sr3d training checkpoint")
    meta = _meta(hparams)
    try:
        net = SRUNet(**meta["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build the U-Net from its settings: {err}") from err
    state = {k[len(_NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(_NET_PREFIX)}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the U-Net: {str(err).splitlines()[0]}") from err
    return net.to(map_location).eval(), meta
