"""``glrl train``: train a generated net with the paper's solver (``make train SCALE=3``), or any
``solver.prototxt`` (``--solver``), on the PyTorch backend or in real Caffe (``--backend caffe``).

Without ``--solver`` it builds what is missing first: the HDF5 patch set ``<work>/data/x<scale>`` (as
``glrl data build``; ``--patches DIR`` trains on a set built elsewhere, e.g. with larger patches), then
``train_test.prototxt`` and ``solver.prototxt`` in the run folder, with the epoch measured on the real patch
set. See docs/training.md.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional

PAPER_BATCH = 32  # the paper's mini-batch (section 4.1)
DEFAULT_NET, DEFAULT_SCALE = "glrl", "3"
HELP = ("train a net (paper solver, Caffe semantics) with snapshots, resume, monitoring and several GPUs "
        "(torchrun --nproc_per_node=N -m glrl train ...)")


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import (add_data_root_argument, add_device_and_backend_arguments, non_negative_float,
                          positive_float, positive_int)

    add_data_root_argument(parser)
    parser.add_argument("--net", default=None,
                        help=f"generated net to train (glrl nets list); default {DEFAULT_NET}, and for --resume "
                             "the run's")
    parser.add_argument("--scale", default=None,
                        help=f"2, 3, 4 or 234 (the patch set's scales); default {DEFAULT_SCALE}, and for --resume "
                             "or --solver the scales of the run's patch set")
    parser.add_argument("--schedule", default="paper", help="paper (76 epochs) or a shorter named schedule")
    parser.add_argument("--optimizer", default=None,
                        help="a named optimiser recipe instead of the net's own (paper, srcnn, adam; "
                             "see glrl.nets.solver.OPTIMIZERS)")
    parser.add_argument("--solver-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="set one field of the run's generated solver, as solver.prototxt writes it "
                             "(base_lr=1.25e-5, stepsize=1500, test_interval=500; repeatable); with --resume the "
                             "run folder's solver.prototxt is changed from the resumed iteration on, and the "
                             "change is printed")
    add_device_and_backend_arguments(parser, "real Caffe through pycaffe, where it is installed")
    parser.add_argument("--run-dir", default=None,
                        help="run folder (default: <work>/runs/<net>-x<scale>-<schedule>[-<optimizer>])")
    parser.add_argument("--solver", default=None, help="train this solver.prototxt instead of generating one")
    parser.add_argument("--patches", default=None, metavar="DIR",
                        help="train on the patch set in DIR (glrl data build --out DIR, e.g. with --patch-size) "
                             "instead of <work>/data/x<scale>; its scales must be --scale's")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from a .solverstate (glrl's or Caffe's); without a path, the run "
                             "folder's newest snapshot")
    parser.add_argument("--weights", default=None,
                        help="initial weights (.caffemodel), as caffe train --weights")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help=f"patches per iteration of a new run (default {PAPER_BATCH}, the paper's); epochs "
                             "stay passes over the patch set, and the run folder's name gets -b<N>")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                        help="fp32 (default, Caffe's arithmetic), tf32 or bf16 (faster on recent GPUs)")
    parser.add_argument("--winograd", action="store_true",
                        help="fp32 on the CPU: run 3x3 convolutions and their gradients on glrl's Winograd "
                             "kernel and PReLU's backward in one pass (a GLRL step 1.7x faster on a Xeon; "
                             "rounds differently from Caffe)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay each iteration (forward, backward, Caffe's Adam) as one CUDA graph: several "
                             "times faster at small batches on a GPU; Adam without clipping or weight decay, "
                             "iter_size 1, one process (anything else is refused, saying why); on the CPU the "
                             "same step runs eagerly")
    parser.add_argument("--adjustable-clip", type=positive_float, default=None, metavar="THETA",
                        help="DRRN's adjustable clipping: gradient-norm threshold THETA / current lr "
                             "(replaces clip_gradients)")
    parser.add_argument("--no-set5", action="store_true", help="skip the Set5 PSNR at test intervals")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    parser.add_argument("--time-limit", type=non_negative_float, default=None, metavar="SECONDS",
                        help="snapshot and stop (exit status 0) at the first iteration that ends SECONDS after "
                             "the command started (data building included); --resume continues: training in "
                             "slices of a machine's time")
    parser.add_argument("--stop-at", type=positive_int, default=None, metavar="ITER",
                        help="snapshot and stop once iteration ITER is done (the schedule unchanged up to "
                             "there): e.g. a second net trained to the iteration the first reached")


def run(args: argparse.Namespace) -> int:
    import time

    from glrl import settings
    from glrl.errors import GlrlError

    args.deadline = None if args.time_limit is None else time.monotonic() + args.time_limit

    if args.scale is not None:
        args.scale = _scale_key(args.scale)
    given = argparse.Namespace(net=args.net, scale=args.scale)
    args.net, args.scale = args.net or DEFAULT_NET, args.scale or DEFAULT_SCALE
    _check_options(args)
    run_name = (f"{args.net}-x{args.scale}-{args.schedule}" + (f"-{args.optimizer}" if args.optimizer else "")
                + (f"-b{args.batch_size}" if args.batch_size not in (None, PAPER_BATCH) else "")
                + (f"-{Path(args.patches).resolve().name}" if args.patches else ""))
    run_dir = Path(args.run_dir) if args.run_dir else settings.work_dir() / "runs" / run_name
    run_dir = run_dir.resolve()
    _refuse_to_resume_nothing(args.resume, run_dir)
    backend = _usable_backend(args)
    fresh = not run_dir.exists()
    started: List[bool] = []  # set once the trainer has taken its weights
    with _run_folder_lock(run_dir):
        try:
            return _train(args, given, run_dir, backend, on_start=lambda: started.append(True))
        except GlrlError:
            if fresh and not started:
                _undo_new_run_folder(run_dir)
            raise


def _undo_new_run_folder(run_dir: Path) -> None:
    """A run refused before its trainer took its weights (``--cuda-graph`` with an SGD solver, weights that
    do not fit the net) leaves none of what this command wrote in the folder it made: the folder lock then
    removes the folder itself. Only rank 0 writes a run folder."""
    import os
    import shutil

    from glrl.fsutil import LOCK_NAME

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for entry in run_dir.iterdir():
        if entry.name != LOCK_NAME:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _usable_backend(args: argparse.Namespace) -> str:
    """The backend to train on, once it can honour the options and it and the device are there: an option
    real Caffe cannot honour, a mistyped or absent device, or a missing Caffe is refused before the run
    folder is made."""
    import importlib.util

    from glrl.backends import resolve_backend
    from glrl.errors import TrainingError
    from glrl.machine import resolve_device

    backend = resolve_backend(args.backend)
    if backend == "caffe":
        if args.time_limit is not None or args.stop_at is not None:
            raise TrainingError("--time-limit and --stop-at need the torch backend (pycaffe's solve() runs to "
                                "max_iter)",
                                hint="use --backend torch, which snapshots and resumes bit-identically")
        if args.cuda_graph:
            raise TrainingError("--cuda-graph needs the torch backend (real Caffe runs its own solver)",
                                hint="drop --cuda-graph, or use --backend torch")
        if args.winograd:
            raise TrainingError("--winograd needs the torch backend (real Caffe has only its own convolutions)",
                                hint="drop --winograd, or use --backend torch")
    resolve_device(args.device, backend)
    if backend == "caffe" and importlib.util.find_spec("caffe") is None:
        # import_caffe's error says how to get Caffe. Caffe itself is imported only where it trains: glog
        # reads its log level once, at the import.
        from glrl.backends.pycaffe_net import import_caffe

        import_caffe()
    return backend


def _check_options(args: argparse.Namespace) -> None:
    """Options that contradict each other are refused before anything is read or written: ``--weights``
    starts a new run and ``--resume`` continues one; ``--optimizer`` (a known name) and ``--batch-size`` (a
    positive count) shape a generated net's solver and net (a given ``--solver`` already says both)."""
    from glrl.errors import TrainingError

    if args.weights and args.resume is not None:
        raise TrainingError("--weights starts a new run from those weights; --resume continues a run",
                            hint="give one of them (as caffe train takes --weights or --snapshot)")
    if args.weights and not Path(args.weights).is_file():
        raise TrainingError(f"--weights {args.weights}: no such file", hint="give an existing .caffemodel")
    if args.solver and not Path(args.solver).is_file():
        raise TrainingError(f"solver {args.solver} not found", hint="check the path")
    if args.optimizer is not None:
        from glrl.nets.solver import get_optimizer

        get_optimizer(args.optimizer)  # an unknown name is refused before the patch set is built
        if args.solver:
            raise TrainingError(f"--optimizer {args.optimizer} writes the solver of a generated net; --solver "
                                f"{args.solver} brings its own",
                                hint="edit that solver's type and rates, or drop --solver")
    if args.solver_set and args.solver:
        raise TrainingError(f"--solver-set changes the solver of a generated net; --solver {args.solver} is "
                            "a whole solver of its own",
                            hint="edit that file, or drop --solver")
    if args.solver_set:
        from glrl.caffe import pb
        from glrl.nets.solver import set_solver_fields

        set_solver_fields(pb.SolverParameter(), args.solver_set)  # a bad field is refused before anything runs
    if args.batch_size is not None and args.solver:
        raise TrainingError("--batch-size sets the batch of a generated net; with --solver the batch is the "
                            "batch_size of the net's HDF5Data layer",
                            hint="edit that layer's batch_size, or drop --solver")
    if args.patches is not None and args.solver:
        raise TrainingError(f"--patches {args.patches} sets the patch set of a generated net; --solver "
                            f"{args.solver} brings a net that names its own HDF5 lists",
                            hint="edit that net's HDF5Data sources, or drop --solver")


