"""Data: intensity scaling, HR -> LR degradation on the centred grid, lists and splits, demo data, DataModule."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.transforms import Compose, Randomizable, SpatialPadd

from app.data.datamodule import SRDataModule, check_patch_geometry
from app.data.degradation import profile_kernel, simulate_lr
from app.data.intensity import percentile_scale, percentile_unscale, percentile_values
from app.data.sources import load_split_items
from app.data.synth import SYNTH_KEY, SynthContrastd, SynthPatchesd, SynthPrepd, linear_weights, log_bias_at
from app.data.transforms import (RandOrientd, RandPatchesd, ScaleIntensityFromLRd, SimulateLRd, random_origins,
                                  random_windows, to_roi_size)
from tests.nifti_factory import permuted_affine, write_nifti
from tests.script_module import load_script

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
INTENSITY = {"lower_percentile": 1.0, "upper_percentile": 99.0}
NOMINAL = {"profile": "box", "noise_std": 0.0, "kspace_fraction": None, "train": None}


def ramp(shape, coef=(1.0, -2.0, 0.5), offset=3.0) -> torch.Tensor:
    """Linear function of the voxel indices, float64 (X, Y, Z)."""
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")
    return offset + sum(c * g for c, g in zip(coef, grids))


# ---- intensity -------------------------------------------------------------------------------------------
def test_percentile_scale_maps_percentiles_and_inverts():
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(3, 20, 30, generator=g) * 50 + 200
    scaled, lo, hi = percentile_scale(vol, 2.0, 98.0)
    np.testing.assert_allclose([lo, hi], np.percentile(vol.numpy(), [2.0, 98.0]), rtol=1e-5)
    np.testing.assert_allclose(np.percentile(scaled.numpy(), [2.0, 98.0]), [0.0, 1.0], atol=1e-5)
    torch.testing.assert_close(percentile_unscale(scaled, lo, hi), vol, rtol=1e-5, atol=1e-3)


def test_percentile_scale_constant_image_has_no_nan():
    scaled, lo, hi = percentile_scale(torch.full((4, 4, 4), 7.0), 0.5, 99.5)
    assert lo == hi == 7.0 and torch.isfinite(scaled).all()
    assert torch.equal(percentile_unscale(scaled, lo, hi), torch.full((4, 4, 4), 7.0))


@pytest.mark.parametrize("bounds", [(50.0, 50.0), (-1.0, 99.0), (1.0, 101.0)])
def test_percentile_scale_rejects_bad_percentiles(bounds):
    with pytest.raises(ValueError, match="percentile"):
        percentile_scale(torch.rand(5), *bounds)


# ---- degradation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (3, 1, 2)])
def test_box_lr_of_ramp_is_block_means_on_centred_grid(scale):
    hr = ramp((12, 8, 8))
    lr = simulate_lr(hr, scale, profile="box")
    sx, sy, sz = scale
    blocks = hr.reshape(12 // sx, sx, 8 // sy, sy, 8 // sz, sz).mean(dim=(1, 3, 5))
    torch.testing.assert_close(lr, blocks)
    # a linear ramp's block mean is its value at the block centre s*i + (s-1)/2
    centres = [torch.arange(n // s, dtype=torch.float64) * s + (s - 1) / 2 for n, s in zip(hr.shape, scale)]
    gx, gy, gz = torch.meshgrid(*centres, indexing="ij")
    torch.testing.assert_close(lr, 3.0 + gx - 2.0 * gy + 0.5 * gz)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_gaussian_profile_is_centred_and_normalised(factor):
    weights, margin = profile_kernel(factor, "gaussian")
    assert weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(weights, weights.flip(0))  # symmetric about the block centre
    half_max = weights.max() / 2  # FWHM == factor: taps within +-factor/2 of the centre exceed half max
    offsets = torch.arange(weights.numel()) - margin - (factor - 1) / 2
    assert torch.equal(weights > half_max, offsets.abs() < factor / 2)
    hr = ramp((4 * factor + 2 * 4 * factor, 6, 5), coef=(1.0, 0.0, 0.0), offset=0.0)
    lr = simulate_lr(hr, (factor, 1, 1), profile="gaussian")
    inner = slice(4, lr.shape[0] - 4)  # away from the replicate padding
    expected = torch.arange(lr.shape[0], dtype=torch.float64)[inner] * factor + (factor - 1) / 2
    torch.testing.assert_close(lr[inner, 0, 0], expected)


def test_simulate_lr_shapes_noise_and_validation():
    hr = torch.rand(2, 1, 8, 8, 16, generator=torch.Generator().manual_seed(1))
    assert simulate_lr(hr, (1, 1, 4)).shape == (2, 1, 8, 8, 4)
    assert simulate_lr(hr, (2, 2, 2), kspace_fraction=0.5).shape == (2, 1, 4, 4, 8)
    noisy = [simulate_lr(hr, (2, 2, 2), noise_std=0.1, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    assert torch.equal(simulate_lr(hr, (2, 2, 2)), simulate_lr(hr, (2, 2, 2)))
    with pytest.raises(ValueError, match="divisible"):
        simulate_lr(hr, (3, 1, 1))
    with pytest.raises(ValueError, match="profile"):
        simulate_lr(hr, (2, 2, 2), profile="sinc")


def test_kspace_truncation_keeps_mean_and_removes_high_frequencies():
    hr = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = simulate_lr(hr, (2, 2, 2), profile="box")
    cut = simulate_lr(hr, (2, 2, 2), profile="box", kspace_fraction=0.5)
    torch.testing.assert_close(simulate_lr(hr, (2, 2, 2), profile="box", kspace_fraction=1.0), full)
    assert cut.mean().item() == pytest.approx(full.mean().item())
    spectrum = torch.fft.fftshift(torch.fft.fftn(cut)).abs()
    assert spectrum[0].max() < 1e-9 and spectrum[:, :, 0].max() < 1e-9  # Nyquist planes removed
    assert (cut - full).abs().max() > 1e-3


def test_simulate_lrd_randomises_training_and_keeps_nominal_fixed():
    hr = torch.rand(1, 8, 8, 8, generator=torch.Generator().manual_seed(4))
    nominal = SimulateLRd("image", [2, 2, 2], profile="box")
    a, b = nominal({"image": hr}), nominal({"image": hr})
    assert set(a) == {"hr", "lr"} and torch.equal(a["hr"], hr)
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["lr"], simulate_lr(hr, [2, 2, 2], profile="box"))
    ranges = {"profiles": ["box", "gaussian"], "noise_std": [0.01, 0.05], "kspace_fraction": [0.5, 1.0]}
    rand = SimulateLRd("image", [2, 2, 2], train=ranges)
    rand.set_random_state(0)
    draws = [rand({"image": hr})["lr"] for _ in range(4)]
    assert all(not torch.allclose(draws[0], d) for d in draws[1:])
    rand.set_random_state(0)
    assert torch.equal(rand({"image": hr})["lr"], draws[0])  # reproducible from the seed
    with pytest.raises(ValueError, match="profile"):
        SimulateLRd("image", [2, 2, 2], train={"profiles": ["sinc"]})


# ---- lists and splits ------------------------------------------------------------------------------------
def _volumes(folder: Path, n: int, shape=(8, 8, 8)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_nifti(folder / f"sub{i:02d}.nii.gz", np.full(shape, i, np.float32)) for i in range(n)]


def test_folder_split_is_deterministic_disjoint_and_complete(tmp_path):
    _volumes(tmp_path / "vols", 10)
    a = load_split_items(root=str(tmp_path / "vols"), val_fraction=0.2, test_fraction=0.1, seed=3)
    b = load_split_items(root=str(tmp_path / "vols" / "*.nii.gz"), val_fraction=0.2, test_fraction=0.1, seed=3)
    assert a == b and [len(a[s]) for s in ("train", "val", "test")] == [7, 2, 1]
    names = [it["image"] for s in a.values() for it in s]
    assert len(set(names)) == 10
    c = load_split_items(root=str(tmp_path / "vols"), val_fraction=0.2, test_fraction=0.1, seed=4)
    assert c != a


def test_csv_and_json_lists(tmp_path):
    paths = _volumes(tmp_path, 3)
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("image,split\n" + "".join(f"{p.name},{s}\n" for p, s in zip(paths, ["train", "val", "test"])))
    splits = load_split_items(list_file=str(csv_file))
    assert [Path(splits[s][0]["image"]).name for s in ("train", "val", "test")] == [p.name for p in paths]
    json_file = tmp_path / "list.json"
    json_file.write_text(json.dumps([{"image": p.name} for p in paths]))
    assert sum(len(v) for v in load_split_items(list_file=str(json_file)).values()) == 3
    (tmp_path / "bad.json").write_text(json.dumps({"train": [paths[0].name], "holdout": []}))
    with pytest.raises(ValueError, match="manifest"):
        load_split_items(list_file=str(tmp_path / "bad.json"))


def test_list_errors_are_clear(tmp_path):
    _volumes(tmp_path / "one", 1)
    with pytest.raises(ValueError, match="at least 2"):
        load_split_items(root=str(tmp_path / "one"))
    with pytest.raises(FileNotFoundError, match="no files"):
        load_split_items(root=str(tmp_path / "empty"))
    (tmp_path / "m.json").write_text(json.dumps({"train": ["gone.nii.gz"], "val": ["gone.nii.gz"]}))
    with pytest.raises(FileNotFoundError, match="missing"):
        load_split_items(list_file=str(tmp_path / "m.json"))


def test_patch_geometry_check():
    check_patch_geometry([32, 32, 32], [1, 1, 4], [4, 4, 2])
    with pytest.raises(ValueError, match="multiple of 16"):
        check_patch_geometry([32, 32, 24], [1, 1, 4], [4, 4, 4])


# ---- demo data -------------------------------------------------------------------------------------------
def test_demo_manifest_regions_are_disjoint_and_geometry_matches_template():
    nilearn = pytest.importorskip("nilearn.datasets")
    splits = json.loads((DEMO / "splits.json").read_text())
    assert set(splits) == {"train", "val", "test"} and (DEMO / "LICENSE.txt").read_text().count("Louis Collins") == 1
    template = nib.load(Path(nilearn.__file__).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    full = np.asarray(template.dataobj)
    y_ranges = []
    for split, entries in splits.items():
        for entry in entries:
            assert set(entry) == {"image", "gm", "wm", "csf"}
            img = nib.load(DEMO / entry["image"])
            # voxel (0,0,0) of the crop sits at this template voxel; the data must be the template's there
            start = np.round(np.linalg.inv(template.affine) @ img.affine @ [0, 0, 0, 1])[:3].astype(int)
            box = tuple(slice(a, a + n) for a, n in zip(start, img.shape))
            assert np.array_equal(np.asarray(img.dataobj), full[box]), split
            assert np.allclose(img.affine[:3, :3], template.affine[:3, :3])
            world_y = [(img.affine @ [0, j, 0, 1])[1] for j in (0, img.shape[1] - 1)]
            y_ranges.append(sorted(world_y))
            for key in ("gm", "wm", "csf"):
                prob = nib.load(DEMO / entry[key])
                assert prob.shape == img.shape and np.allclose(prob.affine, img.affine)
                data = prob.get_fdata()
                assert 0.0 <= data.min() and data.max() <= 1.0 + 1e-6
    y_ranges.sort()
    assert all(prev[1] < nxt[0] for prev, nxt in zip(y_ranges, y_ranges[1:])), y_ranges  # no shared voxels
    assert sum(p.stat().st_size for p in DEMO.iterdir()) < 8e6


# ---- DataModule ------------------------------------------------------------------------------------------
def _datamodule(list_file: Path, **kw) -> SRDataModule:
    args = dict(scale=[2, 2, 2], patch_size=[8, 8, 8], intensity=INTENSITY, degradation=NOMINAL, list_file=str(list_file),
                batch_size=4, samples_per_volume=2, patches_per_epoch=8, val_patches=3, num_workers=0, cache="none")
    args.update(kw)
    return SRDataModule(**args)


def test_datamodule_batches_in_ras_with_aligned_lr(tmp_path):
    ras = np.random.default_rng(0).random((16, 10, 24)).astype(np.float32) * 100  # axes R, A, S
    # the same image stored with voxel axes (P, S, L): disk[i, j, k] = ras[K-1-k, I-1-i, j]
    disk = np.flip(np.transpose(ras, (1, 2, 0)), axis=(0, 2))
    write_nifti(tmp_path / "psl.nii.gz", np.ascontiguousarray(disk), permuted_affine((1.0, 1.0, 1.0)))
    write_nifti(tmp_path / "ras.nii.gz", ras)
    (tmp_path / "list.json").write_text(json.dumps({"train": ["psl.nii.gz", "ras.nii.gz"],
                                                    "val": ["ras.nii.gz", "psl.nii.gz"]}))
    dm = _datamodule(tmp_path / "list.json")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (4, 1, 8, 8, 8) and batch["lr"].shape == (4, 1, 4, 4, 4)
    from_ras, from_psl = list(dm.val_dataloader())
    assert from_ras["hr"].shape == (3, 1, 8, 8, 8)
    torch.testing.assert_close(from_psl["hr"], from_ras["hr"])  # reoriented to RAS before patching
    torch.testing.assert_close(from_ras["lr"], simulate_lr(from_ras["hr"], (2, 2, 2), profile="box"))
    # batches are page-locked (async copies) only where there is a GPU to copy them to, unless set
    assert dm.train_dataloader().pin_memory == torch.cuda.is_available()
    assert _datamodule(tmp_path / "list.json", pin_memory=False).pin_memory is False


def test_intensity_scaling_is_measured_on_the_simulated_lr():
    hr = torch.rand(1, 12, 12, 13, generator=torch.Generator().manual_seed(3)) * 300 + 20
    out = ScaleIntensityFromLRd("image", [2, 2, 1], "box", **INTENSITY)({"image": hr})["image"]
    lr = simulate_lr(out[..., :12, :12, :], [2, 2, 1], profile="box")
    _, lo, hi = percentile_scale(lr, INTENSITY["lower_percentile"], INTENSITY["upper_percentile"])
    assert lo == pytest.approx(0.0, abs=1e-5) and hi == pytest.approx(1.0, abs=1e-5)
    assert out.shape == hr.shape


def test_datamodule_contrast_synthesis_changes_intensities(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((16, 16, 16)).astype(np.float32) * 100
    gm = rng.random((16, 16, 16)).astype(np.float32) * 0.5
    write_nifti(tmp_path / "t1.nii.gz", image)
    write_nifti(tmp_path / "gm.nii.gz", gm)
    write_nifti(tmp_path / "wm.nii.gz", 0.5 - gm)
    entry = {"image": "t1.nii.gz", "gm": "gm.nii.gz", "wm": "wm.nii.gz"}
    (tmp_path / "list.json").write_text(json.dumps({"train": [entry], "val": [entry]}))
    batches = {}
    for enabled in (False, True):
        dm = _datamodule(tmp_path / "list.json", synth={"enabled": enabled, "noise_std": [0.0, 0.0]})
        dm.setup()
        batches[enabled] = next(iter(dm.train_dataloader()))
        assert set(batches[enabled]) == {"hr", "lr"}
    assert batches[True]["hr"].shape == batches[False]["hr"].shape
    assert not torch.allclose(batches[True]["hr"], batches[False]["hr"], atol=1e-2)
    (tmp_path / "plain.json").write_text(json.dumps({"train": ["t1.nii.gz"], "val": ["t1.nii.gz"]}))
    with pytest.raises(ValueError, match="tissue maps"):
        _datamodule(tmp_path / "plain.json", synth={"enabled": True}).setup()
    # volumes with and without maps in one list: synthesis where there are maps, the real image elsewhere
    write_nifti(tmp_path / "other.nii.gz", rng.random((16, 16, 16)).astype(np.float32) * 50)
    (tmp_path / "mixed.json").write_text(json.dumps({"train": [entry, "other.nii.gz"], "val": ["t1.nii.gz"]}))
    dm = _datamodule(tmp_path / "mixed.json", synth={"enabled": True, "prob": 1.0}, patches_per_epoch=16)
    dm.setup()
    assert next(iter(dm.train_dataloader()))["hr"].shape == (4, 1, 8, 8, 8)


def _tissue_item(seed: int = 5, shape=(12, 12, 12)) -> dict[str, torch.Tensor]:
    """A T1-like image (WM > GM > CSF) from three random tissue maps that sum to 1, each (1, X, Y, Z)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(3, *shape, generator=g).softmax(dim=0)
    image = (maps * torch.tensor([60.0, 100.0, 20.0])[:, None, None, None]).sum(0, keepdim=True)
    return {"image": image, "gm": maps[:1], "wm": maps[1:2], "csf": maps[2:]}


