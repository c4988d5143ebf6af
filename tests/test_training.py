"""Training runs end to end: resume after ``kill -9`` equals an uninterrupted run, a Caffe state without
our sidecar resumes too, SIGTERM snapshots, divergence stops cleanly, 2 gloo processes equal 1 process,
and a tiny run on real images lowers the loss and beats bicubic on Set5."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from string import Template

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from glrl.caffe.io import read_caffemodel, read_solverstate  # noqa: E402
from glrl.errors import DataError, TrainingError  # noqa: E402
from glrl.train.run import RunOptions, train  # noqa: E402
from glrl.train.snapshot import latest_snapshot, sidecar_path  # noqa: E402

TINY_NET = '''name: "tiny"
layer { name: "train_data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: $batch shuffle: $shuffle } }
layer { name: "test_data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "val.txt" batch_size: 4 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: $width kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: $width kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "residual"
  param { lr_mult: 1 } param { lr_mult: 0.1 decay_mult: 0 }
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.001 } } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "residual" top: "prediction" }
layer { name: "loss" type: "EuclideanLoss" bottom: "prediction" bottom: "label" top: "loss" }
'''

SOLVER = '''net: "net.prototxt"
base_lr: $base_lr lr_policy: "step" gamma: 0.5 stepsize: 6 momentum: 0.9 weight_decay: 0.0001
clip_gradients: $clip max_iter: $max_iter display: 2 average_loss: 3
snapshot: $snapshot snapshot_prefix: "snap/tiny"
test_iter: 1 test_interval: 8 random_seed: 5 iter_size: $iter_size type: "$solver_type"
'''


def write_patches(folder: Path, name: str, label: np.ndarray, data: np.ndarray) -> None:
    with h5py.File(folder / name, "w") as handle:
        handle["data"] = data.astype(np.float32)
        handle["label"] = label.astype(np.float32)


def make_run(folder: Path, *, batch=8, shuffle=False, width=4, base_lr=0.05, clip=0.1, max_iter=24,
             snapshot=6, iter_size=2, solver_type="SGD") -> Path:
    """A tiny residual net on smooth synthetic patches split over two HDF5 files (rows wrap across them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, rows in (("a.h5", 40), ("b.h5", 26), ("val.h5", 4)):
        label = rng.random((rows, 1, 10, 10))
        write_patches(folder, name, label, label + 0.1 * rng.standard_normal(label.shape))
    (folder / "train.txt").write_text("a.h5\nb.h5\n")
    (folder / "val.txt").write_text("val.h5\n")
    net = Template(TINY_NET).substitute(batch=batch, shuffle=str(shuffle).lower(), width=width)
    (folder / "net.prototxt").write_text(net)
    solver = Template(SOLVER).substitute(base_lr=base_lr, clip=clip, max_iter=max_iter, snapshot=snapshot,
                                         iter_size=iter_size, solver_type=solver_type)
    (folder / "solver.prototxt").write_text(solver)
    return folder / "solver.prototxt"


def glrl_train(solver: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "glrl", "train", "--solver", str(solver), "--run-dir", str(run_dir),
               "--device", "cpu", "--no-set5", "--no-progress", "--threads", "1", *extra]
    return subprocess.Popen(command, cwd=str(solver.parent), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    return output


def final_weights(run_dir: Path, iteration: int) -> dict:
    model = read_caffemodel(run_dir / "snap" / f"tiny_iter_{iteration}.caffemodel")
    return {f"{layer.name}/{i}": np.asarray(blob.data)
            for layer in model.layer for i, blob in enumerate(layer.blobs)}


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted 24-iteration run (SGD, clipping, iter_size 2, batches wrapping over two files)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    solver = make_run(folder, shuffle=True)
    finish(glrl_train(solver, folder / "run"))
    return final_weights(folder / "run", 24)


def test_resume_after_kill_9_ends_with_the_uninterrupted_weights(tmp_path, uninterrupted):
    """The killed run is the same run with a max_iter it cannot reach (the step policy does not read max_iter),
    so it is killed mid-way however slow the machine; resumed under the 24-iteration solver, it must end where
    the uninterrupted run did."""
    solver = make_run(tmp_path, shuffle=True)
    endless = solver.with_name("endless.prototxt")
    endless.write_text(solver.read_text().replace("max_iter: 24", "max_iter: 100000"))
    run_dir = tmp_path / "run"
    process = glrl_train(endless, run_dir)
    deadline = time.monotonic() + 180
    while latest_snapshot(run_dir) is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = latest_snapshot(run_dir)
    assert killed_at is not None and read_solverstate(killed_at).iter > 0
    output = finish(glrl_train(solver, run_dir, "--resume"))
    assert "Optimization Done." in output
    assert_identical(final_weights(run_dir, 24), uninterrupted)


def test_training_in_time_slices_ends_with_the_uninterrupted_weights(tmp_path, uninterrupted):
    solver = make_run(tmp_path, shuffle=True)
    run_dir = tmp_path / "run"
    output = finish(glrl_train(solver, run_dir, "--time-limit", "0"))  # stops after its first iteration
    assert "time limit reached at iteration 1: continue with --resume" in output
    assert read_solverstate(latest_snapshot(run_dir)).iter == 1
    finish(glrl_train(solver, run_dir, "--resume"))
    assert_identical(final_weights(run_dir, 24), uninterrupted)


def test_a_run_stopped_at_an_iteration_snapshots_there_and_resumes_to_the_uninterrupted_weights(
        tmp_path, uninterrupted):
    solver = make_run(tmp_path, shuffle=True)
    run_dir = tmp_path / "run"
    assert "Stopped at iteration 10 as asked (max_iter 24)" in finish(glrl_train(solver, run_dir, "--stop-at", "10"))
    assert read_solverstate(latest_snapshot(run_dir)).iter == 10
    finish(glrl_train(solver, run_dir, "--resume"))
    assert_identical(final_weights(run_dir, 24), uninterrupted)


def run_gpu_slice(folder: Path, out: str, seconds: int, **env: str) -> subprocess.CompletedProcess:
    """``scripts/gpu_slice.sh`` on the CPU: the tiny run, a work folder of its own, no packing margin."""
    from glrl.settings import REPO_ROOT

    options = ["--solver", str(folder / "solver.prototxt"), "--device", "cpu", "--no-set5", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLRL_WORK=str(folder / "work"), MARGIN="0", **env)
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_slice.sh"), str(folder / out), str(seconds),
                           *options], cwd=str(folder), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_run_in_two_gpu_slices_on_machines_returned_bare_ends_with_the_uninterrupted_weights(
        tmp_path, uninterrupted):
    make_run(tmp_path, shuffle=True)
    run_gpu_slice(tmp_path, "first", 0)  # no time left: one iteration, then snapshot and pack
    with tarfile.open(tmp_path / "first" / "run.tar") as tar:
        assert "snap/tiny_iter_1.solverstate" in tar.getnames() and "train.log" in tar.getnames()
    shutil.rmtree(tmp_path / "work")  # the next slice starts on a bare machine
    run_gpu_slice(tmp_path, "second", 600, RUN_TAR=str(tmp_path / "first" / "run.tar"))
    with tarfile.open(tmp_path / "second" / "run.tar") as tar:
        assert sorted(n for n in tar.getnames() if n.startswith("snap/")) == [
            "snap/tiny_iter_24.caffemodel", "snap/tiny_iter_24.glrl.json", "snap/tiny_iter_24.solverstate"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert_identical(final_weights(tmp_path / "unpacked", 24), uninterrupted)


def test_table1_on_a_gpu_trains_the_two_nets_to_the_same_iteration(tmp_path, data_root):
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig
    from glrl.settings import REPO_ROOT

    build(BuildConfig(train_sets=("Set5",), augment=False), data_root, tmp_path / "work" / "data" / "x3",
          workers=1, progress=False)  # the patch set both runs find (a few hundred patches)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLRL_WORK=str(tmp_path / "work"), GLRL_DATA=str(data_root),
               MARGIN="0", FIRST_SHARE="0", BENCH="1", GPU_MODES="tf32 + CUDA graph (Adam),bf16")
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_table1.sh"), str(tmp_path / "out"), "200",
                           "--scale", "3", "--schedule", "smoke", "--optimizer", "adam", "--device", "cpu",
                           "--threads", "1", "--no-set5"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GLRL at iteration 1, GLRL-2LRB at iteration 1\n" in done.stdout  # GLRL had no time: 1 iteration
    assert "no CUDA device" in (tmp_path / "out" / "bench" / "gpu.md").read_text()  # measured where CUDA is
    assert "the GPU benchmarks failed" not in done.stdout  # GPU_MODES reached bench/run.py as one argument
    for net, prefix in (("glrl", "glrl_x3"), ("glrl-2lrb", "glrl-2lrb_x3")):
        with tarfile.open(tmp_path / "out" / net / "run.tar") as tar:
            assert f"snapshots/{prefix}_iter_1.caffemodel" in tar.getnames()


def test_table1_together_trains_both_nets_at_once_and_a_second_call_brings_them_to_one_iteration(
        tmp_path, data_root):
    """TOGETHER=1 (both nets on the one GPU at once): the patch set is built once, before either starts (two
    ``glrl train`` would each build it), and STOP_AT with the packed runs brings both to one iteration.
    WEIGHTS_GLRL starts GLRL's run from the released model (recorded in the run), and is left alone once the
    run is continued from its tar."""
    from glrl.settings import MODELS_DIR, REPO_ROOT

    released = MODELS_DIR / "glrl_x234.caffemodel"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLRL_WORK=str(tmp_path / "work"), GLRL_DATA=str(data_root),
               MARGIN="0", TOGETHER="1", BUILD_ARGS="--train-sets Set5 --no-augment",  # a few hundred patches
               WEIGHTS_GLRL=str(released))
    options = ["--scale", "3", "--schedule", "smoke", "--optimizer", "adam", "--device", "cpu", "--threads", "1",
               "--no-set5"]

    def table1(out: str, seconds: str, **more: str) -> str:
        done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_table1.sh"), str(tmp_path / out),
                               seconds, *options], env=dict(env, **more), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = table1("first", "0")  # no time: one iteration each, after the build
    assert "GLRL at iteration 1, GLRL-2LRB at iteration 1\n" in first
    assert "built in" in (tmp_path / "first" / "data-build.log").read_text()
    with tarfile.open(tmp_path / "first" / "glrl" / "run.tar") as tar:
        origin = json.load(tar.extractfile("initial-weights.json"))
        assert (origin["file"], origin["model"]["name"]) == (str(released), "glrl_x234")
    with tarfile.open(tmp_path / "first" / "glrl-2lrb" / "run.tar") as tar:
        assert "initial-weights.json" not in tar.getnames()  # WEIGHTS_2LRB unset: from its fillers
    second = table1("second", "300", STOP_AT="6", RUN_TAR_GLRL=str(tmp_path / "first" / "glrl" / "run.tar"),
                    RUN_TAR_2LRB=str(tmp_path / "first" / "glrl-2lrb" / "run.tar"))
    assert "GLRL at iteration 6, GLRL-2LRB at iteration 6\n" in second
    set_manifest = json.loads((tmp_path / "work" / "data" / "x3" / "manifest.json").read_text())
    with tarfile.open(tmp_path / "second" / "glrl" / "run.tar") as tar:  # the data's identity travels along
        assert json.load(tar.extractfile("data-manifest.json")) == set_manifest
    assert not (tmp_path / "second" / "data-build.log").exists()  # the set was there: not built again


