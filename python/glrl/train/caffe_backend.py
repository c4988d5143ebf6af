"""``glrl train --backend caffe``: the same ``solver.prototxt`` solved by real Caffe through pycaffe.

Caffe resolves the solver's relative paths (``net``, ``snapshot_prefix``, the HDF5 list files) from its
working directory, so the solve runs with the run folder as working directory, exactly as
``cd <run> && caffe train --solver solver.prototxt [--snapshot S | --weights W]`` would. Caffe logs
through glog to stderr (``GLOG_minloglevel`` is lowered to show its iteration lines).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from glrl.errors import TrainingError


def train_in_caffe(solver_path: Path, run_dir: Path, *, device: str = "auto", resume: Optional[Path] = None,
                   weights: Optional[str] = None) -> int:
    """Solve ``solver_path`` with pycaffe in ``run_dir``; returns the exit status (0 on success)."""
    os.environ["GLOG_minloglevel"] = "0"
    from glrl.backends.pycaffe_net import import_caffe

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
    solver_file = str(Path(solver_path).resolve())
    resume_file = str(Path(resume).resolve()) if resume else None
    weights_file = str(Path(weights).resolve()) if weights else None
    from glrl.caffe.io import read_solver

    prefix = read_solver(solver_file).snapshot_prefix
    if prefix:  # Caffe does not create the snapshot folder
        (run_dir / prefix).parent.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(run_dir)
    try:
        solver = caffe.get_solver(solver_file)
        if weights_file:
            solver.net.copy_from(weights_file)
        if resume_file:
            solver.restore(resume_file)
        solver.solve()
    finally:
        os.chdir(previous)
    return 0