def test_synth_prob_mixes_synthetic_and_real_images():
    item = _tissue_item()
    real = SynthContrastd(prob=0.0)
    out = real(item)
    assert set(out) == {"image"} and torch.equal(out["image"], item["image"])  # maps dropped, image untouched
    assert set(item) == {"image", "gm", "wm", "csf"}  # the input (e.g. a cached item) is not modified
    synthetic = SynthContrastd(prob=1.0, noise_std=(0.0, 0.0))
    synthetic.set_random_state(0)
    assert not torch.allclose(synthetic(item)["image"], item["image"])
    mixed = SynthContrastd(prob=0.5)
    mixed.set_random_state(0)
    draws = [mixed(item)["image"] for _ in range(12)]
    is_real = [torch.equal(d, item["image"]) for d in draws]
    assert 0 < sum(is_real) < len(draws)
    mixed.set_random_state(0)
    assert all(torch.equal(mixed(item)["image"], d) for d in draws)  # reproducible from the seed
    with pytest.raises(ValueError, match="prob"):
        SynthContrastd(prob=1.5)


def test_synth_contrasts_include_csf_brighter_than_white_matter():
    """T2/b0-like orderings (CSF > GM > WM) are drawn as well as T1-like ones (WM > GM > CSF)."""
    item = _tissue_item(shape=(8, 8, 8))
    synth = SynthContrastd(bias_std=0.0, noise_std=(0.0, 0.0))
    synth.set_random_state(1)
    orders = set()
    for _ in range(60):
        image = synth(item)["image"]
        means = [float((image * item[k]).sum() / item[k].sum()) for k in ("csf", "gm", "wm")]
        orders.add(tuple(sorted(range(3), key=means.__getitem__)))
    assert (2, 1, 0) in orders and (0, 1, 2) in orders  # ascending WM < GM < CSF, and CSF < GM < WM


