"""Checking a data root against the carried checksums: every missing or corrupt file is named.

Evaluation and data preparation call :func:`require_datasets` first, so no figure is ever computed from
images that differ from the published ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

from glrl.datasets.registry import Dataset, get_dataset
from glrl.errors import DataError
from glrl.fsutil import sha256_file


@dataclass
class Verification:
    """The result of checking one dataset: files that are absent and files whose checksum differs."""

    dataset: Dataset
    root: Path
    expected: int = 0
    missing: List[str] = field(default_factory=list)
    corrupt: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    def summary(self) -> str:
        if self.ok:
            return f"{self.dataset.name}: OK ({self.expected} files)"
        return (
            f"{self.dataset.name}: {len(self.missing)} missing, {len(self.corrupt)} corrupt "
            f"of {self.expected} files under {self.root / self.dataset.folder}"
        )


def verify_dataset(dataset: Dataset, root: Path) -> Verification:
    """Check every file of ``dataset`` under ``root`` (existence, then SHA-256)."""
    result = Verification(dataset, root)
    for relative, digest in dataset.checksums().items():
        result.expected += 1
        path = root / relative
        if not path.is_file():
            result.missing.append(relative)
        elif sha256_file(path) != digest:
            result.corrupt.append(relative)
    return result


def require_datasets(names: Sequence[str], root: Path) -> List[Dataset]:
    """The named datasets, after checking they are complete and intact under ``root`` (else DataError)."""
    datasets = [get_dataset(name) for name in names]
    if not root.is_dir():
        raise DataError(
            f"the data root {root} does not exist",
            hint="set GLRL_DATA or pass --data-root to the folder holding test/ and train/, "
            "or fetch the datasets with `glrl data download`",
        )
    problems = [verify_dataset(dataset, root) for dataset in datasets]
    bad = [result for result in problems if not result.ok]
    if bad:
        first = bad[0].missing[:3] + bad[0].corrupt[:3]
        raise DataError(
            "; ".join(result.summary() for result in bad) + f" (e.g. {', '.join(first)})",
            hint=f"run `glrl data verify --data-root {root}` for the full list, "
            "and `glrl data download` to fetch the datasets",
        )
    return datasets
