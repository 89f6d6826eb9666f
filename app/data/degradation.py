"""HR -> LR simulation on the centred grid: slice profile, optional k-space truncation and noise."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

PROFILES = ("box", "gaussian")
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def profile_kernel(factor: int, profile: str) -> tuple[torch.Tensor, int]:
    """1D slice-profile weights for one LR voxel and the margin ``m`` of HR voxels on each side of its block.

    Tap j sits at HR offset ``j - m`` from the block start ``s*i``; the block centre is ``s*i + (s-1)/2``.
    ``box`` averages the block; ``gaussian`` has FWHM = factor, truncated at 3 sigma. Weights sum to 1.
    """
    if factor < 1:
        raise ValueError(f"scale factors must be >= 1, got {factor}")
    if profile == "box":
        return torch.full((factor,), 1.0 / factor, dtype=torch.float64), 0
    if profile == "gaussian":
        sigma = factor * _FWHM_TO_SIGMA
        margin = max(0, math.ceil(3.0 * sigma - (factor - 1) / 2.0))
        offsets = torch.arange(factor + 2 * margin, dtype=torch.float64) - margin - (factor - 1) / 2.0
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        return weights / weights.sum(), margin
    raise ValueError(f"unknown slice profile {profile!r}; expected one of {PROFILES}")


def _blur_and_sample(x: torch.Tensor, axis: int, factor: int, profile: str) -> torch.Tensor:
    """x (N, 1, X, Y, Z): weighted sum along spatial ``axis`` (0..2) with stride ``factor``.

    A sum of strided slices, one per tap (a 1-D strided convolution; 2-4x faster than ``F.conv3d`` on CPU,
    where the training loader's workers run it)."""
    weights, margin = profile_kernel(factor, profile)
    dim = 2 + axis
    if margin:
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = margin  # F.pad lists the last dim first
        x = F.pad(x, pad, mode="replicate")
    n_out = (x.shape[dim] - weights.numel()) // factor + 1
    out = None
    for tap, weight in enumerate(weights.tolist()):
        window = [slice(None)] * x.ndim
        window[dim] = slice(tap, tap + (n_out - 1) * factor + 1, factor)
        term = x[tuple(window)]
        out = term * weight if out is None else out.add_(term, alpha=weight)
    return out


def _truncate_kspace(x: torch.Tensor, axes: Sequence[int], fraction: float) -> torch.Tensor:
    """Zero all but the central ``fraction`` of k-space along ``axes`` (dims of x)."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x, dim=axes), dim=axes)
    for ax in axes:
        n = x.shape[ax]
        keep = max(1, round(n * fraction))
        start = (n - keep + 1) // 2
        mask = torch.zeros(n, dtype=torch.bool, device=x.device)
        mask[start : start + keep] = True
        view = [1] * x.ndim
        view[ax] = n
        spectrum = spectrum * mask.reshape(view)
    return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=axes), dim=axes).real


def simulate_lr(
    hr: torch.Tensor,
    scale: Sequence[int],
    profile: str = "gaussian",
    noise_std: float = 0.0,
    kspace_fraction: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """hr (..., X, Y, Z) with X, Y, Z divisible by scale -> lr (..., X/sx, Y/sy, Z/sz) on the centred grid.

    LR voxel i covers HR voxels s*i .. s*i+s-1 (box profile: their mean). k-space truncation keeps the
    central ``kspace_fraction`` of the LR spectrum along the downsampled axes; Gaussian noise of
    ``noise_std`` is added last. Deterministic when noise_std == 0.
    """
    if hr.ndim < 3:
        raise ValueError(f"hr must have at least 3 (spatial) dims, got shape {tuple(hr.shape)}")
    if len(scale) != 3:
        raise ValueError(f"scale must have 3 per-axis factors, got {list(scale)}")
    spatial = hr.shape[-3:]
    if any(n % s for n, s in zip(spatial, scale)):
        raise ValueError(f"HR shape {tuple(spatial)} is not divisible by scale {list(scale)}")
    if kspace_fraction is not None and not 0.0 < kspace_fraction <= 1.0:
        raise ValueError(f"kspace_fraction must be in (0, 1], got {kspace_fraction}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    lead = hr.shape[:-3]
    x = hr.reshape(-1, 1, *spatial)
    if not x.is_floating_point():
        x = x.float()
    for axis, factor in enumerate(scale):
        if factor > 1:
            x = _blur_and_sample(x, axis, int(factor), profile)
    down_axes = [2 + a for a, f in enumerate(scale) if f > 1]
    if kspace_fraction is not None and kspace_fraction < 1.0 and down_axes:
        x = _truncate_kspace(x, down_axes, kspace_fraction)
    if noise_std > 0:
        noise_device = x.device if generator is None else generator.device
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device)
        x = x + noise_std * noise.to(x.device)
    return x.reshape(*lead, *x.shape[-3:])