def test_a_resumed_run_keeps_the_seed_it_started_with(tmp_path):
    solver = make_run(tmp_path, max_iter=8, snapshot=4)
    solver.write_text(solver.read_text().replace("random_seed: 5", ""))  # a fresh seed per process
    run_dir = tmp_path / "run"

    def run(resume=None):
        train(RunOptions(solver=solver, run_dir=run_dir, device="cpu", resume=resume, progress=False,
                         tensorboard=False, echo=False))

    run()
    halfway = run_dir / "snap" / "tiny_iter_4.solverstate"
    started_with = json.loads(sidecar_path(halfway).read_text())["seed"]
    run(resume=halfway)
    assert json.loads(sidecar_path(run_dir / "snap" / "tiny_iter_8.solverstate").read_text())["seed"] == started_with


@pytest.mark.parametrize("first_sidecar", ["with segments", "from before segments were kept"])
def test_a_run_continued_on_another_machine_keeps_which_iterations_ran_where(tmp_path, monkeypatch, first_sidecar):
    """A run begun on one machine and resumed on another (a lent GPU, then a CPU) says so in its sidecars:
    each piece's iterations, seconds, precision and machine. A sidecar from before the pieces were kept
    stands for its whole run on the machine it names."""
    import glrl.train.run as run_module

    solver = make_run(tmp_path, max_iter=8, snapshot=4)
    run_dir = tmp_path / "run"

    def run(machine, precision, resume=None):
        monkeypatch.setattr(run_module, "describe_hardware", lambda: machine)
        train(RunOptions(solver=solver, run_dir=run_dir, device="cpu", precision=precision, resume=resume,
                         stop_at=4 if resume is None else None, progress=False, tensorboard=False, echo=False))

    run("machine A", "fp32")
    halfway = sidecar_path(run_dir / "snap" / "tiny_iter_4.solverstate")
    first = json.loads(halfway.read_text())
    assert [(s["from_iter"], s["to_iter"], s["hardware"], s["precision"]) for s in first["segments"]] == [
        (0, 4, "machine A", "fp32")]
    if first_sidecar != "with segments":
        del first["segments"]
        halfway.write_text(json.dumps(first))
    run("machine B", "bf16", resume=run_dir / "snap" / "tiny_iter_4.solverstate")
    final = json.loads(sidecar_path(run_dir / "snap" / "tiny_iter_8.solverstate").read_text())
    pieces = final["segments"]
    assert [(s["from_iter"], s["to_iter"], s["hardware"], s["precision"]) for s in pieces] == [
        (0, 4, "machine A", "fp32"), (4, 8, "machine B", "bf16")]
    assert (final["hardware"], final["precision"]) == ("machine B", "bf16")  # the latest piece's
    assert pieces[0]["seconds"] == first["elapsed_seconds"] and pieces[1]["seconds"] > 0
    assert final["elapsed_seconds"] == first["elapsed_seconds"] + pieces[1]["seconds"]


def test_a_resumed_run_records_each_iteration_once_in_its_metrics(tmp_path):
    solver = make_run(tmp_path, max_iter=12, snapshot=4)
    run_dir = tmp_path / "run"

    def run(resume=None):
        train(RunOptions(solver=solver, run_dir=run_dir, device="cpu", resume=resume, progress=False,
                         tensorboard=False, echo=False))

    def iterations_in_metrics():
        return [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()]

    run()
    uninterrupted = iterations_in_metrics()
    run(resume=run_dir / "snap" / "tiny_iter_8.solverstate")  # its test and display at 8 come again
    assert iterations_in_metrics() == uninterrupted


def test_a_run_whose_last_metrics_row_was_cut_short_still_resumes(tmp_path, capsys):
    solver = make_run(tmp_path, max_iter=12, snapshot=4)
    run_dir = tmp_path / "run"
    options = dict(solver=solver, run_dir=run_dir, device="cpu", progress=False, tensorboard=False, echo=False)

    def rows_without_seconds():
        return [line.split(",")[:3] + line.split(",")[4:] for line in (run_dir / "metrics.csv").read_text().split()]

    train(RunOptions(**options))
    uninterrupted = rows_without_seconds()
    with (run_dir / "metrics.csv").open("a") as handle:
        handle.write("13,0.001")  # a kill in the middle of an append
    train(RunOptions(**options, resume=run_dir / "snap" / "tiny_iter_8.solverstate"))
    assert rows_without_seconds() == uninterrupted
    assert "dropped 1 unreadable row" in capsys.readouterr().err


def test_a_caffe_state_without_our_sidecar_resumes_to_the_same_weights(tmp_path):
    solver = make_run(tmp_path, max_iter=12)
    finish(glrl_train(solver, tmp_path / "whole"))
    finish(glrl_train(solver, tmp_path / "half"))
    state = tmp_path / "half" / "snap" / "tiny_iter_6.solverstate"
    sidecar_path(state).unlink()  # as real Caffe leaves it: weights, history, iter, current_step only
    for later in (tmp_path / "half" / "snap").glob("tiny_iter_12.*"):
        later.unlink()
    output = finish(glrl_train(solver, tmp_path / "half", "--resume", str(state)))
    assert "no glrl sidecar" in output
    assert_identical(final_weights(tmp_path / "half", 12), final_weights(tmp_path / "whole", 12))


def start_long_run(folder: Path) -> subprocess.Popen:
    """A ``glrl train`` in ``folder/run`` that would run for hours, once it has done two iterations."""
    process = glrl_train(make_run(folder, max_iter=100000, snapshot=0), folder / "run")
    log = folder / "run" / "train.log"
    deadline = time.monotonic() + 120
    while (not log.is_file() or "Iteration 2 " not in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None and "Iteration 2 " in log.read_text(), "the run did not get going"
    return process


def test_sigterm_writes_a_snapshot_then_stops(tmp_path):
    process = start_long_run(tmp_path)
    log = tmp_path / "run" / "train.log"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    state = latest_snapshot(tmp_path / "run")
    assert state is not None and 2 < read_solverstate(state).iter < 100000
    assert "Optimization stopped early." in log.read_text()


def test_a_second_run_in_a_folder_in_use_stops_naming_the_first_and_writes_nothing(tmp_path):
    """A resume started twice must not interleave two processes' snapshots and metrics in one folder."""
    first = start_long_run(tmp_path)
    try:
        metrics_before = (tmp_path / "run" / "metrics.csv").read_bytes()
        second = glrl_train(tmp_path / "solver.prototxt", tmp_path / "run", "--resume")
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 2, output
        assert f"run folder {tmp_path / 'run'} is in use by pid {first.pid}" in output
        assert (tmp_path / "run" / "metrics.csv").read_bytes().startswith(metrics_before)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 130
    # the lock went with its holder: the run resumes
    finish(glrl_train(make_run(tmp_path, max_iter=1, snapshot=0), tmp_path / "run", "--resume"))


def test_a_folder_lock_left_by_a_dead_process_does_not_block(tmp_path):
    from glrl.fsutil import FolderInUse, folder_lock

    (tmp_path / ".lock").write_text("pid 1 on elsewhere, since 2026-01-01 00:00:00\n")
    with folder_lock(tmp_path, "run folder"):
        with pytest.raises(FolderInUse) as info:
            with folder_lock(tmp_path, "run folder"):
                pass
        assert f"in use by pid {os.getpid()}" in info.value.message
    with folder_lock(tmp_path, "run folder"):
        pass


def test_a_folder_the_lock_created_goes_again_when_nothing_was_written_in_it(tmp_path):
    from glrl.fsutil import folder_lock

    with pytest.raises(TrainingError):
        with folder_lock(tmp_path / "refused", "run folder"):
            raise TrainingError("refused after the lock was taken")
    assert not (tmp_path / "refused").exists()
    with folder_lock(tmp_path / "written", "run folder"):
        (tmp_path / "written" / "solver.prototxt").write_text("")
    assert sorted(p.name for p in (tmp_path / "written").iterdir()) == [".lock", "solver.prototxt"]
    (tmp_path / "existing").mkdir()
    with folder_lock(tmp_path / "existing", "run folder"):
        pass
    assert (tmp_path / "existing").is_dir()


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_snapshot(tmp_path):
    solver = make_run(tmp_path, base_lr=1e4, clip=-1, max_iter=60, snapshot=1, iter_size=1)
    with pytest.raises(TrainingError) as info:
        train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", progress=False,
                         tensorboard=False, echo=False))
    assert "diverged" in info.value.message and "holds finite weights" in info.value.hint
    last = latest_snapshot(tmp_path / "run")
    model = read_caffemodel(tmp_path / "run" / "snap" / f"tiny_iter_{read_solverstate(last).iter}.caffemodel")
    assert all(np.isfinite(np.asarray(blob.data)).all() for layer in model.layer for blob in layer.blobs)


