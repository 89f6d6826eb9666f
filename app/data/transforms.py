"""MONAI dictionary transforms of this project: intensity scaling from the simulated LR, HR -> LR pairs."""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from app.data.degradation import PROFILES, simulate_lr
from app.data.intensity import percentile_apply, percentile_scale


class ScaleIntensityFromLRd(MapTransform):
    """Percentile-scale d[key] (C, X, Y, Z) with percentiles measured on its simulated LR version.

    At inference the percentiles are measured on the real LR input; measuring them on the nominal
    LR of the whole training volume keeps both the same. Degradation is linear, so scaling the HR
    and then degrading equals degrading and then scaling.
    """

    def __init__(self, keys: str, scale: Sequence[int], profile: str, lower_percentile: float, upper_percentile: float):
        super().__init__(keys)
        self.scale = [int(s) for s in scale]
        self.profile = profile
        self.lower, self.upper = lower_percentile, upper_percentile

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            vol = d[key]
            trimmed = vol[(...,) + tuple(slice(0, n - n % s) for n, s in zip(vol.shape[-3:], self.scale))]
            lr = simulate_lr(convert_to_tensor(trimmed, track_meta=False), self.scale, self.profile)
            _, lo, hi = percentile_scale(lr, self.lower, self.upper)
            d[key] = percentile_apply(vol, lo, hi)
        return d


