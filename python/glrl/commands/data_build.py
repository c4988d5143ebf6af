"""``glrl data build``: the HDF5 training patch sets (``make data SCALE=3``)."""
from __future__ import annotations

import argparse

HELP = "build the augmented, shuffled HDF5 training patches for a scale (2, 3, 4 or 234)"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_data_root_argument, positive_int, split_list

    add_data_root_argument(parser)
    parser.add_argument("--scale", default="3", help="2, 3, 4 or 234 (all three mixed) (default: 3)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <work>/data/x<scale>, x<scale>-srcnn for --layout srcnn)")
    parser.add_argument("--train-sets", type=split_list, default=["T91", "BSD200"],
                        help="comma-separated training image sets (default: T91,BSD200, the 291 images)")
    parser.add_argument("--val-set", default="Set5", help="held-out set for monitoring; 'none' for none")
    parser.add_argument("--layout", choices=("vdsr", "srcnn"), default="vdsr",
                        help="vdsr: 31x31 input and label, stride 21 (DRRN/GLRL); "
                             "srcnn: 33x33 input, central 21x21 label, stride 14")
    parser.add_argument("--patch-size", type=positive_int, default=None, help="input patch side (layout default)")
    parser.add_argument("--label-size", type=positive_int, default=None, help="label patch side (layout default)")
    parser.add_argument("--stride", type=positive_int, default=None, help="patch stride (layout default)")
    parser.add_argument("--no-augment", action="store_true", help="skip the 8 rotations/flips")
    parser.add_argument("--downscales", type=split_list, default=[],
                        help="extra down-scaled copies of each image: factors like 0.9,0.8 or 'vdsr' "
                             "(0.9,0.8,0.7,0.6); default none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the global shuffle (default 0)")
    parser.add_argument("--no-shuffle", action="store_true", help="keep patches in image order")
    parser.add_argument("--patches-per-file", type=positive_int, default=16384,
                        help="rows per HDF5 file (default 16384, ~126 MB at 31x31; "
                             "Caffe loads one file at a time)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes cutting patches (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    parser.add_argument("--skip-checksums", action="store_true",
                        help="use the images as found, even if not the published T91/BSD200/Set5")
    parser.add_argument("--dry-run", action="store_true",
                        help="only count the patches and the bytes they will take; write nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from glrl import settings
    from glrl.data_prep.build import build, plan
    from glrl.data_prep.config import VDSR_DOWNSCALES, BuildConfig, parse_scales, scale_name
    from glrl.errors import DataError

    scales = parse_scales(args.scale)
    try:
        vdsr = args.downscales == ["vdsr"]
        downscales = VDSR_DOWNSCALES if vdsr else tuple(float(v) for v in args.downscales)
    except ValueError as exc:
        raise DataError(f"--downscales takes numbers like 0.9,0.8 or 'vdsr', not {','.join(args.downscales)}",
                        hint="e.g. --downscales vdsr") from exc
    config = BuildConfig.for_layout(
        args.layout, scales=scales, train_sets=tuple(args.train_sets),
        val_set="" if args.val_set.lower() == "none" else args.val_set, patch_size=args.patch_size,
        label_size=args.label_size, stride=args.stride, augment=not args.no_augment, downscales=downscales,
        seed=args.seed, shuffle=not args.no_shuffle, patches_per_file=args.patches_per_file,
    )
    if args.dry_run:
        for part, counts in plan(config, settings.data_root(args.data_root), not args.skip_checksums).items():
            print(f"{part}: {counts['patches']} patches from {counts['images']} images in {counts['files']} "
                  f"files, {counts['bytes'] / 1e9:.2f} GB")
        return 0
    out = settings.work_dir() / "data" / scale_name(scales, args.layout) if args.out is None else args.out
    result = build(config, settings.data_root(args.data_root), out, workers=args.workers, force=args.force,
                   progress=not args.quiet, check_sources=not args.skip_checksums)
    manifest = result.manifest
    if result.skipped:
        print(f"{result.out}: up to date ({manifest['train']['patches']} training patches); --force rebuilds")
        return 0
    for part in ("train", "val"):
        if part in manifest:
            entry = manifest[part]
            size = sum(f["bytes"] for f in entry["files"])
            print(f"{part}: {entry['patches']} patches from {entry['images']} images in "
                  f"{len(entry['files'])} files, {size / 1e9:.2f} GB -> {result.out / entry['list']['name']}")
    stats = manifest["build"]
    peak = stats["peak_rss_mib"]
    in_workers = f", {peak['workers']:.0f} MiB (largest worker)" if peak["workers"] is not None else ""
    print(f"built in {stats['seconds']} s with {stats['workers']} workers; peak memory "
          f"{peak['main']:.0f} MiB (main){in_workers}")
    return 0