def test_a_run_that_began_and_then_diverged_keeps_its_new_folder_its_log_and_snapshots(tmp_path, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path / "spec", base_lr=1e4, clip=-1, max_iter=60, snapshot=1, iter_size=1)
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                 "--no-set5", "--no-progress", "--threads", "1"]) == 2
    assert "diverged" in capsys.readouterr().err
    assert "diverged" in (tmp_path / "run" / "train.log").read_text() and latest_snapshot(tmp_path / "run")


def test_an_infinite_loss_stops_at_its_iteration_before_anything_is_written(tmp_path):
    solver = make_run(tmp_path, snapshot=1)
    with h5py.File(tmp_path / "a.h5", "r+") as handle:
        handle["label"][0, 0, 0, 0] = np.inf  # in the first batch
    with pytest.raises(TrainingError, match="the loss is inf at iteration 0"):
        train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", progress=False,
                         tensorboard=False, echo=False))
    assert latest_snapshot(tmp_path / "run") is None


@pytest.mark.parametrize("checked_at, message", [
    ("display", "the weights hold NaN/Inf after iteration 3"),
    ("snapshot", "the weights hold NaN/Inf at iteration 4"),
])
def test_weights_gone_non_finite_under_a_finite_loss_are_caught_at_the_next_display_or_snapshot(
        tmp_path, monkeypatch, checked_at, message):
    """A NaN that reaches the weights without showing in that iteration's loss (stood in here by writing it
    after the fourth update) is caught before the next iteration's loss could show it, and never snapshotted."""
    from glrl.train.solver import CaffeSolver

    solver = make_run(tmp_path, snapshot=1 if checked_at == "snapshot" else 1000)
    if checked_at == "display":
        solver.write_text(solver.read_text().replace("display: 2", "display: 1"))
    update = CaffeSolver.iteration

    def poisoned(self, batches):
        loss = update(self, batches)
        if self.iter == 4:
            with torch.no_grad():
                self.params[0].param.view(-1)[0] = float("nan")
        return loss

    monkeypatch.setattr(CaffeSolver, "iteration", poisoned)
    with pytest.raises(TrainingError, match=message):
        train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", progress=False,
                         tensorboard=False, echo=False))
    last = latest_snapshot(tmp_path / "run")
    assert (read_solverstate(last).iter if last else 0) == (3 if checked_at == "snapshot" else 0)


def test_the_test_loss_is_the_mean_over_test_iter_batches(tmp_path):
    """Two validation batches tested together give the mean of what each gives alone (Caffe's TestAll)."""
    rng = np.random.default_rng(7)
    halves = []
    for _ in range(2):
        label = rng.random((4, 1, 10, 10))
        halves.append((label, label + 0.3 * rng.standard_normal(label.shape)))

    def test_loss(name: str, rows: list, test_iter: int) -> float:
        folder = tmp_path / name
        solver = make_run(folder, max_iter=8, snapshot=8)
        write_patches(folder, "val.h5", np.concatenate([halves[i][0] for i in rows]),
                      np.concatenate([halves[i][1] for i in rows]))
        solver.write_text(solver.read_text().replace("test_iter: 1", f"test_iter: {test_iter}"))
        train(RunOptions(solver=solver, run_dir=folder / "run", device="cpu", progress=False,
                         tensorboard=False, echo=False))
        header, *rows_ = [line.split(",") for line in (folder / "run" / "metrics.csv").read_text().splitlines()]
        return next(float(row[header.index("test_loss")]) for row in rows_ if row[header.index("test_loss")])

    first, second = test_loss("first", [0], 1), test_loss("second", [1], 1)
    assert abs(first - second) > 0.01
    assert test_loss("both", [0, 1], 2) == pytest.approx((first + second) / 2, rel=1e-6)


@pytest.mark.parametrize("after_train, iterations", [(None, [6, 10]), ("false", [6]), ("true", [6, 10])])
def test_the_final_snapshot_follows_snapshot_after_train(tmp_path, after_train, iterations):
    solver = make_run(tmp_path, max_iter=10, snapshot=6)
    if after_train:
        solver.write_text(solver.read_text() + f"snapshot_after_train: {after_train}\n")
    train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", progress=False,
                     tensorboard=False, echo=False))
    written = sorted(read_solverstate(path).iter for path in (tmp_path / "run" / "snap").glob("*.solverstate"))
    assert written == iterations


DISTRIBUTED_SCRIPT = '''
import sys, torch
torch.set_num_threads(1)
from glrl.train.run import RunOptions, train
train(RunOptions(solver=sys.argv[1], run_dir=sys.argv[2], device="cpu", progress=False, tensorboard=False,
                 echo=False))
'''


def test_two_gloo_processes_equal_one_process_at_the_same_global_batch(tmp_path):
    solver = make_run(tmp_path, max_iter=12, snapshot=6, solver_type="Nesterov")
    script = tmp_path / "job.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(script), str(solver), str(tmp_path / "one")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--standalone", str(script), str(solver), str(tmp_path / "two")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = final_weights(tmp_path / "one", 12), final_weights(tmp_path / "two", 12)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    halfway = final_weights(tmp_path / "one", 6)
    assert any(not np.array_equal(one[key], halfway[key]) for key in one)  # the weights did move


def cut_training_patches(folder: Path, image_folder: Path, scale: int, size: int = 24,
                         images: int = 8) -> int:
    """Bicubic-degraded Y patches (input) and their originals (label) from a few training images."""
    from glrl.matlab_compat import im2double, imresize, modcrop, rgb2ycbcr
    from PIL import Image

    inputs, labels = [], []
    for path in sorted(image_folder.glob("*.bmp"))[:images]:
        y = rgb2ycbcr(modcrop(np.asarray(Image.open(path))[..., :3], scale))[..., 0]
        high = im2double(y)
        low = imresize(imresize(high, 1.0 / scale), output_shape=high.shape)
        for top in range(0, high.shape[0] - size + 1, size):
            for left in range(0, high.shape[1] - size + 1, size):
                inputs.append(low[None, top:top + size, left:left + size])
                labels.append(high[None, top:top + size, left:left + size])
    write_patches(folder, "a.h5", np.stack(labels), np.stack(inputs))
    write_patches(folder, "val.h5", np.stack(labels[:4]), np.stack(inputs[:4]))
    (folder / "train.txt").write_text("a.h5\n")
    (folder / "val.txt").write_text("val.h5\n")
    return len(inputs)


@pytest.mark.slow
def test_a_tiny_run_on_real_images_lowers_the_loss_and_beats_bicubic_on_set5(tmp_path, data_root):
    from glrl.train.set5 import Set5Probe

    torch.set_num_threads(2)
    patches = cut_training_patches(tmp_path, data_root / "train" / "T91", scale=3)
    assert patches > 100
    (tmp_path / "net.prototxt").write_text(
        Template(TINY_NET).substitute(batch=16, shuffle="true", width=16))
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" type: "Adam" base_lr: 0.001 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999 '
        'max_iter: 300 display: 50 average_loss: 20 test_iter: 1 test_interval: 150 '
        'test_initialization: true snapshot: 0 snapshot_prefix: "snap/tiny" random_seed: 1')
    probe = Set5Probe(data_root / "test" / "Set5", 3)
    result = train(RunOptions(solver=tmp_path / "solver.prototxt", run_dir=tmp_path / "run", device="cpu",
                              psnr_probe=probe, bicubic_psnr=probe.bicubic, progress=False, tensorboard=False,
                              echo=False))
    assert result.iterations == 300 and result.caffemodel.is_file()
    # the loss is mostly the bicubic residual the net cannot recover; learning removes a few percent of it
    assert np.mean(result.losses[-60:]) < 0.95 * np.mean(result.losses[:60]), result.losses
    print(f"Set5 x3 PSNR after 300 iterations: {result.set5_psnr:.3f} dB, bicubic {probe.bicubic:.3f} dB")
    assert result.set5_psnr > probe.bicubic + 0.1, (result.set5_psnr, probe.bicubic)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "iteration,lr,loss,seconds,test_loss,set5_psnr" and len(rows) > 6
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------- data order
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_come_in_caffes_hdf5data_order_and_resume_from_their_state(tmp_path, shuffle):
    from glrl.data_prep.reader import CaffeHDF5Reader
    from glrl.train.batches import HDF5Batches

    make_run(tmp_path)  # two files of 40 and 26 rows: batches of 7 straddle files and wrap around
    ours = HDF5Batches(tmp_path / "train.txt", ["data", "label"], 7, shuffle=shuffle)
    caffe_order = CaffeHDF5Reader([tmp_path / "a.h5", tmp_path / "b.h5"], 7, shuffle=shuffle)
    for _ in range(25):  # more than two epochs
        batch, (data, label) = next(ours), next(caffe_order)
        np.testing.assert_array_equal(batch["data"], data)
        np.testing.assert_array_equal(batch["label"], label)
    saved = json.loads(json.dumps(ours.state()))
    expected = [next(ours) for _ in range(12)]
    resumed = HDF5Batches(tmp_path / "train.txt", ["data", "label"], 7, shuffle=shuffle)
    resumed.set_state(saved)
    for batch in expected:
        np.testing.assert_array_equal(next(resumed)["data"], batch["data"])


