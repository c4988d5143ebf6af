"""Luma packs: an image set's uint8 MATLAB luminance in one compressed HDF5 file, beside each source file's
name and SHA-256.

Why: the default patch sets are cut from the luminance alone (no down-scaled copies), so a pack holds all a
build needs at a third of the images' size (the 291 training images: 68 MB as files, 27 MB packed). That
makes the training data fit where the images do not, e.g. the working tree a GPU machine is sent. A set is
packed as ``<data root>/<train|test>/<name>.luma.h5`` and the build reads it where the image folder is
missing; since the pack keeps the source files' names and checksums, the patch set built from it is the one
built from the images, manifest and content hash included.

Layout: root attributes ``format`` and ``set``, ``names`` (the files in listing order); one dataset per file,
named as the file, uint8 H x W, gzip-compressed with HDF5's Fletcher-32 checksum (a damaged pack fails to
read instead of yielding other pixels), attribute ``source_sha256``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import numpy as np

from glrl.errors import DataError
from glrl.fsutil import atomic_path

SUFFIX = ".luma.h5"
FORMAT = "glrl-luma-pack-1"


def pack_path(parent: Path, name: str) -> Path:
    """Where the pack of set ``name`` lies in the data-root folder ``parent`` (``train`` or ``test``)."""
    return parent / f"{name}{SUFFIX}"


def is_packed(path: Path) -> bool:
    """Whether ``path`` names an image inside a pack (``<pack file>/<image name>``)."""
    return path.parent.name.endswith(SUFFIX) and path.parent.is_file()


def write_pack(target: Path, set_name: str, images: List[Tuple[str, str, np.ndarray]]) -> None:
    """Write ``images`` (file name, SHA-256 of the file, its uint8 luminance) as the pack ``target``,
    atomically: a failed write leaves no pack and keeps an older one."""
    import h5py

    try:
        with atomic_path(target) as partial, h5py.File(partial, "w") as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["set"] = set_name
            handle.attrs["names"] = json.dumps([name for name, _, _ in images])
            for name, sha256, luma in images:
                if luma.dtype != np.uint8 or luma.ndim != 2:
                    raise DataError(f"{name}: a pack holds uint8 H x W luminance, not {luma.dtype} {luma.shape}")
                dataset = handle.create_dataset(name, data=luma, chunks=luma.shape, compression="gzip",
                                                compression_opts=9, fletcher32=True)
                dataset.attrs["source_sha256"] = sha256
    except OSError as exc:
        raise DataError(f"cannot write the luma pack {target}: {exc}",
                        hint="choose a writable --out with room for it; an older pack there is kept") from exc


def list_pack(pack: Path) -> List[Tuple[str, str, int, int]]:
    """``(file name, source SHA-256, height, width)`` of every image of ``pack``, in listing order."""
    import h5py

    try:
        with h5py.File(pack, "r") as handle:
            if handle.attrs.get("format") != FORMAT:
                raise DataError(f"{pack} is not a glrl luma pack (format {handle.attrs.get('format')!r})",
                                hint="make it with `glrl data pack`")
            names = json.loads(handle.attrs["names"])
            return [(name, str(handle[name].attrs["source_sha256"]), *map(int, handle[name].shape))
                    for name in names]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read the luma pack {pack}: {exc}",
                        hint="make it again with `glrl data pack` from the image folder") from exc


def unreadable_images(pack: Path) -> List[str]:
    """The images of ``pack`` whose pixels fail to read back (HDF5's Fletcher-32 check, or damage elsewhere
    in the file), in listing order: reading every image is the only way a pack's data can be checked."""
    import h5py

    damaged = []
    with h5py.File(pack, "r") as handle:
        for name in json.loads(handle.attrs["names"]):
            try:
                handle[name][...]
            except (OSError, KeyError):
                damaged.append(name)
    return damaged


def read_packed(path: Path) -> np.ndarray:
    """The uint8 luminance of the image ``path`` (``<pack file>/<image name>``)."""
    import h5py

    try:
        with h5py.File(path.parent, "r") as handle:
            return np.asarray(handle[path.name][...])
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read {path.name} from the luma pack {path.parent}: {exc}",
                        hint="make the pack again with `glrl data pack` from the image folder") from exc