def _run_batch_size(net_path: Path) -> int:
    """The TRAIN-phase HDF5Data batch size of a run's train/test net."""
    from glrl.caffe.io import read_net
    from glrl.train.batches import hdf5_inputs

    inputs = hdf5_inputs(read_net(net_path), "TRAIN")
    return inputs[0].batch_size if inputs else PAPER_BATCH


def _run_folder_lock(run_dir: Path):
    """One process writes a run folder: a second ``glrl train`` on it (a resume started twice, two
    ``make train`` in one work folder) stops with the holder's pid instead of interleaving snapshots and
    metrics. Under torchrun the rank-0 process holds it for all ranks."""
    import contextlib
    import os

    from glrl.fsutil import folder_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return folder_lock(run_dir, "run folder")


def _train(args: argparse.Namespace, given: argparse.Namespace, run_dir: Path, backend: str,
           on_start: Callable[[], None]) -> int:
    from glrl.data_prep.config import parse_scales
    from glrl.provenance import describe_weights

    _refuse_to_overwrite(args.resume, run_dir)
    if args.solver:
        solver_path = Path(args.solver).resolve()
        solver_read = _read_given_solver(solver_path)
        _follow_run_folder(args, given, run_dir, solver_read.manifest)
        _keep_copy_of_solver(solver_read, run_dir)
    elif args.resume is not None:
        from glrl.data_prep import manifest as manifest_io

        _follow_run_folder(args, given, run_dir, manifest_io.load(run_dir, manifest_io.RUN_COPY_NAME))
    scales = parse_scales(args.scale)
    origin = describe_weights(Path(args.weights)) if args.weights else None  # a missing file: nothing written
    if not args.solver:
        solver_path = _prepare_run(args, scales, run_dir)
    resume = _resume_path(args.resume, run_dir)

    def begin_new_run() -> None:
        on_start()
        _record_origin(run_dir, origin, args.weights)

    on_ready = begin_new_run if resume is None else None
    if backend == "caffe":
        from glrl.train.caffe_backend import train_in_caffe

        return train_in_caffe(solver_path, run_dir, device=args.device, resume=resume, weights=args.weights,
                              on_ready=on_ready)
    return _train_torch(args, solver_path, run_dir, scales, resume, on_ready)


