"""The ``glrl`` command: one entry point, subcommands implemented in ``glrl.commands.<name>``.

Each command module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int`` and imports
anything heavy (torch, h5py) inside ``run``, so ``glrl --help`` stays fast and torch-free.
A command may be two words (``data verify``); the first word then groups its siblings.
User errors (:class:`glrl.errors.GlrlError`) print ``error:``/``hint:`` lines and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Sequence

from glrl import __version__
from glrl.allocator import retain_freed_memory
from glrl.errors import GlrlError

# command words -> module under glrl.commands
COMMANDS: Dict[str, str] = {
    "data verify": "data_verify",
    "data download": "data_download",
    "data build": "data_build",
    "data inspect": "data_inspect",
    "data pack": "data_pack",
    "nets": "nets",
    "eval": "eval",
    "train": "train",
    "upscale": "upscale",
    "caffe": "caffe",
    "bench": "bench",
    "models": "models",
}

GROUP_HELP = {"data": "datasets (verify, download, pack) and HDF5 patch sets (build, inspect)"}


def _available_modules() -> Dict[str, object]:
    modules = {}
    for words, name in COMMANDS.items():
        try:
            modules[words] = importlib.import_module(f"glrl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"glrl.commands.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glrl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"glrl {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: Dict[str, argparse._SubParsersAction] = {}
    for words, module in _available_modules().items():
        parts = words.split()
        if len(parts) == 1:
            sub = top.add_parser(parts[0], help=module.HELP, description=module.HELP)
        else:
            group, leaf = parts
            if group not in groups:
                group_parser = top.add_parser(group, help=GROUP_HELP.get(group, ""))
                groups[group] = group_parser.add_subparsers(dest=f"{group}_command", metavar="SUBCOMMAND")
                groups[group].required = True
            sub = groups[group].add_parser(leaf, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    retain_freed_memory()
    try:
        return int(args._module.run(args) or 0)
    except GlrlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_data_root_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``--data-root`` option (default: $GLRL_DATA, else ~/.cache/glrl/datasets)."""
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder holding the datasets (default: $GLRL_DATA, else ~/.cache/glrl/datasets)",
    )


def split_list(value: str) -> List[str]:
    """Parse a comma-separated option value (``Set5,Set14``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


if __name__ == "__main__":
    sys.exit(main())
