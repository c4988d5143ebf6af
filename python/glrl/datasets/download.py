"""Fetching the datasets from their public origins: streamed, extracted safely, verified, then installed.

Origins (see ``shared/datasets/README.md``): Set5, Set14 and BSD100 from the SelfExSR project's ``data/``
folder (Set5/Set14 as its ``image_SRF_2`` HR images, BSD100 as its ``image_SRF_3`` HR images, renamed to
the usual names); T91 and BSD200 from the dcscn-super-resolution repository's ``data/yang91`` and
``data/bsd200``. Both are fetched as GitHub source archives.

Safety and atomicity:

* the archive is streamed to a temporary file under ``<data root>/.glrl-download`` (progress bar);
* an archive with any member that is absolute or climbs out with ``..``, or whose needed member is a link
  or larger than ``MAX_MEMBER_BYTES``, is refused as a whole;
* only the members we need are read, and they are written to paths *we* compute, never to the member's own;
* every extracted file is checked against the carried SHA-256 before anything is installed; a dataset is
  installed (``os.replace`` into place) only when all of its files verify, so a failed or interrupted
  download leaves nothing that ``glrl data verify`` would accept; the temporary folder is always removed.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple

from glrl.datasets.registry import Dataset, get_dataset
from glrl.datasets.verify import verify_dataset
from glrl.errors import DataError
from glrl.fsutil import sha256_file

SELFEXSR_ARCHIVE = "https://github.com/jbhuang0604/SelfExSR/archive/refs/heads/master.zip"
DCSCN_ARCHIVE = "https://github.com/jiny2001/dcscn-super-resolution/archive/refs/heads/master.zip"
MAX_MEMBER_BYTES = 64 << 20
DOWNLOAD_DIR = ".glrl-download"
CHUNK = 1 << 16


@dataclass(frozen=True)
class ArchiveSource:
    """Where a dataset's files are: an archive URL (or local path) and, per file, its member path.

    Member paths are relative to the archive's top folder (GitHub archives wrap everything in
    ``<repo>-<ref>/``; that first component is ignored when matching).
    """

    url: str
    members: Dict[str, str]  # member path (below the top folder) -> file path under the data root


def _numbered(dataset: Dataset, pattern: str) -> Dict[str, str]:
    """Members named by position in the sorted file list (``img_001`` is the first name, and so on)."""
    return {pattern.format(i): relative for i, relative in enumerate(dataset.files(), 1)}


def _same_names(dataset: Dataset, folder: str) -> Dict[str, str]:
    return {f"{folder}/{PurePosixPath(relative).name}": relative for relative in dataset.files()}


def default_source(name: str) -> ArchiveSource:
    """The public origin of dataset ``name``."""
    dataset = get_dataset(name)
    layouts = {
        "Set5": (SELFEXSR_ARCHIVE, lambda d: _numbered(d, "data/Set5/image_SRF_2/img_{:03d}_SRF_2_HR.png")),
        "Set14": (SELFEXSR_ARCHIVE, lambda d: _numbered(d, "data/Set14/image_SRF_2/img_{:03d}_SRF_2_HR.png")),
        "BSD100": (SELFEXSR_ARCHIVE, lambda d: _numbered(d, "data/BSD100/image_SRF_3/img_{:03d}_SRF_3_HR.png")),
        "T91": (DCSCN_ARCHIVE, lambda d: _same_names(d, "data/yang91")),
        "BSD200": (DCSCN_ARCHIVE, lambda d: _same_names(d, "data/bsd200")),
    }
    if dataset.name not in layouts:
        raise DataError(
            f"{dataset.name} has no public download",
            hint="the MATLAB reference images come with the project's shared datasets only",
        )
    url, members = layouts[dataset.name]
    return ArchiveSource(url, members(dataset))


def _fetch(url: str, target: Path, progress: bool) -> None:
    """Stream ``url`` (or copy a local path) to ``target`` with a progress bar."""
    from tqdm import tqdm

    local = Path(url[len("file://"):] if url.startswith("file://") else url)
    if "://" not in url or url.startswith("file://"):
        if not local.is_file():
            raise DataError(f"archive not found: {local}")
        shutil.copyfile(local, target)
        return
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise DataError(f"download of {url} stopped after {out.tell()} of {total} bytes",
                                hint="try again; the connection was cut")
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"cannot download {url}: {exc}",
            hint="check the network, or download the archive yourself and pass it with --url PATH",
        ) from None


def _check_member_name(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise DataError(
            f"archive {archive.name} contains an unsafe member {name!r} (its path escapes the target folder)",
            hint="refusing the whole archive; get it from the dataset's official origin",
        )


def _below_top_folder(name: str) -> str:
    parts = PurePosixPath(name).parts
    return str(PurePosixPath(*parts[1:])) if len(parts) > 1 else ""


def _members(archive: Path, origin: str) -> Iterator[Tuple[str, int, bool, object]]:
    """``(name, size, is_regular_file, handle)`` of every member of a zip or tar archive fetched from
    ``origin``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                yield info.filename, info.file_size, not info.is_dir() and not is_link, (bundle, info)
    elif tarfile.is_tarfile(str(archive)):
        with tarfile.open(archive) as bundle:
            for info in bundle.getmembers():
                yield info.name, info.size, info.isfile(), (bundle, info)
    else:
        raise DataError(f"what {origin} holds is neither a zip nor a tar archive",
                        hint="check the URL, or give --url the path or URL of the archive itself")