def test_each_process_takes_its_contiguous_slice_of_the_global_batch(tmp_path):
    from glrl.train.batches import HDF5Batches

    make_run(tmp_path)
    whole = HDF5Batches(tmp_path / "train.txt", ["data"], 8, shuffle=True)
    halves = [HDF5Batches(tmp_path / "train.txt", ["data"], 8, shuffle=True, rank=r, world=2) for r in (0, 1)]
    for _ in range(20):
        joined = np.concatenate([next(half)["data"] for half in halves])
        np.testing.assert_array_equal(joined, next(whole)["data"])
    with pytest.raises(DataError, match="the batch of 8 rows does not split evenly over 3 processes"):
        HDF5Batches(tmp_path / "train.txt", ["data"], 8, world=3)


def train_in_both_backends(session, folder: Path, iterations: int):
    """Train ``folder/solver.prototxt`` from the same seeded initial weights in real Caffe (inside the root
    session, through ``glrl train --backend caffe``) and in the PyTorch backend; return the final weights of
    each and the initial ones, as ``{layer/index: array}``."""
    from glrl.backends.torch_net import TorchNet

    TorchNet(folder / "net.prototxt", phase="TRAIN", seed=11).save_caffemodel(folder / "init.caffemodel")
    session.run(["python3", "-m", "glrl", "train", "--backend", "caffe",
                 "--solver", f"{folder.name}/solver.prototxt", "--run-dir", f"{folder.name}/caffe",
                 "--weights", f"{folder.name}/init.caffemodel", "--device", "cpu"])
    train(RunOptions(solver=folder / "solver.prototxt", run_dir=folder / "torch", device="cpu",
                     weights=folder / "init.caffemodel", progress=False, tensorboard=False, echo=False))
    initial = {f"{layer.name}/{i}": np.asarray(blob.data) for layer in
               read_caffemodel(folder / "init.caffemodel").layer for i, blob in enumerate(layer.blobs)}
    return final_weights(folder / "caffe", iterations), final_weights(folder / "torch", iterations), initial


# ------------------------------------------------------------------------------------------- real Caffe
# Nesterov's look-ahead step amplifies the float rounding of the gradients (oneDNN's summation order is not
# OpenBLAS's): after 20 iterations the largest difference, relative to each blob's largest value, was
# 4.6e-7 with SGD and 1.2e-5 with Nesterov (a bias that starts at 0) on an AVX-512 AMD EPYC, under 1e-5
# on another CPU. With the SGD rule in its place the biases differ by 0.2-0.4.
NESTEROV_TOLERANCE = 3e-5


@pytest.mark.oracle
@pytest.mark.parametrize("solver_type", ["SGD", "Nesterov", "Adam"])
def test_backend_caffe_and_backend_torch_end_with_the_same_weights(tmp_path, caffe_root, solver_type):
    """20 iterations (step lr, clipping, weight decay, lr/decay mults, iter_size 2, shuffled batches over two
    files) from the same initial weights: real Caffe 1.0 and the PyTorch backend agree to 1e-5 (Nesterov: 3e-5)."""
    from glrl import oracle

    torch.set_num_threads(1)
    with oracle.RootSession() as session:
        folder = session.path / "job"
        make_run(folder, shuffle=True, max_iter=20, snapshot=10, solver_type=solver_type, width=8)
        caffe_weights, torch_weights, initial = train_in_both_backends(session, folder, 20)
    assert caffe_weights.keys() == torch_weights.keys() == initial.keys()
    tolerance = NESTEROV_TOLERANCE if solver_type == "Nesterov" else 1e-5
    for key, expected in caffe_weights.items():
        assert not np.array_equal(expected, initial[key])
        scale = np.abs(expected).max()
        assert np.abs(torch_weights[key] - expected).max() <= tolerance * scale, key


def test_a_new_run_refuses_a_run_folder_that_holds_snapshots(tmp_path, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path)
    (tmp_path / "run" / "snap").mkdir(parents=True)
    for suffix in (".caffemodel", ".solverstate", ".glrl.json"):
        (tmp_path / "run" / "snap" / f"tiny_iter_6{suffix}").write_text("")
    status = main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--no-set5"])
    assert status == 2
    assert "already holds snapshots" in capsys.readouterr().err


def test_resume_of_a_run_folder_that_does_not_exist_fails_and_creates_nothing(tmp_path, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path)
    status = main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "mistyped"), "--resume",
                   "--no-set5"])
    assert status == 2
    assert "there is no run folder" in capsys.readouterr().err
    assert not (tmp_path / "mistyped").exists()


def test_a_run_stopped_between_tests_reports_its_last_set5_figure_with_the_iteration_it_was_measured_at(tmp_path):
    """Tests come at 0 and then every 8 iterations; a run stopped at 12 last measured Set5 at 8, and says so
    (the weights it leaves are iteration 12's, which that figure does not describe)."""
    figures = iter([31.0, 32.0, 33.0])
    calls = []

    def probe(predict):
        calls.append(predict)
        return next(figures)

    solver = make_run(tmp_path, max_iter=24, snapshot=6)
    result = train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", psnr_probe=probe,
                              stop_at=12, progress=False, tensorboard=False, echo=False))
    assert (result.iterations, len(calls)) == (12, 2)
    assert (result.set5_iteration, result.set5_psnr) == (8, 32.0)


def test_the_psnr_probe_runs_the_deploy_net_with_the_training_weights_as_evaluation_runs_it(tmp_path):
    """SRCNN's nets have no padding (33 in, 21 out): the probe gives whole images to its deploy net with their
    borders replicated by the 6 pixels it loses, as glrl eval does; its last output is the final weights'."""
    from glrl import tiling
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe.io import write_net, write_solver
    from glrl.nets.registry import get_net

    recipe = get_net("srcnn")
    rng = np.random.default_rng(0)
    data = rng.random((8, 1, 33, 33), dtype=np.float32)
    write_patches(tmp_path, "a.h5", data[:, :, 6:-6, 6:-6].copy(), data)
    (tmp_path / "train.txt").write_text("a.h5\n")
    write_net(recipe.train_test("train.txt", "train.txt", batch_size=4), tmp_path / "net.prototxt")
    solver = recipe.solver("net.prototxt", 2, "smoke", snapshot_prefix="snap/srcnn", test_iters=1)
    solver.random_seed = 1
    write_solver(solver, tmp_path / "solver.prototxt")
    image = rng.random((1, 1, 40, 52), dtype=np.float32)
    seen = []

    def probe(predict):
        seen.append(predict(image))
        return 20.0

    result = train(RunOptions(solver=tmp_path / "solver.prototxt", run_dir=tmp_path / "run", device="cpu",
                              psnr_probe=probe, deploy=recipe.deploy(), progress=False, tensorboard=False,
                              echo=False))
    assert result.iterations == 8 and len(seen) == 2 and all(output.shape == (1, 1, 40, 52) for output in seen)
    assert tiling.border_loss(recipe.deploy()) == 6
    final = TorchNet(recipe.deploy(), "TEST")
    final.load_weights(str(result.caffemodel))
    np.testing.assert_allclose(seen[-1][0, 0], tiling.run_deploy_net(final, image[0, 0], 6), rtol=0, atol=1e-6)
    assert not np.allclose(seen[0], seen[-1])  # the first probe saw the weights of iteration 4


@pytest.mark.oracle
@pytest.mark.slow
def test_fifty_iterations_of_the_paper_solver_on_glrl_agree_with_real_caffe(tmp_path, caffe_root):
    """The paper's solver (SGD, momentum 0.9, weight decay 1e-4, base_lr 0.1, lr halved by a step policy,
    clip_gradients 0.01) on the generated GLRL net, 50 iterations from the same initial weights and batches:
    real Caffe 1.0 and the PyTorch backend end with weights equal to relative error 1e-4. The batch is 4
    instead of 32 and the lr steps every 20 iterations, so that the run stays short and the step shows."""
    from glrl import oracle
    from glrl.caffe.io import write_net, write_solver
    from glrl.nets.registry import get_net

    torch.set_num_threads(2)
    recipe = get_net("glrl")
    with oracle.RootSession() as session:
        folder = session.path / "job"
        folder.mkdir()
        rng = np.random.default_rng(3)
        label = rng.random((24, 1, 31, 31))
        write_patches(folder, "a.h5", label, label + 0.05 * rng.standard_normal(label.shape))
        (folder / "train.txt").write_text("a.h5\n")
        write_net(recipe.train_test("train.txt", "train.txt", batch_size=4), folder / "net.prototxt")
        solver = recipe.solver("net.prototxt", 20, "paper", snapshot_prefix="snap/tiny")
        solver.max_iter, solver.stepsize, solver.snapshot, solver.random_seed = 50, 20, 50, 5
        solver.test_interval = 0
        del solver.test_iter[:]
        assert (solver.type, solver.base_lr, solver.momentum, solver.weight_decay, solver.clip_gradients,
                solver.lr_policy, solver.gamma) == ("SGD", pytest.approx(0.1), pytest.approx(0.9),
                                                    pytest.approx(1e-4), pytest.approx(0.01), "step", 0.5)
        write_solver(solver, folder / "solver.prototxt")
        caffe_weights, torch_weights, initial = train_in_both_backends(session, folder, 50)
    assert caffe_weights.keys() == torch_weights.keys() == initial.keys()
    # relative to each layer's largest weight: a bias that starts at 0 has no scale of its own
    layer_scale: dict = {}
    for key, expected in caffe_weights.items():
        layer = key.rsplit("/", 1)[0]
        layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.abs(expected).max()))
    # A layer that starts at 0 (GLRL's last reconstruction convolution) is the sum of its 50 updates, each a
    # gradient summed over every pixel with much cancellation: on an AVX-512 AMD EPYC its weights were 2.8e-4
    # of their largest value off Caffe's (every other layer: under 6e-6).
    zero_start = {key.rsplit("/", 1)[0] for key, value in initial.items() if key.endswith("/0") and not value.any()}
    moved = 0
    for key, expected in caffe_weights.items():
        moved += not np.array_equal(expected, initial[key])
        error = float(np.abs(torch_weights[key] - expected).max())
        layer = key.rsplit("/", 1)[0]
        assert error <= (1e-3 if layer in zero_start else 1e-4) * layer_scale[layer], (key, error)
    assert moved == len(initial)  # every learnable blob took part


