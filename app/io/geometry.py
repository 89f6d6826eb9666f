"""Voxel-grid geometry: the centred-grid output affine (DESIGN §4) and RAS-closest reorientation.

The model runs on volumes whose voxel axes are the closest to RAS (as MONAI's ``Orientationd("RAS")``
gives in training); files keep their own voxel order. ``to_ras``/``from_ras`` move between the two
with flips and axis permutations only (no resampling), so they are exact and invertible.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel.orientations as nio
import numpy as np
from monai.transforms.utils import scale_affine


def upscaled_affine(affine: np.ndarray, shape: Sequence[int], scale: Sequence[int]) -> np.ndarray:
    """Affine of the grid that splits each voxel of ``shape`` into ``scale`` voxels per axis.

    ``A_out = A_in @ M`` with M = diag(1/s) and translation (1 - s) / (2 s) input voxels (MONAI's
    ``scale_affine(..., centered=True)``): voxel sizes shrink by s, the field-of-view corners stay put.
    affine (4, 4), shape (X, Y, Z), scale (sx, sy, sz) in the same voxel order -> (4, 4) float64.
    """
    shape = [int(n) for n in shape]
    new_shape = [n * int(s) for n, s in zip(shape, scale)]
    return np.asarray(affine, dtype=np.float64) @ scale_affine(shape, new_shape, centered=True)


def ras_orientation(affine: np.ndarray) -> np.ndarray:
    """Orientation transform (nibabel ``ornt``, (3, 2)) from the affine's voxel axes to RAS-closest axes."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute ``data`` (X, Y, Z) into RAS-closest voxel order; returns (data, ras affine)."""
    ornt = ras_orientation(affine)
    ras_affine = affine @ nio.inv_ornt_aff(ornt, data.shape)
    return np.ascontiguousarray(nio.apply_orientation(data, ornt)), ras_affine


def from_ras(data_ras: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of ``to_ras`` for an array on any grid aligned with the file of ``affine`` (e.g. the SR grid)."""
    back = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(affine))
    return np.ascontiguousarray(nio.apply_orientation(data_ras, back))


def scale_in_file_order(scale_ras: Sequence[int], affine: np.ndarray) -> tuple[int, int, int]:
    """Per-axis factors given for RAS-closest axes (the model's) -> the same factors for the file's axes."""
    ornt = ras_orientation(affine)  # file axis i becomes RAS axis ornt[i, 0]
    return tuple(int(scale_ras[int(ornt[i, 0])]) for i in range(3))  # type: ignore[return-value]