def _tissue_list(tmp_path: Path) -> Path:
    item = _tissue_item(shape=(16, 16, 16))
    entry = {}
    for key, volume in item.items():
        entry[key] = write_nifti(tmp_path / f"{key}.nii.gz", volume[0].numpy()).name
    (tmp_path / "list.json").write_text(json.dumps({"train": [entry], "val": [entry]}))
    return tmp_path / "list.json"


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cached_training_data_draws_new_contrasts_and_validation_stays_real(tmp_path, cache):
    """The cache holds the loaded volumes only (synthesis comes after it): the same item gives a new contrast on
    every draw, while validation patches never see synthesis."""
    list_file = _tissue_list(tmp_path)
    synth = {"enabled": True, "prob": 1.0, "noise_std": [0.0, 0.0]}
    dm = _datamodule(list_file, synth=synth, cache=cache, cache_dir=str(tmp_path / "cache"), samples_per_volume=1,
                     batch_size=1, patch_size=[16, 16, 16])  # whole-volume patches: synthesis is the only randomness
    dm.setup()
    train = dm.datasets["train"]
    train.transform.set_random_state(0)
    draws = [train[0][0]["hr"] for _ in range(3)]
    assert not torch.allclose(draws[0], draws[1]) and not torch.allclose(draws[1], draws[2])
    if cache == "memory":
        assert {"image", "gm", "wm", "csf"} <= set(train._cache[0])  # cached before synthesis
        assert not train.copy_cache  # so the draws must leave the cached volumes as they were
        before = {k: v.clone() for k, v in train._cache[0].items() if k != SYNTH_KEY}
        for _ in range(3):
            train[0]
        assert all(torch.equal(train._cache[0][k], v) for k, v in before.items())
    real = _datamodule(list_file, patch_size=[16, 16, 16])
    real.setup()
    for with_synth, without in zip(dm.val_dataloader(), real.val_dataloader()):
        assert torch.equal(with_synth["hr"], without["hr"]) and torch.equal(with_synth["lr"], without["lr"])


