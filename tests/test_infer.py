"""app.infer on CPU with tiny volumes: shapes, geometry, resuming, bad inputs, hostile checkpoints, CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import app.infer as infer
from app.baselines import trilinear
from app.io import nifti as nifti_module
from app.io import scale_in_file_order
from app.nn.checkpoint import CheckpointError
from tests.nifti_factory import corners_mm, oblique_lps_affine, permuted_affine, smooth_volume, write_nifti
from tests.sr_checkpoint import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def infer_cfg(**overrides):
    """The real conf/infer.yaml with ``key=value`` overrides (values passed through Hydra's grammar)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="infer", overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "sr.ckpt", scale=(2, 1, 2))


@pytest.fixture(scope="module")
def trilinear_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tri.ckpt", scale=(2, 1, 2), detail_gain=0.0)


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name]


def test_oblique_lps_anisotropic_geometry(tmp_path, ckpt):
    affine = oblique_lps_affine(spacing=(0.9, 1.3, 2.5))
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((9, 7, 6)), affine, code=2)
    counts, objects = infer.run(infer_cfg(input=src, output=tmp_path / "out", ckpt=ckpt, roi_size="[8,8,8]"))
    assert counts == {"written": 1, "skipped": 0, "failed": 0}
    img = nib.load(tmp_path / "out" / "a.nii.gz")
    scale = scale_in_file_order(objects["meta"]["scale"], affine)
    assert img.shape == tuple(n * s for n, s in zip((9, 7, 6), scale))
    assert img.get_data_dtype() == np.float32
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 2
    np.testing.assert_allclose(img.header.get_qform(), img.header.get_sform(), atol=1e-4)
    np.testing.assert_allclose(corners_mm(img.affine, img.shape), corners_mm(affine, (9, 7, 6)), atol=1e-4)
    np.testing.assert_allclose(img.header.get_zooms(), np.array([0.9, 1.3, 2.5]) / scale, rtol=1e-5)
    assert np.isfinite(np.asarray(img.dataobj)).all()


@pytest.mark.parametrize("affine", [permuted_affine(), oblique_lps_affine()], ids=["permuted", "oblique-lps"])
def test_downsampled_output_gives_back_the_input(tmp_path, trilinear_ckpt, affine):
    """A net reduced to its trilinear path must equal trilinear interpolation in the file's own voxel order."""
    data = smooth_volume((10, 8, 6), seed=3)
    src = write_nifti(tmp_path / "a.nii", data, affine)
    infer.run(infer_cfg(input=src, output=tmp_path / "sr.nii.gz", ckpt=trilinear_ckpt, roi_size="[16,16,16]"))
    sr = nib.load(tmp_path / "sr.nii.gz").get_fdata()
    sx, sy, sz = scale_in_file_order([2, 1, 2], affine)
    assert sr.shape == (10 * sx, 8 * sy, 6 * sz)
    np.testing.assert_allclose(sr, trilinear(data, (sx, sy, sz)), atol=1e-4 * data.max())
    down = sr.reshape(10, sx, 8, sy, 6, sz).mean(axis=(1, 3, 5))
    err = np.abs(down - data).mean() / np.abs(data).mean()
    shifted = np.abs(np.roll(down, 1, axis=int(np.argmax([sx, sy, sz]))) - data).mean() / np.abs(data).mean()
    assert err < 0.08 and shifted > 2 * err


