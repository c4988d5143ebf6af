"""Set5 PSNR while training: whole images through the benchmark protocol of :mod:`glrl.eval.protocol`.

The images are read and prepared once (ground-truth Y and the clipped bicubic input), so a probe costs one
forward pass per image; the figure is the same mean PSNR ``glrl eval`` reports for the net at that scale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import numpy as np

from glrl.errors import DataError
from glrl.eval import protocol
from glrl.imageio import list_images, read_image


class Set5Probe:
    """Measures a predictor's mean PSNR on a test set at one scale; ``bicubic`` is the baseline's."""

    def __init__(self, folder: Path, scale: int) -> None:
        paths = list_images(folder)
        if not paths:
            raise DataError(f"no test images in {folder}",
                            hint="point --data-root at the datasets (glrl data verify), or pass --no-set5")
        self.scale = scale
        self.images: List[protocol.ProtocolImage] = [protocol.prepare(read_image(p), scale) for p in paths]
        self.bicubic = self._mean_psnr([image.y_up for image in self.images])

    def __call__(self, predict: Callable[[np.ndarray], np.ndarray]) -> float:
        """Mean PSNR of ``predict`` (N x 1 x H x W float32 in, same shape out) over the images."""
        outputs = [predict(image.y_up[None, None].astype(np.float32))[0, 0] for image in self.images]
        return self._mean_psnr(outputs)

    def _mean_psnr(self, estimates: List[np.ndarray]) -> float:
        scores = [protocol.score(image.y_true, protocol.to_uint8(estimate), self.scale)[0]
                  for image, estimate in zip(self.images, estimates)]
        return float(np.mean(scores))
