"""PSNR/SSIM with a fixed data range, baselines on the centred grid, summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric

from app.baselines import BASELINES, bspline, nearest, trilinear
from app.metrics import all_metrics, data_range_of, foreground_mask, psnr, ssim
from app.report import describe
from tests.nifti_factory import smooth_volume


@pytest.mark.parametrize("sigma", [1.0, 5.0, 20.0])
def test_psnr_of_known_noise_variance(sigma):
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 100, size=(40, 40, 40))
    pred = target + rng.normal(0.0, sigma, size=target.shape)
    expected = 10 * math.log10(200.0**2 / sigma**2)
    assert psnr(pred, target, data_range=200.0) == pytest.approx(expected, abs=0.1)


def test_identical_volumes_give_infinite_psnr_and_unit_ssim():
    vol = smooth_volume((12, 10, 9))
    metrics = all_metrics(vol, vol, data_range_of(vol), foreground_mask(vol))
    assert metrics["psnr"] == math.inf and metrics["psnr_fg"] == math.inf
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["ssim_fg"] == pytest.approx(1.0)


def test_constant_images_never_give_nan():
    const = np.full((8, 8, 8), 7.0)
    assert data_range_of(const) == 1.0
    mask = foreground_mask(const)
    assert mask.all()
    for other in (const, const + 0.5, np.random.default_rng(1).normal(7, 1, const.shape)):
        values = all_metrics(other, const, data_range_of(const), mask)
        assert not any(math.isnan(v) for v in values.values()), values


def test_ssim_matches_monai_and_falls_with_noise():
    rng = np.random.default_rng(2)
    target = smooth_volume((20, 20, 20))
    r = data_range_of(target)
    noisy = [target + rng.normal(0, s, target.shape) for s in (5.0, 20.0, 60.0)]
    values = [ssim(p, target, r) for p in noisy]
    assert values[0] > values[1] > values[2]
    reference = SSIMMetric(spatial_dims=3, data_range=r, win_size=7, kernel_sigma=1.5)(
        torch.as_tensor(noisy[1], dtype=torch.float32)[None, None], torch.as_tensor(target, dtype=torch.float32)[None, None]
    )
    assert values[1] == pytest.approx(float(reference.mean()), abs=1e-5)


def test_masked_metrics_ignore_errors_outside_the_mask():
    target = np.zeros((16, 16, 16))
    target[4:12, 4:12, 4:12] = 100.0
    mask = foreground_mask(target)
    assert mask.sum() == 8**3
    pred = target.copy()
    pred[0, 0, 0] = 50.0
    assert psnr(pred, target, 100.0, mask) == math.inf
    assert psnr(pred, target, 100.0) < math.inf
    assert ssim(pred, target, 100.0) < ssim(pred, target, 100.0, mask) == pytest.approx(1.0)


def test_small_volumes_shrink_the_ssim_window():
    a = np.random.default_rng(3).normal(size=(4, 6, 5))
    assert math.isfinite(ssim(a, a + 0.1, 5.0))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_keep_constants_and_shape(name):
    lr = np.full((4, 5, 3), 3.5, np.float32)
    out = BASELINES[name](lr, (2, 1, 3))
    assert out.shape == (8, 5, 9) and out.dtype == np.float32
    np.testing.assert_allclose(out, 3.5, rtol=1e-3)  # scipy's spline prefilter is approximate on 3 samples


def test_baselines_use_the_centred_grid():
    ramp = np.fromfunction(lambda i, j, k: 3.0 * i + j - k, (8, 8, 8)).astype(np.float32)
    # HR voxel h sits at LR coordinate (h + 0.5) / s - 0.5: interior values of a linear ramp are exact
    hr_coords = np.fromfunction(lambda i, j, k: 3.0 * ((i + 0.5) / 2 - 0.5) + ((j + 0.5) / 2 - 0.5) - ((k + 0.5) / 2 - 0.5),
                                (16, 16, 16))
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(trilinear(ramp, (2, 2, 2))[inner], hr_coords[inner], atol=1e-4)
    np.testing.assert_allclose(bspline(ramp, (2, 2, 2))[4:-4, 4:-4, 4:-4], hr_coords[4:-4, 4:-4, 4:-4], atol=0.05)
    np.testing.assert_array_equal(nearest(ramp, (2, 2, 2)).reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5)), ramp)


def test_describe_gives_student_t_interval():
    stats = describe([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and stats["n"] == 3
    assert stats["ci95"] == pytest.approx([2.0 - 4.302653 / math.sqrt(3), 2.0 + 4.302653 / math.sqrt(3)], abs=1e-5)
    assert describe([5.0])["ci95"] is None
    assert describe([math.inf, 3.0])["mean"] == math.inf
