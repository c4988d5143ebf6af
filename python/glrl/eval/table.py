"""The reproduction of Table 2 and Table 1 as one table: ours, published and Δ for every cell.

Rows (:class:`Cell`) are built from our measured summaries and the published figures
(:mod:`glrl.published`): every cell the paper prints appears, in the paper's order (Table 2: Set5, Set14,
BSD100 × ×2, ×3, ×4 × Bicubic, SelfEx, MFTV, SRCNN, GLRL; then Table 1: GLRL-2LRB and GLRL-3LRB on Set5 ×3),
with our figure where we measured one and a note where we did not (SelfEx and MFTV are published-only; a
method without a released model for a scale says so). Methods the paper does not report follow.

``results.json`` is a list of records ``{dataset, scale, method, psnr, ssim, published_psnr,
published_ssim}`` (the format every ``glrl eval`` report shares) plus ``table``, ``model`` and ``note``;
the Markdown table is a pure function of those records (:func:`markdown_from_records`), so the copy in the
README can be checked against the committed JSON.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from glrl.errors import GlrlError
from glrl.eval.report import format_delta, format_fixed
from glrl.eval.results import Summary
from glrl.published import published, published_figures

PUBLISHED_ONLY = ("SelfEx", "MFTV")
# Table 1's "GLRL-3LRB" is the GLRL net (3 LRBs); its figures are GLRL's on Set5 ×3.
TABLE1_ALIASES = {"GLRL-3LRB": "GLRL"}
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
# The figures --publish copies beside the table, as (alt text, file name).
PUBLISHED_FIGURES = (("PSNR per method and set", "psnr.png"), ("Set5 x3 crops (cf. Figure 6)", "figure6.png"))
RECORD_FIELDS = ["table", "dataset", "scale", "method", "model", "psnr", "ssim", "published_psnr",
                 "published_ssim", "note"]


@dataclass(frozen=True)
class Cell:
    """One row of the combined table (``psnr``/``ssim`` None: not measured, ``note`` says why)."""

    table: Optional[int]  # None: a set the paper has no figures for
    dataset: str
    scale: int
    method: str
    psnr: Optional[float]
    ssim: Optional[float]
    published_psnr: Optional[float]
    published_ssim: Optional[float]
    model: Optional[str] = None
    note: str = ""

    def record(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Measured:
    """Our summary of one (method, dataset, scale) and the released model that produced it."""

    summary: Summary
    model: Optional[str] = None


def build_cells(
    measured: Sequence[Measured],
    notes: Dict[Tuple[str, int], str],
    datasets: Sequence[str],
    scales: Sequence[int],
    methods: Optional[Sequence[str]] = None,
) -> List[Cell]:
    """The published cells of ``datasets`` × ``scales`` (of ``methods`` only, when given) with ours beside
    them, then our cells the paper has no figure for.

    ``notes[(method, scale)]`` explains a method's missing scale (e.g. no released model for ×2); at a set
    and scale the paper has no cell for, the note gets a row of its own.
    """
    wanted_sets = {d.lower() for d in datasets}
    wanted_methods = None if methods is None else {m.lower() for m in methods}
    ours: Dict[Tuple[str, str, int], Measured] = {
        (m.summary.method.lower(), m.summary.dataset.lower(), m.summary.scale): m for m in measured
    }
    why_missing = {(method.lower(), scale): note for (method, scale), note in notes.items()}
    cells: List[Cell] = []
    covered = set()  # (method, dataset, scale) of the rows made so far, in lower case
    figures = published_figures()
    paper_cells = {(figure.dataset.lower(), figure.scale) for figure in figures}
    for figure in figures:
        method = TABLE1_ALIASES.get(figure.method, figure.method) if figure.table == 1 else figure.method
        if figure.dataset.lower() not in wanted_sets or figure.scale not in scales:
            continue
        if wanted_methods is not None and method.lower() not in wanted_methods:
            continue
        key = (method.lower(), figure.dataset.lower(), figure.scale)
        covered.add(key)
        found = ours.get(key)
        if found is not None:
            cells.append(Cell(figure.table, figure.dataset, figure.scale, figure.method, found.summary.psnr,
                              found.summary.ssim, figure.psnr, figure.ssim, found.model))
        else:
            note = "published only" if figure.method in PUBLISHED_ONLY else why_missing.get(
                (method.lower(), figure.scale), "not measured")
            cells.append(Cell(figure.table, figure.dataset, figure.scale, figure.method, None, None,
                              figure.psnr, figure.ssim, None, note))
    for key, found in ours.items():
        if key not in covered:
            covered.add(key)
            s = found.summary
            figure = published(s.dataset, s.scale, s.method)
            # None: a set or a scale the paper lacks
            table_number = 2 if (s.dataset.lower(), s.scale) in paper_cells else None
            cells.append(Cell(table_number, s.dataset, s.scale, s.method, s.psnr, s.ssim,
                              figure.psnr if figure else None, figure.ssim if figure else None, found.model))
    for (method, scale), note in notes.items():  # a missing scale the paper has no cell for (x8, Urban100)
        for dataset in datasets:
            if (scale in scales and (dataset.lower(), scale) not in paper_cells
                    and (method.lower(), dataset.lower(), scale) not in covered):
                cells.append(Cell(None, dataset, scale, method, None, None, None, None, None, note))
    return cells


def markdown_from_records(records: Sequence[Dict[str, object]]) -> str:
    """The Markdown table of ``results.json`` records (PSNR to 2 decimals, SSIM to 4, as the paper)."""
    lines = [
        "| Table | Set | Scale | Method | PSNR | paper | Δ | SSIM | paper | Δ | Note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        psnr, ssim = r["psnr"], r["ssim"]
        paper_psnr, paper_ssim = r["published_psnr"], r["published_ssim"]
        note = str(r.get("note") or "")
        if r.get("model"):
            note = f"model {r['model']}" + (f"; {note}" if note else "")
        lines.append(
            f"| {r['table'] or '–'} | {r['dataset']} | ×{r['scale']} | {r['method']} | "
            f"{format_fixed(psnr, 2)} | {format_fixed(paper_psnr, 2)} | {format_delta(psnr, paper_psnr, 2)} | "
            f"{format_fixed(ssim, 4)} | {format_fixed(paper_ssim, 4)} | {format_delta(ssim, paper_ssim, 4)} | {note} |"
        )
    return "\n".join(lines) + "\n"


def records_csv(records: Sequence[Dict[str, object]]) -> str:
    """The records as CSV, with the differences (4 and 6 decimals) as extra columns."""
    buffer = io.StringIO()
    fields = RECORD_FIELDS + ["delta_psnr", "delta_ssim"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {key: ("" if r.get(key) is None else r.get(key)) for key in RECORD_FIELDS}
        row["delta_psnr"] = format_delta(r["psnr"], r["published_psnr"], 4)  # type: ignore[arg-type]
        row["delta_ssim"] = format_delta(r["ssim"], r["published_ssim"], 6)  # type: ignore[arg-type]
        writer.writerow(row)
    return buffer.getvalue()


def records_json(cells: Sequence[Cell]) -> str:
    return json.dumps([cell.record() for cell in cells], indent=1) + "\n"


def load_records(path: Path) -> List[Dict[str, object]]:
    """The records of a ``results.json`` written by ``glrl eval --all``."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GlrlError(f"cannot read results {path}: {exc}", hint="run `make eval` to write it") from exc
    if not isinstance(records, list) or any(not isinstance(r, dict) or "psnr" not in r for r in records):
        raise GlrlError(f"{path} is not a list of result records", hint="run `make eval` to rewrite it")
    return records


