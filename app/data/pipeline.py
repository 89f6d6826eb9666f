"""MONAI transform chains: load -> channel first -> RAS -> intensity scaling -> HR patches (synthetic contrast) -> LR.

A CacheDataset keeps each item's output up to the first random transform: the loaded, scaled, padded volume
(with synthesis also the tissue maps and SynthPrepd's LR maps), so per draw only the patches are made."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    GridPatchd,
    LoadImaged,
    Orientationd,
    SpatialPadd,
    SplitDimd,
)

from app.data.synth import SynthPatchesd, SynthPrepd
from app.data.transforms import RandOrientd, RandPatchesd, ScaleIntensityFromLRd, SimulateLRd

TISSUE_KEYS = ("gm", "wm", "csf")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # NIfTI world space; MONAI's default will change to None


def _load(keys: Sequence[str]) -> list:
    """Read NIfTI (scl_slope applied), channel first, RAS-closest voxel orientation."""
    return [
        LoadImaged(keys, image_only=True, dtype="float32", allow_missing_keys=True),
        EnsureChannelFirstd(keys, allow_missing_keys=True),
        Orientationd(keys, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=True),
    ]


def _scale_and_pad(scale: Sequence[int], patch_size: Sequence[int], intensity: Mapping, degradation: Mapping) -> list:
    return [
        ScaleIntensityFromLRd("image", scale, degradation["profile"], **intensity),
        SpatialPadd("image", spatial_size=list(patch_size)),
    ]


def _degrade(scale: Sequence[int], degradation: Mapping, train: bool) -> SimulateLRd:
    ranges = degradation.get("train") if train else None
    nominal = {k: degradation[k] for k in ("profile", "noise_std", "kspace_fraction")}
    return SimulateLRd("image", scale, train=ranges, **nominal)


def train_transforms(
    scale: Sequence[int],
    patch_size: Sequence[int],
    samples_per_volume: int,
    intensity: Mapping[str, float],
    degradation: Mapping[str, Any],
    synth: Mapping[str, Any] | None = None,
    orient: bool = False,
    coarsen: Mapping[str, float] | None = None,
) -> Compose:
    """Item dict of paths -> list of ``samples_per_volume`` dicts {"hr": (1, *patch), "lr": (1, *patch/scale)}.
    ``orient``: each HR patch gets a random flip / axis permutation that the degradation allows (RandOrientd).
    ``coarsen`` {"prob", "max_factor"}: that share of HR patches is cut f ~ U(1, max_factor) times larger and
    averaged down to the patch size (voxels f times coarser, as in lower-resolution scans)."""
    coarsen_args = (float(coarsen["prob"]), float(coarsen["max_factor"])) if coarsen else (0.0, 1.0)
    keys = ["image", *TISSUE_KEYS] if synth is not None else ["image"]
    chain = _load(keys)
    if synth is None:
        chain += _scale_and_pad(scale, patch_size, intensity, degradation)
        chain.append(RandPatchesd("image", patch_size, samples_per_volume, coarsen_args))
    else:  # the real image scaled as without synthesis; each draw synthesises only its cropped patches
        chain += [
            ScaleIntensityFromLRd("image", scale, degradation["profile"], **intensity),
            SynthPrepd("image", TISSUE_KEYS, scale, degradation["profile"]),
            SpatialPadd(keys, spatial_size=list(patch_size), allow_missing_keys=True),
            SynthPatchesd("image", TISSUE_KEYS, patch_size, samples_per_volume, scale, degradation["profile"],
                          **intensity, **synth, coarsen=coarsen_args),
        ]
    if orient:
        chain.append(RandOrientd("image", scale, patch_size))
    chain.append(_degrade(scale, degradation, train=True))
    return Compose(chain)


def eval_transforms(
    scale: Sequence[int],
    patch_size: Sequence[int],
    max_patches: int,
    intensity: Mapping[str, float],
    degradation: Mapping[str, Any],
) -> Compose:
    """Item dict of paths -> up to ``max_patches`` fixed grid patches (the brightest) with nominal degradation."""
    return Compose(
        _load(["image"])
        + _scale_and_pad(scale, patch_size, intensity, degradation)
        + [
            GridPatchd("image", patch_size=list(patch_size), num_patches=max_patches, sort_fn="max", threshold=float("inf")),
            SplitDimd("image", dim=0, keepdim=False, list_output=True),
            _degrade(scale, degradation, train=False),
        ]
    )