def _record_origin(run_dir: Path, origin: Optional[dict], weights: Optional[str]) -> None:
    """Once the trainer of a new run has taken its weights: ``initial-weights.json`` (none for a run from its
    fillers, which removes one an earlier, failed start left)."""
    from glrl.provenance import record_initial_weights

    record_initial_weights(run_dir, origin)
    if origin is not None:
        known = origin.get("model", {}).get("name") or origin.get("run", {}).get("run_dir") or "unknown origin"
        print(f"initial weights {weights} ({known}) recorded in {run_dir}/initial-weights.json")


def _train_torch(args: argparse.Namespace, solver_path: Path, run_dir: Path, scales, resume: Optional[Path],
                 on_ready: Optional[Callable[[], None]]) -> int:
    """Train on the PyTorch backend, with the Set5 probe; the exit status (130: stopped by a signal)."""
    import torch

    from glrl import settings
    from glrl.machine import warn_if_bf16_emulated
    from glrl.train.run import RunOptions, train

    warn_if_bf16_emulated(args.precision, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    probe = None
    if not args.no_set5:
        from glrl.train.set5 import Set5Probe

        probe_scale = 3 if len(scales) > 1 and 3 in scales else scales[0]
        probe = Set5Probe(settings.data_root(args.data_root) / "test" / "Set5", probe_scale)
    deploy = None
    if not args.solver:  # a generated net: the probe runs its deploy net (SRCNN's train net shrinks images)
        from glrl.nets.registry import get_net
        deploy = get_net(args.net).deploy()
    options = RunOptions(solver=solver_path, run_dir=run_dir, device=args.device, precision=args.precision,
                         winograd=args.winograd, resume=resume, weights=Path(args.weights) if args.weights else None,
                         adjustable_clip=args.adjustable_clip, psnr_probe=probe, deploy=deploy,
                         bicubic_psnr=probe.bicubic if probe else None, progress=not args.no_progress,
                         deadline=args.deadline, stop_at=args.stop_at, cuda_graph=args.cuda_graph,
                         on_ready=on_ready)
    result = train(options)
    if result.solverstate is not None:
        print(f"snapshot: {result.solverstate}")
        print(f"weights:  {result.caffemodel}")
    if result.set5_psnr is not None and probe is not None:
        print(f"Set5 x{probe.scale} PSNR at iteration {result.set5_iteration}: {result.set5_psnr:.2f} dB "
              f"(bicubic {probe.bicubic:.2f} dB)")
    if result.time_limit_reached:
        print(f"time limit reached at iteration {result.iterations}: continue with --resume")
        return 0
    return 130 if result.stopped_early else 0


def _follow_run_folder(args: argparse.Namespace, given: argparse.Namespace, run_dir: Path,
                       manifest: Optional[dict]) -> None:
    """A resumed run goes on with the net its folder trains, and a resumed or ``--solver`` run whose patch
    set has a manifest trains and probes Set5 at that set's scales: ``--net`` and ``--scale`` may be left
    out there, and a value that contradicts them is refused, naming both, before anything is written. So a
    resumed ×2 run probes Set5 at ×2 and a resumed 2-LRB run through its own deploy net, whatever the
    defaults of ``--scale`` and ``--net`` are."""
    from glrl.caffe.io import read_net
    from glrl.errors import TrainingError
    from glrl.nets.registry import NETS

    net_path = run_dir / "train_test.prototxt"
    if not args.solver and net_path.is_file():
        name = read_net(net_path).name
        if name in NETS:
            if given.net not in (None, name):
                raise TrainingError(f"the run in {run_dir} trains {name}, not --net {given.net}",
                                    hint=f"resume without --net (or with {name}), or start a new run from its "
                                         "weights with --weights and another --run-dir")
            args.net = name
    scales = manifest.get("settings", {}).get("scales") if manifest else None
    if scales:
        kept = "".join(map(str, scales))
        if given.scale not in (None, kept):
            trainer = f"the net of --solver {args.solver}" if args.solver else f"the run in {run_dir}"
            raise TrainingError(f"{trainer} trains on x{kept} patches, not --scale {given.scale}",
                                hint=f"leave --scale out (or give {kept})" + (
                                    "" if args.solver else ", or start a new run from its weights with "
                                                           "--weights and another --run-dir"))
        args.scale = kept


def _scale_key(text: str) -> str:
    """``--scale`` as ``glrl data build`` reads it (2, 3, 4, or 234 written also 2,3,4), in the form that
    names patch sets and run folders ("234")."""
    from glrl.data_prep.config import parse_scales
    from glrl.errors import DataError, TrainingError

    try:
        return "".join(map(str, parse_scales(text)))
    except DataError:
        raise TrainingError(f"--scale {text!r} is not one of 2, 3, 4, 234", hint="e.g. --scale 3") from None


def _refuse_to_resume_nothing(resume, run_dir: Path) -> None:
    """``--resume`` without a state names a run folder that must exist; with a state, a readable one. Checked
    before the lock is taken, so that a mistyped folder name or a damaged state creates nothing."""
    from glrl.caffe.io import read_solverstate
    from glrl.errors import TrainingError

    if resume == "auto" and not run_dir.is_dir():
        raise TrainingError(f"--resume: there is no run folder {run_dir}",
                            hint="check --run-dir (or --net/--scale/--schedule/--optimizer, which name the "
                                 "default folder), or start without --resume")
    if resume not in (None, "auto"):
        if not Path(resume).is_file():
            raise TrainingError(f"--resume {resume}: no such .solverstate", hint="check the path")
        read_solverstate(resume)


class GivenSolver(NamedTuple):
    """A ``--solver`` as read: its path, the solver, its train/test net with absolute HDF5 list paths, where
    that net was read from, and the manifest of the patch set beside its lists (None where there is none)."""

    path: Path
    solver: Any
    net: Any
    net_path: Path
    manifest: Optional[dict]


def _read_given_solver(given: Path) -> GivenSolver:
    from glrl.caffe.io import read_net, read_solver
    from glrl.data_prep import manifest as manifest_io
    from glrl.data_prep.reader import resolve_source
    from glrl.train.settings import resolve_net

    solver = read_solver(given)
    net_path = resolve_net(solver.net, given)
    net = read_net(net_path)
    manifests = []
    for layer in net.layer:
        if layer.type == "HDF5Data":
            source = resolve_source(layer.hdf5_data_param.source, [net_path.parent, given.parent])
            layer.hdf5_data_param.source = str(source)
            manifests.append(manifest_io.load(source.parent))
    found = next((manifest for manifest in manifests if manifest is not None), None)
    return GivenSolver(given, solver, net, net_path, found)


def _keep_copy_of_solver(given: GivenSolver, run_dir: Path) -> None:
    """A run of a given solver keeps a copy of it and of its train/test net in the run folder, as a generated
    run keeps its own, so that the folder says what it trained (``glrl models release`` reads them there),
    with the patch set's manifest where one lies beside the HDF5 lists. The copy's ``net`` is
    ``train_test.prototxt`` and its HDF5 list files are absolute paths; the run itself reads the given
    solver, whose relative paths keep their meaning (real Caffe reads them from the working directory). A run
    resumed under an edited solver or net trains with the edit, so the copies follow it, and the note says
    what changed."""
    from glrl.caffe.io import net_to_text, read_net, read_solver, write_net, write_solver
    from glrl.data_prep import manifest as manifest_io
    from glrl.nets.emit import SOLVER, TRAIN_TEST

    solver_copy, net_copy = run_dir / SOLVER, run_dir / TRAIN_TEST
    if solver_copy.exists() and solver_copy.samefile(given.path):
        return  # the run folder's own solver, resumed
    solver, net = given.solver, given.net
    solver.net = net_copy.name
    if solver_copy.exists() and net_copy.exists():
        changes = _changed_fields(read_solver(solver_copy), solver)
        if net_to_text(read_net(net_copy)) != net_to_text(net):
            changes.append(f"the train/test net ({given.net_path})")
        if not changes:
            return
        print(f"note: {given.path} differs from the solver the run in {run_dir} began with: "
              f"{'; '.join(changes)}; the run folder's copies now follow it")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_net(net, net_copy)
    write_solver(solver, solver_copy)
    if given.manifest is not None:
        manifest_io.save(run_dir, given.manifest, manifest_io.RUN_COPY_NAME)  # as a generated run keeps it


def _changed_fields(before, after) -> List[str]:
    """``field old → new`` for each solver field whose value differs (unset fields read as their defaults)."""
    names = sorted({field.name for field, _ in before.ListFields()} | {field.name for field, _ in after.ListFields()})
    return [f"{name} {_field_text(before, name)} → {_field_text(after, name)}" for name in names
            if _field_text(before, name) != _field_text(after, name)]


def _field_text(message, name: str) -> str:
    """One solver field's value as a reader would write it: 0.05, "multistep", [4000, 8000], or a message."""
    value = getattr(message, name)
    if hasattr(value, "ListFields"):
        return str(value).replace("\n", " ").strip()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (bytes, int, float, bool)):
        return _scalar_text(value)
    return "[" + ", ".join(_scalar_text(item) for item in value) + "]"


