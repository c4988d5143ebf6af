"""``glrl train --backend caffe``: the same ``solver.prototxt`` solved by real Caffe through pycaffe.

Caffe resolves the solver's relative paths (``net``, ``snapshot_prefix``, the HDF5 list files) from its
working directory, so the solve runs in the solver's folder, as ``caffe train --solver solver.prototxt
[--snapshot S | --weights W]`` run beside it would, from a copy of the solver (``solver.caffe.prototxt`` in
the run folder) whose snapshots go to the run folder like the PyTorch backend's. Caffe logs
through glog to stderr (``GLOG_minloglevel`` is lowered to show its iteration lines).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from glrl.errors import TrainingError


def train_in_caffe(solver_path: Path, run_dir: Path, *, device: str = "auto", resume: Optional[Path] = None,
                   weights: Optional[str] = None, on_ready: Optional[Callable[[], None]] = None) -> int:
    """Solve ``solver_path`` with pycaffe in ``run_dir``; returns the exit status (0 on success).

    The net's layer types, the ``weights``' blob shapes and the resumed state are checked first
    (:class:`glrl.backends.pycaffe_net.PycaffeSolver`): real Caffe aborts the process on a misfit. ``on_ready``
    runs once they are in place, before the first iteration."""
    os.environ["GLOG_minloglevel"] = "0"
    from glrl.backends.pycaffe_net import PycaffeSolver, import_caffe

    caffe = import_caffe()
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        try:
            caffe.set_device(index)
            caffe.set_mode_gpu()
        except Exception as exc:  # pycaffe raises plain exceptions for a CPU-only build
            raise TrainingError(f"this Caffe cannot use the GPU ({exc})",
                                hint="use --device cpu with the Debian CPU build of Caffe") from exc
    else:
        caffe.set_mode_cpu()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    solver_file = _solver_for_run(Path(solver_path).resolve(), run_dir)
    resume_file = Path(resume).resolve() if resume else None
    weights_file = Path(weights).resolve() if weights else None
    previous = Path.cwd()
    os.chdir(Path(solver_path).resolve().parent)
    try:
        solver = PycaffeSolver(solver_file, weights_file)
        if resume_file:
            solver.restore(resume_file)
        if on_ready is not None:
            on_ready()
        solver.solve()
    finally:
        os.chdir(previous)
    return 0


def _solver_for_run(solver_path: Path, run_dir: Path) -> Path:
    """A copy of the solver in ``run_dir`` with an absolute ``net`` and its snapshots under ``run_dir``
    (a relative ``snapshot_prefix`` is taken relative to the run folder, as the PyTorch backend does)."""
    from glrl.caffe.io import read_solver, write_solver

    solver = read_solver(solver_path)
    if solver.net and not Path(solver.net).is_absolute():
        solver.net = str((solver_path.parent / solver.net).resolve())
    prefix = Path(solver.snapshot_prefix or Path(solver.net).stem)
    prefix = prefix if prefix.is_absolute() else run_dir / prefix
    prefix.parent.mkdir(parents=True, exist_ok=True)  # Caffe does not create the snapshot folder
    solver.snapshot_prefix = str(prefix)
    target = run_dir / "solver.caffe.prototxt"
    write_solver(solver, target)
    return target
