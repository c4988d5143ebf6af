"""``glrl nets``: list the generated networks, show one (summary, prototxt or diagram), emit their files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "network generators: list the nets, show one, emit their prototxt (make prototxt)"
FILES = ("summary", "train_test", "deploy", "solver")


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_action

    actions = parser.add_subparsers(dest="nets_action", metavar="ACTION")
    actions.required = True
    add_action(actions, "list", "every net with its depth, parameters and multiply-accumulates per pixel")
    show = add_action(actions, "show", "one net: a summary, one of its prototxt files, or a diagram")
    show.add_argument("name", help="net name (see glrl nets list)")
    show.add_argument("--file", choices=FILES, default="summary",
                      help="what to print: the summary (default) or the prototxt of train_test, deploy or solver")
    show.add_argument("--diagram", metavar="PATH", type=_diagram_path,
                      help="also draw the deploy net to PATH (.png or .svg with Graphviz's dot, or .dot)")
    emit = add_action(actions, "emit", "write <out>/<net>/{train_test,deploy,solver}.prototxt")
    emit.add_argument("names", nargs="*", metavar="NAME", help="nets to emit")
    emit.add_argument("--all", action="store_true", help="emit every net")
    emit.add_argument("--out", type=Path, required=True, help="output folder (the committed one is prototxt/)")


def _list() -> int:
    from glrl.nets.registry import NETS
    from glrl.nets.stats import measure

    rows = [("net", "depth", "params", "MACs/pixel", "description")]
    for name, recipe in NETS.items():
        stats = measure(recipe.deploy())
        rows.append((name, str(stats.conv_depth), f"{stats.params:,}", f"{stats.macs_per_pixel:,.0f}",
                     recipe.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:4], widths[1:])]
        print("  ".join(cells + [row[4]]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from glrl.nets.emit import DEPLOY, SOLVER, TRAIN_TEST, render
    from glrl.nets.registry import get_net
    from glrl.nets.solver import REFERENCE_ITERS_PER_EPOCH
    from glrl.nets.stats import measure

    recipe = get_net(args.name)
    deploy = recipe.deploy()
    if args.file != "summary":
        sys.stdout.write(render(recipe)[{"train_test": TRAIN_TEST, "deploy": DEPLOY, "solver": SOLVER}[args.file]])
    else:
        stats = measure(deploy)
        solver = recipe.solver(TRAIN_TEST, REFERENCE_ITERS_PER_EPOCH)
        input_patch, label_patch = recipe.patch_sizes
        print(f"{recipe.name}: {recipe.description}")
        print(f"  conv depth       {stats.conv_depth} ({stats.conv_layers} Convolution layers)")
        print(f"  parameters       {stats.params:,} learnable ({stats.params_with_sharing:,} without sharing)")
        print(f"  MACs per pixel   {stats.macs_per_pixel:,.0f}")
        print(f"  training patches {input_patch}x{input_patch} input, {label_patch}x{label_patch} label")
        print(f"  solver           {recipe.training.describe()}")
        print(f"  paper schedule   max_iter {solver.max_iter}, snapshot every {solver.snapshot} "
              f"(epoch = {REFERENCE_ITERS_PER_EPOCH} iterations until the patch set is known)")
        if stats.shared_blobs:
            print(f"  shared blobs     {len(stats.shared_blobs)}:")
            for blob, layers in stats.shared_blobs.items():
                print(f"    {blob}: {', '.join(layers)}")
    if args.diagram is not None:
        from glrl.nets.diagram import write_diagram

        write_diagram(deploy, args.diagram)
        print(f"diagram written to {args.diagram}", file=sys.stderr)
    return 0


def _diagram_path(text: str) -> Path:
    """``--diagram``'s file, whose name says the format: refused before the summary is printed."""
    from glrl.nets.diagram import DIAGRAM_SUFFIXES

    path = Path(text)
    if path.suffix.lower() not in DIAGRAM_SUFFIXES:
        raise argparse.ArgumentTypeError(f"cannot draw a diagram as {path.name!r}: name a .png, .svg or .dot file")
    return path


def _emit(args: argparse.Namespace) -> int:
    from glrl.errors import GlrlError
    from glrl.nets.emit import emit
    from glrl.nets.registry import NETS, get_net

    if args.all == bool(args.names):
        raise GlrlError("name the nets to emit or give --all, not both or neither",
                        hint="e.g. glrl nets emit --all --out prototxt")
    recipes = list(NETS.values()) if args.all else [get_net(name) for name in args.names]
    for recipe in recipes:
        for path in emit(recipe, args.out):
            print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.nets_action == "list":
        return _list()
    if args.nets_action == "show":
        return _show(args)
    return _emit(args)
