"""``glrl data pack``: a compact data root for training where the images do not fit (a GPU machine's 64 MiB
working tree): the training sets as luma packs (:mod:`glrl.data_prep.luma_pack`), the validation set copied."""
from __future__ import annotations

import argparse

HELP = "write a compact training data root: training sets as luminance packs, the validation set copied"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_data_root_argument, split_list

    add_data_root_argument(parser)
    parser.add_argument("--out", required=True, help="the new data root (its packs are replaced if present)")
    parser.add_argument("--sets", type=split_list, default=["T91", "BSD200"],
                        help="image sets to pack (default: T91,BSD200, the 291 training images)")
    parser.add_argument("--copy", type=split_list, default=["Set5"],
                        help="image sets copied as files (default: Set5, the validation set and the Set5 "
                             "probe of `glrl train`); 'none' for none")
    parser.add_argument("--skip-checksums", action="store_true",
                        help="pack the images as found, even if not the published sets")


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from glrl import settings
    from glrl.data_prep import luma_pack
    from glrl.data_prep.sources import list_sources, luminance, read_source, set_location
    from glrl.errors import DataError
    from glrl.fsutil import replace_folder

    root = settings.data_root(args.data_root).resolve()
    out = Path(args.out).resolve()
    if out == root:
        raise DataError(f"--out {out} is the data root itself", hint="write the compact root elsewhere")
    check = not args.skip_checksums
    copies = [] if [n.lower() for n in args.copy] == ["none"] else args.copy
    if not args.sets and not copies:
        raise DataError("--sets and --copy name no image sets: nothing to pack",
                        hint="e.g. --sets T91,BSD200 --copy Set5 (the defaults)")
    # every set is found (and checked) before anything is written
    packs = {name: list_sources(root, [name], check) for name in args.sets}
    copied = {name: list_sources(root, [name], check) for name in copies}
    for name in copied:
        if set_location(root, name).is_file():
            raise DataError(f"{name} is a luma pack under {root}; --copy needs its image folder")
    for name, sources in packs.items():
        target = luma_pack.pack_path(out / set_location(root, name).parent.name, name)
        images = [(s.path.name, s.sha256, luminance(read_source(s.path))) for s in sources]
        luma_pack.write_pack(target, name, images)
        print(f"{name}: {len(images)} images -> {target} ({target.stat().st_size / 1e6:.1f} MB)")
    for name, sources in copied.items():
        target = out / set_location(root, name).parent.name / name
        partial = target.with_name(f".{name}.partial-{os.getpid()}")
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for source in sources:
                shutil.copy2(source.path, partial / source.path.name)
            replace_folder(partial, target)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise DataError(f"cannot copy {name} into {target}: {exc}", hint="choose a writable --out") from exc
        print(f"{name}: {len(sources)} images copied -> {target}")
    return 0
