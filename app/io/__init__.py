"""NIfTI input/output with validation, and the voxel-grid geometry of super-resolution."""

from app.io.geometry import from_ras, ras_orientation, scale_in_file_order, to_ras, upscaled_affine
from app.io.nifti import (
    NiftiError,
    NiftiWarning,
    Volume,
    check_nan_policy,
    load_volume,
    nifti_suffix,
    partial_path,
    save_volume,
)

__all__ = [
    "NiftiError",
    "NiftiWarning",
    "Volume",
    "check_nan_policy",
    "from_ras",
    "load_volume",
    "nifti_suffix",
    "partial_path",
    "ras_orientation",
    "save_volume",
    "scale_in_file_order",
    "to_ras",
    "upscaled_affine",
]
