"""Evaluating one SR method on the test sets with the benchmark protocol (``glrl.eval.protocol``).

Per image and scale it records PSNR/SSIM; per dataset and scale, their means beside the published figures.
The images are checked against the carried checksums first, so the figures are comparable with the paper's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glrl.datasets.verify import require_datasets
from glrl.eval import protocol
from glrl.eval.protocol import SRMethod
from glrl.imageio import read_image
from glrl.published import published


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


def _summarise(dataset: str, scale: int, method: str, results: List[ImageResult]) -> Summary:
    figure = published(dataset, scale, method)
    return Summary(
        dataset,
        scale,
        method,
        float(np.mean([r.psnr for r in results])),
        float(np.mean([r.ssim for r in results])),
        figure.psnr if figure else None,
        figure.ssim if figure else None,
        len(results),
    )


def evaluate(
    method_name: str,
    sr: SRMethod,
    datasets: Sequence[str],
    scales: Sequence[int],
    root: Path,
    progress: bool = True,
) -> Tuple[List[Summary], List[ImageResult]]:
    """Run ``sr`` on every image of ``datasets`` at every scale; ``(summaries, per-image results)``."""
    from tqdm import tqdm

    checked = require_datasets(datasets, root)
    summaries: List[Summary] = []
    per_image: List[ImageResult] = []
    for dataset in checked:
        paths = dataset.image_paths(root)
        images = [(path.stem, read_image(path)) for path in paths]
        for scale in scales:
            cell: List[ImageResult] = []
            bar = tqdm(images, desc=f"{method_name} {dataset.name} x{scale}", unit="img", disable=not progress,
                       leave=False)
            for name, hr in bar:
                prepared = protocol.prepare(hr, scale)
                y_sr = protocol.run_method(sr, prepared, method_name)
                value_psnr, value_ssim = protocol.score(prepared.y_true, y_sr, scale)
                cell.append(ImageResult(dataset.name, scale, method_name, name, value_psnr, value_ssim))
            per_image.extend(cell)
            summaries.append(_summarise(dataset.name, scale, method_name, cell))
    return summaries, per_image
