"""The ``glrl`` command: one entry point, subcommands implemented in ``glrl.commands.<name>``.

Each command module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int`` and imports
anything heavy (torch, h5py) inside ``run``, so ``glrl --help`` stays fast and torch-free.
A command may be two words (``data verify``); the first word then groups its siblings.
User errors (:class:`glrl.errors.GlrlError`) and paths that cannot be made, written or read
(``OSError``) print ``error:``/``hint:`` lines and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from glrl import __version__
from glrl.allocator import retain_freed_memory
from glrl.errors import GlrlError, from_os_error

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
    "models": "models",
}

DESCRIPTION = ("GLRL super-resolution (Hou, Si, Li 2018) reproduced on Caffe's files: data, nets, training, "
               "evaluation against the paper, and upscaling")
GROUP_HELP = {"data": "datasets (verify, download, pack) and HDF5 patch sets (build, inspect)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glrl", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"glrl {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: Dict[str, argparse._SubParsersAction] = {}
    for words, name in COMMANDS.items():
        module = importlib.import_module(f"glrl.commands.{name}")
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
        return _report(exc)
    except BrokenPipeError:  # the output went into a pipe whose reader stopped (`| head`): not an error to show
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is silent
        return 128 + 13  # the status of a command ended by SIGPIPE
    except OSError as exc:  # a path the command could not make, write or read
        return _report(from_os_error(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _report(exc: GlrlError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return 2


def add_action(actions: Any, name: str, help: str) -> argparse.ArgumentParser:
    """An action of a command (``glrl caffe info``): its ``--help`` opens with the same line ``glrl caffe
    --help`` lists it with."""
    return actions.add_parser(name, help=help, description=help)


def add_data_root_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``--data-root`` option (default: $GLRL_DATA, else ~/.cache/glrl/datasets)."""
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder holding the datasets (default: $GLRL_DATA, else ~/.cache/glrl/datasets)",
    )


def add_device_and_backend_arguments(parser: argparse.ArgumentParser, caffe: str) -> None:
    """``--device`` and ``--backend``, alike in every command that runs a net; ``caffe`` says what the caffe
    backend is in that command."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--backend", choices=("auto", "torch", "caffe"), default=None,
                        help=f"torch, caffe ({caffe}) or auto: torch when installed, else caffe "
                             "(default: $GLRL_BACKEND, else auto)")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (threads, sizes, counts)."""
    return _checked(int, text, "a positive integer", lambda value: value >= 1)


def positive_float(text: str) -> float:
    """argparse type: a number above 0 (thresholds)."""
    return _checked(float, text, "a positive number", lambda value: value > 0)


def non_negative_float(text: str) -> float:
    """argparse type: a number of at least 0 (a time limit of 0 stops after the first iteration)."""
    return _checked(float, text, "a number of at least 0", lambda value: value >= 0)


def tile_size(text: str) -> int:
    """argparse type: 0 (the whole image at once) or a tile of MIN_TILE to MAX_TILE pixels."""
    value = _checked(int, text, f"0 or an integer of at least {MIN_TILE}", lambda value: value >= 0)
    if 0 < value < MIN_TILE:
        raise argparse.ArgumentTypeError(f"must be 0 (whole image) or at least {MIN_TILE} pixels, not {value}: "
                                         "a smaller tile runs the net once per few pixels")
    if value > MAX_TILE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TILE} pixels, not {value} (0 runs whole images)")
    return value


MIN_TILE, MAX_TILE = 16, 65536


def _checked(kind: type, text: str, what: str, accepted: Callable[[Any], bool]):
    """``text`` as a ``kind`` that ``accepted`` takes, or argparse's error saying it must be ``what``."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if not accepted(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


def split_list(value: str) -> List[str]:
    """Parse a comma-separated option value (``Set5,Set14``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def named_twice(names: Sequence[str]) -> List[str]:
    """The names given more than once, compared without case (as method names are matched), sorted."""
    folded = [name.lower() for name in names]
    return sorted({name for name in names if folded.count(name.lower()) > 1})


if __name__ == "__main__":
    sys.exit(main())