def _scalar_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _refuse_to_overwrite(resume, run_dir: Path) -> None:
    """A new run must not overwrite the snapshots of an earlier run in the same folder."""
    from glrl.errors import TrainingError
    from glrl.train.snapshot import latest_snapshot

    if resume is None and run_dir.is_dir():
        found = latest_snapshot(run_dir)
        if found is not None:
            raise TrainingError(
                f"the run folder {run_dir} already holds snapshots (newest: {found.name})",
                hint="continue that run with --resume, or start a new one with another --run-dir")


def _resume_path(resume, run_dir: Path):
    from glrl.errors import TrainingError
    from glrl.train.snapshot import latest_snapshot

    if resume is None:
        return None
    if resume == "auto":
        found = latest_snapshot(run_dir)
        if found is None:
            raise TrainingError(f"no complete snapshot in {run_dir} to resume from",
                                hint="start without --resume, or pass the .solverstate to resume")
        return found
    return Path(resume).resolve()  # checked by _refuse_to_resume_nothing


def _prepare_run(args: argparse.Namespace, scales, run_dir: Path) -> Path:
    """Build the patch set if missing, then write the run's train/test net and solver (kept on resume)."""
    from glrl import settings
    from glrl.caffe.io import write_net, write_solver
    from glrl.data_prep import manifest as manifest_io
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig, scale_name
    from glrl.errors import DataError, TrainingError
    from glrl.nets.registry import get_net
    from glrl.nets.solver import get_schedule, iters_per_epoch, set_solver_fields

    recipe = get_net(args.net)
    get_schedule(args.schedule)
    layout = "srcnn" if recipe.patch_sizes[0] != recipe.patch_sizes[1] else "vdsr"
    solver_path, net_path = run_dir / "solver.prototxt", run_dir / "train_test.prototxt"
    resuming = args.resume is not None and solver_path.is_file()
    given = Path(args.patches).resolve() if args.patches else None
    default_dir = settings.work_dir() / "data" / scale_name(scales, layout)
    data_dir = (_run_patch_set(net_path, given) if resuming else given) or default_dir
    manifest = manifest_io.load(data_dir)
    if manifest is None and data_dir != default_dir:  # only the default set is built on demand
        raise DataError(f"no patch set in {data_dir} (no manifest.json)",
                        hint=f"build it: glrl data build --scale {args.scale} --out {data_dir} (for a resumed run, "
                             "with the options it was built with)")
    if manifest is None:
        print(f"building the x{args.scale} {layout}-layout patch set in {data_dir} (first run only)")
        manifest = build(BuildConfig.for_layout(layout, scales=scales), settings.data_root(args.data_root),
                         data_dir, progress=not args.no_progress).manifest
    _check_patch_set(manifest, data_dir, scales, recipe)
    train_list, val_list = data_dir / "train.txt", data_dir / "val.txt"
    if not train_list.is_file():
        raise DataError(f"{train_list} is missing",
                        hint=f"rebuild: glrl data build --scale {args.scale} --out {data_dir} --force")
    if resuming and args.batch_size is not None and net_path.is_file():
        kept = _run_batch_size(net_path)
        if kept != args.batch_size:
            raise TrainingError(f"the run in {run_dir} trains at batch {kept}, not --batch-size {args.batch_size}: "
                                "a resumed run keeps its batch (its data position and schedule are counted in "
                                "those batches)",
                                hint=f"resume without --batch-size (or with {kept}), or start a new run from its "
                                     "weights with --weights and another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_io.save(run_dir, manifest, manifest_io.RUN_COPY_NAME)  # the data's identity travels with the run
    if resuming:
        _change_kept_solver(solver_path, args.solver_set)
        return solver_path
    batch_size, test_batch = args.batch_size or PAPER_BATCH, 2
    val_patches = int(manifest.get("val", {}).get("patches", 0)) if manifest.get("val") else 0
    net = recipe.train_test(str(train_list), str(val_list) if val_patches else None, batch_size, test_batch)
    epoch = iters_per_epoch(int(manifest["train"]["patches"]), batch_size)
    solver = recipe.solver("train_test.prototxt", epoch, args.schedule,
                           snapshot_prefix=f"snapshots/{args.net}_x{args.scale}",
                           test_iters=max(1, math.ceil(val_patches / test_batch)) if val_patches else 1,
                           optimizer=args.optimizer)
    if not val_patches:
        del solver.test_iter[:]
        solver.test_interval = 0
    set_solver_fields(solver, args.solver_set)
    write_net(net, net_path)
    write_solver(solver, solver_path)
    print(f"run folder {run_dir}: {epoch} iterations per epoch ({manifest['train']['patches']} patches / "
          f"batch {batch_size}), max_iter {solver.max_iter}")
    return solver_path


def _change_kept_solver(solver_path: Path, assignments: List[str]) -> None:
    """``--solver-set`` on a resume: the run folder's solver takes the new values, which rule from the
    resumed iteration on (a rate policy is a function of the iteration, as when the file is edited by hand),
    and the note names each field that changed."""
    from glrl.caffe.io import read_solver, write_solver
    from glrl.nets.solver import set_solver_fields

    if not assignments:
        return
    before = read_solver(solver_path)
    after = type(before)()
    after.CopyFrom(before)
    set_solver_fields(after, assignments)
    changes = _changed_fields(before, after)
    if changes:
        write_solver(after, solver_path)
        print(f"note: the solver in {solver_path.parent} changed from here on: {'; '.join(changes)}")


def _run_patch_set(net_path: Path, given):
    """The patch set a run folder's net trains on (the folder of its TRAIN list), which a resume keeps;
    ``--patches`` naming another one is refused. None where the folder has no net yet."""
    from glrl.caffe.io import read_net
    from glrl.errors import TrainingError
    from glrl.train.batches import hdf5_inputs

    inputs = hdf5_inputs(read_net(net_path), "TRAIN") if net_path.is_file() else []
    if not inputs:
        return given
    kept = Path(inputs[0].source).parent
    if given is not None and given != kept:
        raise TrainingError(f"the run in {net_path.parent} trains on the patch set {kept}, not --patches {given}",
                            hint="resume without --patches, or start a new run from its weights with --weights "
                                 "and another --run-dir")
    return kept


def _check_patch_set(manifest: dict, data_dir: Path, scales, recipe) -> None:
    """A patch set fits the run when its files are those its manifest records (in its own folder), it holds
    the run's scales and its input and label sides differ as the net's do (equal for the size-keeping
    GLRL/VDSR nets, by the border SRCNN's 'valid' convolutions eat)."""
    from glrl.data_prep import manifest as manifest_io
    from glrl.errors import DataError

    issues = manifest_io.problems(data_dir, manifest)
    if issues:
        raise DataError(f"the patch set {data_dir} does not match its manifest: {'; '.join(issues)}",
                        hint=f"rebuild it: glrl data build --out {data_dir} with the options it was built with "
                             "(its manifest.json lists them)")
    built = manifest.get("settings", {})
    if tuple(built.get("scales", scales)) != tuple(scales):
        raise DataError(f"the patch set {data_dir} is for x{''.join(map(str, built['scales']))}, not "
                        f"--scale {''.join(map(str, scales))}",
                        hint="give the --scale it was built for, or build one for this scale")
    sides = built.get("patch_size"), built.get("label_size")
    shrink = recipe.patch_sizes[0] - recipe.patch_sizes[1]
    if None not in sides and sides[0] - sides[1] != shrink:
        raise DataError(f"the patch set {data_dir} has {sides[0]}x{sides[0]} inputs and {sides[1]}x{sides[1]} "
                        f"labels; {recipe.name} maps an input to a label {shrink} pixels smaller",
                        hint=f"build it with --label-size = --patch-size - {shrink}" if shrink else
                             "build it with --label-size equal to --patch-size")
