"""Checking a data root against the carried checksums: every missing or corrupt file is named.

Evaluation and data preparation call :func:`require_datasets` first, so no figure set beside a published
one is ever computed from images that differ from the published ones (a folder of the user's own images,
which ``glrl eval`` also takes, has no published figures and no checksums). ``glrl data verify`` also
accepts a set held as a luma pack (:mod:`glrl.data_prep.luma_pack`, what a patch-set build reads where the
folder is missing): there the recorded checksum of every file must be the published one and every image's
pixels must read back intact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Union

from glrl.data_prep import luma_pack
from glrl.datasets.registry import DATASETS, Dataset, ImageFolder, get_dataset
from glrl.errors import DataError
from glrl.fsutil import sha256_file


@dataclass
class Verification:
    """The result of checking one dataset: files that are absent and files whose checksum differs (for a
    set held as a luma pack, ``pack``: whose recorded checksum differs or whose pixels fail to read)."""

    dataset: Dataset
    root: Path
    expected: int = 0
    missing: List[str] = field(default_factory=list)
    corrupt: List[str] = field(default_factory=list)
    pack: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    def summary(self) -> str:
        if self.ok:
            packed = f" in the luma pack {self.pack}: recorded checksums match, pixels intact" if self.pack else ""
            return f"{self.dataset.name}: OK ({self.expected} files{packed})"
        where = f"in the luma pack {self.pack}" if self.pack else f"under {self.root / self.dataset.folder}"
        return (f"{self.dataset.name}: {len(self.missing)} missing, {len(self.corrupt)} corrupt "
                f"of {self.expected} files {where}")

    @property
    def corrupt_reason(self) -> str:
        return "recorded checksum differs or pixels fail to read" if self.pack else "checksum differs"


def verify_dataset(dataset: Dataset, root: Path, accept_pack: bool = False) -> Verification:
    """Check every file of ``dataset`` under ``root`` (existence, then SHA-256); with ``accept_pack``, a set
    whose folder is missing is checked in its luma pack where there is one."""
    folder = root / dataset.folder
    pack = luma_pack.pack_path(folder.parent, folder.name)
    if accept_pack and not folder.is_dir() and pack.is_file():
        return _verify_pack(dataset, root, pack)
    result = Verification(dataset, root)
    for relative, digest in dataset.checksums().items():
        result.expected += 1
        path = root / relative
        if not path.is_file():
            result.missing.append(relative)
        elif sha256_file(path) != digest:
            result.corrupt.append(relative)
    return result


def _verify_pack(dataset: Dataset, root: Path, pack: Path) -> Verification:
    result = Verification(dataset, root, pack=pack)
    try:
        recorded = {name: sha256 for name, sha256, _, _ in luma_pack.list_pack(pack)}
        damaged = set(luma_pack.unreadable_images(pack))
    except (DataError, OSError):  # not a pack at all: nothing in it can be vouched for
        result.corrupt = dataset.files()
        result.expected = len(result.corrupt)
        return result
    for relative, digest in dataset.checksums().items():
        result.expected += 1
        name = PurePosixPath(relative).name
        if name not in recorded:
            result.missing.append(relative)
        elif recorded[name] != digest or name in damaged:
            result.corrupt.append(relative)
    return result


def require_datasets(names: Sequence[str], root: Path) -> List[Union[Dataset, ImageFolder]]:
    """The named datasets, after checking they are complete and intact under ``root`` (else DataError). A
    name that is no known set but a folder's path stands for the images in that folder."""
    chosen = [_dataset_or_folder(name) for name in names]
    repeated = sorted({d.name for d in chosen if sum(other.name == d.name for other in chosen) > 1})
    if repeated:
        raise DataError(f"two sets to evaluate are called {', '.join(repeated)}",
                        hint="name each set once (results are filed by the set's name)")
    datasets = [d for d in chosen if isinstance(d, Dataset)]
    if datasets:
        _require_verified(datasets, root)
    return chosen


def _dataset_or_folder(name: str) -> Union[Dataset, ImageFolder]:
    from glrl.imageio import IMAGE_SUFFIXES, list_images

    known_names = {known.lower() for known in DATASETS}
    image_sets = [known.name for known in DATASETS.values() if known.role != "reference"]
    if name.strip().lower() in known_names:
        dataset = get_dataset(name)
        if dataset.role == "reference":
            raise DataError(f"{dataset.name} holds reference outputs ({dataset.description}), not HR images "
                            "to evaluate on", hint=f"evaluate on {', '.join(image_sets)}, or a folder of HR images")
        return dataset
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise DataError(f"unknown dataset {name!r}, and no folder of that name",
                        hint=f"known datasets: {', '.join(image_sets)}; or give the path of a folder of HR images")
    title = folder.resolve().name
    if title.lower() in known_names:
        raise DataError(f"the folder {folder} has the name of the standard {title}, whose published figures its "
                        "results would be set beside",
                        hint=f"evaluate the standard set as --datasets {title}, or rename the folder")
    if not list_images(folder):
        raise DataError(f"no images in {folder}", hint=f"images end with {', '.join(IMAGE_SUFFIXES)}")
    return ImageFolder(title, folder)


def _require_verified(datasets: Sequence[Dataset], root: Path) -> None:
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
