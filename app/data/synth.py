"""Contrast-agnostic synthesis (SynthSR's idea): random intensity per tissue class, bias field, noise."""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from app.data.intensity import percentile_scale


class SynthContrastd(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace d[image_key] (1, X, Y, Z) by a synthetic contrast built from tissue
    maps d[k] (1, X, Y, Z); otherwise keep the real image. The tissue keys are dropped either way.

    image = sum_k p_k * mu_k + p_rest * mu_rest * t1, with mu ~ U(intensity_range) independently per class
    (so every ordering occurs: T1-like WM > GM > CSF, T2/b0-like CSF > GM > WM, flat), p_rest =
    1 - sum_k p_k (background, skull, anything unlabelled) keeping the original image's texture there
    (t1 scaled to [0, 1] by its 99.5th percentile); then times exp(smooth Gaussian field of std
    ``bias_std``) and plus Gaussian noise of std ~ U(noise_std). It is random, so a CacheDataset caches
    only the transforms before it and every epoch draws new contrasts.
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.tissue_keys if k in d]
        if not present:
            raise ValueError(f"contrast synthesis needs tissue maps {self.tissue_keys} in the data list, found none")
        self.randomize()
        maps = [d.pop(k) for k in present]
        if not self._do_transform:
            return d
        image = convert_to_tensor(d[self.image_key], track_meta=False, dtype=torch.float32)
        probs = [convert_to_tensor(m, track_meta=False, dtype=torch.float32) for m in maps]
        generator = torch.Generator().manual_seed(self._seed)
        mu = torch.empty(len(probs) + 1).uniform_(*self.intensity_range, generator=generator)
        rest = (1.0 - sum(probs)).clamp(0.0, 1.0)
        texture, _, _ = percentile_scale(image, 0.0, 99.5)
        synth = sum(m * p for m, p in zip(mu[:-1], probs)) + mu[-1] * rest * texture.clamp(0.0, 1.0)
        coarse = torch.randn((1, 1, *(self.bias_grid,) * 3), generator=generator) * self.bias_std
        bias = F.interpolate(coarse, size=image.shape[-3:], mode="trilinear", align_corners=True)[0]
        noise_std = float(torch.empty(()).uniform_(*self.noise_std, generator=generator))
        synth = synth * bias.exp() + noise_std * torch.randn(image.shape, generator=generator)
        d[self.image_key] = synth
        return d
