"""``glrl data download``: fetch the datasets from their public origins into the data root, verified."""
from __future__ import annotations

import argparse

from glrl.cli import add_data_root_argument

HELP = "download Set5, Set14, BSD100, T91 and BSD200 from their public origins and verify every file"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None,
                        help="dataset name(s), comma-separated (default: Set5,Set14,BSD100,T91,BSD200)")
    parser.add_argument("--url", default=None,
                        help="fetch from this archive (URL or local path) instead of the origin; it must have "
                             "the origin's layout, and all the datasets asked for must share that origin")
    parser.add_argument("--force", action="store_true", help="download even datasets that already verify")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_root_argument(parser)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from glrl import settings
    from glrl.datasets import datasets_named
    from glrl.datasets.download import default_source, download_datasets
    from glrl.errors import GlrlError

    root = settings.data_root(args.data_root)
    names = [dataset.name for dataset in datasets_named(args.dataset)]
    sources = None
    if args.url:
        origins = {name: default_source(name) for name in names}
        if len({source.url for source in origins.values()}) > 1:
            raise GlrlError("--url applies to datasets from one origin only",
                            hint="Set5/Set14/BSD100 share one origin, T91/BSD200 another; download them separately")
        sources = {name: replace(source, url=args.url) for name, source in origins.items()}
    installed = download_datasets(names, root, sources=sources, force=args.force, progress=not args.quiet)
    skipped = [name for name in names if name not in installed]
    for name in installed:
        print(f"{name}: downloaded and verified into {root}")
    for name in skipped:
        print(f"{name}: already present and verified in {root}")
    return 0