def test_winograd_training_follows_the_direct_run_and_its_snapshots_say_so(tmp_path):
    """``glrl train --winograd`` (fp32, CPU): 3x3 convolutions of >= 24 channels on the Winograd kernel. Over
    12 iterations its weights stay within 1e-4 of the direct run's (float rounding, not a different method),
    and the snapshot records the precision as "fp32 + Winograd"."""
    from glrl.backends import winograd

    if winograd.kernel() is None:
        pytest.skip("the Winograd kernel cannot be built here")
    finals = {}
    for use_kernel in (False, True):
        folder = tmp_path / ("winograd" if use_kernel else "direct")
        solver = make_run(folder, width=24, max_iter=12, snapshot=12, iter_size=1)
        train(RunOptions(solver=solver, run_dir=folder / "run", device="cpu", winograd=use_kernel,
                         progress=False, tensorboard=False, echo=False))
        finals[use_kernel] = final_weights(folder / "run", 12)
        sidecar = json.loads((folder / "run" / "snap" / "tiny_iter_12.glrl.json").read_text())
        assert sidecar["precision"] == ("fp32 + Winograd" if use_kernel else "fp32")
    for key, expected in finals[False].items():
        scale = np.abs(expected).max()
        assert np.abs(finals[True][key] - expected).max() <= 1e-4 * scale, key
    assert any(not np.array_equal(finals[True][key], finals[False][key]) for key in finals[False])


def test_winograd_training_is_refused_off_fp32(tmp_path):
    solver = make_run(tmp_path, width=24)
    with pytest.raises(TrainingError, match="--winograd is for fp32 training on the CPU, not bf16"):
        train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", precision="bf16", winograd=True,
                         progress=False, tensorboard=False, echo=False))


def test_winograd_training_is_refused_in_real_caffe(tmp_path, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path)
    status = main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--no-set5",
                   "--backend", "caffe", "--winograd"])
    assert status == 2
    assert "--winograd needs the torch backend" in capsys.readouterr().err


def test_batch_size_sets_a_new_runs_batch_and_epoch_and_a_resume_keeps_the_runs_own(tmp_path, data_root,
                                                                                      monkeypatch, capsys):
    from glrl.caffe.io import read_net
    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    work = tmp_path / "work"
    built = build(BuildConfig(train_sets=("Set5",), augment=False), data_root, work / "data" / "x3", workers=1,
                  progress=False)  # the set the run finds (a few hundred patches)
    monkeypatch.setenv("GLRL_WORK", str(work))
    options = ["train", "--net", "glrl", "--scale", "3", "--schedule", "smoke", "--optimizer", "adam",
               "--device", "cpu", "--threads", "1", "--no-set5", "--no-progress", "--data-root", str(data_root)]
    assert main([*options, "--batch-size", "4", "--stop-at", "2"]) == 0
    run_dir = work / "runs" / "glrl-x3-smoke-adam-b4"
    patches = built.manifest["train"]["patches"]
    assert f"{-(-patches // 4)} iterations per epoch ({patches} patches / batch 4)" in capsys.readouterr().out
    net = read_net(run_dir / "train_test.prototxt")
    assert [layer.hdf5_data_param.batch_size for layer in net.layer if layer.type == "HDF5Data"] == [4, 2]
    snapshots = sorted(p.name for p in (run_dir / "snapshots").iterdir())

    # a resume at another batch is refused, naming the run's, and writes nothing
    assert main([*options, "--batch-size", "8", "--resume", "--run-dir", str(run_dir)]) == 2
    assert f"the run in {run_dir} trains at batch 4, not --batch-size 8" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == snapshots
    # the same batch finds the run by its folder name; without --batch-size the run's own batch goes on
    assert main([*options, "--batch-size", "4", "--resume", "--stop-at", "3"]) == 0
    assert main([*options, "--resume", "--run-dir", str(run_dir), "--stop-at", "4"]) == 0
    assert latest_snapshot(run_dir).name == "glrl_x3_iter_4.solverstate"

    with pytest.raises(SystemExit) as refused:  # argparse's refusal: status 2, the option and the value named
        main([*options, "--batch-size", "0"])
    assert refused.value.code == 2
    assert "argument --batch-size: must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["train", "--solver", str(run_dir / "solver.prototxt"), "--batch-size", "4", "--no-set5"]) == 2
    assert "with --solver the batch is the batch_size of the net's HDF5Data layer" in capsys.readouterr().err


ADAM_FOR_GRAPHS = {"solver_type": "Adam", "clip": -1, "base_lr": 0.01}


def without_weight_decay(solver: Path) -> Path:
    solver.write_text(solver.read_text().replace("weight_decay: 0.0001", "weight_decay: 0") + "momentum2: 0.999\n")
    return solver


@pytest.fixture(scope="module")
def adam_uninterrupted(tmp_path_factory):
    """12 iterations of CaffeSolver's Adam (two lr_mults, a step of the lr policy at 6), iter_size 1."""
    folder = tmp_path_factory.mktemp("adam")
    solver = without_weight_decay(make_run(folder, shuffle=True, max_iter=12, iter_size=1, **ADAM_FOR_GRAPHS))
    finish(glrl_train(solver, folder / "run"))
    return final_weights(folder / "run", 12)


def test_the_graphed_adam_step_is_caffes_adam_bit_for_bit_and_resumes_bit_for_bit(tmp_path, adam_uninterrupted):
    """--cuda-graph replays forward, backward and Adam as one graph on a GPU; here (no CUDA) the same step
    runs eagerly: 12 iterations end on CaffeSolver's weights exactly, and so do 6 + a resumed 6."""
    solver = without_weight_decay(make_run(tmp_path, shuffle=True, max_iter=12, iter_size=1, **ADAM_FOR_GRAPHS))
    output = finish(glrl_train(solver, tmp_path / "graphed", "--cuda-graph"))
    assert "--cuda-graph: no CUDA device, so the graphed step runs eagerly" in output
    assert_identical(final_weights(tmp_path / "graphed", 12), adam_uninterrupted)
    finish(glrl_train(solver, tmp_path / "sliced", "--cuda-graph", "--stop-at", "6"))
    finish(glrl_train(solver, tmp_path / "sliced", "--cuda-graph", "--resume"))
    assert_identical(final_weights(tmp_path / "sliced", 12), adam_uninterrupted)


@pytest.mark.parametrize("change, reason", [
    ({"solver_type": "SGD"}, "the solver is SGD, not Adam"),
    ({"clip": 0.1}, "gradient clipping is on"),
    ({"iter_size": 2}, "iter_size is 2"),
])
def test_a_run_the_graphed_step_cannot_hold_is_refused_saying_why(tmp_path, capsys, change, reason):
    from glrl.cli import main

    settings = {**ADAM_FOR_GRAPHS, "max_iter": 4, "iter_size": 1, **change}
    solver = without_weight_decay(make_run(tmp_path, **settings))
    status = main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--cuda-graph",
                   "--device", "cpu", "--no-set5", "--no-progress"])
    assert status == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # the copies of solver and net it wrote went with the folder it made


def test_initial_weights_that_fit_no_layer_of_the_train_net_are_refused(tmp_path, capsys):
    """caffe train --weights copies layers by name and would train from scratch on a file of another net;
    glrl train says so instead."""
    from glrl.caffe import io, pb
    from glrl.cli import main

    solver = make_run(tmp_path / "tiny")
    other = pb.NetParameter(name="other")
    layer = other.layer.add(name="elsewhere", type="Convolution")
    layer.blobs.add().CopyFrom(io.array_to_blob(np.zeros((1, 1, 3, 3), np.float32)))
    io.write_caffemodel(other, tmp_path / "other.caffemodel")
    run = ["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--device", "cpu", "--no-set5",
           "--no-progress"]
    assert main([*run, "--weights", str(tmp_path / "other.caffemodel")]) == 2
    assert "holds no weights for any layer of the train net 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before it trained: nothing of it is left
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert main([*run, "--weights", str(tmp_path / "other.caffemodel")]) == 2
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # a folder it did not make is left as it was
    assert not (tmp_path / "run" / "initial-weights.json").exists()  # no record of weights it never had


def test_a_run_from_its_fillers_leaves_no_record_of_initial_weights_from_an_earlier_start(tmp_path):
    from glrl.cli import main

    solver = make_run(tmp_path / "tiny", max_iter=2, snapshot=2)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "initial-weights.json").write_text('{"file": "elsewhere.caffemodel", "sha256": "0"}')
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                 "--no-set5", "--no-progress", "--threads", "1"]) == 0
    assert not (tmp_path / "run" / "initial-weights.json").exists()  # a release would name those weights


