"""MATLAB-compatible image operations: bicubic ``imresize``, ``rgb2ycbcr``/``ycbcr2rgb``, ``modcrop``,
``shave``, ``im2double``, ``im2uint8``.

Every published SR figure we compare with was computed with MATLAB; these functions reproduce MATLAB's
results (bit for bit on uint8 images, to rounding error on float64) with numpy alone, vectorised.
"""
from __future__ import annotations

from glrl.matlab_compat.color import rgb2y, rgb2ycbcr, ycbcr2rgb
from glrl.matlab_compat.crop import im2double, im2uint8, modcrop, round_to_uint8, shave
from glrl.matlab_compat.imresize import contributions, cubic, imresize, output_size

__all__ = ["imresize", "output_size", "contributions", "cubic", "rgb2ycbcr", "rgb2y", "ycbcr2rgb", "modcrop",
           "shave", "im2double", "im2uint8", "round_to_uint8"]
