"""Contrast-agnostic synthesis (SynthSR's idea): random intensity per tissue class, bias field, noise.

The generative model (one draw per loaded training volume, from one seed)::

    image = sum_k p_k * mu_k + p_rest * mu_rest * t1,   mu ~ U(intensity_range) independently per class
    image = image * exp(bias) + noise,  bias = a 4^3 grid of N(0, bias_std) values, trilinear over the volume
                                        noise ~ N(0, s^2), s ~ U(noise_std), i.i.d. per voxel

(every ordering occurs: T1-like WM > GM > CSF, T2/b0-like CSF > GM > WM, flat; p_rest = 1 - sum_k p_k is
background, skull, anything unlabelled, keeping the original image's texture there: t1 scaled to [0, 1] by
its 99.5th percentile). Two forms of it draw the same contrast from the same random state:

* :class:`SynthContrastd` builds the whole synthetic volume (the reference form; its output is then
  percentile-scaled by ``ScaleIntensityFromLRd`` like a real image).
* :class:`SynthPrepd` (deterministic, so a CacheDataset keeps its output) + :class:`SynthPatchesd` (random),
  what training uses: only the ``num_samples`` cropped HR patches are synthesised (the bias field is evaluated
  at each patch's own voxels of the whole volume, so its spatial scale is the volume's), and the percentile
  scaling is measured, as before, on the nominal LR of the whole synthetic volume, which is cheap to form from
  cached LR tissue maps because the LR simulation is linear: LR(sum_k mu_k p_k) = sum_k mu_k LR(p_k).
  The smooth bias field is applied to that LR sum at the LR voxel centres, and the noise enters as LR-domain
  Gaussian noise of the std that the slice profile leaves (both approximations; the percentiles move by well
  under 0.5 % of their range, see tests/test_data.py). On the demo train slab (2.2M voxels, 4 patches of 32^3)
  that is ~15 ms of CPU per synthetic volume instead of ~170 ms (whole-volume synthesis and LR percentiles).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from app.data.degradation import profile_kernel, simulate_lr
from app.data.intensity import percentile_apply, percentile_scale, percentile_values
from app.data.transforms import PatchWindows, to_roi_size

SYNTH_KEY = "synth"  # SynthPrepd's cached per-volume inputs of SynthPatchesd
TEXTURE_PERCENTILE = 99.5  # the original image, scaled [0, this percentile] -> [0, 1], is the texture of p_rest


def draw_contrast(
    generator: torch.Generator,
    n_maps: int,
    intensity_range: Sequence[float],
    bias_std: float,
    bias_grid: int,
    noise_std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One contrast: mu (n_maps + 1,) (the last for p_rest), the log bias field's control points
    (bias_grid,) * 3 and the noise std; ``generator`` goes on to draw the noise."""
    mu = torch.empty(n_maps + 1).uniform_(*intensity_range, generator=generator)
    coarse = torch.randn((bias_grid,) * 3, generator=generator) * bias_std
    noise = float(torch.empty(()).uniform_(*noise_std, generator=generator))
    return mu, coarse, noise


def tissue_keys_in(d: Mapping[Hashable, Any], tissue_keys: Sequence[str]) -> list[str]:
    """The tissue keys found in ``d`` (possibly none)."""
    return [k for k in tissue_keys if k in d]


def present_tissue_keys(d: Mapping[Hashable, Any], tissue_keys: Sequence[str]) -> list[str]:
    """The tissue keys found in ``d``: at least one, else a ValueError."""
    present = tissue_keys_in(d, tissue_keys)
    if not present:
        raise ValueError(f"contrast synthesis needs tissue maps {list(tissue_keys)} in the data list, found none")
    return present


def rest_texture(probs: Sequence[torch.Tensor], texture: torch.Tensor) -> torch.Tensor:
    """p_rest * texture: 1 - sum_k p_k and the texture, each clamped to [0, 1]."""
    return (1.0 - sum(probs)).clamp(0.0, 1.0) * texture.clamp(0.0, 1.0)