def test_a_run_of_a_given_solver_keeps_a_copy_of_it_and_its_net_that_names_the_same_files(tmp_path, capsys):
    """As a generated run does: the run folder alone says what was trained (glrl models release reads it),
    also after a resume under an edited solver."""
    from glrl.caffe.io import read_net, read_solver
    from glrl.cli import main

    from glrl.data_prep import manifest as manifest_io

    solver = make_run(tmp_path / "spec", max_iter=2, snapshot=2)
    manifest_io.save(solver.parent, {"format": manifest_io.FORMAT, "train": {"patches": 66}})
    run_dir = tmp_path / "run"
    assert main(["train", "--solver", str(solver), "--run-dir", str(run_dir), "--device", "cpu", "--no-set5",
                 "--no-progress", "--threads", "1"]) == 0
    copy = read_solver(run_dir / "solver.prototxt")
    assert copy.net == "train_test.prototxt" and copy.base_lr == read_solver(solver).base_lr
    sources = [layer.hdf5_data_param.source for layer in read_net(run_dir / "train_test.prototxt").layer
               if layer.type == "HDF5Data"]
    assert sources == [str((tmp_path / "spec" / name).resolve()) for name in ("train.txt", "val.txt")]
    assert manifest_io.load(run_dir, manifest_io.RUN_COPY_NAME) == manifest_io.load(solver.parent)
    capsys.readouterr()
    (solver.parent / "solver.prototxt").write_text(solver.read_text().replace("max_iter: 2", "max_iter: 4"))
    assert main(["train", "--solver", str(solver), "--run-dir", str(run_dir), "--device", "cpu", "--no-set5",
                 "--no-progress", "--threads", "1", "--resume"]) == 0
    # the run trained on with the edited solver, and its copy says so (a release records the solver it ran)
    assert (run_dir / "snap" / "tiny_iter_4.caffemodel").is_file()
    assert read_solver(run_dir / "solver.prototxt").max_iter == 4
    assert "differs from the solver the run in" in capsys.readouterr().out
    # resumed again unchanged, or from the run folder's own copy: nothing to say
    (solver.parent / "solver.prototxt").write_text(solver.read_text().replace("max_iter: 4", "max_iter: 6"))
    for given in (solver, run_dir / "solver.prototxt"):
        assert main(["train", "--solver", str(given), "--run-dir", str(run_dir), "--device", "cpu", "--no-set5",
                     "--no-progress", "--threads", "1", "--resume"]) == 0
    assert read_solver(run_dir / "solver.prototxt").max_iter == 6
    assert capsys.readouterr().out.count("differs from the solver") == 1  # max_iter 4 → 6, once


@pytest.mark.parametrize("state, message", [(b"not a solver state", "not a readable solverstate"),
                                            (None, "no such .solverstate")])
def test_a_damaged_or_missing_solverstate_to_resume_is_refused_before_the_run_folder_is_touched(
        tmp_path, capsys, state, message):
    from glrl.cli import main

    solver = make_run(tmp_path / "spec", max_iter=2, snapshot=2)
    given = tmp_path / "tiny_iter_2.solverstate"
    if state is not None:
        given.write_bytes(state)
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--resume", str(given),
                 "--device", "cpu", "--no-set5", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_displayed_loss_is_the_mean_of_the_last_average_loss_iterations():
    from glrl.train.run import LossSmoother

    smoother = LossSmoother(3)
    assert [smoother.update(loss) for loss in (1.0, 2.0, 3.0, 4.0, 5.0)] == [1.0, 1.5, 2.0, 3.0, 4.0]
    resumed = LossSmoother(3)
    resumed.set_state(smoother.state())
    assert resumed.update(9.0) == smoother.update(9.0) == 6.0


def test_the_newest_complete_snapshot_is_the_one_resumed(tmp_path):
    """A snapshot whose sidecar was never written (the run was cut while writing it) is passed over."""
    snap = tmp_path / "snap"
    snap.mkdir()
    for iteration, parts in ((6, (".caffemodel", ".solverstate", ".glrl.json")), (12, (".caffemodel", ".solverstate"))):
        for suffix in parts:
            (snap / f"tiny_iter_{iteration}{suffix}").write_text("")
    assert latest_snapshot(tmp_path) == snap / "tiny_iter_6.solverstate"


# --- resuming from a damaged or incomplete snapshot, and options that cannot run ------------------------------

def train_argv(solver: Path, run_dir: Path, *extra: str) -> list:
    return ["train", "--solver", str(solver), "--run-dir", str(run_dir), "--device", "cpu", "--no-set5",
            "--no-progress", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def stopped_at_2(tmp_path_factory):
    """A run of the tiny net stopped with its snapshot at iteration 2 (copy it before changing it)."""
    from glrl.cli import main

    folder = tmp_path_factory.mktemp("stopped_at_2")
    solver = make_run(folder / "spec", max_iter=4, snapshot=2)
    assert main(train_argv(solver, folder / "run", "--stop-at", "2")) == 0
    return folder


def copy_of_run(stopped_at_2: Path, tmp_path: Path):
    """The spec's solver, a copy of the stopped run folder and the files of its snapshot at iteration 2."""
    shutil.copytree(stopped_at_2 / "run", tmp_path / "run")
    files = {suffix: tmp_path / "run" / "snap" / f"tiny_iter_2{suffix}"
             for suffix in (".caffemodel", ".solverstate", ".glrl.json")}
    return stopped_at_2 / "spec" / "solver.prototxt", tmp_path / "run", files


def contents(paths) -> dict:
    return {path: path.read_bytes() for path in paths}


@pytest.mark.parametrize("damage, named, message, hint", [
    (lambda text: text[:40], ".glrl.json", "cannot read the snapshot sidecar",
     "delete it to resume as from a Caffe state"),
    (lambda text: json.dumps({**json.loads(text), "version": 2}), ".glrl.json", "is not a glrl sidecar of version 1",
     "the glrl version that wrote it"),
    (lambda text: json.dumps({**json.loads(text), "iter": 4}), ".solverstate", "is for iteration 4, the state for 2",
     "a snapshot written in one piece"),
], ids=["unreadable", "other_version", "other_iteration"])
def test_a_damaged_or_foreign_sidecar_is_refused_naming_it_and_the_snapshot_and_metrics_are_kept(
        stopped_at_2, tmp_path, capsys, damage, named, message, hint):
    from glrl.cli import main

    solver, run_dir, files = copy_of_run(stopped_at_2, tmp_path)
    sidecar = files[".glrl.json"]
    sidecar.write_text(damage(sidecar.read_text()))
    before = contents([*files.values(), run_dir / "metrics.csv", run_dir / "train.log"])
    capsys.readouterr()
    assert main(train_argv(solver, run_dir, "--resume")) == 2
    err = capsys.readouterr().err
    assert message in err and str(files[named]) in err and hint in err
    assert contents(before) == before and latest_snapshot(run_dir) == files[".solverstate"]


@pytest.mark.parametrize("loss, message", [
    ("unnamed", "names no learned_net (weights file)"),
    ("moved", "'snap/tiny_iter_2.caffemodel' named by"),
], ids=["unnamed", "moved"])
def test_a_solverstate_whose_weights_are_unnamed_or_missing_is_refused_saying_what_to_do(
        stopped_at_2, tmp_path, capsys, loss, message):
    from glrl.cli import main

    solver, run_dir, files = copy_of_run(stopped_at_2, tmp_path)
    state = files[".solverstate"]
    if loss == "unnamed":
        proto = read_solverstate(state)
        proto.learned_net = ""
        state.write_bytes(proto.SerializeToString())
    else:  # the .solverstate carried to another folder without its .caffemodel
        shutil.move(str(files[".caffemodel"]), str(tmp_path / "elsewhere.caffemodel"))
    kept = contents(path for path in files.values() if path.exists())
    capsys.readouterr()
    assert main(train_argv(solver, run_dir, "--resume", str(state))) == 2
    err = capsys.readouterr().err
    assert message in err and str(state) in err
    if loss == "moved":
        assert f"looked in {Path.cwd() / 'snap' / 'tiny_iter_2.caffemodel'}" in err
    assert "hint: " in err and ".caffemodel" in err.split("hint: ")[1]
    assert contents(kept) == kept


def test_resume_of_a_run_folder_without_a_complete_snapshot_says_so_and_keeps_what_is_there(
        stopped_at_2, tmp_path, capsys):
    """A run cut while writing its first snapshot left no sidecar: there is nothing to resume."""
    from glrl.cli import main

    solver, run_dir, files = copy_of_run(stopped_at_2, tmp_path)
    files[".glrl.json"].unlink()
    kept = contents([files[".caffemodel"], files[".solverstate"]])
    capsys.readouterr()
    assert main(train_argv(solver, run_dir, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"no complete snapshot in {run_dir} to resume from" in err
    assert "pass the .solverstate to resume" in err
    assert contents(kept) == kept


@pytest.mark.parametrize("option", [["--time-limit", "60"], ["--stop-at", "2"], ["--cuda-graph"]],
                         ids=["time_limit", "stop_at", "cuda_graph"])
def test_options_real_caffe_cannot_honour_are_refused_before_it_starts(tmp_path, capsys, option):
    from glrl.cli import main

    solver = make_run(tmp_path / "spec")
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--backend", "caffe",
                 "--no-set5", *option]) == 2
    err = capsys.readouterr().err
    assert f"{option[0]} " in err and "need" in err and "--backend torch" in err
    assert latest_snapshot(tmp_path / "run") is None


def test_train_reads_scale_as_data_build_does():
    from glrl.commands.train import _scale_key
    from glrl.data_prep.config import parse_scales

    for text in ("3", "234", "2,3,4"):
        assert _scale_key(text) == "".join(map(str, parse_scales(text)))
    assert _scale_key("2,3,4") == "234"


@pytest.mark.parametrize("option, value, message", [
    ("--solver", "missing.prototxt", "solver missing.prototxt not found"),
    ("--scale", "5", "--scale '5' is not one of 2, 3, 4, 234"),
    ("--scale", "32", "--scale '32' is not one of 2, 3, 4, 234"),  # no x32 patch set can be built
    ("--device", "gpu", "unknown device 'gpu'"),
], ids=["solver", "scale", "scale-order", "device"])
def test_a_mistyped_solver_scale_or_device_is_refused_naming_it(tmp_path, capsys, monkeypatch, option, value,
                                                                message):
    from glrl.cli import main

    solver = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    given = {"--solver": str(solver), "--scale": "3", "--device": "cpu", option: value}
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--no-set5", "--no-progress", "--threads", "1",
                 *(item for pair in given.items() for item in pair)]) == 2
    assert message in capsys.readouterr().err
    assert latest_snapshot(tmp_path / "run") is None
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize("change, message", [
    (lambda net: net.replace('layer { name: "conv1"', 'layer { name: "more_data" type: "HDF5Data" top: "more" '
                             'top: "labels" include { phase: TRAIN } hdf5_data_param { source: "train.txt" '
                             'batch_size: 8 } }\nlayer { name: "conv1"'), "has 2 HDF5Data layers in phase TRAIN"),
    (lambda net: net.split('layer { name: "loss"')[0], "the net has no loss layer in phase TRAIN"),
], ids=["two_data_layers", "no_loss"])
def test_a_train_net_the_trainer_cannot_feed_is_refused_saying_why(tmp_path, change, message):
    solver = make_run(tmp_path)
    net = tmp_path / "net.prototxt"
    net.write_text(change(net.read_text()))
    with pytest.raises(TrainingError, match=message) as refused:
        train(RunOptions(solver=solver, run_dir=tmp_path / "run", device="cpu", progress=False, tensorboard=False,
                         echo=False))
    assert "generated train/test prototxt" in refused.value.hint
    assert not (tmp_path / "run").exists()


