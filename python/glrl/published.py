"""The figures the paper publishes (Table 2: PSNR/SSIM of five methods on Set5/Set14/BSD100 at ×2/×3/×4;
Table 1: the 2-LRB and 3-LRB variants on Set5 ×3), carried as data in ``glrl/data/table2_published.csv``.

Every evaluation report puts our figure beside the published one, so a reader sees the difference at once.
The paper's text extraction garbles Table 2; the CSV's ``confidence`` column says which cells are
unambiguous ("clear") and which were placed by cross-checking other papers ("parsed").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional

from glrl import settings

PUBLISHED_CSV = settings.PACKAGE_DATA / "table2_published.csv"


@dataclass(frozen=True)
class PublishedFigure:
    table: int
    dataset: str
    scale: int
    method: str
    psnr: Optional[float]  # None: the paper gives no figure for this cell
    ssim: Optional[float]
    confidence: str


def _number(text: str) -> Optional[float]:
    return float(text) if text.strip() else None


@lru_cache(maxsize=1)
def published_figures() -> List[PublishedFigure]:
    """Every row of the carried table, in file order."""
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return [
            PublishedFigure(
                int(row["table"]), row["dataset"], int(row["scale"]), row["method"],
                _number(row["psnr"]), _number(row["ssim"]), row["confidence"],
            )
            for row in rows
        ]


def published(dataset: str, scale: int, method: str) -> Optional[PublishedFigure]:
    """The published figure for a cell (names matched case-insensitively; Table 2 before Table 1)."""
    matches = [
        figure
        for figure in published_figures()
        if figure.dataset.lower() == dataset.lower()
        and figure.scale == scale
        and figure.method.lower() == method.lower()
    ]
    matches.sort(key=lambda figure: -figure.table)
    return matches[0] if matches else None
