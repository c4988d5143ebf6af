"""The datasets the project uses, where they live under the data root, and which files each must hold.

The file lists and SHA-256 checksums come from ``glrl/data/SHA256SUMS``, the project's own copy of the
checksums of the published images (one ``<sha256>  ./<folder>/<file>`` line per file). A dataset is
"present" only when every listed file is there with its checksum; nothing else counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

from glrl import settings
from glrl.errors import DataError

CHECKSUMS_FILE = settings.PACKAGE_DATA / "SHA256SUMS"


@dataclass(frozen=True)
class Dataset:
    """One image set: its name, its folder under the data root, and what it is for."""

    name: str
    folder: str  # relative to the data root, POSIX separators
    role: str  # "test", "train" or "reference"
    description: str

    def files(self) -> List[str]:
        """The dataset's files, relative to the data root, sorted."""
        prefix = self.folder + "/"
        return sorted(path for path in checksums() if path.startswith(prefix))

    def checksums(self) -> Dict[str, str]:
        """``{relative path: sha256}`` for this dataset's files."""
        table = checksums()
        return {path: table[path] for path in self.files()}

    def image_paths(self, root: Path) -> List[Path]:
        """Absolute paths of the dataset's images under ``root`` (listed, not checked)."""
        return [root / path for path in self.files()]


@dataclass(frozen=True)
class ImageFolder:
    """A folder of HR images named by its path (``glrl eval --datasets ~/sets/Urban100``): evaluated with the
    same protocol as the benchmark sets, under the folder's name, with no checksums to hold it to and no
    published figures beside it."""

    name: str
    path: Path

    def image_paths(self, root: Path) -> List[Path]:
        """The folder's images, sorted by name (``root`` is the data root, which a folder does not need)."""
        from glrl.imageio import list_images

        return list_images(self.path)


DATASETS: Dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset("Set5", "test/Set5", "test", "Set5 (Bevilacqua et al. 2012), 5 images"),
        Dataset("Set14", "test/Set14", "test", "Set14 (Zeyde et al. 2010), 14 images"),
        Dataset("BSD100", "test/BSD100", "test", "BSD100 test images, 100 images (x3 mod-crop of BSD300 test)"),
        Dataset("T91", "train/T91", "train", "Yang et al. 91-image training set"),
        Dataset("BSD200", "train/BSD200", "train", "BSD300 train+val, 200 images (with T91: the '291' set)"),
        Dataset("matlab_lr", "matlab_lr", "reference", "MATLAB imresize outputs of Set5/Set14, 57 images"),
    )
}
# What `glrl data verify` and `glrl data download` handle when no dataset is named.
STANDARD_DATASETS = ("Set5", "Set14", "BSD100", "T91", "BSD200")
TEST_DATASETS = ("Set5", "Set14", "BSD100")


@lru_cache(maxsize=1)
def checksums() -> Dict[str, str]:
    """``{relative path: sha256}`` for every file of every dataset, from the carried SHA256SUMS."""
    table: Dict[str, str] = {}
    for number, line in enumerate(CHECKSUMS_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, path = line.partition("  ")
        if len(digest) != 64 or not path:
            raise DataError(f"{CHECKSUMS_FILE}:{number}: malformed checksum line", hint="reinstall glrl")
        table[path[2:] if path.startswith("./") else path] = digest
    return table


def datasets_named(option: Optional[str]) -> List[Dataset]:
    """The datasets a ``--dataset`` option names (comma-separated); the standard ones when it is not given.
    An option that names none (``--dataset ,``) is an error, not a silent "nothing"."""
    if option is None:
        return [DATASETS[name] for name in STANDARD_DATASETS]
    names = [name.strip() for name in option.split(",") if name.strip()]
    if not names:
        raise DataError(f"--dataset {option!r} names no dataset",
                        hint=f"name some of {', '.join(DATASETS)}, or leave --dataset out for "
                             f"{', '.join(STANDARD_DATASETS)}")
    return [get_dataset(name) for name in names]


def get_dataset(name: str) -> Dataset:
    """The dataset called ``name`` (case-insensitive)."""
    for dataset in DATASETS.values():
        if dataset.name.lower() == name.strip().lower():
            return dataset
    raise DataError(f"unknown dataset {name!r}", hint=f"known datasets: {', '.join(DATASETS)}")