def test_an_unknown_precision_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(TrainingError, match="unknown precision 'fp16'") as refused:
        train(RunOptions(solver=make_run(tmp_path), run_dir=tmp_path / "run", device="cpu", precision="fp16",
                         progress=False, tensorboard=False, echo=False))
    assert refused.value.hint == "use one of fp32, tf32, bf16"


def test_an_hdf5_file_named_as_the_data_source_is_refused_saying_that_a_list_file_belongs_there(tmp_path, capsys):
    """Caffe's HDF5Data source is a list of .h5 files; naming the .h5 itself is a common slip."""
    from glrl.cli import main

    solver = make_run(tmp_path / "spec")
    net = tmp_path / "spec" / "net.prototxt"
    net.write_text(net.read_text().replace('source: "train.txt"', 'source: "a.h5"'))
    assert main(train_argv(solver, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"the HDF5 list file {tmp_path / 'spec' / 'a.h5'} is not text" in err
    assert "hint: write the .h5 paths into a .txt file" in err


def test_a_run_can_be_trained_outside_the_main_thread(tmp_path):
    """Signal handlers can only be set in the main thread: a run started from another one (a notebook's
    worker, a GUI) trains without them."""
    import threading

    results, errors = [], []

    def run():
        try:
            results.append(train(RunOptions(solver=make_run(tmp_path, max_iter=2, snapshot=2), run_dir=tmp_path / "run",
                                            device="cpu", progress=False, tensorboard=False, echo=False)))
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=120)
    assert not errors and results[0].iterations == 2 and not results[0].stopped_early
    assert results[0].solverstate == tmp_path / "run" / "snap" / "tiny_iter_2.solverstate"


def test_a_run_resumed_from_a_caffe_state_records_its_first_piece_as_unknown(tmp_path):
    solver = make_run(tmp_path, max_iter=8, snapshot=4)
    run_dir = tmp_path / "run"
    options = dict(solver=solver, run_dir=run_dir, device="cpu", progress=False, tensorboard=False, echo=False)
    train(RunOptions(stop_at=4, **options))
    state = run_dir / "snap" / "tiny_iter_4.solverstate"
    sidecar_path(state).unlink()  # as real Caffe leaves it
    train(RunOptions(resume=state, **options))
    final = json.loads(sidecar_path(run_dir / "snap" / "tiny_iter_8.solverstate").read_text())
    first, second = final["segments"]
    assert first == {"from_iter": 0, "to_iter": 4, "seconds": None, "precision": None, "hardware": None}
    assert (second["from_iter"], second["to_iter"], second["precision"]) == (4, 8, "fp32")
    assert final["elapsed_seconds"] == second["seconds"]  # only this piece's time is known
    assert "no glrl sidecar: a Caffe state; the data reader skips 64 rows" in (run_dir / "train.log").read_text()


def test_a_resume_under_an_edited_net_names_the_net_and_an_unchanged_resume_rewrites_nothing(tmp_path, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path / "spec", max_iter=2, snapshot=2)
    run_dir = tmp_path / "run"
    assert main(train_argv(solver, run_dir)) == 0
    net = tmp_path / "spec" / "net.prototxt"
    net.write_text(net.read_text().replace("batch_size: 4", "batch_size: 2"))  # the TEST layer's
    solver.write_text(solver.read_text().replace("max_iter: 2", "max_iter: 4"))
    capsys.readouterr()
    assert main(train_argv(solver, run_dir, "--resume")) == 0
    out = capsys.readouterr().out
    assert f"max_iter 2 → 4; the train/test net ({net})" in out
    copies = {path: path.stat().st_mtime_ns for path in (run_dir / "solver.prototxt", run_dir / "train_test.prototxt")}
    assert main(train_argv(solver, run_dir, "--resume")) == 0
    assert "differs from the solver" not in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in copies} == copies


