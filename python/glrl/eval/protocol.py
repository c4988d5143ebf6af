"""The benchmark protocol every method is measured with (SRCNN/VDSR/DRRN's, which Table 2 uses).

For an HR test image and scale ``s``:

1. ``Y`` = the Y channel of MATLAB ``rgb2ycbcr`` of ``modcrop(HR, s)`` in uint8 (a grey H×W image is
   used as it is);
2. ``LR`` = MATLAB bicubic ``imresize(im2double(Y), 1/s)`` in float64, never rounded;
3. the method's input ``Y_up`` = bicubic ``imresize(LR, s)`` clipped to the studio range of MATLAB's Y,
   ``max(16/255, min(235/255, .))`` (float64, H×W), as the VDSR/DRCN test code does before running any
   method (the published Bicubic figures are this clipped input; bicubic overshoot past the range Y can
   take is removed, for grey images too);
4. the method returns its estimate of ``Y`` as float64 in [0, 1]; it is rounded to uint8
   (``uint8(255 * out)``: half away from zero, clipped);
5. ``s`` pixels are shaved from every side of both images;
6. PSNR (peak 255) and SSIM (Wang et al. ``ssim_index``) on those; dataset figures are plain means over
   the images.

Bicubic interpolation itself is the method that returns ``Y_up`` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from glrl.errors import DataError, ModelError
from glrl.matlab_compat import im2double, im2uint8, imresize, modcrop, rgb2y, shave
from glrl.metrics import SSIM_WINDOW, psnr, ssim

# sr(y_up, scale) -> SR estimate of Y; y_up and the result are float64 H×W in [0, 1].
SRMethod = Callable[[np.ndarray, int], np.ndarray]

# The range of MATLAB's uint8 Y (BT.601 studio swing: 16..235), in im2double units; step 3 clips to it.
Y_RANGE = (16.0 / 255.0, 235.0 / 255.0)


@dataclass(frozen=True)
class ProtocolImage:
    """The protocol's view of one test image at one scale: ground-truth Y and the method's input."""

    y_true: np.ndarray  # uint8 H×W, H and W multiples of the scale
    y_up: np.ndarray  # float64 H×W: bicubic down then up of y_true / 255, clipped to Y_RANGE
    scale: int


def ground_truth_y(hr: np.ndarray, scale: int) -> np.ndarray:
    """Step 1: uint8 Y of ``modcrop(hr, scale)`` (RGB via MATLAB rgb2ycbcr, grey as it is)."""
    cropped = modcrop(hr, scale)
    if cropped.dtype != np.uint8:
        raise DataError(f"the protocol needs uint8 images, not {cropped.dtype}")
    if cropped.ndim == 2:
        return np.ascontiguousarray(cropped)
    if cropped.ndim == 3 and cropped.shape[2] == 3:
        return rgb2y(cropped)
    raise DataError(f"the protocol needs H×W or H×W×3 images, not shape {cropped.shape}")


def prepare(hr: np.ndarray, scale: int) -> ProtocolImage:
    """Steps 1-3 for one HR image (step 3's clipping included)."""
    if int(scale) != scale or scale < 2:
        raise DataError(f"the scale factor must be an integer of at least 2, not {scale!r}")
    scale = int(scale)
    y_true = ground_truth_y(hr, scale)
    min_side = SSIM_WINDOW + 2 * scale  # one SSIM window must remain after shaving
    if min(y_true.shape) < min_side:
        raise DataError(
            f"a {y_true.shape[0]}x{y_true.shape[1]} image is too small to evaluate at scale {scale}",
            hint=f"test images need at least {min_side} pixels per side at scale {scale}",
        )
    low = imresize(im2double(y_true), 1.0 / scale)
    return ProtocolImage(y_true, np.clip(imresize(low, float(scale)), *Y_RANGE), scale)


def to_uint8(y: np.ndarray) -> np.ndarray:
    """Step 4: MATLAB ``uint8(255 * y)`` (round half away from zero, saturate)."""
    return im2uint8(y)


def score(y_true: np.ndarray, y_sr: np.ndarray, scale: int):
    """Steps 5-6: ``(psnr, ssim)`` of uint8 images after shaving ``scale`` pixels."""
    a, b = shave(y_true, scale), shave(y_sr, scale)
    return psnr(a, b), ssim(a, b)


def run_method(method: SRMethod, image: ProtocolImage, name: str = "method") -> np.ndarray:
    """Call ``method`` on the image's input and check what it returns; the uint8 SR Y (step 4)."""
    output = np.asarray(method(image.y_up.copy(), image.scale))
    if output.shape != image.y_up.shape:
        raise ModelError(
            f"{name} returned shape {output.shape} for an input of shape {image.y_up.shape}",
            hint="an SR method must return an image of its input's size (H×W)",
        )
    if not np.all(np.isfinite(output)):
        raise ModelError(f"{name} returned NaN or infinite pixels", hint="check the model weights")
    return to_uint8(output)


def bicubic(y_up: np.ndarray, scale: int) -> np.ndarray:
    """The Bicubic baseline: the protocol's (clipped) input is already its answer."""
    return y_up