def _block_span(readme_text: str, where: object) -> Tuple[int, int]:
    """Where the text between the README's results markers begins and ends (the line after the first)."""
    start, end = readme_text.find(README_BEGIN), readme_text.find(README_END)
    if start < 0 or end < start:
        raise GlrlError(f"{where} has no {README_BEGIN} ... {README_END} block",
                        hint="add the two marker lines where the results table belongs")
    return min(start + len(README_BEGIN) + 1, end), end


def readme_block(path: Path) -> str:
    """The text between the README's results markers (without the markers)."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = _block_span(text, path)
    return text[start:end]


def replace_readme_block(readme_text: str, block: str) -> str:
    """``readme_text`` with the text between the markers replaced by ``block``."""
    start, end = _block_span(readme_text, "the README")
    return readme_text[:start] + block + readme_text[end:]


def readme_block_text(records: Sequence[Dict[str, object]], figures: Sequence[Tuple[str, str]]) -> str:
    """What ``--publish`` puts between the README's markers: the table, then the figures
    (``(alt text, path relative to the README)``), a function of the committed records only."""
    images = "".join(f"\n![{alt}]({path})\n" for alt, path in figures)
    regenerate = ("\nRegenerate with `make eval` (writes `work/eval/`), then "
                  "`glrl eval --all --publish docs/results` to update this block and `docs/results/`.\n")
    return markdown_from_records(records) + images + regenerate
