"""app.evaluate end to end on tiny synthetic volumes: CSV, summary, plots, HTML, paired inputs, CLI."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import app.evaluate as evaluate
import app.infer as infer
from app.data.degradation import simulate_lr
from app.io import load_volume
from app.report import CSV_COLUMNS
from tests.nifti_factory import oblique_lps_affine, smooth_volume, write_nifti
from tests.script_module import load_script
from tests.sr_checkpoint import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "data" / "eval"


def eval_cfg(**overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="evaluate", overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", scale=(2, 1, 2))


@pytest.fixture
def hr_folder(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", smooth_volume((16, 12, 10), seed=1), oblique_lps_affine())
    write_nifti(folder / "b.nii.gz", smooth_volume((13, 12, 9), seed=2))  # odd sizes: cropped to the scale
    write_nifti(folder / "flat.nii.gz", np.full((8, 8, 8), 5.0, np.float32))
    return folder


def test_model_uses_the_inference_code_path():
    assert evaluate.super_resolve is infer.super_resolve
    assert evaluate.window_settings is infer.window_settings


def test_report_files_columns_and_links(tmp_path, hr_folder, ckpt):
    out = tmp_path / "report"
    summary, objects = evaluate.run(eval_cfg(hr=hr_folder, ckpt=ckpt, out_dir=out, roi_size="[4,4,4]"))
    with open(out / "metrics.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == 3 * 4 and {r["method"] for r in rows} == {"tiny", "nearest", "trilinear", "bspline"}
    assert all(r["scale"] == "2x1x2" for r in rows)
    assert not any(v.lower() == "nan" for r in rows for v in r.values())
    flat = {r["method"]: float(r["psnr"]) for r in rows if r["case"] == "flat"}
    assert flat["nearest"] == flat["trilinear"] == math.inf and flat["bspline"] > 60  # a constant stays constant
    a_range = {r["data_range"] for r in rows if r["case"] == "a"}
    assert len(a_range) == 1  # one fixed range per case, whatever the method

    saved = json.loads((out / "summary.json").read_text())
    assert saved["best_baseline"] in {"nearest", "trilinear", "bspline"}
    gain = saved["gains"]["tiny"]["bspline"]["ssim"]
    assert gain["n"] == 3 and len(gain["ci95"]) == 2
    assert saved["settings"]["degradation"] == {"profile": "box", "noise_std": 0.0, "kspace_fraction": None}
    for method in ("tiny", "bspline"):
        assert set(saved["methods"][method]) >= {"psnr", "ssim", "psnr_fg", "ssim_fg", "seconds"}

    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "plots/boxplot.png" in images and {f"plots/montage_{c}.png" for c in ("a", "b", "flat")} <= set(images)
    for src in images + re.findall(r'<a href="([^"]+)"', page):
        assert (out / src).is_file(), src
    assert "http" not in page  # nothing fetched from the network
    assert objects["report"] == out / "report.html" and summary["gains"]["tiny"]


def test_paired_lr_files(tmp_path, ckpt):
    hr = smooth_volume((12, 8, 8), seed=4)
    write_nifti(tmp_path / "hr.nii.gz", hr)
    lr = simulate_lr(torch.from_numpy(hr), (2, 1, 2), profile="box").numpy()
    write_nifti(tmp_path / "lr.nii.gz", lr, np.diag([2.0, 1.0, 2.0, 1.0]))
    write_nifti(tmp_path / "wrong.nii.gz", lr[:-1])
    summary, objects = evaluate.run(eval_cfg(hr=f"[{tmp_path / 'hr.nii.gz'},{tmp_path / 'hr.nii.gz'}]",
                                             lr=f"[{tmp_path / 'lr.nii.gz'},{tmp_path / 'wrong.nii.gz'}]",
                                             ckpt=ckpt, out_dir=tmp_path / "out", roi_size="[4,4,4]"))
    assert len(objects["failed"]) == 1 and "!= HR shape" in objects["failed"][0]
    assert summary["methods"]["bspline"]["psnr"]["n"] == 1
    assert summary["settings"]["degradation"] == "paired LR files"


def test_cli_prints_report_and_gain_over_bspline(tmp_path, hr_folder, ckpt):
    proc = subprocess.run(
        [sys.executable, "-m", "app.evaluate", f"hr={hr_folder / 'a.nii.gz'}", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'r'}",
         "roi_size=[4,4,4]"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'r' / 'report.html'}" in proc.stdout
    assert re.search(r"tiny vs bspline: PSNR [+-]\d+\.\d\d dB, SSIM [+-]\d\.\d{4} over 1 case", proc.stdout)


def test_simulated_noise_is_in_scaled_units_like_training(tmp_path):
    path = write_nifti(tmp_path / "hr.nii.gz", smooth_volume((16, 16, 16), seed=5) * 10)
    intensity = {"lower_percentile": 0.5, "upper_percentile": 99.5}
    clean = evaluate.simulated_case(path, (2, 2, 2), {"profile": "box"}, intensity, 0, "error")
    noisy = evaluate.simulated_case(path, (2, 2, 2), {"profile": "box", "noise_std": 0.05}, intensity, 0, "error")
    lo, hi = np.percentile(clean.lr, [0.5, 99.5])
    assert np.std(noisy.lr - clean.lr) == pytest.approx(0.05 * (hi - lo), rel=0.1)
    np.testing.assert_array_equal(noisy.hr, clean.hr)


def test_rerun_reproduces_every_number_and_the_seed_sets_the_noise(tmp_path, hr_folder, ckpt, torch_cpu_ops):
    """Issue 7: a re-run gives the same table. Simulated noise comes from seed + case index, not global RNG state."""
    noisy = "{profile: gaussian, noise_std: 0.05, kspace_fraction: 0.8}"

    def numbers(seed, out, global_seed):
        torch.manual_seed(global_seed)  # the global RNG state must not matter
        np.random.seed(global_seed)
        _, objects = evaluate.run(eval_cfg(hr=f"[{hr_folder / 'a.nii.gz'},{hr_folder / 'b.nii.gz'}]", ckpt=ckpt,
                                           out_dir=tmp_path / out, roi_size="[4,4,4]", degradation=noisy, seed=seed))
        return [{k: v for k, v in r.items() if k != "seconds"} for r in objects["rows"]]

    first, again, other_seed = numbers(0, "a", 1), numbers(0, "b", 2), numbers(1, "c", 1)
    assert first == again and len(first) == 2 * 4
    psnr = [{(r["case"], r["method"]): r["psnr"] for r in rows} for rows in (first, other_seed)]
    assert psnr[0][("a", "tiny")] != psnr[1][("a", "tiny")]


SHIPPED_EVAL = ROOT / "benchmarks" / "pretrained_eval"


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["2x2x2", "1x1x4"])
def test_shipped_models_reproduce_the_committed_real_scan_numbers(tmp_path, torch_cpu_ops, scale):
    """Issue 7: the shipped checkpoint re-run on the CPU gives benchmarks/pretrained_eval/real_<scale>/metrics.csv
    within 0.05 dB (checked on the held-out T1, the smallest case; nominal degradation is noise-free)."""
    with open(SHIPPED_EVAL / f"real_{scale}" / "metrics.csv") as f:
        committed = {r["method"]: r for r in csv.DictReader(f) if r["case"] == "t1_nibabel_anatomical"}
    _, objects = evaluate.run(eval_cfg(hr=EVAL / "t1_nibabel_anatomical.nii.gz", scale=scale, out_dir=tmp_path / "r"))
    rows = {r["method"]: r for r in objects["rows"]}
    assert set(rows) == set(committed) and len(rows) == 4
    for method, row in rows.items():
        for key in ("psnr", "psnr_fg"):
            assert row[key] == pytest.approx(float(committed[method][key]), abs=0.05), (method, key)
        for key in ("ssim", "ssim_fg"):
            assert row[key] == pytest.approx(float(committed[method][key]), abs=5e-4), (method, key)


def test_tta_flip_goes_through_the_inference_path(tmp_path, ckpt, torch_cpu_ops, monkeypatch):
    folder = tmp_path / "hr"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", smooth_volume((8, 6, 8), seed=1))
    seen = []
    real = infer._sliding_window
    monkeypatch.setattr(infer, "_sliding_window", lambda *a, **k: seen.append(a[2].tta) or real(*a, **k))
    runs = {tta: evaluate.run(eval_cfg(hr=folder, ckpt=ckpt, out_dir=tmp_path / tta, roi_size="[4,4,4]", tta=tta))
            for tta in ("none", "flip")}
    assert seen == ["none", "flip"]
    assert json.loads((tmp_path / "flip" / "summary.json").read_text())["settings"]["tta"] == "flip"
    psnr = {tta: next(r["psnr"] for r in objects["rows"] if r["method"] == "tiny") for tta, (_, objects) in runs.items()}
    assert psnr["none"] != psnr["flip"]
    with pytest.raises(ValueError, match="tta must be one of"):
        evaluate.run(eval_cfg(hr=folder, ckpt=ckpt, out_dir=tmp_path / "bad", tta="mirror"))
    assert not (tmp_path / "bad").exists()


# ---- the held-out real volumes in data/eval ---------------------------------------------------------------
def _make_eval_data():
    return load_script("make_eval_data")


def test_real_eval_volumes_are_documented_clean_and_fit_both_scales(tmp_path, torch_cpu_ops):
    files = sorted(EVAL.glob("*.nii.gz"))
    readme = (EVAL / "README.md").read_text()
    assert len(files) == 4 and sum(f.stat().st_size for f in files) < 3e6
    assert {f.name for f in files} == {f"{s.name}.nii.gz" for s in _make_eval_data().SOURCES}
    intensity = {"lower_percentile": 0.5, "upper_percentile": 99.5}
    for path in files:
        assert path.name in readme
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. sform/qform disagreement
            assert min(load_volume(path).data.shape) >= 10
        case = evaluate.simulated_case(path, (2, 2, 2), {"profile": "gaussian"}, intensity, 0, "error")
        assert case.hr.shape == tuple(2 * n for n in case.lr.shape) and min(case.lr.shape) >= 5
    # x4 through-plane is the harder fit (S0_10slices keeps 2 LR slices): the whole evaluation runs on every volume
    ckpt = write_checkpoint(tmp_path / "x4.ckpt", scale=(1, 1, 4))
    _, objects = evaluate.run(eval_cfg(hr=EVAL, ckpt=ckpt, out_dir=tmp_path / "r", roi_size="[32,32,8]"))
    assert not objects["failed"] and len({r["case"] for r in objects["rows"]}) == 4
    assert all(math.isfinite(r["psnr_fg"]) for r in objects["rows"])


def test_make_eval_data_reproduces_the_nibabel_volumes_and_repairs_s0(tmp_path):
    module = _make_eval_data()
    read = module.package_reader("nibabel", None)
    for source in (s for s in module.SOURCES if s.package == "nibabel"):
        raw = read(source.member)
        if module.hashlib.sha256(raw).hexdigest() != source.sha256:
            pytest.skip(f"this nibabel ships another {source.member}")
        module.save(module.load(raw, source.member), source, tmp_path / "out.nii.gz")
        made, committed = nib.load(tmp_path / "out.nii.gz"), nib.load(EVAL / f"{source.name}.nii.gz")
        assert made.get_data_dtype() == committed.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asanyarray(made.dataobj), np.asanyarray(committed.dataobj))
        np.testing.assert_allclose(made.affine, committed.affine)
    broken = np.array([[2.0, 0, 30, -123], [0, 2, 30, -103], [0, 0, 32, -39], [0, 0, 0, 1]])
    data, fixed = module.fixed_s0_affine(np.zeros((4, 4, 3, 1), np.uint16), broken)
    assert data.shape == (4, 4, 3) and np.allclose(fixed[:3, 2], [0, 0, 2])
    np.testing.assert_allclose(fixed[:, [0, 1, 3]], broken[:, [0, 1, 3]])  # in-plane axes and origin kept