class SimulateLRd(RandomizableTransform, MapTransform):
    """HR patch d[key] (C, X, Y, Z) -> d["hr"] (plain tensor) and d["lr"] = simulate_lr(hr) (C, X/sx, Y/sy, Z/sz).

    With ``train`` ranges ({"profiles": [...], "noise_std": [lo, hi], "kspace_fraction": [lo, hi] | None})
    each call draws its own degradation; without, the nominal one is used (noise from a fixed seed).
    """

    def __init__(
        self,
        keys: str,
        scale: Sequence[int],
        profile: str = "gaussian",
        noise_std: float = 0.0,
        kspace_fraction: float | None = None,
        train: Mapping[str, Any] | None = None,
    ):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale = [int(s) for s in scale]
        self.nominal = {"profile": profile, "noise_std": float(noise_std), "kspace_fraction": kspace_fraction}
        self.train = dict(train) if train else None
        for p in [profile, *(self.train or {}).get("profiles", [])]:
            if p not in PROFILES:
                raise ValueError(f"unknown slice profile {p!r}; expected one of {PROFILES}")
        self._params: dict[str, Any] = dict(self.nominal)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw profile, noise level, k-space fraction and a noise seed (nominal values without ranges)."""
        if self.train is None:
            self._params, self._seed = dict(self.nominal), 0
            return
        profiles = self.train.get("profiles") or [self.nominal["profile"]]
        noise = self.train.get("noise_std")
        kspace = self.train.get("kspace_fraction")
        self._params = {
            "profile": profiles[self.R.randint(len(profiles))],
            "noise_std": float(self.R.uniform(*noise)) if noise else self.nominal["noise_std"],
            "kspace_fraction": float(self.R.uniform(*kspace)) if kspace else self.nominal["kspace_fraction"],
        }
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            hr = convert_to_tensor(d.pop(key), track_meta=False, dtype=torch.float32)
            generator = torch.Generator().manual_seed(self._seed)
            d["hr"], d["lr"] = hr, simulate_lr(hr, self.scale, generator=generator, **self._params)
        return d


def random_origins(R: np.random.RandomState, spatial_shape: Sequence[int], roi_size: Sequence[int],
                   num_samples: int) -> list[tuple[int, ...]]:
    """``num_samples`` corners of ``roi_size`` windows, uniform over ``spatial_shape`` (each window inside)."""
    return [tuple(int(R.randint(0, n - p + 1)) for n, p in zip(spatial_shape, roi_size)) for _ in range(num_samples)]


def random_windows(R: np.random.RandomState, spatial_shape: Sequence[int], roi_size: Sequence[int],
                   num_samples: int, coarsen: Sequence[float] = (0.0, 1.0)) -> tuple[list, list]:
    """(corners, extents) of ``num_samples`` windows inside ``spatial_shape``. A window spans ``roi_size``, or, with
    probability ``coarsen[0]``, roi_size × f with f ~ U(1, coarsen[1]) (one f for all axes, capped so that the window
    fits): ``to_roi_size`` then averages it down to roi_size, a patch of f times coarser voxels."""
    prob, max_factor = float(coarsen[0]), float(coarsen[1])
    roi = tuple(int(p) for p in roi_size)
    if prob <= 0.0:
        return random_origins(R, spatial_shape, roi, num_samples), [roi] * num_samples
    fit = min(n / p for n, p in zip(spatial_shape, roi))
    origins, extents = [], []
    for _ in range(num_samples):
        f = min(float(R.uniform(1.0, max_factor)), fit) if R.rand() < prob else 1.0
        extent = tuple(max(p, min(n, round(p * f))) for n, p in zip(spatial_shape, roi))
        origins += random_origins(R, spatial_shape, extent, 1)
        extents.append(extent)
    return origins, extents


def to_roi_size(patch: torch.Tensor, roi_size: Sequence[int]) -> torch.Tensor:
    """patch (C, *extent), extent >= roi_size, averaged down to (C, *roi_size) (area: box anti-aliasing); the
    patch itself when it already has that size."""
    if tuple(patch.shape[-3:]) == tuple(roi_size):
        return patch
    return F.interpolate(patch[None], size=tuple(int(p) for p in roi_size), mode="area")[0]


def window(origin: Sequence[int], roi_size: Sequence[int]) -> tuple[slice, ...]:
    """Index of the (C, *roi_size) window at spatial corner ``origin`` (all channels)."""
    return (slice(None), *(slice(o, o + p) for o, p in zip(origin, roi_size)))


class PatchWindows:
    """The random patch windows of a patch-cropping transform: ``num_samples`` windows of ``roi_size``, a share
    ``coarsen[0]`` of them up to ``coarsen[1]`` times larger (``random_windows``); the last draw is kept in
    ``_origins`` / ``_extents``. Mixed into a RandomizableTransform, whose ``self.R`` it draws from; set up by
    ``init_windows`` (not ``__init__``: MONAI's transform constructors call ``super().__init__()`` without
    arguments)."""

    R: np.random.RandomState

    def init_windows(self, roi_size: Sequence[int], num_samples: int, coarsen: Sequence[float] = (0.0, 1.0)):
        prob, max_factor = (float(v) for v in coarsen)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= prob <= 1.0 or max_factor < 1.0:
            raise ValueError(f"coarsen needs 0 <= prob <= 1 and max_factor >= 1, got prob={prob}, "
                             f"max_factor={max_factor}")
        self.roi_size, self.num_samples = tuple(int(p) for p in roi_size), int(num_samples)
        self.coarsen = (prob, max_factor)
        self._origins: list[tuple[int, ...]] = []
        self._extents: list[tuple[int, ...]] = []

    def draw_windows(self, spatial_shape: Sequence[int]) -> list[tuple[slice, ...]]:
        """New windows inside ``spatial_shape``, as (C, *extent) indices; ``to_roi_size`` brings their crops to
        roi_size."""
        self._origins, self._extents = random_windows(self.R, spatial_shape, self.roi_size, self.num_samples,
                                                      self.coarsen)
        return [window(o, e) for o, e in zip(self._origins, self._extents)]


class RandPatchesd(RandomizableTransform, MapTransform, PatchWindows):
    """Crop ``num_samples`` random ``roi_size`` windows of d[key] (C, *spatial), at least ``roi_size``: a list of
    dicts {key: (C, *roi_size) view} (the other keys shared). MONAI's RandSpatialCropSamplesd without its per-crop
    metadata, which training patches do not use and which cost ~2 ms of CPU per patch (as much as the LR simulation).
    """

    def __init__(self, key: str, roi_size: Sequence[int], num_samples: int, coarsen: Sequence[float] = (0.0, 1.0)):
        self.init_windows(roi_size, num_samples, coarsen)
        MapTransform.__init__(self, key)
        RandomizableTransform.__init__(self, prob=1.0)
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        image = convert_to_tensor(d.pop(self.key), track_meta=False)
        if any(n < p for n, p in zip(image.shape[-3:], self.roi_size)):
            raise ValueError(f"image {tuple(image.shape[-3:])} is smaller than roi_size {self.roi_size}; pad it first")
        return [{**d, self.key: to_roi_size(image[w], self.roi_size)} for w in self.draw_windows(image.shape[-3:])]


class RandOrientd(RandomizableTransform, MapTransform):
    """A random symmetry of the HR patch d[key] (C, X, Y, Z) that the degradation does not see: each axis flipped
    with probability 1/2, and the axes that share their scale factor and patch size permuted at random. With
    isotropic scale these are the 48 symmetries of the cube; with (1, 1, 4) the 16 that keep the slice axis.

    Flips and permutations of whole LR blocks commute with the (symmetric) slice profiles, so the LR simulated
    from the transformed patch is the transformed LR: more anatomy orientations from few training volumes."""

    def __init__(self, key: str, scale: Sequence[int], patch_size: Sequence[int], prob: float = 1.0):
        MapTransform.__init__(self, key)
        RandomizableTransform.__init__(self, prob=prob)
        self.key = key
        signature = [(int(s), int(p)) for s, p in zip(scale, patch_size)]
        self.groups = [[a for a in range(3) if signature[a] == sig] for sig in dict.fromkeys(signature)]
        self._flips: tuple[int, ...] = ()
        self._order: list[int] = [0, 1, 2]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        order = [0, 1, 2]
        for axes in self.groups:
            for a, b in zip(axes, self.R.permutation(axes)):
                order[a] = int(b)
        self._order = order
        self._flips = tuple(a + 1 for a in range(3) if self.R.rand() < 0.5)  # + 1: past the channel dim

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        patch = convert_to_tensor(d[self.key], track_meta=False)
        patch = patch.permute(0, *(a + 1 for a in self._order))
        d[self.key] = patch.flip(self._flips) if self._flips else patch
        return d
