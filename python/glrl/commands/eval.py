"""``glrl eval``: measure SR methods on Set5/Set14/BSD100 with the benchmark protocol, beside the paper."""
from __future__ import annotations

import argparse
import time

from glrl.cli import add_data_root_argument, split_list

HELP = "evaluate SR methods (PSNR/SSIM on Y) against the published Table 1/2 figures"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=None, help="method name(s), comma-separated (e.g. bicubic)")
    parser.add_argument("--all", action="store_true", help="every available method")
    parser.add_argument("--datasets", default="Set5,Set14,BSD100", help="comma-separated (default: %(default)s)")
    parser.add_argument("--scales", default="2,3,4", help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: <work>/eval)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_root_argument(parser)


def run(args: argparse.Namespace) -> int:
    from glrl import settings
    from glrl.errors import GlrlError
    from glrl.eval.methods import available_methods, create_method
    from glrl.eval.report import markdown_table, write_reports
    from glrl.eval.runner import evaluate

    if args.all == bool(args.method):
        raise GlrlError("give --method NAME or --all", hint=f"methods: {', '.join(available_methods())}")
    methods = available_methods() if args.all else split_list(args.method)
    try:
        scales = [int(value) for value in split_list(args.scales)]
    except ValueError:
        raise GlrlError(f"--scales must be integers, not {args.scales!r}", hint="e.g. --scales 2,3,4") from None
    datasets = split_list(args.datasets)
    root = settings.data_root(args.data_root)
    out_dir = settings.work_dir(args.out) if args.out else settings.work_dir() / "eval"
    for name in methods:
        sr = create_method(name)
        started = time.perf_counter()
        summaries, per_image = evaluate(name, sr, datasets, scales, root, progress=not args.quiet)
        elapsed = time.perf_counter() - started
        print(markdown_table(summaries))
        written = write_reports(out_dir, name, summaries, per_image)
        print(f"{name}: {len(per_image)} image evaluations in {elapsed:.1f} s; wrote {', '.join(str(p) for p in written[:3])}")
    return 0