def test_a_multi_scale_run_measures_set5_at_x3_and_prints_the_last_figure(tmp_path, data_root, capsys):
    from glrl.cli import main

    solver = make_run(tmp_path / "spec", max_iter=2, snapshot=2)
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                 "--no-progress", "--threads", "1", "--scale", "234", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Set5 x3 PSNR at iteration 0: \d+\.\d\d dB \(bicubic 30\.39 dB\)$", out, re.M), out
    psnr = [row.split(",")[5] for row in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert [cell for cell in psnr if cell] and all(float(cell) > 20 for cell in psnr if cell)


def test_bf16_asked_for_on_auto_without_a_gpu_or_native_bf16_comes_with_a_note(tmp_path, capsys, monkeypatch):
    from glrl import machine
    from glrl.cli import main

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2"}))
    with monkeypatch.context() as gpu_machine:
        gpu_machine.setattr(torch.cuda, "is_available", lambda: True)
        assert machine.bf16_emulation_note("bf16", "auto") is None  # auto means the GPU there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    solver = make_run(tmp_path / "spec", max_iter=1, snapshot=1)
    assert main(["train", "--solver", str(solver), "--run-dir", str(tmp_path / "run"), "--device", "auto",
                 "--precision", "bf16", "--no-set5", "--no-progress", "--threads", "1"]) == 0
    assert "bf16 is emulated" in capsys.readouterr().err


def test_the_progress_bar_stays_out_of_output_that_is_not_a_terminal_and_the_log_lines_still_come(tmp_path, capsys):
    result = train(RunOptions(solver=make_run(tmp_path, max_iter=2, snapshot=2), run_dir=tmp_path / "run",
                              device="cpu", progress=True, tensorboard=False, echo=True))
    assert result.iterations == 2
    err = capsys.readouterr().err
    assert "Optimization Done." in err and "it/s" not in err and "train:" not in err


def test_packing_a_run_folder_without_a_complete_snapshot_says_so_and_writes_no_tar(tmp_path):
    from glrl.train.snapshot import pack_run

    (tmp_path / "run" / "snap").mkdir(parents=True)
    (tmp_path / "run" / "snap" / "tiny_iter_6.solverstate").write_text("")  # cut before its sidecar
    with pytest.raises(TrainingError, match="holds no complete snapshot to pack"):
        pack_run(tmp_path / "run", tmp_path / "run.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_patches_trains_on_a_set_built_elsewhere_and_a_resume_keeps_that_set(tmp_path, data_root, monkeypatch,
                                                                            capsys):
    from glrl.caffe.io import read_net
    from glrl.cli import main
    from glrl.data_prep import manifest as manifest_io
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    work, patch_set = tmp_path / "work", tmp_path / "sets" / "x3-p15"
    build(BuildConfig(train_sets=("Set5",), augment=False, patch_size=15, label_size=15, stride=15), data_root,
          patch_set, workers=1, progress=False)
    monkeypatch.setenv("GLRL_WORK", str(work))
    options = ["train", "--net", "glrl", "--scale", "3", "--schedule", "smoke", "--optimizer", "adam",
               "--device", "cpu", "--threads", "1", "--no-set5", "--no-progress", "--data-root", str(data_root)]
    assert main([*options, "--patches", str(patch_set), "--stop-at", "1"]) == 0
    run_dir = work / "runs" / "glrl-x3-smoke-adam-x3-p15"  # the set's folder name tells the runs apart
    sources = [layer.hdf5_data_param.source for layer in read_net(run_dir / "train_test.prototxt").layer
               if layer.type == "HDF5Data"]
    assert sources == [str(patch_set / "train.txt"), str(patch_set / "val.txt")]
    assert manifest_io.load(run_dir, manifest_io.RUN_COPY_NAME) == manifest_io.load(patch_set)
    capsys.readouterr()

    # a resume goes on with the run's own set, given or not, and never builds the default one
    assert main([*options, "--resume", "--run-dir", str(run_dir), "--stop-at", "2"]) == 0
    assert main([*options, "--patches", str(patch_set), "--resume", "--stop-at", "3"]) == 0
    assert latest_snapshot(run_dir).name == "glrl_x3_iter_3.solverstate"
    assert not (work / "data").exists()
    other = tmp_path / "sets" / "other"
    assert main([*options, "--patches", str(other), "--resume", "--run-dir", str(run_dir)]) == 2
    assert f"the run in {run_dir} trains on the patch set {patch_set}, not --patches {other}" in capsys.readouterr().err


@pytest.mark.parametrize("net, scale, settings, message", [
    ("glrl", "3", None, "no patch set in {set} (no manifest.json)"),
    ("glrl", "2", dict(patch_size=15, label_size=15, stride=15), "the patch set {set} is for x3, not --scale 2"),
    ("srcnn", "3", dict(patch_size=15, label_size=15, stride=15),
     "the patch set {set} has 15x15 inputs and 15x15 labels; srcnn maps an input to a label 12 pixels smaller"),
])
def test_a_patch_set_that_does_not_fit_the_run_is_refused_by_name(tmp_path, data_root, monkeypatch, capsys,
                                                                   net, scale, settings, message):
    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    patch_set = tmp_path / "set"
    if settings:
        build(BuildConfig(train_sets=("Set5",), augment=False, **settings), data_root, patch_set, workers=1,
              progress=False)
    monkeypatch.setenv("GLRL_WORK", str(tmp_path / "work"))
    assert main(["train", "--net", net, "--scale", scale, "--schedule", "smoke", "--device", "cpu", "--no-set5",
                 "--no-progress", "--data-root", str(data_root), "--patches", str(patch_set)]) == 2
    assert message.format(set=patch_set) in capsys.readouterr().err
    assert not list((tmp_path / "work" / "runs").glob("*/snapshots/*"))


def test_a_copied_patch_set_whose_lists_name_the_originals_files_is_refused(tmp_path, data_root, monkeypatch,
                                                                             capsys):
    import shutil

    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    build(BuildConfig(train_sets=("Set5",), augment=False, patch_size=15, label_size=15, stride=15), data_root,
          tmp_path / "set", workers=1, progress=False)
    shutil.copytree(tmp_path / "set", tmp_path / "copy")
    monkeypatch.setenv("GLRL_WORK", str(tmp_path / "work"))
    assert main(["train", "--schedule", "smoke", "--device", "cpu", "--no-set5", "--no-progress", "--data-root",
                 str(data_root), "--patches", str(tmp_path / "copy")]) == 2
    err = capsys.readouterr().err
    assert f"train.txt names {tmp_path / 'set' / 'train_000.h5'}, outside {tmp_path / 'copy'}" in err
    assert f"glrl data build --out {tmp_path / 'copy'}" in err


def test_a_run_on_a_set_without_validation_patches_names_no_test_data_and_its_solver_runs_again(
        tmp_path, data_root, monkeypatch):
    from glrl.caffe.io import read_net
    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    build(BuildConfig(train_sets=("Set5",), val_set="", augment=False, patch_size=15, label_size=15, stride=15),
          data_root, tmp_path / "set", workers=1, progress=False)
    monkeypatch.setenv("GLRL_WORK", str(tmp_path / "work"))
    common = ["--device", "cpu", "--threads", "1", "--no-set5", "--no-progress", "--stop-at", "1"]
    assert main(["train", "--schedule", "smoke", "--optimizer", "adam", "--patches", str(tmp_path / "set"),
                 "--run-dir", str(tmp_path / "run"), *common]) == 0
    sources = [layer.hdf5_data_param.source for layer in read_net(tmp_path / "run" / "train_test.prototxt").layer
               if layer.type == "HDF5Data"]
    assert sources == [str(tmp_path / "set" / "train.txt")]
    assert main(["train", "--solver", str(tmp_path / "run" / "solver.prototxt"), "--run-dir", str(tmp_path / "again"),
                 *common]) == 0


def test_patches_and_solver_are_refused_together(tmp_path, capsys):
    from glrl.cli import main

    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "train_test.prototxt"\n')
    assert main(["train", "--solver", str(solver), "--patches", str(tmp_path), "--no-set5"]) == 2
    assert "--solver" in capsys.readouterr().err


def test_a_resume_goes_on_with_the_runs_own_net_and_scale_and_refuses_others_by_name(tmp_path, data_root,
                                                                                   capsys):
    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    patch_set, run_dir = tmp_path / "x2-p15", tmp_path / "run"
    build(BuildConfig(train_sets=("Set5",), scales=(2,), augment=False, patch_size=15, label_size=15, stride=15),
          data_root, patch_set, workers=1, progress=False)
    common = ["--run-dir", str(run_dir), "--device", "cpu", "--threads", "1", "--no-progress",
              "--data-root", str(data_root)]
    assert main(["train", "--net", "glrl-2lrb", "--scale", "2", "--schedule", "smoke", "--optimizer", "adam",
                 "--patches", str(patch_set), "--no-set5", "--stop-at", "1", *common]) == 0
    capsys.readouterr()

    # neither --net nor --scale: the run's 2-LRB net at x2, its Set5 probe included (smoke tests at 4)
    assert main(["train", "--resume", "--stop-at", "4", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Set5 x2 PSNR at iteration 4: \d+\.\d\d dB \(bicubic 33\.66 dB\)$", out, re.M), out
    assert latest_snapshot(run_dir).name == "glrl-2lrb_x2_iter_4.solverstate"

    assert main(["train", "--resume", "--net", "glrl", *common]) == 2
    assert f"the run in {run_dir} trains glrl-2lrb, not --net glrl" in capsys.readouterr().err
    assert main(["train", "--resume", "--scale", "3", *common]) == 2
    assert f"the run in {run_dir} trains on x2 patches, not --scale 3" in capsys.readouterr().err
    assert latest_snapshot(run_dir).name == "glrl-2lrb_x2_iter_4.solverstate"

    # a --solver run takes the scale of the patch set its net reads, and refuses another before writing
    other = tmp_path / "other"
    assert main(["train", "--solver", str(run_dir / "solver.prototxt"), "--scale", "3", "--no-set5",
                 *common[2:], "--run-dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"the net of --solver {run_dir / 'solver.prototxt'} trains on x2 patches, not --scale 3" in err
    assert not other.exists()


def test_solver_set_writes_a_new_runs_solver_and_changes_a_resumed_one_from_its_iteration_on(tmp_path, data_root,
                                                                                             capsys):
    from glrl.caffe.io import read_solver
    from glrl.cli import main
    from glrl.data_prep.build import build
    from glrl.data_prep.config import BuildConfig

    patch_set, run_dir = tmp_path / "x3-p15", tmp_path / "run"
    build(BuildConfig(train_sets=("Set5",), scales=(3,), augment=False, patch_size=15, label_size=15, stride=15),
          data_root, patch_set, workers=1, progress=False)
    common = ["--run-dir", str(run_dir), "--device", "cpu", "--threads", "1", "--no-progress", "--no-set5",
              "--data-root", str(data_root)]
    assert main(["train", "--net", "glrl-2lrb", "--schedule", "smoke", "--optimizer", "adam", "--patches",
                 str(patch_set), "--solver-set", "base_lr=2e-4", "--solver-set", "stepsize=100",
                 "--stop-at", "2", *common]) == 0
    solver = read_solver(run_dir / "solver.prototxt")
    assert (solver.base_lr, solver.stepsize, solver.type) == (pytest.approx(2e-4), 100, "Adam")
    assert "Iteration 1, lr = 0.0002" in (run_dir / "train.log").read_text()
    capsys.readouterr()

    # a bad assignment is refused before the run folder is touched
    assert main(["train", "--resume", "--solver-set", "base_lrr=1e-5", "--stop-at", "4", *common]) == 2
    err = capsys.readouterr().err
    assert "the solver has no field 'base_lrr'" in err and "did you mean base_lr" in err
    assert latest_snapshot(run_dir).name == "glrl-2lrb_x3_iter_2.solverstate"

    # on a resume the new value rules from the resumed iteration on, and the change is named
    assert main(["train", "--resume", "--solver-set", "base_lr=5e-5", "--stop-at", "4", *common]) == 0
    assert (f"note: the solver in {run_dir} changed from here on: base_lr 0.0002 → 5e-05"
            in capsys.readouterr().out)
    log = (run_dir / "train.log").read_text()
    assert "Iteration 3, lr = 5e-05" in log and "Iteration 2, lr = 0.0002" not in log
    assert read_solver(run_dir / "solver.prototxt").base_lr == pytest.approx(5e-5)

    # a value it already has is no change and prints none
    assert main(["train", "--resume", "--solver-set", "base_lr=5e-5", "--stop-at", "5", *common]) == 0
    assert "changed from here on" not in capsys.readouterr().out


@pytest.mark.parametrize("assignment, message", [
    ("net=other.prototxt", "net belongs to the run folder, not to the optimiser"),
    ("snapshot_prefix=x", "snapshot_prefix belongs to the run folder"),
    ("stepsize=1.5", "stepsize cannot hold '1.5'"),
    ("train_state=x", "train_state is a message, not one value"),
    ("type", "--solver-set 'type' is not FIELD=VALUE"),
])
def test_solver_set_refuses_what_a_solver_field_cannot_take(tmp_path, capsys, assignment, message):
    from glrl.cli import main

    assert main(["train", "--solver-set", assignment, "--run-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
