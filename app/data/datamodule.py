"""LightningDataModule: split items -> cached MONAI datasets -> loaders of {"hr", "lr"} patch batches."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing

from app.data.pipeline import TISSUE_KEYS, eval_transforms, train_transforms
from app.data.sources import load_split_items

CACHE_MODES = ("memory", "disk", "none")


def check_patch_geometry(patch_size: Sequence[int], scale: Sequence[int], divisor: Sequence[int] = (1, 1, 1)) -> None:
    """Raise unless every HR patch dim is divisible by its scale and the LR patch dim by ``divisor``."""
    if len(patch_size) != 3 or len(scale) != 3:
        raise ValueError(f"patch_size and scale need 3 values each, got {list(patch_size)} and {list(scale)}")
    for axis, (p, s, k) in enumerate(zip(patch_size, scale, divisor)):
        if s < 1 or p % s or (p // s) % k:
            raise ValueError(
                f"patch_size[{axis}]={p} must be a multiple of scale[{axis}]={s} and give an LR size divisible "
                f"by {k} (the U-Net's total stride); pick patch_size[{axis}] as a multiple of {s * k}"
            )


class SRDataModule(L.LightningDataModule):
    """HR volumes -> random HR patches with on-the-fly LR (train) and fixed grid patches (val/test).

    A training batch holds ``batch_size`` patches, ``samples_per_volume`` from each loaded volume;
    ``patches_per_epoch`` sets the epoch length (items are repeated; the cache keys by content).
    """

    def __init__(
        self,
        scale: Sequence[int],
        patch_size: Sequence[int],
        intensity: Mapping[str, float],
        degradation: Mapping[str, Any],
        list_file: str | None = None,
        root: str | None = None,
        pattern: str = "*.nii*",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 4,
        samples_per_volume: int = 2,
        patches_per_epoch: int = 64,
        val_patches: int = 16,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        cache: str = "memory",
        cache_dir: str | None = None,
        synth: Mapping[str, Any] | None = None,
        orient: bool = False,
        coarsen: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if cache not in CACHE_MODES:
            raise ValueError(f"data.cache must be one of {CACHE_MODES}, got {cache!r}")
        if cache == "disk" and not cache_dir:
            raise ValueError("data.cache=disk needs data.cache_dir")
        if batch_size % samples_per_volume:
            raise ValueError(f"batch_size={batch_size} must be a multiple of samples_per_volume={samples_per_volume}")
        check_patch_geometry(patch_size, scale)
        self.scale, self.patch_size = [int(s) for s in scale], [int(p) for p in patch_size]
        self.intensity, self.degradation = dict(intensity), dict(degradation)
        self.source = {"list_file": list_file, "root": root, "pattern": pattern, "val_fraction": val_fraction,
                       "test_fraction": test_fraction, "seed": split_seed}
        self.batch_size, self.samples_per_volume = batch_size, samples_per_volume
        self.patches_per_epoch, self.val_patches = patches_per_epoch, val_patches
        self.num_workers, self.cache, self.cache_dir = num_workers, cache, cache_dir
        # page-locked batches: the host-to-GPU copy runs asynchronously (from pageable memory it first waits
        # for the GPU to finish all queued work, every step)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        synth = dict(synth or {})
        self.synth = synth if synth.pop("enabled", False) else None
        self.orient = bool(orient)
        self.coarsen = dict(coarsen) if coarsen else None
        self.datasets: dict[str, Dataset] = {}

    def _dataset(self, items: list[dict], transform) -> Dataset:
        if self.cache == "memory":
            # copy_cache=False: the random transforms after the cache never modify their input in place (tested), so
            # the cached volumes (with synthesis: image, tissue maps, LR maps) are not deep-copied on every draw
            return CacheDataset(items, transform, hash_as_key=True, num_workers=min(4, len(items)), progress=False,
                                copy_cache=False)
        if self.cache == "disk":
            # the key includes the cached transforms' settings, so changing e.g. percentiles never reads stale files
            return PersistentDataset(items, transform, cache_dir=Path(self.cache_dir), hash_transform=pickle_hashing)
        return Dataset(items, transform)

    def setup(self, stage: str | None = None) -> None:
        """List and split the volumes, build (cached) datasets; idempotent."""
        if self.datasets:
            return
        splits = load_split_items(**self.source)
        train_keys = ("image", *TISSUE_KEYS) if self.synth is not None else ("image",)
        train_items = [{k: it[k] for k in train_keys if k in it} for it in splits["train"]]
        if self.synth is not None and not any(set(TISSUE_KEYS) & set(it) for it in train_items):
            raise ValueError(f"data.synth.enabled=true needs tissue maps ({', '.join(TISSUE_KEYS)}) for at least one "
                             "train volume (the others stay real); add them to the list or set data.synth.enabled=false")
        repeats = math.ceil(self.patches_per_epoch / (self.samples_per_volume * len(splits["train"])))
        train_tf = train_transforms(self.scale, self.patch_size, self.samples_per_volume, self.intensity,
                                    self.degradation, self.synth, self.orient, self.coarsen)
        eval_tf = eval_transforms(self.scale, self.patch_size, self.val_patches, self.intensity, self.degradation)
        self.datasets["train"] = self._dataset(train_items * repeats, train_tf)
        for split in ("val", "test"):
            if splits[split]:
                self.datasets[split] = self._dataset([{"image": it["image"]} for it in splits[split]], eval_tf)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size // self.samples_per_volume, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", 1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise ValueError("no test volumes in the data list")
        return self._loader("test", 1, shuffle=False)