def mix_contrast(mu: torch.Tensor, probs: Sequence[torch.Tensor], texture: torch.Tensor) -> torch.Tensor:
    """sum_k mu_k p_k + mu_rest p_rest texture: the synthetic image before bias field and noise."""
    return sum(m * p for m, p in zip(mu[:-1], probs)) + mu[-1] * rest_texture(probs, texture)


def linear_weights(coords: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """(len(coords), grid) weights of linear interpolation from ``grid`` control points spanning voxels 0 .. size-1
    (``F.interpolate(mode="trilinear", align_corners=True)`` along one axis), at voxel coordinates ``coords``
    (fractional ones too; clamped to the volume)."""
    coords = coords.to(torch.float64)
    if size > 1 and grid > 1:
        t = (coords * ((grid - 1) / (size - 1))).clamp(0.0, grid - 1.0)
    else:
        t = torch.zeros_like(coords)
    low = t.floor().clamp(max=max(grid - 2, 0)).long()
    frac = t - low
    weights = torch.zeros(len(coords), grid, dtype=torch.float64)
    weights.scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    weights.scatter_add_(1, (low + 1).clamp(max=grid - 1)[:, None], frac[:, None])
    return weights


def log_bias_at(coarse: torch.Tensor, coords: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """The log bias field of a volume of ``shape`` (control points ``coarse`` (g, g, g), trilinear with aligned
    corners) on the grid coords[0] x coords[1] x coords[2] of voxel coordinates: (len(c0), len(c1), len(c2))."""
    wx, wy, wz = (linear_weights(c, n, g).float() for c, n, g in zip(coords, shape, coarse.shape))
    field = torch.tensordot(wx, coarse.float(), dims=1)  # (i, b, c)
    field = torch.tensordot(field, wy, dims=([1], [1]))  # (i, c, j)
    return torch.tensordot(field, wz, dims=([1], [1]))  # (i, j, k)


def _noise_gain(scale: Sequence[int], profile: str) -> float:
    """Std of the nominal LR of unit i.i.d. Gaussian noise: prod over the downsampled axes of ||profile weights||."""
    return math.prod(float(profile_kernel(int(s), profile)[0].norm()) for s in scale if int(s) > 1)


class SynthContrastd(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace d[image_key] (1, X, Y, Z) by a synthetic contrast built from tissue
    maps d[k] (1, X, Y, Z) over the whole volume (the module docstring's model); otherwise keep the real image.
    The tissue keys are dropped either way. The reference form: training uses SynthPrepd + SynthPatchesd, which
    draw the same contrast from the same random state but synthesise only the cropped patches.
    """

    def __init__(
        self,
        image_key: str = "image",
        tissue_keys: Sequence[str] = ("gm", "wm", "csf"),
        intensity_range: Sequence[float] = (0.0, 1.0),
        bias_std: float = 0.3,
        bias_grid: int = 4,
        noise_std: Sequence[float] = (0.0, 0.03),
        prob: float = 1.0,
    ):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"data.synth.prob must be in [0, 1], got {prob}")
        MapTransform.__init__(self, [image_key, *tissue_keys], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob=prob)
        self.image_key, self.tissue_keys = image_key, list(tissue_keys)
        self.intensity_range = (float(intensity_range[0]), float(intensity_range[1]))
        self.bias_std, self.bias_grid = float(bias_std), int(bias_grid)
        self.noise_std = (float(noise_std[0]), float(noise_std[1]))
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to synthesise (probability ``prob``) and, if so, the seed of this sample's contrast."""
        super().randomize(None)
        if self._do_transform:
            self._seed = int(self.R.randint(2**31 - 1))

    def draw(self, n_maps: int) -> tuple[torch.Generator, torch.Tensor, torch.Tensor, float]:
        """This sample's contrast (after randomize): generator (goes on to the noise), mu, log-bias grid, noise std."""
        generator = torch.Generator().manual_seed(self._seed)
        mu, coarse, noise_std = draw_contrast(generator, n_maps, self.intensity_range, self.bias_std, self.bias_grid,
                                              self.noise_std)
        return generator, mu, coarse, noise_std

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = present_tissue_keys(d, self.tissue_keys)
        self.randomize()
        maps = [d.pop(k) for k in present]
        if not self._do_transform:
            return d
        image = convert_to_tensor(d[self.image_key], track_meta=False, dtype=torch.float32)
        probs = [convert_to_tensor(m, track_meta=False, dtype=torch.float32) for m in maps]
        generator, mu, coarse, noise_std = self.draw(len(probs))
        texture, _, _ = percentile_scale(image, 0.0, TEXTURE_PERCENTILE)
        synth = mix_contrast(mu, probs, texture)
        bias = F.interpolate(coarse[None, None], size=image.shape[-3:], mode="trilinear", align_corners=True)[0]
        synth = synth * bias.exp() + noise_std * torch.randn(image.shape, generator=generator)
        d[self.image_key] = synth
        return d


class SynthPrepd(MapTransform):
    """Deterministic (cacheable) inputs of :class:`SynthPatchesd`, from d[image_key] and the tissue maps present.

    d[SYNTH_KEY] = {"keys": the tissue keys present, "shape": (X, Y, Z), "texture": (lo, hi) (the image's 0th and
    99.5th percentiles), "lr": (K + 1, X/sx, Y/sy, Z/sz) nominal LR (``profile``, volume trimmed to a multiple of
    ``scale``) of the K tissue maps and of p_rest * texture}; the maps stay (SynthPatchesd crops them). Place it
    after the real image's own intensity scaling (the texture is invariant to it) and before padding. A volume without
    tissue maps gets no d[SYNTH_KEY]: SynthPatchesd keeps its real image.
    """

    def __init__(self, image_key: str, tissue_keys: Sequence[str], scale: Sequence[int], profile: str):
        MapTransform.__init__(self, [image_key, *tissue_keys], allow_missing_keys=True)
        self.image_key, self.tissue_keys = image_key, list(tissue_keys)
        self.scale, self.profile = [int(s) for s in scale], profile

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = tissue_keys_in(d, self.tissue_keys)
        if not present:
            return d
        image = convert_to_tensor(d[self.image_key], track_meta=False, dtype=torch.float32)
        maps = [convert_to_tensor(d[k], track_meta=False, dtype=torch.float32) for k in present]
        lo, hi = percentile_values(image, 0.0, TEXTURE_PERCENTILE)
        stack = torch.cat([*maps, rest_texture(maps, percentile_apply(image, lo, hi))])
        trimmed = stack[(...,) + tuple(slice(0, n - n % s) for n, s in zip(stack.shape[-3:], self.scale))]
        d[SYNTH_KEY] = {"keys": present, "shape": tuple(int(n) for n in image.shape[-3:]), "texture": (lo, hi),
                        "lr": simulate_lr(trimmed, self.scale, self.profile)}
        return d


class SynthPatchesd(SynthContrastd, PatchWindows):
    """Crop ``num_samples`` random ``roi_size`` patches from d[image_key] (1, *spatial), the real image already
    percentile-scaled and padded to at least ``roi_size``; with probability ``prob`` per call (per loaded volume,
    as SynthContrastd) all of them get one synthetic contrast instead, built from the same windows of the
    tissue maps (padded alike) and SynthPrepd's d[SYNTH_KEY], and percentile-scaled as ScaleIntensityFromLRd
    would scale the whole synthetic volume (``scale``, ``profile``, percentiles: its settings), estimated in the
    LR domain (module docstring). Returns a list of dicts {image_key: (1, *roi_size) float32} (other keys shared).
    """

    def __init__(
        self,
        image_key: str,
        tissue_keys: Sequence[str],
        roi_size: Sequence[int],
        num_samples: int,
        scale: Sequence[int],
        profile: str,
        lower_percentile: float,
        upper_percentile: float,
        intensity_range: Sequence[float] = (0.0, 1.0),
        bias_std: float = 0.3,
        bias_grid: int = 4,
        noise_std: Sequence[float] = (0.0, 0.03),
        prob: float = 1.0,
        coarsen: Sequence[float] = (0.0, 1.0),
    ):
        self.init_windows(roi_size, num_samples, coarsen)
        SynthContrastd.__init__(self, image_key, tissue_keys, intensity_range, bias_std, bias_grid, noise_std, prob)
        self.scale, self.lower, self.upper = [int(s) for s in scale], float(lower_percentile), float(upper_percentile)
        self.noise_gain = _noise_gain(self.scale, profile)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        prep = d.pop(SYNTH_KEY, None)  # None: a volume without tissue maps (SynthPrepd), kept real
        maps = [] if prep is None else [convert_to_tensor(d.pop(k), track_meta=False, dtype=torch.float32)
                                        for k in prep["keys"]]
        for k in self.tissue_keys:
            d.pop(k, None)
        image = convert_to_tensor(d.pop(self.image_key), track_meta=False, dtype=torch.float32)
        shape = tuple(image.shape[-3:])
        if any(n < p for n, p in zip(shape, self.roi_size)) or any(m.shape[-3:] != shape for m in maps):
            raise ValueError(f"image {shape} and tissue maps {[tuple(m.shape[-3:]) for m in maps]} must share a "
                             f"shape of at least roi_size {self.roi_size} (pad them alike first)")
        self.randomize()  # synthesise or not (probability ``prob``), the contrast's seed
        windows = self.draw_windows(shape)
        if self._do_transform and prep is not None:
            patches = self._synthesise(image, maps, prep, windows)
        else:
            patches = [image[w] for w in windows]
        return [{**d, self.image_key: to_roi_size(patch, self.roi_size)} for patch in patches]

    def _synthesise(self, image: torch.Tensor, maps: list[torch.Tensor], prep: Mapping[str, Any],
                    windows: list[tuple[slice, ...]]) -> list[torch.Tensor]:
        generator, mu, coarse, noise_std = self.draw(len(maps))
        volume_shape = prep["shape"]
        lo, hi = self._percentiles(prep["lr"], volume_shape, mu, coarse, noise_std, generator)
        pad_before = [(n - m) // 2 for n, m in zip(image.shape[-3:], volume_shape)]  # SpatialPadd's "symmetric"
        patches = []
        for win in windows:
            coords = [torch.arange(w.start, w.stop) - b for w, b in zip(win[1:], pad_before)]
            texture = percentile_apply(image[win], *prep["texture"])
            synth = mix_contrast(mu, [m[win] for m in maps], texture)
            synth = synth * log_bias_at(coarse, coords, volume_shape).exp()
            if noise_std > 0:
                synth = synth + noise_std * torch.randn(synth.shape, generator=generator)
            patch = percentile_apply(synth, lo, hi)
            inside = [(c >= 0) & (c < n) for c, n in zip(coords, volume_shape)]
            if not all(bool(v.all()) for v in inside):  # padding: 0, as SpatialPadd gives after the scaling
                patch = patch * (inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
            patches.append(patch)
        return patches

    def _percentiles(self, lr_maps: torch.Tensor, volume_shape: Sequence[int], mu: torch.Tensor,
                     coarse: torch.Tensor, noise_std: float, generator: torch.Generator) -> tuple[float, float]:
        """ScaleIntensityFromLRd's percentiles of the synthetic volume, from the nominal LR of its maps: the LR of the
        contrast sum, times the bias field at the LR voxel centres, plus LR noise of the std the profile leaves."""
        lr = torch.tensordot(mu, lr_maps, dims=1)
        centres = [torch.arange(n, dtype=torch.float64) * s + (s - 1) / 2.0 for n, s in zip(lr.shape, self.scale)]
        lr = lr * log_bias_at(coarse, centres, volume_shape).exp()
        if noise_std > 0:
            lr = lr + (noise_std * self.noise_gain) * torch.randn(lr.shape, generator=generator)
        return percentile_values(lr, self.lower, self.upper)
