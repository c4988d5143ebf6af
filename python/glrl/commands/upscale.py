"""``glrl upscale IN OUT --scale S``: enlarge one image or a folder of images with a released model.

IN and OUT are files, or folders (every image in IN is written to OUT under the same name). In a batch a
bad file does not stop the others: the failures are listed at the end and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Tuple

HELP = "enlarge images (files or folders) with a released SR model"



def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_device_and_backend_arguments, tile_size

    parser.add_argument("input", help="an image file, or a folder of images")
    parser.add_argument("output", help="the output file (format from its extension), or a folder")
    parser.add_argument("--scale", type=int, required=True, help="enlargement factor (2, 3, 4)")
    parser.add_argument("--model", default=None, help="a released model name (default: the one for --scale)")
    parser.add_argument("--net", default="glrl", help="which net's released model to pick (default glrl)")
    add_device_and_backend_arguments(parser, "real Caffe, CPU")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32 (default, Caffe's arithmetic) or bf16 (torch backend; about twice as fast on "
                             "CPUs with AVX-512 BF16 and on recent GPUs, a few thousandths of a dB off fp32)")
    parser.add_argument("--tile", type=tile_size, default=None,
                        help="tile size in output pixels; memory stays bounded by it (0 = whole image; "
                             "default: the largest tile whose activations fit in 1 GiB, "
                             "1.25 GiB with real Caffe)")
    parser.add_argument("--models-dir", default=None, help="folder of released models (default: models/)")


def _jobs(source: Path, target: Path) -> List[Tuple[Path, Path]]:
    from glrl.errors import DataError
    from glrl.imageio import IMAGE_SUFFIXES, list_images

    if source.is_dir():
        named_as_image = not target.exists() and target.suffix.lower() in IMAGE_SUFFIXES  # not made a folder
        if (target.exists() and not target.is_dir()) or named_as_image:
            raise DataError(f"the input {source} is a folder, so the output {target} must be a folder too",
                            hint="give a folder (made if missing) for the enlarged images, which keep their names")
        files = list_images(source)
        if not files:
            raise DataError(f"no images in {source}", hint=f"images end with {', '.join(IMAGE_SUFFIXES)}")
        jobs = [(p, target / p.name) for p in files]
    elif not source.exists():
        raise DataError(f"no such file or folder: {source}", hint="check the input path")
    else:
        jobs = [(source, target / source.name if target.is_dir() else target)]
    for original, out in jobs:
        if out.resolve() == original.resolve():
            raise DataError(f"the output {out} is the input image itself; it would be overwritten",
                            hint="choose another output file or folder")
    return jobs


def _tiles(upscaler) -> str:
    bound = upscaler.tile_memory_bytes
    if bound is None:
        return "whole images"
    return f"{upscaler.tile} px tiles, net activations <= {bound / 2**20:.0f} MiB"


class TileBar:
    """A progress bar over the tiles of one image, shown once the image turns out to need several (a small
    image is done in one piece and shows none); gone when the image is done."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __enter__(self) -> "TileBar":
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit="tile", leave=False)
        self.bar.update(1)

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from glrl.errors import GlrlError
    from glrl.machine import warn_if_bf16_emulated
    from glrl.upscale_io import check_encodable, check_writable, read_picture, write_picture
    from glrl.upscaling import Upscaler

    jobs = _jobs(Path(args.input), Path(args.output))
    for _, out in jobs[:1]:
        check_writable(out)  # a wrong output folder fails before the model loads
    if len(jobs) == 1:  # so does an image that cannot be read, or that the output's format cannot hold
        picture = read_picture(jobs[0][0])
        check_encodable(picture, jobs[0][1])
    upscaler = Upscaler.for_scale(args.scale, model=args.model, net=args.net, models_dir=args.models_dir,
                                  backend=args.backend, device=args.device, tile=args.tile,
                                  precision=args.precision)
    warn_if_bf16_emulated(upscaler.precision, str(upscaler.device))
    if len(jobs) == 1:
        source, out = jobs[0]
        with TileBar(f"{source.name} x{args.scale}") as on_tile:
            write_picture(out, upscaler.upscale_picture(picture, on_tile))
        print(f"{source} -> {out} (x{args.scale}, {upscaler.model_name}, "
              f"{upscaler.backend} on {upscaler.device} in {upscaler.precision}, {_tiles(upscaler)})")
        return 0
    failures: List[Tuple[Path, str]] = []
    for source, out in tqdm(jobs, desc=f"upscale x{args.scale}", unit="image"):
        try:
            check_writable(out)
            picture = read_picture(source)
            check_encodable(picture, out)  # the output's extension names a format that can hold the picture
            with TileBar(source.name) as on_tile:
                write_picture(out, upscaler.upscale_picture(picture, on_tile))
        except GlrlError as exc:
            failures.append((source, str(exc).replace("\n", "; ")))
    done = len(jobs) - len(failures)
    print(f"{done} of {len(jobs)} images enlarged x{args.scale} into {args.output} "
          f"({upscaler.model_name}, {upscaler.backend} on {upscaler.device} in {upscaler.precision}, "
          f"{_tiles(upscaler)})")
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for source, message in failures:
            print(f"  {source}: {message}", file=sys.stderr)
        return 1
    return 0