def _open_member(handle) -> IO[bytes]:
    bundle, info = handle
    if isinstance(bundle, zipfile.ZipFile):
        return bundle.open(info)
    stream = bundle.extractfile(info)
    if stream is None:
        raise DataError(f"cannot read member {info.name}")
    return stream


def _extract(archive: Path, wanted: Dict[str, str], staging: Path, origin: str) -> List[str]:
    """Copy the wanted members into ``staging``; return the wanted members the archive lacks."""
    names = [name for name, _, _, _ in _members(archive, origin)]
    for name in names:  # refuse unsafe archives before reading anything from them
        _check_member_name(archive, name)
    found = set()
    for name, size, regular, handle in _members(archive, origin):
        key = _below_top_folder(name)
        if key not in wanted:
            continue
        if not regular:
            raise DataError(f"archive {archive.name}: {name} is a link or special file, not an image; refusing it")
        if size > MAX_MEMBER_BYTES:
            raise DataError(f"archive {archive.name}: {name} claims {size} bytes, too large for an image")
        target = staging / wanted[key]
        target.parent.mkdir(parents=True, exist_ok=True)
        with _open_member(handle) as source, open(target, "wb") as out:
            copied = 0
            for chunk in iter(lambda: source.read(CHUNK), b""):
                copied += len(chunk)
                if copied > MAX_MEMBER_BYTES:
                    raise DataError(f"archive {archive.name}: {name} is larger than it claims; refusing it")
                out.write(chunk)
        found.add(key)
    return sorted(set(wanted) - found)


def download_datasets(
    names: Sequence[str],
    root: Path,
    sources: Optional[Dict[str, ArchiveSource]] = None,
    force: bool = False,
    progress: bool = True,
) -> List[str]:
    """Download, verify and install the named datasets under ``root``; the names actually installed.

    ``sources`` overrides the origin per dataset name (tests, mirrors). Datasets that already verify are
    skipped unless ``force``.
    """
    datasets = [get_dataset(name) for name in names]
    pending = [d for d in datasets if force or not verify_dataset(d, root).ok]
    plan: Dict[str, List[Tuple[Dataset, ArchiveSource]]] = {}
    for dataset in pending:
        source = (sources or {}).get(dataset.name) or default_source(dataset.name)
        plan.setdefault(source.url, []).append((dataset, source))
    root.mkdir(parents=True, exist_ok=True)
    work = root / DOWNLOAD_DIR
    installed: List[str] = []
    try:
        for index, (url, entries) in enumerate(plan.items()):
            shutil.rmtree(work, ignore_errors=True)
            staging = work / "staging"
            staging.mkdir(parents=True)
            archive = work / f"archive-{index}"
            _fetch(url, archive, progress)
            wanted = {member: relative for _, source in entries for member, relative in source.members.items()}
            absent = _extract(archive, wanted, staging, url)
            problems = [f"{wanted[m]} (member {m} not in the archive)" for m in absent]
            for dataset, _ in entries:
                for relative, digest in dataset.checksums().items():
                    staged = staging / relative
                    if staged.is_file() and sha256_file(staged) != digest:
                        problems.append(f"{relative} (checksum differs from the published file)")
            if problems:
                raise DataError(
                    f"the archive from {url} does not hold the published files: " + "; ".join(problems),
                    hint="nothing was installed; the origin may have changed, try a mirror with --url",
                )
            for dataset, _ in entries:
                for relative in dataset.files():
                    target = root / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / relative, target)
                installed.append(dataset.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return installed
