"""Throughput of the data side: building HDF5 patch sets, and our MATLAB-compatible bicubic ``imresize``."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from timing import measure

Record = Dict[str, Any]
BUILD_IMAGES = 8


def data_build(work: Path, data_root: Path) -> List[Record]:
    """``glrl data build`` (×3, the paper's settings) on the first few T91 images, all cores, one build.

    A subset of T91 is not the published set, so the source checksum check is off."""
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    source = data_root / "train" / "T91"
    images = sorted(p for p in source.iterdir() if p.suffix.lower() == ".bmp")[:BUILD_IMAGES]
    if not images:
        raise RuntimeError(f"no T91 images under {source}")
    root = work / "data_root"
    (root / "train" / "T91").mkdir(parents=True, exist_ok=True)
    for image in images:
        target = root / "train" / "T91" / image.name
        if not target.exists():
            shutil.copy(image, target)
    out = work / "patches"
    shutil.rmtree(out, ignore_errors=True)
    config = BuildConfig(scales=(3,), train_sets=("T91",), val_set="")
    workers = len(os.sched_getaffinity(0))
    start = time.perf_counter()
    result = build(config, root, out, workers=workers, force=True, progress=False, check_sources=False)
    seconds = time.perf_counter() - start
    patches = result.manifest["train"]["patches"]
    record: Record = {"tool": "ours (glrl data build)", "case": f"{len(images)} T91 images, x3, augmented",
                      "setting": f"{workers} workers", "median_s": seconds, "runs_s": [round(seconds, 3)],
                      "images_per_s": len(images) / seconds, "patches_per_s": patches / seconds}
    return [record]


def bicubic(repeats: int) -> List[Record]:
    """Megapixels per second (read and written) of ``imresize`` for the evaluation's down and up steps."""
    from glrl.matlab_compat import imresize

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (510, 510, 3), dtype=np.uint8)
    y = rng.random((510, 510))
    cases = [  # label, function, input pixels, output pixels (pixels, not values: RGB has 3 per pixel)
        ("uint8 RGB 510² -> 1/3", lambda: imresize(rgb, 1 / 3), 510 * 510, 170 * 170),
        ("float64 Y 170² -> x3", lambda: imresize(y[:170, :170], 3), 170 * 170, 510 * 510),
        ("float64 Y 510² -> x3", lambda: imresize(y, 3), 510 * 510, 1530 * 1530),
    ]
    records = []
    for label, fn, pixels_in, pixels_out in cases:
        timing = measure(fn, repeats)
        records.append({"tool": "ours (glrl.matlab_compat.imresize)", "case": label, "setting": "numpy",
                        **timing, "in_mpixel_per_s": pixels_in / timing["median_s"] / 1e6,
                        "out_mpixel_per_s": pixels_out / timing["median_s"] / 1e6})
    return records
