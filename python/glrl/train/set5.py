"""Set5 PSNR while training: whole images, the benchmark protocol of ``shared/datasets/README.md``.

Y = uint8 MATLAB ``rgb2ycbcr`` of ``modcrop(HR, s)`` (a grey image as it is); the network input is the
bicubic down-then-up of that Y in double precision (the LR never rounded), in [0, 1]; the output is
clipped, scaled to 255 and rounded to uint8; ``s`` border pixels are shaved; PSNR with peak 255. The
images are prepared once, so a probe costs one forward pass per image.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
from glrl.errors import DataError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255)."""
    mse = float(np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 as MATLAB's ``uint8(x * 255)`` (round half away from zero, clip)."""
    scaled = np.clip(np.asarray(values, dtype=np.float64) * 255.0, 0.0, 255.0)
    return np.floor(scaled + 0.5).astype(np.uint8)


class Set5Probe:
    """Measures a predictor's mean PSNR on a test set at one scale; ``bicubic`` is the baseline's."""

    def __init__(self, folder: Path, scale: int) -> None:
        from glrl.matlab_compat import im2double, imresize, modcrop, rgb2ycbcr
        from PIL import Image

        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if Path(folder).is_dir() else []
        if not paths:
            raise DataError(f"no test images in {folder}",
                            hint="point --data-root at the datasets (glrl data verify), or pass --no-set5")
        self.scale = scale
        self.images: List[Tuple[np.ndarray, np.ndarray]] = []  # (uint8 Y, bicubic input in [0, 1])
        for path in paths:
            image = np.asarray(Image.open(path))
            cropped = modcrop(image, scale)
            y = rgb2ycbcr(cropped[..., :3])[..., 0] if cropped.ndim == 3 else cropped
            y = np.ascontiguousarray(y, dtype=np.uint8)
            low = imresize(im2double(y), 1.0 / scale)
            self.images.append((y, imresize(low, output_shape=y.shape)))
        self.bicubic = self._mean_psnr([bicubic for _, bicubic in self.images])

    def __call__(self, predict: Callable[[np.ndarray], np.ndarray]) -> float:
        """Mean PSNR of ``predict`` (N x 1 x H x W float32 in, same shape out) over the images."""
        outputs = [predict(bicubic[None, None].astype(np.float32))[0, 0] for _, bicubic in self.images]
        return self._mean_psnr(outputs)

    def _mean_psnr(self, estimates: List[np.ndarray]) -> float:
        s = self.scale
        values = [psnr(y[s:-s, s:-s], to_uint8(estimate)[s:-s, s:-s])
                  for (y, _), estimate in zip(self.images, estimates)]
        return float(np.mean(values))
