"""``glrl data inspect``: what a patch file, list file or patch-set folder holds, and a picture of it.

Checks each file as the trainer reads it (``data`` and ``label`` with the same non-zero rows), reports per
dataset the row count, shape, dtype and value range (min, max, mean; read in slices so a large file needs
little memory; NaN/Inf counted apart), checks a set folder against its manifest, and draws a PNG mosaic of
sample ``data``/``label`` pairs side by side so misaligned or mis-scaled patches are visible.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from glrl.data_prep import manifest as manifest_io
from glrl.data_prep.reader import DEFAULT_TOPS, read_header, read_list_file
from glrl.errors import DataError
from glrl.fsutil import atomic_write_bytes

ROWS_PER_READ = 4096


@dataclasses.dataclass
class DatasetStats:
    name: str
    rows: int
    item_shape: Tuple[int, ...]
    dtype: str
    minimum: float
    maximum: float
    mean: float
    non_finite: int = 0  # NaN and infinite values (a net trained on them diverges)

    def line(self) -> str:
        shape = "x".join(str(v) for v in self.item_shape)
        bad = f"  {self.non_finite} NaN/Inf values" if self.non_finite else ""
        return (f"{self.name:<6} {self.rows:>9} x {shape:<10} {self.dtype:<8} "
                f"min {self.minimum:9.4f}  max {self.maximum:9.4f}  mean {self.mean:9.4f}{bad}")


def patch_files(target: Path) -> Dict[str, List[Path]]:
    """The HDF5 files ``target`` stands for, by part: itself, those of a list file, or those of each list
    file (train.txt, val.txt) of a set folder."""
    if target.is_dir():
        lists = {part: target / f"{part}.txt" for part in ("train", "val")}
        lists = {part: path for part, path in lists.items() if path.is_file()}
        if not lists:
            raise DataError(f"{target} holds no train.txt or val.txt",
                            hint="point at a `glrl data build` folder")
        return {part: read_list_file(path) for part, path in lists.items()}
    if not target.is_file():
        raise DataError(f"{target} does not exist",
                        hint="give an .h5 patch file, a list file or a set folder")
    if target.suffix == ".txt":
        return {target.name: read_list_file(target)}
    return {target.name: [target]}


def file_stats(path: Path) -> List[DatasetStats]:
    """Statistics of every dataset of one HDF5 file, once it is checked as the trainer checks a patch file
    (``data`` and ``label``, numeric, with the same non-zero number of rows)."""
    import h5py

    read_header(path, DEFAULT_TOPS)
    stats = []
    with h5py.File(str(path), "r") as h5:
        for name, dataset in h5.items():
            if isinstance(dataset, h5py.Dataset) and dataset.ndim and dataset.dtype.kind in "fiu":
                stats.append(_dataset_stats(name, dataset))
    return stats


def _dataset_stats(name: str, dataset) -> DatasetStats:
    """Range and mean over the finite values, read in slices; the others are counted."""
    low, high, total, finite, non_finite = np.inf, -np.inf, 0.0, 0, 0
    for start in range(0, dataset.shape[0], ROWS_PER_READ):
        block = np.asarray(dataset[start:start + ROWS_PER_READ], dtype=np.float64)
        good = block[np.isfinite(block)]
        non_finite += block.size - good.size
        if good.size:
            low, high = min(low, good.min()), max(high, good.max())
            total, finite = total + good.sum(), finite + good.size
    return DatasetStats(name, int(dataset.shape[0]), tuple(dataset.shape[1:]), str(dataset.dtype), float(low),
                        float(high), total / finite if finite else float("nan"), non_finite)


def combine(stats: List[DatasetStats]) -> DatasetStats:
    """One line for the same dataset over several files."""
    rows = sum(s.rows for s in stats)
    mean = sum(s.mean * s.rows for s in stats) / rows if rows else float("nan")
    shapes = {s.item_shape for s in stats}
    shape = stats[0].item_shape if len(shapes) == 1 else ()
    return DatasetStats(stats[0].name, rows, shape, stats[0].dtype, min(s.minimum for s in stats),
                        max(s.maximum for s in stats), mean, sum(s.non_finite for s in stats))


def sample_pairs(path: Path, samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """``samples`` evenly spaced (data, label) patches of one file, as 2-D float arrays."""
    import h5py

    with h5py.File(str(path), "r") as h5:
        rows = h5["data"].shape[0]
        picks = np.unique(np.linspace(0, rows - 1, min(samples, rows)).astype(int))
        return np.asarray(h5["data"][list(picks)])[:, 0], np.asarray(h5["label"][list(picks)])[:, 0]


def mosaic_png(data: np.ndarray, label: np.ndarray, zoom: int = 4, columns: int = 4) -> bytes:
    """A grid of ``data | label`` cells (label centred when smaller), grey levels clipped to [0, 1]."""
    from PIL import Image

    side, small = data.shape[-1], label.shape[-1]
    margin = (side - small) // 2
    gap = 2
    cell_w, cell_h = 2 * side + gap, side
    rows = -(-len(data) // columns)
    canvas = np.full((rows * (cell_h + gap) + gap, columns * (cell_w + 3 * gap) + gap), 0.5)
    for k, (inp, lab) in enumerate(zip(data, label)):
        top = gap + (k // columns) * (cell_h + gap)
        left = gap + (k % columns) * (cell_w + 3 * gap)
        canvas[top:top + side, left:left + side] = inp
        label_top, label_left = top + margin, left + side + gap + margin
        canvas[label_top:label_top + small, label_left:label_left + small] = lab
    pixels = np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass
class Inspection:
    """The report on a patch set, and what in it makes the set unfit to train on."""

    lines: List[str]
    problems: List[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def inspect(target: Path, mosaic: Optional[Path], samples: int = 16, verify: bool = False) -> Inspection:
    """The report on ``target``; writes the mosaic of its first file's samples to ``mosaic`` if given."""
    if mosaic is not None and mosaic.suffix.lower() != ".png":
        raise DataError(f"the mosaic is a PNG, not {mosaic.name}", hint="name it <something>.png")
    parts = patch_files(target)
    lines: List[str] = []
    problems: List[str] = []
    for part, files in parts.items():
        per_dataset: Dict[str, List[DatasetStats]] = {}
        for path in files:
            for stats in file_stats(path):
                per_dataset.setdefault(stats.name, []).append(stats)
        lines.append(f"{part}: {len(files)} HDF5 file{'s' if len(files) != 1 else ''}")
        for stats in map(combine, per_dataset.values()):
            lines.append("  " + stats.line())
            if stats.non_finite:
                problems.append(f"{part} {stats.name}: {stats.non_finite} NaN/Inf values")
    if target.is_dir():
        found = manifest_io.load(target)
        if found is None:
            lines.append("manifest: missing or unreadable (an unfinished build? do not train on it)")
            problems.append(f"{target} has no readable manifest.json")
        else:
            issues = manifest_io.problems(target, found, rehash_all=verify)
            checked = "sizes and SHA-256" if verify else "sizes (SHA-256 of modified files)"
            verdict = "match" if not issues else "DO NOT match: " + "; ".join(issues)
            lines.append(f"manifest: {checked} {verdict}")
            lines.append(f"content SHA-256 (a released model's data_manifest_sha256): "
                         f"{manifest_io.content_sha256(found)}")
            problems += issues
    if mosaic is not None:
        first = next(iter(parts.values()))[0]
        data, label = sample_pairs(first, samples)
        atomic_write_bytes(mosaic, mosaic_png(data, label))
        lines.append(f"mosaic of {len(data)} data|label pairs from {first.name}: {mosaic}")
    return Inspection(lines, problems)
