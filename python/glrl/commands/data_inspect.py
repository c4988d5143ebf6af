"""``glrl data inspect``: counts, shapes, value ranges and a sample mosaic of an HDF5 patch set; exits 1
when it finds the set unfit to train on (NaN/Inf values, a missing manifest, files that do not match it)."""
from __future__ import annotations

import argparse

HELP = "show what an HDF5 patch file, list file or patch-set folder holds (and draw sample pairs)"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import positive_int

    parser.add_argument("target", metavar="FILE",
                        help="an .h5 patch file, a list file (train.txt) or a set folder")
    parser.add_argument("--mosaic", default=None,
                        help="PNG of sample data|label pairs (default: <FILE>-mosaic.png beside a file, "
                             "mosaic.png inside a folder)")
    parser.add_argument("--no-mosaic", action="store_true", help="do not draw the mosaic")
    parser.add_argument("--samples", type=positive_int, default=16, help="pairs in the mosaic (default 16)")
    parser.add_argument("--verify", action="store_true", help="also check the SHA-256 of every file")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from glrl.data_prep.inspect import inspect

    target = Path(args.target)
    mosaic = None
    if not args.no_mosaic:
        beside = target.with_name(f"{target.stem}-mosaic.png")
        default = (target / "mosaic.png") if target.is_dir() else beside
        mosaic = Path(args.mosaic) if args.mosaic else default
    report = inspect(target, mosaic, samples=args.samples, verify=args.verify)
    print(report.text)
    if report.problems:
        print(f"{len(report.problems)} problem(s): do not train on {target} as it is "
              "(rebuild it with `glrl data build --force`)", file=sys.stderr)
        return 1
    return 0
