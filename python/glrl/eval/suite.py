"""Running several SR methods over the test sets in one pass: what ``glrl eval`` does for released models,
external Caffe models and ``--all`` (Table 1 and Table 2).

Fast by construction: each test image is read and put through the protocol's bicubic down/up once per
scale, and that input is shared by every method; each net is loaded once and sees whole images.
Outputs in the output folder: ``results.md``/``.csv``/``.json`` (the combined table, :mod:`glrl.eval.table`),
``<method>.md/.csv/.json`` and ``<method>_per_image.csv/.json`` (:mod:`glrl.eval.report`), and every SR
image as ``images/<method>/<set>/x<scale>/<image>.png`` (the uint8 Y the figures were computed on).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from glrl.datasets.verify import require_datasets
from glrl.eval import protocol
from glrl.eval.protocol import SRMethod
from glrl.eval.results import ImageResult, Summary
from glrl.imageio import read_image, write_image
from glrl.published import published


@dataclass
class Entry:
    """One method to evaluate: its row name and, per scale, how to build it (or why it is skipped)."""

    name: str
    factories: Dict[int, Callable[[], SRMethod]]
    models: Dict[int, Optional[str]] = field(default_factory=dict)  # the released model behind a scale
    missing: Dict[int, str] = field(default_factory=dict)
    runs_nets: bool = False  # its methods run Caffe nets (on a backend and device)


@dataclass
class SuiteResult:
    summaries: List[Summary]
    per_image: List[ImageResult]
    models: Dict[Tuple[str, str, int], Optional[str]]  # (method, dataset, scale) -> released model
    notes: Dict[Tuple[str, int], str]  # (method, scale) -> why it was not measured
    seconds: Dict[str, float]  # per method, net time inside the method and scoring
    total_seconds: float = 0.0


def image_folder(out_dir: Path, method: str, dataset: str, scale: int) -> Path:
    """Where the SR images of one method, set and scale are written."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", method)
    return Path(out_dir) / "images" / safe / dataset / f"x{scale}"


def _summary(dataset: str, scale: int, method: str, cell: List[ImageResult]) -> Summary:
    figure = published(dataset, scale, method)
    return Summary(dataset, scale, method, float(np.mean([r.psnr for r in cell])),
                   float(np.mean([r.ssim for r in cell])), figure.psnr if figure else None,
                   figure.ssim if figure else None, len(cell))


def run_suite(
    entries: Sequence[Entry],
    datasets: Sequence[str],
    scales: Sequence[int],
    root: Path,
    out_dir: Optional[Path] = None,
    progress: bool = True,
) -> SuiteResult:
    """Evaluate every entry on every set and scale it has a method for; write SR images to ``out_dir``."""
    from tqdm import tqdm

    started = time.perf_counter()
    checked = require_datasets(datasets, root)
    built: Dict[Tuple[str, int], SRMethod] = {}
    result = SuiteResult([], [], {}, {}, {entry.name: 0.0 for entry in entries})
    for entry in entries:
        for scale in scales:
            if scale not in entry.factories:
                result.notes[(entry.name, scale)] = entry.missing.get(scale, f"not run at x{scale}")
    for dataset in checked:
        images = [(path.stem, read_image(path)) for path in dataset.image_paths(root)]
        for scale in scales:
            prepared = [(name, protocol.prepare(hr, scale)) for name, hr in images]
            for entry in entries:
                if scale not in entry.factories:
                    continue
                if (entry.name, scale) not in built:
                    built[(entry.name, scale)] = entry.factories[scale]()
                sr = built[(entry.name, scale)]
                began = time.perf_counter()
                cell: List[ImageResult] = []
                bar = tqdm(prepared, desc=f"{entry.name} {dataset.name} x{scale}", unit="img",
                           disable=not progress, leave=False)
                for name, image in bar:
                    y_sr = protocol.run_method(sr, image, entry.name)
                    value_psnr, value_ssim = protocol.score(image.y_true, y_sr, scale)
                    cell.append(ImageResult(dataset.name, scale, entry.name, name, value_psnr, value_ssim))
                    if out_dir is not None:
                        folder = image_folder(out_dir, entry.name, dataset.name, scale)
                        write_image(folder / f"{name}.png", y_sr)
                result.seconds[entry.name] += time.perf_counter() - began
                result.per_image.extend(cell)
                result.summaries.append(_summary(dataset.name, scale, entry.name, cell))
                result.models[(entry.name, dataset.name, scale)] = entry.models.get(scale)
    result.total_seconds = time.perf_counter() - started
    return result


def evaluate(method_name: str, sr: SRMethod, datasets: Sequence[str], scales: Sequence[int], root: Path,
             progress: bool = True) -> Tuple[List[Summary], List[ImageResult]]:
    """Run one method ``sr`` on every image of ``datasets`` at every scale; ``(summaries, per-image results)``
    (the images are checked against the carried checksums first, so the figures compare with the paper's)."""
    result = run_suite([Entry(method_name, {scale: (lambda: sr) for scale in scales})], datasets, scales, root,
                       progress=progress)
    return result.summaries, result.per_image
