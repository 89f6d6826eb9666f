"""Tiny NIfTI files with known geometry for the I/O, inference and evaluation tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def oblique_lps_affine(spacing=(0.9, 1.3, 2.5), angle_deg: float = 20.0, origin=(12.0, -7.5, 30.25)) -> np.ndarray:
    """An oblique, LPS-oriented, anisotropic voxel -> mm affine (rotation about z and x)."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def permuted_affine(spacing=(1.0, 2.0, 3.0)) -> np.ndarray:
    """Voxel axes (P, S, L): a file whose axes are permuted and flipped relative to RAS."""
    affine = np.zeros((4, 4))
    affine[1, 0] = -spacing[0]  # axis 0 -> posterior
    affine[2, 1] = spacing[1]  # axis 1 -> superior
    affine[0, 2] = -spacing[2]  # axis 2 -> left
    affine[:, 3] = [5.0, 6.0, -7.0, 1.0]
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, code: int = 1, **header) -> Path:
    """Write ``data`` with ``affine`` in sform and qform (both ``code``); extra header fields as keywords."""
    affine = np.eye(4) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def smooth_volume(shape, seed: int = 0) -> np.ndarray:
    """A smooth positive float32 test volume (sum of a few Gaussian blobs), values ~ [0, 1000]."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    vol = np.zeros(shape)
    for _ in range(4):
        centre = rng.uniform(-0.5, 0.5, 3)
        width = rng.uniform(0.6, 1.0)
        vol += rng.uniform(200, 500) * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / width**2)
    return vol.astype(np.float32)


def corners_mm(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates (8, 3) of the field-of-view corners (voxel edges, not centres)."""
    lo, hi = -0.5, np.asarray(shape, dtype=float) - 0.5
    pts = np.array([[x, y, z, 1.0] for x in (lo, hi[0]) for y in (lo, hi[1]) for z in (lo, hi[2])])
    return (pts @ affine.T)[:, :3]
