"""Make the demo data in data/demo/ from the MNI ICBM152 2009a template shipped in the nilearn wheel.

The 1 mm template (T1 + grey/white-matter probability maps, brain-masked) is cropped to the brain and cut
into three coronal slabs along the anterior axis with gaps between them: posterior = train, middle = val,
anterior = test, so test numbers are never measured on training voxels. A CSF map is derived as
(1 - GM - WM) inside the template's brain mask. Each crop keeps its geometry (affine translated).

Usage: python scripts/make_demo_data.py [--out data/demo]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
# voxel ranges [start, stop) in the template grid (197 x 233 x 189, RAS, 1 mm)
X_RANGE, Z_RANGE = (24, 172), (0, 156)
Y_SLABS = {"train": (24, 120), "val": (126, 166), "test": (172, 212)}
# The MNI / McGill notice of their templates (also Colin27's, in scripts/make_train_data.py)
MNI_COPYRIGHT = """\
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.
"""
NOTICE = """\
Demo data in this folder is derived from the MNI ICBM152 non-linear symmetric 2009a template
(mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a, as shipped in the nilearn package): cropped to the brain,
cut into train / val / test slabs, with a CSF map derived as (1 - GM - WM) inside the brain mask.
Made by scripts/make_demo_data.py.

References: V.S. Fonov, A.C. Evans, R.C. McKinstry, C.R. Almli, D.L. Collins, "Unbiased nonlinear
average age-appropriate brain templates from birth to adulthood", NeuroImage 47 (2009) S102;
V.S. Fonov et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54
(2011) 313-327.

""" + MNI_COPYRIGHT


def template_dir() -> Path:
    """Folder of nilearn's bundled template files."""
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


def crop(volume: np.ndarray, affine: np.ndarray, start: tuple[int, int, int], stop: tuple[int, int, int]):
    """Crop volume[start:stop] and translate the affine so every voxel keeps its world position."""
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=float) + affine[:3, 3]
    return volume[box], shifted


def save(volume: np.ndarray, affine: np.ndarray, path: Path, probability: bool) -> None:
    """Write uint8 (probability maps scaled by scl_slope to [0, 1]); same affine in sform and qform."""
    image = nib.Nifti1Image(volume.astype(np.float32 if probability else np.uint8), affine)
    image.set_data_dtype(np.uint8)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header["descrip"] = b"MNI ICBM152 2009a derivative (sr3d demo)"
    nib.save(image, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    src = template_dir()
    t1_img = nib.load(src / TEMPLATE.format("t1"))
    affine = t1_img.affine
    t1 = np.asarray(t1_img.dataobj)
    gm = np.asarray(nib.load(src / TEMPLATE.format("gm")).dataobj).astype(np.float32) / 255.0
    wm = np.asarray(nib.load(src / TEMPLATE.format("wm")).dataobj).astype(np.float32) / 255.0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * (t1 > 0)
    volumes = {"image": (t1, False), "gm": (gm, True), "wm": (wm, True), "csf": (csf, True)}

    splits: dict[str, list[dict[str, str]]] = {}
    for split, (y0, y1) in Y_SLABS.items():
        start, stop = (X_RANGE[0], y0, Z_RANGE[0]), (X_RANGE[1], y1, Z_RANGE[1])
        entry = {}
        for key, (volume, probability) in volumes.items():
            name = f"{split}_{'t1' if key == 'image' else key}.nii.gz"
            data, cropped_affine = crop(volume, affine, start, stop)
            save(data, cropped_affine, args.out / name, probability)
            entry[key] = name
        splits[split] = [entry]
    (args.out / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
    (args.out / "LICENSE.txt").write_text(NOTICE)
    print(f"wrote {sum(len(v) for v in splits.values())} cases to {args.out}")


if __name__ == "__main__":
    main()
