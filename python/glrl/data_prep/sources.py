"""The images a patch set is cut from: where they are under the data root (an image folder, or its luma
pack: :mod:`glrl.data_prep.luma_pack`), their checksums and sizes, and their luminance as the MATLAB scripts
compute it.

Why checksums: the manifest records the SHA-256 of every source image, so a rebuild is skipped only when the
very same images (not merely the same names) would be read again.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import numpy as np

from glrl.data_prep import luma_pack
from glrl.data_prep.patches import dihedral
from glrl.errors import DataError
from glrl.fsutil import sha256_file
from glrl.imageio import IMAGE_SUFFIXES, list_images
from glrl.matlab_compat import imresize, rgb2ycbcr

SET_PARENTS = ("train", "test")  # shared/datasets layout: train/T91, train/BSD200, test/Set5, ...


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One image file of a named set, with what the build needs to know before decoding it again."""

    set_name: str
    path: Path
    sha256: str
    height: int
    width: int

    def record(self) -> dict:
        return {"set": self.set_name, "name": self.path.name, "sha256": self.sha256,
                "shape": [self.height, self.width]}


def set_location(root: Path, name: str) -> Path:
    """The folder of the image set ``name`` under the data root ``root`` or, where there is none, its luma
    pack."""
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist",
            hint="pass --data-root or set GLRL_DATA to the folder holding train/T91, train/BSD200, test/Set5",
        )
    for parent in SET_PARENTS:
        folder = root / parent / name
        if folder.is_dir():
            return folder
    for parent in SET_PARENTS:
        pack = luma_pack.pack_path(root / parent, name)
        if pack.is_file():
            return pack
    raise DataError(
        f"image set {name!r} not found under {root} (looked for "
        f"{', '.join(parent + '/' + name for parent in SET_PARENTS)} and their {luma_pack.SUFFIX} packs)",
        hint="check --data-root / GLRL_DATA, or `glrl data verify` / `glrl data download`",
    )


def read_source(path: Path) -> np.ndarray:
    """Decode an image file into uint8 H x W or H x W x 3 (an image of a luma pack: its luminance), with a
    clear error when that is impossible."""
    from glrl.imageio import read_image

    return luma_pack.read_packed(path) if luma_pack.is_packed(path) else read_image(path)


def check_published(name: str, folder: Path, found: Dict[str, str]) -> None:
    """For a set of the dataset registry (T91, BSD200, Set5, ...): the images ``found`` ({file name: SHA-256})
    must be exactly its published files, so that a partial or altered copy cannot silently change the
    training set. Sets the registry does not know are taken as they are."""
    from glrl.datasets import DATASETS

    dataset = next((d for d in DATASETS.values() if d.name.lower() == name.lower()), None)
    if dataset is None:
        return
    expected = {Path(relative).name: digest for relative, digest in dataset.checksums().items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(n for n in found if n in expected and found[n] != expected[n])
    if missing or extra or changed:
        counts = [f"{len(v)} {k} (e.g. {', '.join(v[:3])})" for k, v in
                  (("missing", missing), ("unexpected", extra), ("altered", changed)) if v]
        raise DataError(f"{folder} is not the published {dataset.name}: " + "; ".join(counts),
                        hint="`glrl data verify` / `glrl data download` restore it; --skip-checksums builds "
                             "from the images as they are")


def list_sources(root: Path, names: Sequence[str], check: bool = True) -> List[SourceImage]:
    """Every image of the sets ``names`` in a fixed order (sets as given, files by name), decoded once to
    learn its size (a file that cannot be decoded fails here, before any work is done); with ``check``,
    registered sets must match their published checksums."""
    sources: List[SourceImage] = []
    for name in names:
        location = set_location(root, name)
        if location.is_file():
            packed = luma_pack.list_pack(location)
            if check:
                check_published(name, location, {file_name: digest for file_name, digest, _, _ in packed})
            sources.extend(SourceImage(name, location / file_name, digest, height, width)
                           for file_name, digest, height, width in packed)
            continue
        folder = location
        files = list_images(folder)
        if not files:
            raise DataError(f"image set folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                            hint="check that the data root is complete: `glrl data verify`")
        digests = {path.name: sha256_file(path) for path in files}
        if check:
            check_published(name, folder, digests)
        for path in files:
            img = read_source(path)
            sources.append(SourceImage(name, path, digests[path.name], int(img.shape[0]), int(img.shape[1])))
    return sources


def luminance(img: np.ndarray) -> np.ndarray:
    """uint8 Y of MATLAB ``rgb2ycbcr`` for an RGB image; a single-channel image is its own luminance."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return rgb2ycbcr(img)[:, :, 0]
    raise DataError(f"expected a grey or RGB image, got shape {img.shape}")


def refuse_shrinking_packs(sources: Sequence[SourceImage], factors: Sequence[float]) -> None:
    """Down-scaled copies (``--downscales``) are shrunk from the RGB image, as MATLAB does, which a luma pack
    does not hold: such a build is refused when it is planned, before anything is cut."""
    if all(factor == 1.0 for factor in factors):
        return
    packed = next((source.path for source in sources if luma_pack.is_packed(source.path)), None)
    if packed is not None:
        raise DataError(f"{packed}: a luma pack holds no colour, so it cannot give down-scaled copies",
                        hint="build from the image folder, or without --downscales")


def augmented_luminances(path: Path, transforms: Sequence[int], factor: float) -> Iterator[np.ndarray]:
    """The luminance of each dihedral ``transforms`` of the image at ``path``, shrunk by ``factor`` (MATLAB
    bicubic on the uint8 RGB after the flip and turn, the order of the VDSR-lineage MATLAB scripts) when
    ``factor`` is not 1 (never for a luma pack: :func:`refuse_shrinking_packs`). Without shrinking, Y of the
    turned image is the turned Y (rgb2ycbcr is per pixel)."""
    img = read_source(path)
    if factor == 1.0:
        y = luminance(img)
        for transform in transforms:
            yield dihedral(y, transform)
    else:
        for transform in transforms:
            yield luminance(imresize(dihedral(img, transform), factor))
