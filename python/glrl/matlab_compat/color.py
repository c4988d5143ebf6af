"""MATLAB ``rgb2ycbcr`` / ``ycbcr2rgb`` (ITU-R BT.601, studio swing) for uint8 and floating-point images.

Why: super-resolution papers measure PSNR/SSIM on the Y channel of MATLAB's conversion; its constants and
its uint8 rounding decide the last digits of every published figure.

With R, G, B in [0, 1], MATLAB computes (Y, Cb, Cr in 0..255 units)::

    Y  = 16  +  65.481 R + 128.553 G +  24.966 B
    Cb = 128 -  37.797 R -  74.203 G + 112.000 B
    Cr = 128 + 112.000 R -  93.786 G -  18.214 B

uint8 in -> uint8 out (rounded half away from zero, saturated); float in [0, 1] -> float64 in [0, 1]
(the values above divided by 255). ``ycbcr2rgb`` inverts the matrix; like MATLAB it clips the float result
to [0, 1] and rounds/saturates the uint8 result.
"""
from __future__ import annotations

import numpy as np

from glrl.errors import DataError
from glrl.matlab_compat.crop import round_to_uint8

# Rows: Y, Cb, Cr; columns: R, G, B (R, G, B in [0, 1], result in 0..255 units).
YCBCR_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def _check_three_channels(img: np.ndarray, what: str) -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"{what} needs an H×W×3 image, not shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise DataError(
            f"{what} supports uint8 and floating-point images, not {img.dtype}",
            hint="convert with glrl.matlab_compat.im2double first",
        )


def _linear_combination(img: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``out[..., p] = sum_c matrix[p, c] * img[..., c] + offset[p]``, term by term as MATLAB's imlincomb."""
    planes = [img[..., c].astype(np.float64) for c in range(3)]
    out = np.empty(img.shape[:2] + (3,), dtype=np.float64)
    for p in range(3):
        out[..., p] = matrix[p, 0] * planes[0] + matrix[p, 1] * planes[1] + matrix[p, 2] * planes[2] + offset[p]
    return out


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr``: H×W×3 RGB -> H×W×3 YCbCr (uint8 -> uint8, float in [0, 1] -> float64)."""
    img = np.asarray(img)
    _check_three_channels(img, "rgb2ycbcr")
    if img.dtype == np.uint8:
        return round_to_uint8(_linear_combination(img, YCBCR_MATRIX / 255.0, YCBCR_OFFSET))
    return _linear_combination(img, YCBCR_MATRIX / 255.0, YCBCR_OFFSET / 255.0)


def rgb2y(img: np.ndarray) -> np.ndarray:
    """The Y plane of :func:`rgb2ycbcr` (H×W), computed alone: the same arithmetic, a third of the work."""
    img = np.asarray(img)
    _check_three_channels(img, "rgb2y")
    weights = YCBCR_MATRIX[0] / 255.0
    planes = [img[..., c].astype(np.float64) for c in range(3)]
    y = weights[0] * planes[0] + weights[1] * planes[1] + weights[2] * planes[2]
    if img.dtype == np.uint8:
        return round_to_uint8(y + YCBCR_OFFSET[0])
    return y + YCBCR_OFFSET[0] / 255.0


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """MATLAB ``ycbcr2rgb``: H×W×3 YCbCr -> H×W×3 RGB (uint8 -> uint8, float in [0, 1] -> float64 in [0, 1])."""
    img = np.asarray(img)
    _check_three_channels(img, "ycbcr2rgb")
    inverse = np.linalg.inv(YCBCR_MATRIX)
    # rgb01 = inverse @ (ycbcr255 - offset); ycbcr255 = 255 * ycbcr for float input.
    if img.dtype == np.uint8:
        return round_to_uint8(_linear_combination(img, inverse * 255.0, -255.0 * inverse @ YCBCR_OFFSET))
    rgb = _linear_combination(img, inverse * 255.0, -(inverse @ YCBCR_OFFSET))
    return np.clip(rgb, 0.0, 1.0)
