"""Image-quality metrics with a fixed, recorded data range: PSNR and 3D SSIM, whole volume or a mask.

The data range is chosen once per case from the reference (HR) volume and passed to every method, so
methods are compared on the same scale; it is stored next to the numbers. Identical volumes give
PSNR = +inf; a constant image never gives NaN (zero range falls back to 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs
from scipy import ndimage

SSIM_WINDOW = 7
SSIM_SIGMA = 1.5


def data_range_of(reference: np.ndarray) -> float:
    """max - min of the reference volume, or 1.0 for a constant one (so metrics stay finite)."""
    span = float(np.max(reference) - np.min(reference))
    return span if span > 0 else 1.0


def foreground_mask(reference: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels above min + fraction * range of the reference, holes filled; (X, Y, Z) bool.

    Falls back to the whole volume when nothing passes (constant image).
    """
    lo = float(np.min(reference))
    mask = reference > lo + fraction * (float(np.max(reference)) - lo)
    mask = ndimage.binary_fill_holes(mask)
    return mask if mask.any() else np.ones_like(mask, dtype=bool)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None = None) -> float:
    """10 log10(range^2 / MSE) over all voxels (or those in ``mask``); +inf when MSE is 0."""
    diff = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    if mask is not None:
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def _batch(volume: np.ndarray) -> torch.Tensor:
    """(X, Y, Z) array -> (1, 1, X, Y, Z) float32 tensor."""
    return torch.as_tensor(np.asarray(volume, np.float32))[None, None]


def ssim(
    pred: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None = None,
    window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
) -> float:
    """Mean 3D SSIM (Gaussian window) over the SSIM map, or over the map's voxels inside ``mask``.

    pred, target (X, Y, Z). The window shrinks (kept odd) for volumes smaller than it; the map covers
    the voxels where the window fits, and ``mask`` is cropped to match.
    """
    size = min(window, *pred.shape)
    size -= 1 - size % 2
    ssim_map, _ = compute_ssim_and_cs(
        _batch(pred), _batch(target), spatial_dims=3, kernel_size=[size] * 3, kernel_sigma=[sigma] * 3,
        data_range=float(data_range),
    )
    values = ssim_map[0, 0].double().numpy()
    if mask is not None:
        m = size // 2
        inner = mask[m : mask.shape[0] - m, m : mask.shape[1] - m, m : mask.shape[2] - m]
        values = values[inner] if inner.any() else values
    return float(values.mean())


def all_metrics(pred: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM on the whole volume and on ``mask`` (keys psnr, ssim, psnr_fg, ssim_fg)."""
    return {
        "psnr": psnr(pred, target, data_range),
        "ssim": ssim(pred, target, data_range),
        "psnr_fg": psnr(pred, target, data_range, mask),
        "ssim_fg": ssim(pred, target, data_range, mask),
    }
