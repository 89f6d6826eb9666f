"""Interpolation baselines on the centred grid (LR voxel i covers HR voxels s*i .. s*i+s-1).

Each maps lr (X, Y, Z) -> (sx*X, sy*Y, sz*Z) float32 with the same voxel-centre convention as the
model and ``app.io.upscaled_affine``: nearest repeats each voxel, trilinear is torch's
``align_corners=False``, cubic B-spline is scipy.ndimage.zoom(order=3, grid_mode=True).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def nearest(lr: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    """Each LR voxel repeated s times per axis."""
    out = lr
    for axis, s in enumerate(scale):
        out = np.repeat(out, int(s), axis=axis)
    return out.astype(np.float32)


def trilinear(lr: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    """Trilinear interpolation, voxel centres at (i + 0.5) / s (edges replicated)."""
    x = torch.from_numpy(np.ascontiguousarray(lr, np.float32))[None, None]
    size = [n * int(s) for n, s in zip(lr.shape, scale)]
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def bspline(lr: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    """Cubic B-spline interpolation (scipy order 3, prefiltered, mirrored edges)."""
    zoom = [float(s) for s in scale]
    return ndimage.zoom(np.asarray(lr, np.float64), zoom, order=3, grid_mode=True, mode="grid-mirror").astype(np.float32)


BASELINES: dict[str, Callable[[np.ndarray, Sequence[int]], np.ndarray]] = {
    "nearest": nearest,
    "trilinear": trilinear,
    "bspline": bspline,
}
