"""``glrl eval``: measure SR methods on Set5/Set14/BSD100 with the benchmark protocol, beside the paper."""
from __future__ import annotations

import argparse
import time

from glrl.cli import add_data_root_argument, add_device_and_backend_arguments, named_twice, split_list

HELP = "evaluate SR methods (PSNR/SSIM on Y) against the published Table 1/2 figures"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.datasets import TEST_DATASETS

    parser.add_argument("--method", default=None, help="method name(s), comma-separated (e.g. bicubic)")
    parser.add_argument("--all", action="store_true",
                        help="Table 1 and 2: Bicubic and every released model, with the figures (make eval; "
                             "what 'glrl eval' alone does)")
    parser.add_argument("--datasets", default=",".join(TEST_DATASETS),
                        help="comma-separated names, or paths of folders of HR images (default: %(default)s)")
    parser.add_argument("--scales", default="2,3,4", help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: <work>/eval)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_root_argument(parser)
    models = parser.add_argument_group("Caffe models (glrl.eval.command)")
    models.add_argument("--model", default=None, help="released model name(s) from models/, comma-separated")
    models.add_argument("--prototxt", default=None,
                        help="deploy prototxt of an external SR net (with --weights)")
    models.add_argument("--weights", default=None, help="its .caffemodel")
    models.add_argument("--name", default=None, help="row name for --prototxt (default: the weights' stem)")
    models.add_argument("--residual-outside", action="store_true",
                        help="the net predicts the residual: add its input to its output")
    models.add_argument("--transposed", action="store_true",
                        help="trained on MATLAB-written HDF5 (patches transposed): "
                             "run on the transposed image")
    add_device_and_backend_arguments(models, "real Caffe via pycaffe, CPU; in bounded-memory tiles")
    models.add_argument("--models-dir", default=None, help="folder of released models (default: models/)")
    models.add_argument("--publish", default=None, metavar="DIR",
                        help="with --all: also write the committed copies to DIR "
                             "and README.md's results block")
    models.add_argument("--readme", default=None, help="README to update with --publish (default: README.md)")


def run(args: argparse.Namespace) -> int:
    from glrl import settings
    from glrl.errors import GlrlError
    from glrl.eval.methods import create_method
    from glrl.eval.report import markdown_table, write_reports
    from glrl.eval.suite import evaluate

    try:
        scales = [int(value) for value in split_list(args.scales)]
    except ValueError:
        raise GlrlError(f"--scales must be integers, not {args.scales!r}", hint="e.g. --scales 2,3,4") from None
    datasets = split_list(args.datasets)
    if not scales or not datasets:
        raise GlrlError(f"--scales {args.scales!r} --datasets {args.datasets!r}: nothing to evaluate",
                        hint="name at least one scale and one set, e.g. --scales 3 --datasets Set5")
    if not (args.method or args.model or args.prototxt or args.weights or args.residual_outside
            or args.transposed):
        args.all = True  # 'glrl eval' alone (docker run glrl-caffe eval): Bicubic and the released models
    model_options = (args.all, args.model, args.prototxt, args.weights, args.residual_outside,
                     args.transposed, args.publish, args.backend)
    if any(model_options) or _names_released_nets(args.method):
        from glrl.eval.command import run_command

        return run_command(args, scales, datasets)
    methods = split_list(args.method)
    twice = named_twice(methods)
    if twice:
        raise GlrlError(f"--method names {', '.join(twice)} more than once",
                        hint="list each method once (names are not case-sensitive)")
    root = settings.data_root(args.data_root)
    out_dir = settings.work_dir(args.out) if args.out else settings.work_dir() / "eval"
    for name in methods:
        sr = create_method(name)
        started = time.perf_counter()
        summaries, per_image = evaluate(name, sr, datasets, scales, root, progress=not args.quiet)
        elapsed = time.perf_counter() - started
        print(markdown_table(summaries))
        written = write_reports(out_dir, name, summaries, per_image)
        wrote = ", ".join(str(p) for p in written[:3])
        print(f"{name}: {len(per_image)} image evaluations in {elapsed:.1f} s; wrote {wrote}")
    return 0


def _names_released_nets(methods) -> bool:
    from glrl.eval.models import NET_METHOD_NAMES

    return any(name.lower() in NET_METHOD_NAMES for name in split_list(methods or ""))