# ---- patch-level synthesis (what training uses) ------------------------------------------------------------
TISSUE = ["gm", "wm", "csf"]


def _patch_synth(item: dict, scale, roi, profile="box", num_samples=3, **synth) -> tuple[SynthPatchesd, dict]:
    """SynthPatchesd and its cached input: the item scaled as a real image, SynthPrepd, padded to ``roi``."""
    prep = Compose([ScaleIntensityFromLRd("image", scale, profile, **INTENSITY),
                    SynthPrepd("image", TISSUE, scale, profile), SpatialPadd(["image", *TISSUE], roi)])
    return SynthPatchesd("image", TISSUE, roi, num_samples, scale, profile, **INTENSITY, **synth), prep(item)


def _reference_volume(item: dict, seed: int, scale, roi, profile="box", **synth) -> torch.Tensor:
    """The whole-volume form drawn from the same random state: synthesise, scale from its LR, pad."""
    ref = SynthContrastd(**synth)
    ref.set_random_state(seed)
    scaled = ScaleIntensityFromLRd("image", scale, profile, **INTENSITY)(ref(item))
    return SpatialPadd("image", roi)(scaled)["image"]


def _crop(volume: torch.Tensor, origin, roi) -> torch.Tensor:
    return volume[(slice(None), *(slice(o, o + p) for o, p in zip(origin, roi)))]


