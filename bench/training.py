"""Training speed: SGD iterations per second at batch 32 of 31×31 patches, ours vs real Caffe on the CPU.

Both run the same generated ``train_test`` net and ``solver.prototxt`` (the paper's SGD schedule, testing
and snapshots switched off) on the same HDF5 patch file of random patches.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from timing import measure, threads_text

Record = Dict[str, Any]
BATCH, PATCH = 32, 31
BATCHES_IN_FILE = 8


def write_training_files(folder: Path, net_name: str, batch: int = BATCH) -> None:
    """``patches.h5`` + ``train.txt`` (list), ``train.prototxt`` and ``solver.prototxt`` in ``folder``, for
    batches of ``batch`` patches (the paper's 32 unless told)."""
    import h5py
    from glrl.caffe import io
    from glrl.nets.registry import get_net

    rng = np.random.default_rng(0)
    label = rng.random((BATCHES_IN_FILE * batch, 1, PATCH, PATCH), dtype=np.float32)
    data = np.clip(label + 0.05 * rng.standard_normal(label.shape).astype(np.float32), 0, 1)
    with h5py.File(str(folder / "patches.h5"), "w") as handle:
        handle.create_dataset("data", data=data)
        handle.create_dataset("label", data=label)
    (folder / "train.txt").write_text("patches.h5\n")
    recipe = get_net(net_name)
    io.write_net(recipe.train_test("train.txt", "train.txt", batch_size=batch), folder / "train.prototxt")
    solver = recipe.solver("train.prototxt", iters_per_epoch=BATCHES_IN_FILE)
    solver.test_interval = 10**9
    solver.test_initialization = False
    solver.snapshot = 0
    solver.snapshot_after_train = False
    solver.display = 0
    solver.max_iter = 10**6
    solver.solver_mode = solver.CPU
    del solver.test_iter[:]
    solver.test_iter.append(1)
    io.write_solver(solver, folder / "solver.prototxt")


def read_train_net(folder: Path) -> Any:
    """The training net with its HDF5 list files made absolute (our backend resolves them from the cwd)."""
    from glrl.caffe.io import read_net

    net_param = read_net(folder / "train.prototxt")
    for layer in net_param.layer:
        if layer.type == "HDF5Data":
            layer.hdf5_data_param.source = str(folder / layer.hdf5_data_param.source)
    return net_param


def ours(folder: Path, repeats: int, threads: int, precision: str = "fp32",
         channels_last: Optional[bool] = None, winograd: bool = False) -> Record:
    """Our trainer's iteration in fp32 (Caffe's arithmetic) or under bf16 autocast (``--precision bf16``),
    in the layout ``glrl train`` uses at that precision unless ``channels_last`` says otherwise; with
    ``winograd``, as ``glrl train --winograd`` runs (fp32, channels-last, Winograd 3×3 convolutions)."""
    import torch
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe.io import read_solver
    from glrl.train.batches import HDF5Batches
    from glrl.train.run import channels_last_for, precision_context
    from glrl.train.settings import SolverSettings
    from glrl.train.solver import CaffeSolver

    torch.set_num_threads(threads)
    settings = SolverSettings.from_proto(read_solver(folder / "solver.prototxt"))
    net = TorchNet(read_train_net(folder), "TRAIN", seed=0)
    as_glrl_train = channels_last is None
    if channels_last is None:
        channels_last = channels_last_for(precision) or winograd
    if channels_last:
        net.use_channels_last()
    if winograd:
        net.use_winograd(gradients=True)
    batches = HDF5Batches(folder / "train.txt", ["data", "label"], BATCH, shuffle=True)
    solver = CaffeSolver(settings, net, autocast=precision_context(precision, torch.device("cpu")))
    try:
        timing = measure(lambda: solver.iteration(batches), repeats, warmup=2)
    finally:
        batches.close()
    layout = ("channels_last" if channels_last else "NCHW") + (" + Winograd" if winograd else "") + (
        (" (as glrl train --winograd runs)" if winograd else " (as glrl train runs)") if as_glrl_train else "")
    return {"tool": "ours (PyTorch)", "setting": f"{precision}, {layout}, {threads_text(threads)}",
            "precision": precision, **timing}


CAFFE_SCRIPT = r"""
import json, time
import caffe
caffe.set_mode_cpu()
solver = caffe.SGDSolver("solver.prototxt")
solver.step(1)
start = time.perf_counter()
solver.step(1)
first = time.perf_counter() - start
runs = []
cpu = []
for _ in range(max(3, min(REPEATS, int(25.0 / first)))):
    start, start_cpu = time.perf_counter(), time.process_time()
    solver.step(1)
    runs.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps([runs, sorted(cpu)[len(cpu) // 2]]))
"""


def caffe(folder: Path, repeats: int, threads: int) -> Record:
    from glrl import oracle

    if not oracle.is_built():
        raise RuntimeError(f"the real-Caffe root is not built at {oracle.caffe_root()} (make caffe-root)")
    with oracle.RootSession(threads=threads) as session:
        for name in ("patches.h5", "train.txt", "train.prototxt", "solver.prototxt"):
            shutil.copy(folder / name, session.path / name)
        out = session.run_python(CAFFE_SCRIPT.replace("REPEATS", str(repeats)), timeout=3600)
    runs, cpu = json.loads(out.strip().splitlines()[-1])
    return {"tool": "Caffe (Debian, OpenBLAS)", "setting": threads_text(threads),
            "median_s": statistics.median(runs), "runs_s": [round(r, 6) for r in runs], "median_cpu_s": cpu}


def run_section(work: Path, nets: List[str], repeats: int) -> List[Record]:
    """Each net, each tool (ours as ``glrl train`` runs it in fp32 and in bf16, fp32 channels-last, and fp32 with
    ``--winograd``), with
    1 thread and with all cores (the ratios take each tool's fastest, fp32 and bf16 apart)."""
    cores = len(os.sched_getaffinity(0))
    records: List[Record] = []
    for name in nets:
        folder = work / f"train_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        write_training_files(folder, name)
        variants = [("ours", lambda t, f=folder: ours(f, repeats, t)),
                    ("ours", lambda t, f=folder: ours(f, repeats, t, channels_last=True)),
                    ("ours", lambda t, f=folder: ours(f, repeats, t, winograd=True)),
                    ("ours", lambda t, f=folder: ours(f, repeats, t, precision="bf16")),
                    ("caffe", lambda t, f=folder: caffe(f, repeats, t))]
        for tool, fn in variants:
            for threads in sorted({1, cores}):
                try:
                    record = fn(threads)
                    record["iters_per_s"] = 1.0 / record["median_s"]
                except Exception as exc:
                    record = {"tool": tool, "skipped": f"{type(exc).__name__}: {exc}"[:400]}
                record.update({"net": name, "case": f"batch {BATCH} of {PATCH}x{PATCH}"})
                records.append(record)
                print(f"  train {name} {tool} {threads} threads: done", flush=True)
    return records
