"""From one HR luminance image to aligned (input, label) patch pairs, as the DRRN/VDSR MATLAB scripts do.

For scale ``s``: ``label = modcrop(Y, s)`` in double (Y / 255), ``LR = imresize(label, 1/s)`` (bicubic,
double, never rounded), ``input = imresize(LR, size(label))``; patches of ``patch_size`` are cut at rows/cols
``0, stride, 2*stride, ...`` (row-major, the order of the MATLAB loops), the label patch is the centred
``label_size`` window of the same position. Bicubic overshoot in the input is kept (not clipped), as there.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from glrl.matlab_compat import im2double, imresize, modcrop

def dihedral(img: np.ndarray, index: int) -> np.ndarray:
    """The ``index``-th (0..7) symmetry of the square: a left-right flip when ``index >= 4``, then
    ``index % 4`` counter-clockwise quarter turns (MATLAB ``imrotate(img, 90 * k)``)."""
    if not 0 <= index < 8:
        raise ValueError(f"dihedral index must be 0..7, not {index}")
    out = np.fliplr(img) if index >= 4 else img
    return np.ascontiguousarray(np.rot90(out, index % 4))


def grid_starts(length: int, window: int, stride: int) -> np.ndarray:
    """0-based starts of the windows along one axis (MATLAB ``1 : stride : length - window + 1``)."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def patch_count(height: int, width: int, scale: int, patch_size: int, stride: int) -> int:
    """Patches cut from an ``height`` x ``width`` image at ``scale``: the formula
    ``(floor((H' - p) / stride) + 1) * (floor((W' - p) / stride) + 1)`` with ``H' = H - H mod s`` (0 if
    the mod-cropped image is smaller than a patch)."""
    rows, cols = height - height % scale, width - width % scale
    if rows < patch_size or cols < patch_size:
        return 0
    return ((rows - patch_size) // stride + 1) * ((cols - patch_size) // stride + 1)


def interpolated_pair(y: np.ndarray, scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(input, label)`` float64 images of a uint8 luminance image ``y`` at ``scale`` (see module doc)."""
    label = im2double(modcrop(y, scale))
    low = imresize(label, 1.0 / scale)
    return imresize(low, output_shape=label.shape), label


def windows(img: np.ndarray, starts: np.ndarray, size: int, offset: int = 0) -> np.ndarray:
    """The ``size`` x ``size`` windows of a 2-D ``img`` whose top-left corners are ``starts + offset``
    (``starts``: n x 2 of row, col), copied into an n x size x size array."""
    img = np.ascontiguousarray(img)
    all_windows = np.lib.stride_tricks.as_strided(
        img,
        shape=(img.shape[0] - size + 1, img.shape[1] - size + 1, size, size),
        strides=img.strides * 2,
        writeable=False,
    )
    return all_windows[starts[:, 0] + offset, starts[:, 1] + offset]


def cut_patches(
    image_in: np.ndarray, image_label: np.ndarray, patch_size: int, label_size: int, stride: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned patches of an (input, label) pair: ``(inputs n x p x p, labels n x l x l, starts n x 2)``,
    in row-major order of the patch positions."""
    rows = grid_starts(image_in.shape[0], patch_size, stride)
    cols = grid_starts(image_in.shape[1], patch_size, stride)
    starts = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    if not len(starts):
        return np.zeros((0, patch_size, patch_size)), np.zeros((0, label_size, label_size)), starts
    margin = (patch_size - label_size) // 2
    return windows(image_in, starts, patch_size), windows(image_label, starts, label_size, margin), starts