def test_random_patches_are_windows_of_the_volume_reproducibly():
    volume = torch.arange(2 * 10 * 9 * 12, dtype=torch.float32).reshape(2, 10, 9, 12)
    crop = RandPatchesd("image", (4, 9, 5), num_samples=6)
    crop.set_random_state(1)
    out = crop({"image": volume, "path": "a.nii.gz"})
    assert len(out) == 6 and all(o["path"] == "a.nii.gz" for o in out)  # other keys shared
    origins = list(crop._origins)
    assert len(set(origins)) > 1 and all(o[1] == 0 for o in origins)  # y has no room: always the whole axis
    for o, origin in zip(out, origins):
        assert o["image"].shape == (2, 4, 9, 5) and type(o["image"]) is torch.Tensor  # plain tensor, no metadata
        torch.testing.assert_close(o["image"], _crop(volume, origin, (4, 9, 5)), rtol=0, atol=0)
    crop.set_random_state(1)
    assert [tuple(c) for c in (crop({"image": volume}) and crop._origins)] == origins  # same seed, same windows
    with pytest.raises(ValueError, match="smaller than roi_size"):
        crop({"image": volume[:, :3]})
    with pytest.raises(ValueError, match="num_samples"):
        RandPatchesd("image", (4, 4, 4), num_samples=0)


def test_coarser_windows_are_larger_isotropic_inside_and_off_by_default():
    shape, roi = (40, 30, 50), (8, 8, 8)
    plain = random_windows(np.random.RandomState(2), shape, roi, 5)
    assert plain == (random_origins(np.random.RandomState(2), shape, roi, 5), [roi] * 5)  # same draws as before
    origins, extents = random_windows(np.random.RandomState(2), shape, roi, 200, (0.5, 3.0))
    sizes = [e[0] for e in extents]
    assert all(e == (e[0],) * 3 for e in extents) and min(sizes) == 8 and 20 <= max(sizes) <= 24
    assert 60 < sizes.count(8) < 140  # about half stay at roi_size
    assert all(0 <= o and o + n <= s for org, ext in zip(origins, extents) for o, n, s in zip(org, ext, shape))
    _, capped = random_windows(np.random.RandomState(0), (12, 40, 40), roi, 50, (1.0, 4.0))
    assert max(e[0] for e in capped) == 12  # the volume's smallest axis caps the factor
    with pytest.raises(ValueError, match="max_factor"):
        RandPatchesd("image", roi, 2, coarsen=(0.5, 0.5))


def test_to_roi_size_averages_blocks():
    patch = torch.arange(2 * 16 * 16 * 16, dtype=torch.float32).reshape(2, 16, 16, 16)
    blocks = patch.reshape(2, 8, 2, 8, 2, 8, 2).mean(dim=(2, 4, 6))
    torch.testing.assert_close(to_roi_size(patch, (8, 8, 8)), blocks)
    assert to_roi_size(patch, (16, 16, 16)) is patch


def test_coarser_patches_are_averaged_windows_of_the_volume():
    volume = torch.rand(1, 30, 24, 36, generator=torch.Generator().manual_seed(0))
    crop = RandPatchesd("image", (8, 8, 8), num_samples=6, coarsen=(1.0, 2.5))
    crop.set_random_state(4)
    out = crop({"image": volume})
    assert {o["image"].shape for o in out} == {(1, 8, 8, 8)} and max(e[0] for e in crop._extents) > 8
    for o, origin, extent in zip(out, crop._origins, crop._extents):
        torch.testing.assert_close(o["image"], to_roi_size(_crop(volume, origin, extent), (8, 8, 8)))


@pytest.mark.parametrize("scale, patch, count", [((2, 2, 2), (8, 8, 8), 48), ((1, 1, 4), (8, 8, 8), 16),
                                                 ((2, 2, 2), (8, 8, 4), 16), ((1, 2, 4), (8, 8, 8), 8)])
