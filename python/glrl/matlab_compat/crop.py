"""``modcrop``, ``shave``, ``im2double`` and ``im2uint8``: the small array steps of the SR evaluation protocol.

``modcrop(img, s)`` keeps the top-left part whose height and width are multiples of ``s`` (so an image
shrunk by ``s`` and grown back has the original size); ``shave(img, b)`` drops ``b`` pixels on each side
(the border that SR methods cannot reconstruct); ``im2double`` is MATLAB's: uint8 / 255, uint16 / 65535, and
``im2uint8`` its way back, with the rounding of MATLAB's ``uint8()`` (:func:`round_to_uint8`).
"""
from __future__ import annotations

import numpy as np

from glrl.errors import DataError


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale`` (a view, not a copy)."""
    img = np.asarray(img)
    if int(scale) != scale or scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, not {scale!r}")
    scale = int(scale)
    if img.ndim < 2:
        raise DataError(f"modcrop needs an H×W or H×W×C image, not shape {img.shape}")
    rows, cols = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    if rows == 0 or cols == 0:
        raise DataError(
            f"a {img.shape[0]}x{img.shape[1]} image is smaller than the scale factor {scale}",
            hint=f"use images at least {scale}x{scale} pixels (in practice much larger) for scale {scale}",
        )
    return img[:rows, :cols]


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side (a view)."""
    img = np.asarray(img)
    if int(border) != border or border < 0:
        raise ValueError(f"shave border must be a non-negative integer, not {border!r}")
    border = int(border)
    if img.ndim < 2 or img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise DataError(f"shaving {border} pixels from each side of shape {img.shape} leaves nothing")
    if border == 0:
        return img
    return img[border:-border, border:-border]


def im2double(img: np.ndarray) -> np.ndarray:
    """MATLAB ``im2double``: uint8 -> /255, uint16 -> /65535, bool -> 0/1, floats -> float64 unchanged."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 65535.0
    if img.dtype == np.bool_ or np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise DataError(f"im2double supports uint8, uint16, bool and float images, not {img.dtype}")


def round_to_uint8(values: np.ndarray) -> np.ndarray:
    """MATLAB's ``uint8()`` of doubles on the 0..255 scale: round half away from zero, saturate at 0 and 255."""
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def im2uint8(img: np.ndarray) -> np.ndarray:
    """MATLAB ``im2uint8`` of a double image in [0, 1]: ``uint8(255 * img)``."""
    return round_to_uint8(np.asarray(img, dtype=np.float64) * 255.0)
