"""Load and save NIfTI volumes safely.

``load_volume`` validates a file before and after reading it and raises ``NiftiError`` (a
``ValueError``) with a one-line message that starts with the file name. ``save_volume`` writes
float32 with the same affine in sform and qform, under a unique temporary name in the target folder,
then renames it, so the final path holds either nothing or a complete file.

``nan_policy`` (non-finite voxels): ``"error"`` (default) rejects the file; ``"zero"`` replaces NaN
and +/-Inf by 0 and emits a ``NiftiWarning``.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

NAN_POLICIES = ("error", "zero")
MAX_VOXELS = 1024**3  # 4 GiB as float32; larger headers are treated as corrupt
_SUFFIXES = (".nii.gz", ".nii")
_BYTES_PER_VOXEL_IN_MEMORY = 12  # float32 volume + its oriented copy + the raw on-disk dtype, roughly


class NiftiError(ValueError):
    """A file that cannot be used as a 3D NIfTI volume; the message names the file and the problem."""


class NiftiWarning(UserWarning):
    """A usable file with something the user should know about (sform/qform disagreement, replaced voxels)."""


@dataclass(frozen=True)
class Volume:
    """A validated volume: ``data`` (X, Y, Z) float32 in physical units, in the file's voxel order."""

    data: np.ndarray
    affine: np.ndarray  # (4, 4) voxel -> world (mm), the transform nibabel chose (sform if coded, else qform)
    sform_code: int
    qform_code: int
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each file axis (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def nifti_suffix(path: str | os.PathLike) -> str | None:
    """``".nii.gz"`` or ``".nii"`` (case-insensitive), or None for anything else."""
    name = Path(path).name.lower()
    return next((s for s in _SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def partial_path(final: str | os.PathLike) -> Path:
    """A unique hidden temporary name beside ``final``, keeping its NIfTI suffix (nibabel needs it)."""
    final = Path(final)
    suffix = nifti_suffix(final) or ".nii.gz"
    stem = final.name[: -len(suffix)] if nifti_suffix(final) else final.name
    return final.with_name(f".{stem}.{uuid.uuid4().hex}.partial{suffix}")


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of a library exception, on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


@contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's header fix-up log lines ("setting 0 dims to 1"); the checks here report real problems."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _available_memory() -> int | None:
    """Bytes of physical memory available now (Linux), or None when unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate the header shape (before any voxel is read) and return the 3 spatial dims."""
    if len(shape) < 3:
        raise NiftiError(f"{path}: {len(shape)}D image {shape}; need a 3D volume")
    if any(int(n) <= 0 for n in shape):
        raise NiftiError(f"{path}: zero-size or negative dimension in shape {shape}")
    if any(int(n) != 1 for n in shape[3:]):
        raise NiftiError(
            f"{path}: {len(shape)}D image {shape}; need a 3D volume (a 4th dimension is allowed only if it is 1)"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_size(path: Path, img: nib.Nifti1Image, shape: tuple[int, int, int], max_voxels: int) -> None:
    """Reject headers that promise more voxels than allowed, memory holds, or the file contains."""
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > max_voxels:
        raise NiftiError(f"{path}: header claims {shape} = {n_voxels:,} voxels, over the limit of {max_voxels:,}")
    available = _available_memory()
    if available is not None and n_voxels * _BYTES_PER_VOXEL_IN_MEMORY > available:
        raise NiftiError(
            f"{path}: header claims {shape} = {n_voxels:,} voxels, more than the available memory "
            f"({available / 2**30:.1f} GiB) can hold"
        )
    if nifti_suffix(path) == ".nii":
        needed = int(img.dataobj.offset) + n_voxels * img.header.get_data_dtype().itemsize
        have = path.stat().st_size
        if have < needed:
            raise NiftiError(f"{path}: truncated file ({have:,} bytes; the header needs {needed:,})")


def _raw_pixdim(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """pixdim[1:4] as stored (nibabel's load-time header check silently turns 0 into 1)."""
    with nib.openers.ImageOpener(path) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def _check_affine(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """The affine nibabel uses, checked finite and invertible; warns if sform and qform disagree."""
    if int(img.header["sform_code"]) == 0:  # the affine comes from pixdim (qform or the fallback)
        pixdim = _raw_pixdim(path, img)
        if not (np.isfinite(pixdim).all() and (np.abs(pixdim) > 0).all()):
            raise NiftiError(f"{path}: singular affine (pixdim {pixdim.tolist()} and no sform)")
    affine = np.asarray(img.affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise NiftiError(f"{path}: non-finite values in the affine")
    zooms = np.linalg.norm(linear, axis=0)
    if (zooms <= 1e-6).any() or abs(np.linalg.det(linear)) <= 1e-9 * float(np.prod(zooms)):
        raise NiftiError(f"{path}: singular affine (voxel sizes {np.round(zooms, 6).tolist()}; check pixdim)")
    hdr = img.header
    sform, s_code = hdr.get_sform(coded=True)
    qform, q_code = hdr.get_qform(coded=True)
    if sform is not None and qform is not None and not np.allclose(sform, qform, atol=1e-3):
        gap = float(np.abs(sform - qform).max())
        warnings.warn(
            f"{path}: sform (code {int(s_code)}) and qform (code {int(q_code)}) disagree by up to "
            f"{gap:.3g}; using the sform",
            NiftiWarning,
            stacklevel=3,
        )
    return affine


def _read_voxels(path: Path, img: nib.Nifti1Image, shape: tuple[int, int, int], nan_policy: str) -> np.ndarray:
    """Read (scl_slope/scl_inter applied) as float32 (X, Y, Z) and apply the non-finite policy."""
    kind = img.header.get_data_dtype().kind
    if kind not in "iufb":
        raise NiftiError(f"{path}: unsupported voxel type {img.header.get_data_dtype()} (need real scalars)")
    try:
        data = img.get_fdata(dtype=np.float32).reshape(shape)
    except MemoryError as exc:
        raise NiftiError(f"{path}: not enough memory to read {shape} voxels") from exc
    except Exception as exc:  # noqa: BLE001 -- untrusted bytes: gzip/zlib/EOF/OS/value errors all mean "corrupt"
        raise NiftiError(f"{path}: corrupt or truncated voxel data ({_one_line(exc)})") from exc
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad:
        if nan_policy == "error":
            raise NiftiError(
                f"{path}: {n_bad:,} non-finite voxels (NaN/Inf); rerun with nan_policy=zero to replace them by 0"
            )
        data[bad] = 0.0
        warnings.warn(f"{path}: replaced {n_bad:,} non-finite voxels (NaN/Inf) by 0", NiftiWarning, stacklevel=3)
    return data


def check_nan_policy(nan_policy: str) -> None:
    """Raise ``ValueError`` unless ``nan_policy`` is one of ``NAN_POLICIES``."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


def load_volume(path: str | os.PathLike, nan_policy: str = "error", max_voxels: int = MAX_VOXELS) -> Volume:
    """Read a 3D NIfTI (.nii/.nii.gz; (X, Y, Z) or (X, Y, Z, 1)) with validation -> ``Volume``.

    Raises ``NiftiError`` naming the file for: a missing, empty, non-NIfTI, corrupt or truncated file;
    a 4D+ image (unless the extra dims are 1); zero-size, negative or absurd dimensions (before
    allocating); a singular or non-finite affine; non-finite voxels (under ``nan_policy="error"``).
    """
    check_nan_policy(nan_policy)
    path = Path(path)
    if nifti_suffix(path) is None:
        raise NiftiError(f"{path}: not a NIfTI file name (expected .nii or .nii.gz)")
    if not path.is_file():
        raise NiftiError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NiftiError(f"{path}: empty file")
    try:
        with _quiet_nibabel():
            img = nib.load(path)
        shape = tuple(int(n) for n in img.header.get_data_shape())
    except Exception as exc:  # noqa: BLE001 -- untrusted bytes: any parse failure means "not a NIfTI"
        raise NiftiError(f"{path}: not a readable NIfTI file ({_one_line(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path}: not a NIfTI-1/2 image (nibabel read it as {type(img).__name__})")
    spatial = _spatial_shape(path, shape)
    _check_size(path, img, spatial, max_voxels)
    affine = _check_affine(path, img)
    data = _read_voxels(path, img, spatial, nan_policy)
    return Volume(
        data=data,
        affine=affine,
        sform_code=int(img.header["sform_code"]),
        qform_code=int(img.header["qform_code"]),
        path=path,
    )


def save_volume(
    path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, sform_code: int = 1, qform_code: int = 1
) -> Path:
    """Write ``data`` (X, Y, Z) as float32 NIfTI with ``affine`` in both sform and qform, atomically.

    The file is written to ``partial_path(path)`` in the same folder and renamed over ``path`` only when
    complete; on any error the temporary file is removed and nothing appears at ``path``.
    Codes are kept as given (the input's); a code of 0 is written as 0.
    """
    path = Path(path)
    if nifti_suffix(path) is None:
        raise NiftiError(f"{path}: output name must end in .nii or .nii.gz")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise NiftiError(f"{path}: refusing to write non-finite voxels")
    img = nib.Nifti1Image(data, affine)  # a fresh header: no stale dtype, scaling or codes from the input
    img.set_sform(affine, code=int(sform_code))
    img.set_qform(affine, code=int(qform_code))
    img.header.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    tmp = partial_path(path)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