def test_random_orientations_are_the_symmetries_the_degradation_allows(scale, patch, count):
    """Every draw is a flip / permutation of equal-scale, equal-size axes; all of them occur; and simulating
    the LR after it equals applying it to the LR of the original patch (both slice profiles)."""
    hr = torch.rand(1, *patch, generator=torch.Generator().manual_seed(0))
    orient = RandOrientd("image", scale, patch)
    orient.set_random_state(3)
    seen = set()
    for _ in range(600):
        out = orient({"image": hr, "path": "a"})["image"]
        assert out.shape == hr.shape and type(out) is torch.Tensor
        seen.add(out.numpy().tobytes())
        assert all(scale[a] == scale[b] and patch[a] == patch[b] for a, b in enumerate(orient._order))
        for profile in ("box", "gaussian"):
            lr = simulate_lr(hr, scale, profile)
            moved = lr.permute(0, *(a + 1 for a in orient._order))
            moved = moved.flip(orient._flips) if orient._flips else moved
            torch.testing.assert_close(simulate_lr(out, scale, profile), moved, rtol=1e-5, atol=1e-6)
    assert len(seen) == count
    orient.set_random_state(3)
    again = orient({"image": hr})["image"]
    orient.set_random_state(3)
    torch.testing.assert_close(orient({"image": hr})["image"], again, rtol=0, atol=0)  # same seed, same draw


def test_training_chain_orients_and_coarsens_patches_only_when_asked(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(1).random((16, 16, 16)).astype(np.float32) * 100)
    (tmp_path / "list.json").write_text(json.dumps({"train": ["a.nii.gz"], "val": ["a.nii.gz"]}))
    for orient in (False, True):
        dm = _datamodule(tmp_path / "list.json", orient=orient, coarsen={"prob": 0.5 * orient, "max_factor": 1.5})
        dm.setup()
        chain = dm.datasets["train"].transform.transforms
        assert any(isinstance(t, RandOrientd) for t in chain) is orient
        assert next(t for t in chain if isinstance(t, RandPatchesd)).coarsen == (0.5 * orient, 1.5)
        batch = next(iter(dm.train_dataloader()))
        assert batch["hr"].shape == (4, 1, 8, 8, 8) and batch["lr"].shape == (4, 1, 4, 4, 4)


@pytest.mark.parametrize("shape", [(16, 12, 20), (12, 6, 10)])  # the second is padded along y
@pytest.mark.parametrize("scale, profile, bias_std, tol", [((2, 2, 2), "box", 0.0, 1e-5),
                                                     ((1, 1, 4), "gaussian", 0.0, 1e-5),
                                                     ((2, 2, 2), "box", 0.3, 0.03)])
def test_patch_synthesis_is_the_crop_of_the_whole_volume_synthesis(shape, scale, profile, bias_std, tol):
    """Same random state -> same contrast: the patches are the whole synthetic volume's (tissue-map contrast, bias
    field at the patch's place in the volume, padding 0), scaled by its LR percentiles (exact without a bias field:
    the LR simulation is linear; with one, estimated at the LR voxel centres, which needs the field to be smooth over
    the slice profile: a few % here, on white-noise maps and 3-voxel control-point spacing; < 0.5 % on real volumes,
    see the demo-data test below)."""
    item, roi = _tissue_item(shape=shape), (8, 8, 8)
    synth = {"bias_std": bias_std, "noise_std": (0.0, 0.0)}
    patches, cached = _patch_synth(item, scale, roi, profile, **synth)
    for seed in range(4):
        patches.set_random_state(seed)
        out = patches(cached)
        reference = _reference_volume(item, seed, scale, roi, profile, **synth)
        assert len(out) == 3 and all(set(o) == {"image"} for o in out)
        for o, origin in zip(out, patches._origins):
            assert o["image"].shape == (1, *roi) and o["image"].dtype == torch.float32
            torch.testing.assert_close(o["image"], _crop(reference, origin, roi), atol=tol, rtol=tol)


