"""Writing evaluation results: a Markdown table (ours, published, difference), CSV and JSON.

The JSON summary is a list of ``{dataset, scale, method, psnr, ssim, published_psnr, published_ssim}``
records, the same for every method, so scripts and later tables can combine runs. Per-image figures go
to ``<method>_per_image.csv``/``.json``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from glrl.eval.results import ImageResult, Summary
from glrl.fsutil import atomic_write_text

SUMMARY_FIELDS = ["dataset", "scale", "method", "psnr", "ssim", "published_psnr", "published_ssim"]


def format_delta(ours: Optional[float], theirs: Optional[float], digits: int) -> str:
    """Ours minus published as the printed figures differ, to ``digits`` decimals ("" when either is
    missing; "0.00…" without a sign when they print the same)."""
    if ours is None or theirs is None:
        return ""
    difference = round(round(ours, digits) - theirs, digits)
    return f"{difference:+.{digits}f}" if difference else f"{0:.{digits}f}"


def format_fixed(value: Optional[float], digits: int) -> str:
    """``value`` to ``digits`` decimals, or a dash when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(summaries: Sequence[Summary]) -> str:
    """The results as a Markdown table (PSNR in dB to 2 decimals, SSIM to 4, as the paper prints them;
    Δ is the difference of the printed figures)."""
    lines = [
        "| Method | Dataset | Scale | PSNR | SSIM | Published PSNR | Published SSIM | Δ PSNR | Δ SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.method} | {s.dataset} | ×{s.scale} | {s.psnr:.2f} | {s.ssim:.4f} | "
            f"{format_fixed(s.published_psnr, 2)} | {format_fixed(s.published_ssim, 4)} | "
            f"{format_delta(s.psnr, s.published_psnr, 2)} | {format_delta(s.ssim, s.published_ssim, 4)} |"
        )
    return "\n".join(lines) + "\n"


def _csv_text(rows: List[Dict[str, object]], fields: List[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_reports(
    out_dir: Path, method: str, summaries: Sequence[Summary], per_image: Sequence[ImageResult]
) -> List[Path]:
    """Write ``<method>.md``, ``.csv``, ``.json`` and the per-image CSV/JSON; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [s.record() for s in summaries]
    image_rows = [asdict(r) for r in per_image]
    image_fields = ["dataset", "scale", "method", "image", "psnr", "ssim"]
    csv_rows = [
        dict(record, delta_psnr=format_delta(s.psnr, s.published_psnr, 4),
             delta_ssim=format_delta(s.ssim, s.published_ssim, 6))
        for record, s in zip(records, summaries)
    ]
    outputs = {
        f"{method}.md": f"# {method}: PSNR (dB) / SSIM on the Y channel\n\n" + markdown_table(summaries),
        f"{method}.csv": _csv_text(csv_rows, SUMMARY_FIELDS + ["delta_psnr", "delta_ssim"]),
        f"{method}.json": json.dumps(records, indent=2) + "\n",
        f"{method}_per_image.csv": _csv_text(image_rows, image_fields),
        f"{method}_per_image.json": json.dumps(image_rows, indent=2) + "\n",
    }
    written = []
    for name, text in outputs.items():
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
