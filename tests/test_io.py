"""NIfTI loading/saving: validation messages, scaling, codes, atomic writes, geometry helpers, fuzzing."""

from __future__ import annotations

import gzip
import multiprocessing
import struct
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.io import (
    NiftiError,
    NiftiWarning,
    from_ras,
    load_volume,
    partial_path,
    save_volume,
    scale_in_file_order,
    to_ras,
    upscaled_affine,
)
from app.io import nifti as nifti_module
from tests.nifti_factory import corners_mm, oblique_lps_affine, permuted_affine, write_nifti


def _header_only(path: Path, shape, extra: bytes = b"\0" * 64) -> Path:
    """A .nii whose header claims ``shape`` but carries only ``extra`` bytes of voxel data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + extra)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# --- valid files ----------------------------------------------------------------------------------


def test_round_trip_keeps_data_affine_and_codes(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    affine = oblique_lps_affine()
    src = load_volume(write_nifti(tmp_path / "in.nii.gz", data, affine, code=2))
    out = save_volume(tmp_path / "out.nii.gz", src.data, src.affine, src.sform_code, src.qform_code)
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 2
    np.testing.assert_allclose(img.header.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    assert src.spacing == pytest.approx((0.9, 1.3, 2.5), abs=1e-5)
    assert _leftovers(tmp_path) == []


def test_squeezes_trailing_singleton_dimension(tmp_path):
    vol = load_volume(write_nifti(tmp_path / "t.nii.gz", np.ones((3, 4, 5, 1), np.float32)))
    assert vol.data.shape == (3, 4, 5)


def test_int16_with_scaling_is_read_in_physical_units(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "s.nii")
    vol = load_volume(tmp_path / "s.nii")
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, raw * 0.5 - 10.0)


def test_sform_qform_disagreement_warns_and_names_the_transform(tmp_path):
    sform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), sform)
    img.set_sform(sform, code=1)
    img.set_qform(qform, code=1)
    nib.save(img, tmp_path / "sq.nii.gz")
    with pytest.warns(NiftiWarning, match="disagree.*using the sform"):
        vol = load_volume(tmp_path / "sq.nii.gz")
    np.testing.assert_allclose(vol.affine, sform)


def test_nan_policy_zero_replaces_with_warning(tmp_path):
    data = np.ones((3, 3, 3), np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    path = write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(NiftiError, match="2 non-finite voxels"):
        load_volume(path)
    with pytest.warns(NiftiWarning, match="replaced 2 non-finite"):
        vol = load_volume(path, nan_policy="zero")
    assert np.isfinite(vol.data).all() and vol.data[0, 0, 0] == 0


# --- bad files: one message each, naming the file --------------------------------------------------


def _truncated_gz(tmp_path: Path) -> Path:
    full = write_nifti(tmp_path / "full.nii.gz", np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32))
    blob = full.read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    return bad


def _truncated_nii(tmp_path: Path) -> Path:
    full = write_nifti(tmp_path / "full.nii", np.ones((8, 8, 8), np.float32))
    bad = tmp_path / "trunc.nii"
    bad.write_bytes(full.read_bytes()[:-100])
    return bad


def _singular(tmp_path: Path) -> Path:
    img = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), None)
    img.header["pixdim"][1:4] = 0.0
    img.header["sform_code"] = img.header["qform_code"] = 0
    nib.save(img, tmp_path / "pix0.nii.gz")
    return tmp_path / "pix0.nii.gz"


def _zero_sform(tmp_path: Path) -> Path:
    hdr = nib.Nifti1Header()  # written by hand: nib.save would rebuild the sform from the image's affine
    hdr.set_data_shape((2, 2, 2))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.diag([0.0, 0.0, 0.0, 1.0]), code=1)
    return _bytes(tmp_path / "s0.nii", hdr.binaryblock + b"\0" * 4 + np.ones(8, np.float32).tobytes())


BAD_FILES = {
    "empty": (lambda p: _bytes(p / "e.nii.gz", b""), "empty file"),
    "random bytes": (lambda p: _bytes(p / "r.nii.gz", np.random.default_rng(2).bytes(2000)), "not a readable NIfTI"),
    "gzipped garbage": (lambda p: _bytes(p / "g.nii.gz", gzip.compress(b"x" * 500)), "not a readable NIfTI"),
    "truncated .nii.gz": (_truncated_gz, "corrupt or truncated"),
    "truncated .nii": (_truncated_nii, "truncated file"),
    "4D": (lambda p: write_nifti(p / "4d.nii.gz", np.ones((2, 2, 2, 3), np.float32)), "4D image"),
    "2D": (lambda p: write_nifti(p / "2d.nii.gz", np.ones((4, 4), np.float32)), "need a 3D volume"),
    "zero-size": (lambda p: write_nifti(p / "z.nii.gz", np.ones((3, 0, 3), np.float32)), "zero-size"),
    "absurd dims": (lambda p: _header_only(p / "big.nii", (30000, 30000, 30000)), "over the limit"),
    "pixdim 0": (_singular, "singular affine"),
    "zero sform": (_zero_sform, "singular affine"),
    "NaN": (lambda p: write_nifti(p / "n.nii.gz", np.full((2, 2, 2), np.nan, np.float32)), "non-finite"),
    "wrong suffix": (lambda p: _bytes(p / "x.txt", b"hi"), "not a NIfTI file name"),
    "missing": (lambda p: p / "missing.nii.gz", "no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gives_one_line_naming_the_file(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(NiftiError, match=message) as info:
        load_volume(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_negative_dimension_is_rejected(tmp_path):
    raw = bytearray(_header_only(tmp_path / "neg.nii", (4, 4, 4)).read_bytes())
    struct.pack_into("<h", raw, 42, -5)  # dim[1]
    (tmp_path / "neg.nii").write_bytes(bytes(raw))
    with pytest.raises(NiftiError, match="neg.nii"):
        load_volume(tmp_path / "neg.nii")


def test_absurd_dims_rejected_before_reading_voxels(tmp_path, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("voxel data was read")

    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", no_read)
    with pytest.raises(NiftiError, match="over the limit"):
        load_volume(_header_only(tmp_path / "big.nii", (30000, 30000, 30000)))
    monkeypatch.setattr(nifti_module, "_available_memory", lambda: 2**30)
    with pytest.raises(NiftiError, match="available memory"):
        load_volume(_header_only(tmp_path / "mem.nii", (1000, 1000, 1000)))


# --- atomic, unique writes -------------------------------------------------------------------------


def test_failure_during_write_leaves_nothing(tmp_path, monkeypatch):
    real_save = nib.save

    def half_write(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(nifti_module.nib, "save", half_write)
    with pytest.raises(OSError, match="simulated"):
        save_volume(tmp_path / "out.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(nifti_module.nib, "save", real_save)


def test_save_refuses_non_finite(tmp_path):
    with pytest.raises(NiftiError, match="non-finite"):
        save_volume(tmp_path / "o.nii.gz", np.full((2, 2, 2), np.nan), np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_are_unique_and_keep_the_suffix(tmp_path):
    names = {partial_path(tmp_path / "a.nii.gz").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".a.") and n.endswith(".partial.nii.gz") for n in names)
    assert partial_path(tmp_path / "b.nii").name.endswith(".partial.nii")


def test_concurrent_writers_never_corrupt_the_file(tmp_path):
    target = tmp_path / "same.nii.gz"
    datas = [np.full((20, 20, 20), float(i), np.float32) for i in range(4)]
    threads = [threading.Thread(target=save_volume, args=(target, d, np.eye(4))) for d in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = np.unique(load_volume(target).data)
    assert len(values) == 1 and values[0] in range(4)
    assert _leftovers(tmp_path) == []


def test_concurrent_processes_never_corrupt_the_file(tmp_path):
    """Two processes (as two `app.infer` runs on one output folder) write the same file: one complete file wins."""
    target = tmp_path / "same.nii.gz"
    ctx = multiprocessing.get_context("fork")
    datas = [np.full((32, 32, 32), float(i), np.float32) for i in range(2)]
    procs = [ctx.Process(target=save_volume, args=(target, d, np.eye(4))) for d in datas]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    values = np.unique(load_volume(target).data)
    assert len(values) == 1 and values[0] in (0.0, 1.0)
    assert _leftovers(tmp_path) == []


# --- geometry -------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [oblique_lps_affine(), permuted_affine(), np.diag([2.0, 1.0, 4.0, 1.0])])
@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (3, 2, 1)])
def test_upscaled_affine_keeps_fov_corners_and_divides_spacing(affine, scale):
    shape = (5, 6, 7)
    out = upscaled_affine(affine, shape, scale)
    out_shape = [n * s for n, s in zip(shape, scale)]
    np.testing.assert_allclose(corners_mm(out, out_shape), corners_mm(affine, shape), atol=1e-9)
    np.testing.assert_allclose(
        np.linalg.norm(out[:3, :3], axis=0), np.linalg.norm(affine[:3, :3], axis=0) / np.array(scale)
    )


def test_to_ras_round_trip_and_scale_order():
    affine = permuted_affine()
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ras, ras_affine = to_ras(data, affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    assert ras.shape == (4, 2, 3)  # file axes (P, S, L) -> RAS axes (L->R, P->A, S)
    # the same voxel sits at the same world position in both arrays
    i, j, k = 1, 2, 3
    world = affine @ [i, j, k, 1]
    ras_index = np.round(np.linalg.solve(ras_affine, world)[:3]).astype(int)
    assert ras[tuple(ras_index)] == data[i, j, k]
    np.testing.assert_array_equal(from_ras(ras, affine), data)
    assert scale_in_file_order((2, 3, 4), affine) == (3, 4, 2)  # file x is A/P -> RAS factor 3, ...


# --- fuzzing --------------------------------------------------------------------------------------

def _seed_bytes(suffix: str) -> bytes:
    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), oblique_lps_affine())
    img.header.set_slope_inter(2.0, 1.0)
    return img.to_bytes() if suffix == ".nii" else gzip.compress(img.to_bytes())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".nii", ".nii.gz"]),
    edits=st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 600)),
)
def test_fuzzed_files_raise_only_project_errors(tmp_path, suffix, edits, cut):
    blob = bytearray(_seed_bytes(".nii"))
    for pos, value in edits:
        blob[pos] = value
    data = bytes(blob)
    if suffix == ".nii.gz":
        data = gzip.compress(data)
    if cut is not None:
        data = data[:cut]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol = load_volume(path, max_voxels=10**6)
        except NiftiError:
            return
    assert vol.data.ndim == 3 and np.isfinite(vol.data).all()
    assert np.isfinite(vol.affine).all() and abs(np.linalg.det(vol.affine[:3, :3])) > 0


@pytest.mark.parametrize("affine", [oblique_lps_affine(), permuted_affine()], ids=["oblique-lps", "permuted"])
def test_to_ras_matches_the_training_loader(tmp_path, affine):
    """Inference must see voxels in the order MONAI's Orientationd("RAS") gives the model in training."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    path = write_nifti(tmp_path / "o.nii.gz", np.random.default_rng(5).normal(size=(5, 4, 3)).astype(np.float32), affine)
    chain = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                     Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))])
    monai_img = chain({"image": str(path)})["image"]
    vol = load_volume(path)
    ras, ras_affine = to_ras(vol.data, vol.affine)
    np.testing.assert_array_equal(monai_img[0].numpy(), ras)
    np.testing.assert_allclose(np.asarray(monai_img.affine), ras_affine, atol=1e-6)
