"""PSNR and SSIM as the SR literature computes them on the Y channel (peak 255).

SSIM is Wang et al.'s ``ssim_index.m`` (2004): an 11×11 Gaussian window with σ = 1.5 (MATLAB
``fspecial('gaussian', 11, 1.5)``, normalised to sum 1), K1 = 0.01, K2 = 0.03, L = 255, local statistics by
``filter2(..., 'valid')`` (no padding, no downsampling), the mean of the SSIM map. The Gaussian window is
separable, so we filter columns then rows with its 1-D factor; the result equals the 2-D filtering to
rounding error.
"""
from __future__ import annotations

import numpy as np

from glrl.errors import DataError

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_pair(a: np.ndarray, b: np.ndarray, what: str):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"{what}: the images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 2:
        raise DataError(f"{what} compares single-channel (H×W) images, not shape {a.shape}")
    return a, b


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = PEAK) -> float:
    """``10 log10(peak² / MSE)`` in dB over all pixels; ``inf`` for identical images."""
    a, b = _as_pair(reference, test, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (sums to 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_along(images: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """'valid' correlation of ``images`` with the symmetric 1-D window ``g`` along ``axis``.

    Mirror taps share one multiply (``g[k] == g[-1 - k]``), accumulated in place to spare memory traffic.
    """
    n = g.size
    length = images.shape[axis] - n + 1

    def taps(k: int) -> np.ndarray:
        index = [slice(None)] * images.ndim
        index[axis] = slice(k, k + length)
        return images[tuple(index)]

    out = taps(n // 2) * g[n // 2]
    pair = np.empty_like(out)
    for k in range(n // 2):
        np.add(taps(k), taps(n - 1 - k), out=pair)
        pair *= g[k]
        out += pair
    return out


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``filter2(g' * g, image, 'valid')`` as two 1-D passes (one image at a time: cache-friendlier)."""
    return _filter_along(_filter_along(image, g, 0), g, 1)


def ssim_map(reference: np.ndarray, test: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """The SSIM map of ``ssim_index.m`` ('valid' size: (H - 10) × (W - 10))."""
    a, b = _as_pair(reference, test, "ssim")
    if min(a.shape) < SSIM_WINDOW:
        raise DataError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, not {a.shape[0]}x{a.shape[1]}"
        )
    g = gaussian_window_1d()
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    mu_a, mu_b, sq_a, sq_b, ab = (_filter_valid(image, g) for image in (a, b, a * a, b * b, a * b))
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = sq_a - mu_a2
    var_b = sq_b - mu_b2
    cov = ab - mu_ab
    return ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a2 + mu_b2 + c1) * (var_a + var_b + c2))


def ssim(reference: np.ndarray, test: np.ndarray, peak: float = PEAK) -> float:
    """Mean SSIM (Wang et al. 2004, ``ssim_index.m`` defaults)."""
    return float(np.mean(ssim_map(reference, test, peak)))
