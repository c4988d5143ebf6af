"""PSNR and SSIM: closed-form cases and an independent 2-D implementation of Wang et al.'s ssim_index."""
from __future__ import annotations

import math

import numpy as np
import pytest

from glrl.errors import DataError
from glrl.metrics import gaussian_window_1d, psnr, ssim, ssim_map


def test_psnr_of_a_known_mean_squared_error():
    a = np.zeros((8, 8))
    b = a.copy()
    b[::2] = 2.0  # half the pixels off by 2: MSE = 2
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 2), abs=1e-12)
    assert psnr(a, a) == float("inf")


def test_gaussian_window_is_matlab_fspecial_11_1_5():
    g = gaussian_window_1d()
    window = np.outer(g, g)
    x = np.arange(-5, 6)
    expected = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(window, expected / expected.sum(), rtol=0, atol=1e-15)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """ssim_index.m written out with a 2-D window and explicit loops over 'valid' positions."""
    x = np.arange(-5, 6)
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 4.5)
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
            var_a = (window * pa * pa).sum() - mu_a**2
            var_b = (window * pb * pb).sum() - mu_b**2
            cov = (window * pa * pb).sum() - mu_a * mu_b
            values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_direct_2d_implementation_of_ssim_index():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (19, 23)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).round()
    assert ssim_map(a, b).shape == (9, 13)  # 'valid': 10 pixels fewer per axis
    assert ssim(a, b) == pytest.approx(_ssim_reference(a, b), abs=1e-12)


def test_ssim_of_constant_images_has_a_closed_form():
    a, b = np.full((15, 15), 100.0), np.full((15, 15), 120.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_is_symmetric_and_drops_with_noise():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32)).astype(np.float64)
    slightly = np.clip(a + rng.normal(0, 5, a.shape), 0, 255)
    badly = np.clip(a + rng.normal(0, 40, a.shape), 0, 255)
    assert ssim(a, slightly) == pytest.approx(ssim(slightly, a), abs=1e-14)
    assert 1 > ssim(a, slightly) > ssim(a, badly)


def test_the_smallest_image_ssim_takes_is_one_window():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (11, 11)).astype(np.float64)
    assert ssim_map(a, a + 3).shape == (1, 1)
    assert ssim(a, a) == 1.0


def test_metrics_refuse_mismatched_or_too_small_images():
    with pytest.raises(DataError, match="differ in shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="at least 11x11"):
        ssim(np.zeros((10, 40)), np.zeros((10, 40)))
    with pytest.raises(DataError, match="single-channel"):
        ssim(np.zeros((20, 20, 3)), np.zeros((20, 20, 3)))
