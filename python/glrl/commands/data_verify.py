"""``glrl data verify``: check the data root against the carried checksums, naming every bad file (a set held
as a luma pack is checked through the checksums it records and by reading every image back)."""
from __future__ import annotations

import argparse

from glrl.cli import add_data_root_argument

HELP = "check the datasets under the data root against their SHA-256 checksums"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default=None,
        help="dataset name(s), comma-separated (default: Set5,Set14,BSD100,T91,BSD200; also matlab_lr)",
    )
    add_data_root_argument(parser)


def run(args: argparse.Namespace) -> int:
    from glrl import settings
    from glrl.datasets import datasets_named, verify_dataset

    root = settings.data_root(args.data_root)
    datasets = datasets_named(args.dataset)
    print(f"data root: {root}{'' if root.is_dir() else ' (does not exist)'}")
    failed = 0
    for dataset in datasets:
        result = verify_dataset(dataset, root, accept_pack=True)
        print(result.summary())
        for path in result.missing:
            print(f"  missing: {path}")
        for path in result.corrupt:
            print(f"  corrupt ({result.corrupt_reason}): {path}")
        failed += not result.ok
    if failed:
        print("hint: fetch the datasets with `glrl data download` (or point --data-root/GLRL_DATA at them)")
        return 1
    return 0