def test_small_input_is_padded_and_cropped_back(tmp_path, ckpt):
    src = write_nifti(tmp_path / "tiny.nii.gz", smooth_volume((3, 5, 2)))
    infer.run(infer_cfg(input=src, output=tmp_path / "o.nii.gz", ckpt=ckpt, roi_size="[16,16,16]"))
    assert nib.load(tmp_path / "o.nii.gz").shape == (6, 5, 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [({"overlap": 1.0}, "overlap"), ({"roi_size": "[5,8,8]"}, "multiple of the U-Net"), ({"sw_batch_size": 0}, "sw_batch"),
     ({"nan_policy": "ignore"}, "nan_policy"), ({"stitch": "gpu"}, "stitch"), ({"device": "tpu9"}, "device=tpu9"),
     ({"overlap": 0.9, "roi_size": "[4,8,8]"}, "step below one voxel")],
)
def test_bad_window_settings_fail_before_any_work(tmp_path, ckpt, override, message):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    with pytest.raises(ValueError, match=message):
        infer.run(infer_cfg(input=src, output=tmp_path / "out", ckpt=ckpt, **override))
    assert not any((tmp_path / "out").glob("*.nii*"))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        write_nifti(folder / f"s{i}.nii.gz", smooth_volume((6, 4, 4), seed=i), oblique_lps_affine())
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    write_nifti(folder / "four_d.nii.gz", np.ones((4, 4, 4, 2), np.float32))
    write_nifti(folder / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_folder_run_keeps_going_reports_and_resumes(tmp_path, ckpt, capsys):
    folder, out = _folder(tmp_path), tmp_path / "out"
    cfg = infer_cfg(input=folder, output=out, ckpt=ckpt, roi_size="[4,4,4]")
    counts, objects = infer.run(cfg)
    assert counts == {"written": 3, "skipped": 0, "failed": 3}
    printed = capsys.readouterr().out
    assert "s0.nii.gz: 6x4x4 -> 12x4x8 voxels" in printed and "mm" in printed and " s ->" in printed
    errors = {Path(r["input"]).name: r["error"] for r in objects["records"] if r["status"] == "failed"}
    assert "not a readable NIfTI" in errors["broken.nii.gz"]
    assert "4D image" in errors["four_d.nii.gz"]
    assert "non-finite" in errors["nan.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["s0.nii.gz", "s1.nii.gz", "s2.nii.gz"]
    assert "done: 3 written, 0 skipped (already there), 3 failed" in printed

    mtime = (out / "s1.nii.gz").stat().st_mtime_ns
    counts, _ = infer.run(cfg)
    assert counts == {"written": 0, "skipped": 3, "failed": 3}
    assert (out / "s1.nii.gz").stat().st_mtime_ns == mtime

    counts, _ = infer.run(infer_cfg(input=folder, output=out, ckpt=ckpt, roi_size="[4,4,4]", overwrite=True,
                                    nan_policy="zero"))
    assert counts == {"written": 4, "skipped": 0, "failed": 2}
    assert np.isfinite(nib.load(out / "nan.nii.gz").get_fdata()).all()


def test_killed_mid_write_leaves_nothing_and_rerun_finishes(tmp_path, ckpt, monkeypatch):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(3):
        write_nifti(folder / f"s{i}.nii.gz", smooth_volume((4, 4, 4), seed=i))
    real_save = nib.save

    def crash_on_s1(img, filename):
        if ".s1." in Path(filename).name:
            Path(filename).write_bytes(b"half a file")
            raise KeyboardInterrupt  # the job is killed while writing s1
        real_save(img, filename)

    monkeypatch.setattr(nifti_module.nib, "save", crash_on_s1)
    cfg = infer_cfg(input=folder, output=out, ckpt=ckpt, roi_size="[4,4,4]")
    with pytest.raises(KeyboardInterrupt):
        infer.run(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["s0.nii.gz"]
    monkeypatch.setattr(nifti_module.nib, "save", real_save)
    counts, _ = infer.run(cfg)
    assert counts == {"written": 2, "skipped": 1, "failed": 0}
    assert _partials(out) == []


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": Exploit()}, f)
    torch.save({"state_dict": {}, "hyper_parameters": Exploit()}, tmp_path / "evil2.ckpt")
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    for path in (bad, tmp_path / "evil2.ckpt"):
        with pytest.raises(CheckpointError):
            infer.run(infer_cfg(input=src, output=tmp_path / "out", ckpt=path))
    assert not marker.exists()
    assert not any((tmp_path / "out").glob("*.nii*"))


def test_no_ckpt_and_no_shipped_model(tmp_path):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    with pytest.raises(infer.InferenceError, match="no ckpt= given and no shipped model"):
        infer.run(infer_cfg(input=src, output=tmp_path / "out" / "sr", models_dir=tmp_path))
    assert not (tmp_path / "out").exists()  # the output folders it had created are gone again


def test_a_run_that_writes_nothing_removes_only_the_folders_it_created(tmp_path, ckpt):
    (tmp_path / "bad.nii.gz").write_bytes(b"")
    counts, _ = infer.run(infer_cfg(input=tmp_path / "bad.nii.gz", output=tmp_path / "new" / "sr", ckpt=ckpt))
    assert counts["failed"] == 1 and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    counts, _ = infer.run(infer_cfg(input=tmp_path / "bad.nii.gz", output=tmp_path / "mine" / "sr", ckpt=ckpt))
    assert counts["failed"] == 1 and (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "sr").exists()


def test_shipped_model_is_found_by_scale(tmp_path, ckpt):
    (tmp_path / "models.json").write_text(f'{{"2x1x2": "{ckpt}"}}')
    assert infer.resolve_checkpoint(None, None, tmp_path) == ckpt
    with pytest.raises(infer.InferenceError, match="no shipped model for scale=4x4x4"):
        infer.resolve_checkpoint(None, "4x4x4", tmp_path)


def test_target_in_the_model_index_is_never_instantiated(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "models.json").write_text(
        f'{{"2x2x2": {{"_target_": "os.system", "command": "touch {marker}"}}}}')
    with pytest.raises(infer.InferenceError, match="not a file name"):
        infer.resolve_checkpoint(None, None, tmp_path)
    assert not marker.exists()


def test_non_finite_model_output_is_never_written():
    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1, *(2 * n for n in x.shape[2:])), float("nan"))

    meta = {"scale": [2, 2, 2], "intensity": {"lower_percentile": 0.0, "upper_percentile": 100.0}}
    window = infer.WindowSettings((4, 4, 4), 0.25, 1, torch.device("cpu"), "cpu")
    with pytest.raises(infer.InferenceError, match="non-finite"):
        infer.super_resolve(NaNNet(), meta, torch.rand(4, 4, 4), window)


def test_unwritable_output_fails_before_loading_the_model(tmp_path, monkeypatch):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    (tmp_path / "file").write_text("a file where a folder should be")
    monkeypatch.setattr(infer, "load_sr_model", lambda *a, **k: pytest.fail("model loaded before output check"))
    with pytest.raises(infer.InferenceError, match="not writable"):
        infer.run(infer_cfg(input=src, output=tmp_path / "file" / "out", ckpt="unused"))


def test_refuses_to_overwrite_its_input(tmp_path, ckpt):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    with pytest.raises(infer.InferenceError, match="overwrite its input"):
        infer.run(infer_cfg(input=tmp_path, output=tmp_path, ckpt=ckpt))
    assert src.read_bytes()


def test_cuda_oom_retries_with_cpu_stitching_then_fails_clearly(monkeypatch):
    calls = []

    def fake(model, x, window, stitch, sw_batch_size, uncertainty=False):
        calls.append((stitch.type, sw_batch_size))
        if len(calls) == 1 or fail_again:
            raise torch.OutOfMemoryError("simulated")
        return torch.zeros(1, 1, 4, 4, 4)

    monkeypatch.setattr(infer, "_sliding_window", fake)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    meta = {"scale": [2, 2, 2], "intensity": {"lower_percentile": 0.0, "upper_percentile": 100.0}}
    window = infer.WindowSettings((4, 4, 4), 0.25, 4, torch.device("cpu"))
    fail_again = False
    assert infer.super_resolve(torch.nn.Identity(), meta, torch.rand(2, 2, 2), window).shape == (4, 4, 4)
    assert calls == [("cpu", 4), ("cpu", 1)]
    fail_again = True
    with pytest.raises(infer.InferenceError, match="out of memory even with CPU stitching"):
        infer.super_resolve(torch.nn.Identity(), meta, torch.rand(2, 2, 2), window)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.infer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_bad_file_one_line_nonzero_exit(tmp_path, ckpt):
    (tmp_path / "bad.nii.gz").write_bytes(b"")
    proc = _cli(f"input={tmp_path / 'bad.nii.gz'}", f"output={tmp_path / 'out'}", f"ckpt={ckpt}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"FAILED {tmp_path / 'bad.nii.gz'}: empty file" in proc.stdout
    assert not (tmp_path / "out").exists() and _partials(tmp_path) == []
    proc = _cli(f"input={tmp_path / 'bad.nii.gz'}", f"output={tmp_path / 'out'}", f"ckpt={tmp_path / 'none.ckpt'}")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
    proc = _cli(f"input={tmp_path / 'bad.nii.gz'}", f"output={tmp_path / 'out'}", f"ckpt={tmp_path / 'none.ckpt'}",
                "traceback=true")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_full_disk_fails_the_file_before_inference(tmp_path, ckpt, monkeypatch):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(infer.os, "statvfs", lambda path: Full())
    monkeypatch.setattr(infer, "super_resolve_volume", lambda *a, **k: pytest.fail("inference ran on a full disk"))
    counts, objects = infer.run(infer_cfg(input=src, output=tmp_path / "out", ckpt=ckpt))
    assert counts["failed"] == 1 and "MiB free" in objects["records"][0]["error"]
    assert not (tmp_path / "out").exists()  # nothing written: the folder it created is removed again


# --- test-time flip averaging and the uncertainty map -------------------------------------------------------------


def test_flip_tta_keeps_shape_and_geometry(tmp_path, ckpt, torch_cpu_ops):
    affine = oblique_lps_affine(spacing=(0.9, 1.3, 2.5))
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((9, 7, 6), seed=5), affine, code=2)
    common = {"input": src, "ckpt": ckpt, "roi_size": "[4,4,4]"}
    infer.run(infer_cfg(output=tmp_path / "none", **common))
    counts, _ = infer.run(infer_cfg(output=tmp_path / "flip", tta="flip", **common))
    assert counts == {"written": 1, "skipped": 0, "failed": 0}
    plain, flip = nib.load(tmp_path / "none" / "a.nii.gz"), nib.load(tmp_path / "flip" / "a.nii.gz")
    assert flip.shape == plain.shape and flip.get_data_dtype() == np.float32
    np.testing.assert_array_equal(flip.affine, plain.affine)
    np.testing.assert_array_equal(flip.header.get_qform(), plain.header.get_qform())
    assert int(flip.header["sform_code"]) == 2 and int(flip.header["qform_code"]) == 2
    a, b = plain.get_fdata(), flip.get_fdata()
    assert np.isfinite(b).all() and not np.allclose(a, b)  # a random net is not flip-equivariant
    assert not (tmp_path / "flip" / "a_uncertainty.nii.gz").exists()


def test_flip_tta_of_an_equivariant_net_changes_nothing(tmp_path, trilinear_ckpt, torch_cpu_ops):
    """Zeroed detail path = pure trilinear, which commutes with flips: TTA mean = plain output, spread ~ 0."""
    data = smooth_volume((10, 8, 6), seed=3)
    src = write_nifti(tmp_path / "a.nii", data, oblique_lps_affine())
    common = {"input": src, "ckpt": trilinear_ckpt, "roi_size": "[4,4,4]", "overlap": 0.5}
    infer.run(infer_cfg(output=tmp_path / "none", **common))
    infer.run(infer_cfg(output=tmp_path / "flip", tta="flip", uncertainty=True, **common))
    plain = nib.load(tmp_path / "none" / "a.nii").get_fdata()
    flip = nib.load(tmp_path / "flip" / "a.nii").get_fdata()
    np.testing.assert_allclose(flip, plain, atol=1e-5 * np.abs(plain).max())
    unc = nib.load(tmp_path / "flip" / "a_uncertainty.nii").get_fdata()
    assert unc.shape == plain.shape and np.isfinite(unc).all() and unc.min() >= 0
    assert unc.max() < 1e-5 * np.abs(plain).max()


def test_uncertainty_map_beside_the_output(tmp_path, ckpt, torch_cpu_ops):
    affine = oblique_lps_affine(spacing=(0.9, 1.3, 2.5))
    folder = tmp_path / "in"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", 1000 * smooth_volume((9, 7, 6), seed=1), affine, code=2)
    write_nifti(folder / "b.nii.gz", smooth_volume((6, 4, 4), seed=2))
    out = tmp_path / "out"
    cfg = infer_cfg(input=folder, output=out, ckpt=ckpt, roi_size="[4,4,4]", tta="flip", uncertainty=True)
    counts, objects = infer.run(cfg)
    assert counts == {"written": 2, "skipped": 0, "failed": 0}
    assert sorted(p.name for p in out.iterdir()) == [
        "a.nii.gz", "a_uncertainty.nii.gz", "b.nii.gz", "b_uncertainty.nii.gz"]
    assert objects["records"][0]["uncertainty"] == str(out / "a_uncertainty.nii.gz")
    sr, unc = nib.load(out / "a.nii.gz"), nib.load(out / "a_uncertainty.nii.gz")
    assert unc.shape == sr.shape and unc.get_data_dtype() == np.float32
    np.testing.assert_array_equal(unc.affine, sr.affine)
    np.testing.assert_array_equal(unc.header.get_qform(), sr.header.get_qform())
    assert int(unc.header["sform_code"]) == 2 and int(unc.header["qform_code"]) == 2
    u = unc.get_fdata()
    assert np.isfinite(u).all() and u.min() >= 0 and u.max() > 0
    # in the input's units: a x1000 input gives a spread ~1000x that of a unit-range one of the same net
    assert u.mean() > 1.0
    assert _partials(out) == []

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    counts, _ = infer.run(cfg)
    assert counts == {"written": 0, "skipped": 2, "failed": 0}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    counts, _ = infer.run(infer_cfg(input=folder, output=out, ckpt=ckpt, roi_size="[4,4,4]", tta="flip",
                                    uncertainty=True, overwrite=True))
    assert counts == {"written": 2, "skipped": 0, "failed": 0}
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in out.iterdir())


@pytest.mark.parametrize(("override", "message"), [
    ({"uncertainty": True}, "uncertainty=true needs tta=flip"),
    ({"tta": "rotate"}, "tta must be one of"),
    ({"tta": "flip", "uncertainty": "maybe"}, "uncertainty must be true or false"),
])
def test_bad_tta_settings_fail_before_any_work(tmp_path, ckpt, monkeypatch, override, message):
    src = write_nifti(tmp_path / "a.nii.gz", smooth_volume((4, 4, 4)))
    monkeypatch.setattr(infer, "load_sr_model", lambda *a, **k: pytest.fail("model loaded before config check"))
    with pytest.raises(ValueError, match=message):
        infer.run(infer_cfg(input=src, output=tmp_path / "out", ckpt=ckpt, **override))
    assert not (tmp_path / "out").exists()


def test_uncertainty_map_may_not_overwrite_an_input(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", smooth_volume((4, 4, 4)))
    write_nifti(folder / "a_uncertainty.nii.gz", smooth_volume((4, 4, 4)))
    with pytest.raises(infer.InferenceError, match="uncertainty map"):
        infer.run(infer_cfg(input=folder, output=tmp_path / "out", ckpt=ckpt, tta="flip", uncertainty=True))
