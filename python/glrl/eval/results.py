"""What an evaluation measures (:mod:`glrl.eval.suite`): per image and scale, PSNR/SSIM
(:class:`ImageResult`); per dataset and scale, their means beside the published figures (:class:`Summary`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class ImageResult:
    dataset: str
    scale: int
    method: str
    image: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class Summary:
    """One cell of the results table; ``record()`` is the JSON format shared by every method."""

    dataset: str
    scale: int
    method: str
    psnr: float
    ssim: float
    published_psnr: Optional[float]
    published_ssim: Optional[float]
    images: int

    def record(self) -> Dict[str, object]:
        data = asdict(self)
        del data["images"]
        return data
