"""The figures of ``glrl eval --all``: PSNR per method and set (a bar chart), and a Figure-6-style
comparison (crops of "baby" and "butterfly" at ×3: ground truth, Bicubic, SRCNN, GLRL side by side).

The comparison is drawn from the SR images the evaluation wrote (``images/<method>/Set5/x3/*.png``, the
scored uint8 Y) in colour: the SR Y joined with the bicubic-enlarged Cb/Cr of the low-resolution image,
as :mod:`glrl.upscaling` enlarges colour pictures. Methods whose images are missing are left out.
matplotlib runs with the Agg backend (no display needed); PNGs are written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glrl.eval.suite import image_folder
from glrl.fsutil import atomic_write_bytes
from glrl.imageio import read_image
from glrl.matlab_compat import im2double, im2uint8, imresize, modcrop, rgb2ycbcr, ycbcr2rgb

FIGURE6_IMAGES = ("baby", "butterfly")
FIGURE6_METHODS = ("Bicubic", "SRCNN", "GLRL")
FIGURE6_SCALE = 3
# Crop windows (top, left, size) on the ×3 mod-cropped images: the eye of "baby", the wing of "butterfly".
FIGURE6_CROPS: Dict[str, Tuple[int, int, int]] = {"baby": (200, 230, 120), "butterfly": (60, 100, 120)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def psnr_bar_chart(records: Sequence[Dict[str, object]], path: Path) -> Path:
    """Grouped bars: our PSNR per method for each (set, scale) of Table 2, published figures as ticks."""
    plt = _pyplot()
    measured = [r for r in records if r["psnr"] is not None and int(r["table"]) == 2]
    groups: List[Tuple[str, int]] = []
    methods: List[str] = []
    for r in measured:
        if (r["dataset"], r["scale"]) not in groups:
            groups.append((str(r["dataset"]), int(r["scale"])))
        if r["method"] not in methods:
            methods.append(str(r["method"]))
    by_key = {(r["method"], r["dataset"], r["scale"]): r for r in measured}
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 4.2))
    x = np.arange(len(groups))
    for index, method in enumerate(methods):
        offsets = x - 0.4 + width * (index + 0.5)
        ours = [by_key.get((method, d, s)) for d, s in groups]
        heights = [r["psnr"] if r else np.nan for r in ours]
        axes.bar(offsets, heights, width, label=method)
        papers = [r["published_psnr"] if r and r["published_psnr"] is not None else np.nan for r in ours]
        axes.scatter(offsets, papers, marker="_", s=120, color="black", zorder=3,
                     label="published" if index == 0 else None)
    values = [r["psnr"] for r in measured]
    if values:
        axes.set_ylim(min(values) - 2.0, max(values) + 1.0)
    axes.set_xticks(x)
    axes.set_xticklabels([f"{d} ×{s}" for d, s in groups])
    axes.set_ylabel("PSNR (dB, Y)")
    axes.set_title("Ours (bars) and the paper's figures (black ticks)")
    axes.legend(fontsize=8, ncol=min(len(methods) + 1, 5))
    axes.grid(axis="y", alpha=0.3)
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def _colour(y: np.ndarray, hr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 RGB from a uint8 Y and the bicubic down/up Cb/Cr of ``hr`` (grey stays grey)."""
    cropped = modcrop(hr, scale)
    if cropped.ndim == 2:
        return np.repeat(y[..., None], 3, axis=2)
    ycbcr = rgb2ycbcr(im2double(cropped))
    chroma = imresize(imresize(ycbcr[..., 1:], 1.0 / scale), float(scale))
    planes = np.concatenate([im2double(y)[..., None], chroma], axis=2)
    rgb = ycbcr2rgb(np.clip(planes, 0.0, 1.0))
    return im2uint8(rgb)


def figure6(out_dir: Path, set5_dir: Path, path: Path, methods: Sequence[str] = FIGURE6_METHODS,
            psnr: Optional[Dict[Tuple[str, str], float]] = None) -> Optional[Path]:
    """The qualitative comparison from the SR images under ``out_dir``; None when no method's images exist.
    ``psnr[(method, image)]``, when given, labels each panel with that image's PSNR at ×3."""
    plt = _pyplot()
    scale = FIGURE6_SCALE
    def sr_path(method: str, name: str) -> Path:
        return image_folder(out_dir, method, "Set5", scale) / f"{name}.png"

    available = [m for m in methods if all(sr_path(m, n).is_file() for n in FIGURE6_IMAGES)]
    if not available:
        return None
    columns = ["Ground truth"] + available
    figure, axes = plt.subplots(len(FIGURE6_IMAGES), len(columns),
                                figsize=(2.6 * len(columns), 2.8 * len(FIGURE6_IMAGES)), squeeze=False)
    for row, name in enumerate(FIGURE6_IMAGES):
        hr = read_image(Path(set5_dir) / f"{name}.png")
        truth = modcrop(hr, scale)
        truth = truth if truth.ndim == 3 else np.repeat(truth[..., None], 3, axis=2)
        panels = [truth] + [_colour(read_image(sr_path(m, name)), hr, scale) for m in available]
        top, left, size = FIGURE6_CROPS[name]
        for column, (title, panel) in enumerate(zip(columns, panels)):
            axis = axes[row][column]
            axis.imshow(panel[top:top + size, left:left + size], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            value = (psnr or {}).get((title, name))
            label = f"{title} ({value:.2f} dB)" if value is not None else title
            if row == 0 or value is not None:
                axis.set_title(label, fontsize=9)
        axes[row][0].set_ylabel(f"{name} ×{scale}", fontsize=10)
    figure.suptitle("Set5 ×3 crops (cf. the paper's Figure 6)", fontsize=11)
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)