def test_coarser_synthetic_patches_average_the_whole_volume_synthesis():
    """With coarser windows the synthetic patch is the whole-volume synthesis, cropped at the larger window and
    averaged down to roi_size (no bias field, no noise: exact)."""
    item, roi, scale = _tissue_item(shape=(16, 12, 20)), (8, 8, 8), (2, 2, 2)
    synth = {"bias_std": 0.0, "noise_std": (0.0, 0.0)}
    patches, cached = _patch_synth(item, scale, roi, coarsen=(1.0, 1.5), **synth)
    for seed in range(3):
        patches.set_random_state(seed)
        out = patches(cached)
        reference = _reference_volume(item, seed, scale, roi, **synth)
        assert {o["image"].shape for o in out} == {(1, *roi)}
        for o, origin, extent in zip(out, patches._origins, patches._extents):
            expected = to_roi_size(_crop(reference, origin, extent), roi)
            torch.testing.assert_close(o["image"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale, profile", [((2, 2, 2), "gaussian"), ((1, 1, 4), "box")])  # x2_iso's, x4_thick's
def test_patch_synthesis_percentiles_match_the_whole_volume_on_demo_data(scale, profile):
    """On the demo train slab, the LR-domain percentile estimate (bias field, noise) is within 0.5 % of the range of
    the exact whole-volume percentiles, so the scaling of synthetic patches is what it was."""
    item = {k: str(DEMO / f"train_{'t1' if k == 'image' else k}.nii.gz") for k in ["image", *TISSUE]}
    from app.data.pipeline import _load

    loaded = Compose(_load(["image", *TISSUE]))(item)
    intensity = {"lower_percentile": 0.5, "upper_percentile": 99.5}
    real = ScaleIntensityFromLRd("image", scale, profile, **intensity)(loaded)
    prep = SynthPrepd("image", TISSUE, scale, profile)(real)[SYNTH_KEY]
    patches = SynthPatchesd("image", TISSUE, (32, 32, 32), 1, scale, profile, **intensity)
    reference = SynthContrastd()
    for seed in range(3):
        reference._seed = seed
        generator, mu, coarse, noise_std = reference.draw(len(TISSUE))
        reference.randomize = lambda data=None: None  # keep the seed set above (do_transform stays True)
        reference._do_transform = True
        full = reference(real)["image"]
        trimmed = full[(...,) + tuple(slice(0, n - n % f) for n, f in zip(full.shape[-3:], scale))]
        lo, hi = percentile_values(simulate_lr(trimmed, scale, profile), **intensity)
        est = patches._percentiles(prep["lr"], prep["shape"], mu, coarse, noise_std, torch.Generator().manual_seed(9))
        assert abs(est[0] - lo) < 5e-3 * (hi - lo) and abs(est[1] - hi) < 5e-3 * (hi - lo), (seed, est, (lo, hi))


def test_patch_synthesis_prob_seed_noise_and_input_left_alone():
    item = _tissue_item(shape=(16, 16, 16))
    roi = (8, 8, 8)
    mixed, cached = _patch_synth(item, (2, 2, 2), roi, num_samples=2, prob=0.5)
    before = {k: v.clone() for k, v in cached.items() if k != SYNTH_KEY}
    mixed.set_random_state(0)
    draws, real = [], []
    for _ in range(12):
        out = mixed(cached)
        draws.append(torch.cat([o["image"] for o in out]))
        real.append(all(torch.equal(o["image"], _crop(cached["image"], g, roi)) for o, g in zip(out, mixed._origins)))
    assert 0 < sum(real) < len(real)  # the real image's patches, or a synthetic contrast for all of a draw's patches
    mixed.set_random_state(0)
    assert all(torch.equal(torch.cat([o["image"] for o in mixed(cached)]), d) for d in draws)  # reproducible
    assert all(torch.equal(cached[k], v) for k, v in before.items()) and SYNTH_KEY in cached  # input not modified
    # noise: white, added to the same contrast (the noise std is drawn after mu and the bias field)
    noisy, _ = _patch_synth(item, (2, 2, 2), roi, num_samples=1, intensity_range=(0.2, 1.0), noise_std=(0.05, 0.05))
    clean, _ = _patch_synth(item, (2, 2, 2), roi, num_samples=1, intensity_range=(0.2, 1.0), noise_std=(0.0, 0.0))
    noisy.set_random_state(1)
    clean.set_random_state(1)
    diff = (noisy(cached)[0]["image"] - clean(cached)[0]["image"])[0]
    lag1 = float((diff[1:] - diff[1:].mean()).mul(diff[:-1] - diff[:-1].mean()).mean() / diff.var())
    assert float(diff.std()) > 0.01 and abs(float(diff.mean())) < 0.2 * float(diff.std()) and abs(lag1) < 0.2
    assert cached[SYNTH_KEY]["lr"].shape == (4, 8, 8, 8)  # LR of the 3 maps and of p_rest * texture
    # a volume without tissue maps: SynthPrepd adds nothing, and every draw keeps its real patches
    plain = {"image": cached["image"]}
    assert SynthPrepd("image", TISSUE, (2, 2, 2), "box")(plain).keys() == {"image"}
    always, _ = _patch_synth(item, (2, 2, 2), roi, num_samples=2, prob=1.0)
    for _ in range(4):
        out = always(plain)
        assert all(torch.equal(o["image"], _crop(plain["image"], g, roi)) for o, g in zip(out, always._origins))


@pytest.mark.parametrize("size, grid", [(37, 4), (8, 4), (1, 4), (5, 1), (3, 6)])
def test_separable_bias_field_is_trilinear_interpolation(size, grid):
    coarse = torch.randn(grid, grid, grid, generator=torch.Generator().manual_seed(size))
    shape = (size, size + 3, max(1, size - 2))
    full = F.interpolate(coarse[None, None], size=shape, mode="trilinear", align_corners=True)[0, 0]
    torch.testing.assert_close(log_bias_at(coarse, [torch.arange(n) for n in shape], shape), full, atol=1e-5, rtol=0)
    starts = [n // 3 for n in shape]  # any window of it (a patch) is that window of the whole field
    window = log_bias_at(coarse, [torch.arange(a, n) for a, n in zip(starts, shape)], shape)
    torch.testing.assert_close(window, full[starts[0]:, starts[1]:, starts[2]:], atol=1e-5, rtol=0)
    weights = linear_weights(torch.linspace(-1.0, size, 7), size, grid)  # clamped to the volume
    torch.testing.assert_close(weights.sum(1), torch.ones(7, dtype=torch.float64))


def test_training_chain_with_synthesis_gives_float32_pairs_reproducibly(tmp_path):
    list_file = _tissue_list(tmp_path)
    dm = _datamodule(list_file, synth={"enabled": True, "prob": 0.5}, cache="memory", patch_size=[8, 8, 8],
                     samples_per_volume=2, batch_size=4, patches_per_epoch=16)
    dm.setup()
    train = dm.datasets["train"]
    steps = train.transform.transforms
    first_random = next(i for i, t in enumerate(steps) if isinstance(t, Randomizable))
    assert isinstance(steps[first_random], SynthPatchesd)  # loading, scaling, SynthPrepd and padding are cached
    assert any(isinstance(t, SynthPrepd) for t in steps[:first_random])
    runs = []
    for _ in range(2):
        train.transform.set_random_state(5)
        runs.append([train[i] for i in range(len(train))])
    for a, b in zip(*runs):
        assert len(a) == 2
        for x, y in zip(a, b):
            assert set(x) == {"hr", "lr"} and x["hr"].dtype == x["lr"].dtype == torch.float32
            assert x["hr"].shape == (1, 8, 8, 8) and x["lr"].shape == (1, 4, 4, 4)
            assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])


@pytest.mark.parametrize("synth", [None, {"enabled": True, "prob": 0.5}])
def test_memory_cache_is_not_copied_and_not_modified_by_the_draws(tmp_path, synth):
    """copy_cache=False: the random transforms after the cache (crops, synthesis, LR) must leave it as it was."""
    from monai.data import MetaTensor

    dm = _datamodule(_tissue_list(tmp_path), synth=synth, cache="memory", patch_size=[8, 8, 8], patches_per_epoch=16)
    dm.setup()
    train = dm.datasets["train"]
    cached = train._cache[0]
    before = {k: (v.clone(), len(v.applied_operations) if isinstance(v, MetaTensor) else None)
              for k, v in cached.items() if isinstance(v, torch.Tensor)}
    for _ in range(2):
        for _batch in dm.train_dataloader():
            pass
    assert not train.copy_cache and train._cache[0] is cached
    for k, (value, n_ops) in before.items():
        assert torch.equal(cached[k], value), k
        assert n_ops is None or len(cached[k].applied_operations) == n_ops, k  # no growing transform history


# ---- the extra real training heads in data/train_extra ----------------------------------------------------------
def _make_train_data():
    return load_script("make_train_data")


def test_train_extra_heads_are_documented_listed_and_load_cleanly():
    extra = REPO / "data" / "train_extra"
    module = _make_train_data()
    files = sorted(extra.glob("*.nii.gz"))
    assert {f.name for f in files} == {f"{s.name}.nii.gz" for s in module.SOURCES}
    readme, licence = (extra / "README.md").read_text(), (extra / "LICENSE.txt").read_text()
    splits = load_split_items(str(extra / "splits.json"))
    train_images = [Path(it["image"]).name for it in splits["train"]]
    for path in files:
        assert path.name in readme and path.name in licence and path.name in train_images
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. sform/qform disagreement
            image = nib.load(path)
            data = np.asanyarray(image.dataobj)
        assert data.ndim == 3 and min(data.shape) >= 64 and float(data.max()) > 0
        assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1
    assert sum(it.get("gm") is not None for it in splits["train"]) == 2  # the template twice, with its maps
    assert not set(train_images) & {p.name for p in (REPO / "data" / "eval").glob("*.nii.gz")}


def test_make_train_data_crop_keeps_world_positions_and_drops_a_singleton_axis():
    module = _make_train_data()
    volume = np.zeros((20, 24, 16), np.uint8)
    volume[5:9, 10:20, 3:7] = 200
    affine = np.array([[-1.5, 0, 0, 40], [0, 0, 1.5, -30], [0, -1.5, 0, 60], [0, 0, 0, 1]])
    cropped, shifted = module.crop_to_head(volume, affine, margin=2)
    assert cropped.shape == (8, 14, 8) and cropped.dtype == np.uint8
    corner = np.array([3, 8, 1, 1.0])  # the crop's first voxel, in the source grid
    np.testing.assert_allclose(shifted @ [0, 0, 0, 1], affine @ corner)
    np.testing.assert_array_equal(cropped, volume[3:11, 8:22, 1:9])
    raw = nib.Nifti1Image(volume[..., None], affine).to_bytes()
    data, read_affine = module.load(module.gzip.compress(raw), "x.nii.gz")
    assert data.shape == volume.shape and data.dtype == np.uint8
    np.testing.assert_allclose(read_affine, affine)


def test_make_train_data_compact_keeps_values():
    """Integer-valued floats that fit int16 are stored as int16 with the same values; anything else is kept."""
    compact = _make_train_data().compact
    whole = np.array([[0.0, 1717.0], [-5.0, 3517.0]], np.float32)
    assert compact(whole).dtype == np.int16 and np.array_equal(compact(whole), whole)
    for kept in (whole + 0.5, whole * 100.0, np.array([1, 2], np.uint16)):
        assert compact(kept) is kept
