"""A training run: ``caffe train --solver S [--weights W | --snapshot X]`` on the PyTorch backend.

:class:`Trainer` reads ``solver.prototxt`` and the train/test net it names, builds the TorchNet(s), feeds
the HDF5 batches in Caffe's order, and runs Caffe's ``Solver::Solve`` loop: test every ``test_interval``
(and at 0 when ``test_initialization``), ``iter_size`` forward/backward passes per iteration, display
every ``display`` iterations with the loss smoothed over ``average_loss``, snapshot every ``snapshot``
iterations and after the last one. Beyond Caffe it measures Set5 PSNR at each test (whole images, the
benchmark protocol), snapshots and stops cleanly on SIGINT/SIGTERM, stops on a NaN/Inf loss or weight
without writing it, and resumes bit-identically (see :mod:`glrl.train.snapshot`).
"""
from __future__ import annotations

import base64
import contextlib
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from glrl.data_prep.reader import resolve_source
from glrl.errors import GlrlError, TrainingError
from glrl.signals import StopSignals
from glrl import machine
from glrl.machine import describe_hardware  # a module name, so tests can stand in another machine
from glrl.train import distributed as dist_mod
from glrl.train.batches import HDF5Batches, HDF5Input, hdf5_inputs
from glrl.train.monitor import MetricRow, Monitor, format_outputs
from glrl.train.settings import SolverSettings, resolve_net
from glrl.train.snapshot import (SnapshotPaths, load_sidecar, resolve_learned_net, training_segments,
                                 write_snapshot)
from glrl.train.solver import CaffeSolver

PRECISIONS = ("fp32", "tf32", "bf16")
# A predictor maps a batch of bicubic-upsampled Y images (N x 1 x H x W, float32 in [0, 1]) to SR Y.
Predictor = Callable[[np.ndarray], np.ndarray]
PsnrProbe = Callable[[Predictor], float]


@dataclass
class RunOptions:
    """How to run one solver (the CLI fills this from its flags)."""

    solver: Path
    run_dir: Path
    device: str = "auto"
    precision: str = "fp32"
    # fp32 on the CPU: 3×3 convolutions and their gradients on the Winograd kernel, not Caffe's arithmetic,
    # and PReLU's one-pass backward (glrl.backends.winograd; a GLRL step ~1.7× faster)
    winograd: bool = False
    resume: Optional[Path] = None
    weights: Optional[Path] = None
    adjustable_clip: Optional[float] = None
    psnr_probe: Optional[PsnrProbe] = None
    bicubic_psnr: Optional[float] = None
    # the deploy net (NetParameter or path) the probe runs whole images through, sharing the training
    # weights by layer name; without it the train net itself is run (it must keep the image size)
    deploy: Optional[Any] = None
    progress: bool = True
    tensorboard: bool = True
    echo: bool = True
    # stop with a snapshot after the first iteration that ends past this time.monotonic() instant: a run cut
    # into slices of a machine's time, each resumed from the last (None: no deadline)
    deadline: Optional[float] = None
    # stop with a snapshot once this iteration is done (before max_iter): a run cut at the iteration another
    # run reached, with the same learning-rate schedule up to there (None: run to max_iter)
    stop_at: Optional[int] = None
    # each iteration (forward, backward, Caffe's Adam) replayed as one CUDA graph (glrl.train.graphed; Adam
    # without clipping or weight decay); on the CPU the same arithmetic runs eagerly
    cuda_graph: bool = False
    # called (by rank 0) once the nets, the weights (--weights, or the resumed state) and the data are in
    # place, before the first iteration: glrl train records the initial weights then, not for a refused start
    on_ready: Optional[Callable[[], None]] = None


@dataclass
class RunResult:
    """What a finished (or cleanly stopped) run left behind."""

    iterations: int
    stopped_early: bool  # by a signal or the time limit, before max_iter
    solverstate: Optional[Path]
    caffemodel: Optional[Path]
    losses: List[float] = field(default_factory=list)
    set5_psnr: Optional[float] = None  # the last Set5 probe's figure, measured at iteration ``set5_iteration``
    set5_iteration: Optional[int] = None
    time_limit_reached: bool = False


class LossSmoother:
    """Caffe's ``UpdateSmoothedLoss``: the mean of the last ``average_loss`` iteration losses."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.values: List[float] = []
        self.next_index = 0
        self.smoothed = 0.0

    def update(self, loss: float) -> float:
        if len(self.values) < self.window:
            self.values.append(loss)
            size = len(self.values)
            self.smoothed = (self.smoothed * (size - 1) + loss) / size
        else:
            self.smoothed += (loss - self.values[self.next_index]) / self.window
            self.values[self.next_index] = loss
            self.next_index = (self.next_index + 1) % self.window
        return self.smoothed

    def state(self) -> Dict[str, Any]:
        return {"values": list(self.values), "next_index": self.next_index, "smoothed": self.smoothed}

    def set_state(self, state: Dict[str, Any]) -> None:
        self.values = [float(v) for v in state["values"]][: self.window]
        self.next_index = int(state["next_index"]) % self.window
        self.smoothed = float(state["smoothed"])


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's GPU, ``cuda:<local rank>``) or
    ``cuda:N``, with a clear error when absent (:func:`glrl.machine.resolve_device`)."""
    device = machine.resolve_device(choice)
    return torch.device(f"cuda:{local_rank}" if device == "cuda" else device)


def precision_context(precision: str, device: torch.device) -> Callable[[], Any]:
    """Set TF32 on or off and return the autocast factory for ``precision`` (fp32 = Caffe's arithmetic)."""
    if precision not in PRECISIONS:
        raise TrainingError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def channels_last_for(precision: str) -> bool:
    """Whether the training net keeps its weights channels-last (NHWC) at ``precision``.

    fp32 stays NCHW: it is Caffe's arithmetic, and NCHW's summation order keeps 20 iterations within 1e-5 of
    real Caffe on the oracle test's small net, where NHWC's drifted to 1.1e-5; it was only ~3 % faster for
    GLRL on our CPU. Reduced precision (bf16, tf32) takes NHWC, ~8 % faster in bf16 (docs/benchmarks.md).
    """
    return precision != "fp32"


def _single_input(inputs: List[HDF5Input], phase: str, net_path: Path) -> HDF5Input:
    if len(inputs) != 1:
        raise TrainingError(f"{net_path} has {len(inputs)} HDF5Data layers in phase {phase}; glrl's trainer "
                            "feeds exactly one", hint="use glrl's generated train/test prototxt")
    return inputs[0]


def _final_loss_layer(net_param: Any, phase: str) -> Any:
    """The last loss layer of ``phase``: its first bottom is the net's prediction (glrl's generators put the
    final prediction's loss last, after any deep-supervision losses)."""
    from glrl.caffe.phase import layers_in_phase

    losses = [layer for layer in layers_in_phase(net_param, phase) if layer.type.endswith("Loss")]
    if not losses:
        raise TrainingError(f"the net has no loss layer in phase {phase}",
                            hint="use glrl's generated train/test prototxt")
    return losses[-1]


class Trainer:
    """One run of one solver; build it, then call :meth:`run`."""

    def __init__(self, options: RunOptions) -> None:
        from glrl.backends.torch_net import TorchNet
        from glrl.caffe.io import read_net, read_solver

        self.options = options
        self.run_dir = Path(options.run_dir)
        solver_path = Path(options.solver)
        self.settings = SolverSettings.from_proto(read_solver(solver_path))
        wants_cuda = options.device.startswith("cuda") or (
            options.device == "auto" and torch.cuda.is_available())
        self.dist = dist_mod.from_environment(wants_cuda)
        self.device = resolve_device(options.device, self.dist.local_rank)
        self.hardware = describe_hardware() + (f" ({self.dist.world} processes)" if self.dist.world > 1 else "")
        if self.device.type == "cuda":
            # the step's shapes never change: let cuDNN time its algorithms once instead of guessing
            torch.backends.cudnn.benchmark = True
        autocast = precision_context(options.precision, self.device)
        seed = self.settings.random_seed if self.settings.random_seed >= 0 else secrets.randbits(31)
        self.seed = seed
        self._seed_everything(seed + self.dist.rank)

        self.net_path = resolve_net(self.settings.net, solver_path)
        self.net_param = read_net(self.net_path)
        source_dirs = [self.net_path.parent, solver_path.parent]
        train_input = _single_input(hdf5_inputs(self.net_param, "TRAIN"), "TRAIN", self.net_path)
        self.net = TorchNet(self.net_param, phase="TRAIN", device=self.device, seed=seed,
                             data_dirs=source_dirs)
        if options.winograd and (self.device.type != "cpu" or options.precision != "fp32"):
            raise TrainingError(f"--winograd is for fp32 training on the CPU, not {options.precision} on "
                                f"{self.device}", hint="drop --winograd, or train with --device cpu "
                                                       "--precision fp32")
        if channels_last_for(options.precision) or options.winograd:
            self.net.use_channels_last()
        if options.winograd:
            self.net.use_winograd(gradients=True)
        if options.weights and not self.net.load_weights(str(options.weights)):
            raise TrainingError(f"--weights {options.weights} holds no weights for any layer of the train net "
                                f"{self.net.name!r} (no layer names in common)",
                                hint="give a .caffemodel of this net (the layers are matched by name, as "
                                     "caffe train --weights does), or train from scratch without --weights")
        self.batches = HDF5Batches(resolve_source(train_input.source, source_dirs), train_input.tops,
                                   train_input.batch_size, shuffle=train_input.shuffle,
                                   rank=self.dist.rank, world=self.dist.world)
        self.train_input = train_input
        self.loss_top = "loss"
        self.prediction_blob = _final_loss_layer(self.net_param, "TRAIN").bottom[0]
        self.deploy_net, self.deploy_border = self._probe_net(seed)
        self.test_net, self.test_batches = self._test_net(seed, source_dirs)
        self.monitor: Optional[Monitor] = None
        self.solver = CaffeSolver(
            self.settings, self.net, adjustable_clip=options.adjustable_clip,
            gradient_reducer=self.dist.reduce_gradients if self.dist.enabled else None,
            loss_reducer=self.dist.reduce_loss if self.dist.enabled else None,
            autocast=autocast, log=self._log,
        )
        self.smoother = LossSmoother(self.settings.average_loss)
        self.elapsed_before = 0.0
        self.segments_before: List[Dict[str, Any]] = []  # the run's pieces before this process (snapshot.py)
        self.start_iter = self.solver.iter
        self.last_snapshot: Optional[SnapshotPaths] = None
        self.resumed_from: Optional[Path] = None
        self.resume_note = ""
        if options.resume:
            self._restore(Path(options.resume))
        self.graphed = None  # glrl.train.graphed.GraphedAdamIteration under --cuda-graph
        if options.cuda_graph:
            from glrl.train.graphed import GraphedAdamIteration

            self.graphed = GraphedAdamIteration(self.solver, log=self._log)

    def _probe_net(self, seed: int) -> Tuple[Any, int]:
        """The deploy net the Set5 probe runs whole images through (rank 0, with a probe and a deploy net;
        else None), and the border its input is edge-padded by (SRCNN's 'valid' net)."""
        from glrl import tiling
        from glrl.backends.torch_net import TorchNet
        from glrl.caffe.io import read_net

        deploy = self.options.deploy
        if deploy is None or self.options.psnr_probe is None or not self.dist.is_root:
            return None, 0
        net = TorchNet(deploy, phase="TEST", device=self.device, seed=seed)
        net.use_winograd(self.options.winograd)
        return net, tiling.border_loss(read_net(deploy) if isinstance(deploy, (str, Path)) else deploy)

    def _test_net(self, seed: int, source_dirs: List[Path]) -> Tuple[Any, Optional[HDF5Batches]]:
        """Caffe's test net and its batches (rank 0, when the solver tests and the net has TEST data; else
        None, None)."""
        from glrl.backends.torch_net import TorchNet

        inputs = hdf5_inputs(self.net_param, "TEST")
        if not (self.dist.is_root and self.settings.test_interval and self.settings.test_iter and inputs):
            return None, None
        test_input = _single_input(inputs, "TEST", self.net_path)
        net = TorchNet(self.net_param, phase="TEST", device=self.device, seed=seed, data_dirs=source_dirs)
        return net, HDF5Batches(resolve_source(test_input.source, source_dirs), test_input.tops,
                                test_input.batch_size, shuffle=test_input.shuffle)

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        settings, solver = self.settings, self.solver
        self.monitor = Monitor(self.run_dir, max_iter=settings.max_iter, start_iter=solver.iter,
                               enabled=self.dist.is_root, progress=self.options.progress,
                               tensorboard=self.options.tensorboard, echo=self.options.echo)
        started = time.monotonic()
        self.start_iter = solver.iter
        losses: List[float] = []
        probed: Optional[Tuple[int, float]] = None  # the last Set5 figure and the iteration it was measured at
        stopped = out_of_time = False
        deadline = self.options.deadline
        end = settings.max_iter if self.options.stop_at is None else min(self.options.stop_at, settings.max_iter)
        try:
            with StopSignals() as signals:
                self._log(f"Solving {self.net_param.name} ({self.device}, seed {self.seed}, "
                          f"{self.dist.world} process{'es' if self.dist.world > 1 else ''})")
                self._log(f"Learning Rate Policy: {settings.lr_policy}")
                if self.graphed is not None:
                    self._log(self.graphed.describe())
                iterate = self.graphed if self.graphed is not None else solver.iteration
                if self.resume_note:
                    self._log(self.resume_note)
                window = (time.monotonic(), solver.iter)  # when and at which iteration the last display was
                while solver.iter < end:
                    if settings.test_interval and solver.iter % settings.test_interval == 0 and (
                            solver.iter > 0 or settings.test_initialization):
                        probed = self._test_all(started) or probed
                    display = bool(settings.display) and solver.iter % settings.display == 0
                    iteration = solver.iter
                    loss = iterate(self.batches)
                    if not math.isfinite(loss):
                        self._diverged(f"the loss is {loss} at iteration {iteration}")
                    losses.append(loss)
                    smoothed = self.smoother.update(loss)
                    if display:
                        window = self._display(iteration, loss, smoothed, window, started)
                    self.monitor.advance(solver.iter, smoothed, solver.rate)
                    if settings.snapshot and solver.iter % settings.snapshot == 0:
                        self._snapshot(started)
                    if self.dist.any(signals.received is not None):
                        stopped = True
                        self._log("Stop requested (signal): snapshotting and stopping.")
                        break
                    if deadline is not None and self.dist.any(time.monotonic() >= deadline):
                        stopped = out_of_time = True
                        self._log("Time limit reached: snapshotting and stopping.")
                        break
            on_schedule = bool(settings.snapshot) and solver.iter % settings.snapshot == 0
            if settings.snapshot_after_train and not on_schedule:
                self._snapshot(started)
            if stopped:
                self._log("Optimization stopped early.")
            else:
                if settings.test_interval and solver.iter % settings.test_interval == 0:
                    probed = self._test_all(started) or probed
                if solver.iter < settings.max_iter:
                    self._log(f"Stopped at iteration {solver.iter} as asked (max_iter {settings.max_iter}).")
                else:
                    self._log("Optimization Done.")
            if self.monitor is not None:
                self.monitor.plot(self.options.bicubic_psnr)
        except GlrlError as exc:  # why the run stopped stays in its log (divergence, a damaged patch file)
            if self.monitor is not None:
                self.monitor.log(f"Stopped: {exc.message}", error=True)
            raise
        finally:
            if self.monitor is not None:
                self.monitor.close()
            self.batches.close()
            if self.test_batches is not None:
                self.test_batches.close()
        last = self.last_snapshot
        return RunResult(solver.iter, stopped, last.solverstate if last else None,
                         last.caffemodel if last else None, losses,
                         set5_psnr=probed[1] if probed else None, set5_iteration=probed[0] if probed else None,
                         time_limit_reached=out_of_time)

    def _display(self, iteration: int, loss: float, smoothed: float, window: Tuple[float, int],
                 started: float) -> Tuple[float, int]:
        """Caffe's display lines for ``iteration`` (speed since the last display, smoothed loss, rate), its
        metrics row, and the weights checked for NaN/Inf; the new display window."""
        now = time.monotonic()
        lapse, done = now - window[0], iteration - window[1]
        self._log(f"Iteration {iteration} ({done / (lapse if lapse else 1):g} iter/s, {lapse:g}s/"
                  f"{self.settings.display} iters), loss = {smoothed:g}")
        for line in format_outputs({self.loss_top: loss}, {self.loss_top: 1.0}, "Train"):
            self._log(line)
        self._log(f"Iteration {iteration}, lr = {self.solver.rate:g}")
        if not self.solver.weights_finite():
            self._diverged(f"the weights hold NaN/Inf after iteration {iteration}")
        self.monitor.record(MetricRow(iteration, self.solver.rate, smoothed, self._seconds(started)))
        return now, iteration

    # -- testing ---------------------------------------------------------------------------------------------
    def _test_all(self, started: float) -> Optional[Tuple[int, float]]:
        """Caffe's TestAll on the TEST net (mean loss over ``test_iter`` batches), plus Set5 PSNR; returns the
        iteration and the PSNR where the probe ran."""
        if not self.dist.is_root:
            return None
        test_loss = None
        if self.test_net is not None and self.test_batches is not None:
            self._share_weights(self.test_net)
            self._log(f"Iteration {self.solver.iter}, Testing net (#0)")
            total = 0.0
            with torch.no_grad():
                for _ in range(self.settings.test_iter[0]):
                    batch = next(self.test_batches)
                    blobs = self.test_net.forward({k: self.solver._to_tensor(v) for k, v in batch.items()})
                    total += float(self.test_net.loss(blobs))
            test_loss = total / self.settings.test_iter[0]
            for line in format_outputs({self.loss_top: test_loss}, {self.loss_top: 1.0}, "Test"):
                self._log(line)
        psnr = None
        if self.options.psnr_probe is not None:
            psnr = float(self.options.psnr_probe(self.predict))
            bicubic = self.options.bicubic_psnr
            baseline = f" (bicubic {bicubic:.4f} dB)" if bicubic is not None else ""
            self._log(f"    Set5 PSNR = {psnr:.4f} dB{baseline}")
        if test_loss is not None or psnr is not None:
            self.monitor.record(MetricRow(self.solver.iter, seconds=self._seconds(started),
                                          test_loss=test_loss, set5_psnr=psnr))
            self.monitor.plot(self.options.bicubic_psnr)
        return None if psnr is None else (self.solver.iter, psnr)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run the net on whole images (N x 1 x H x W bicubic Y in [0, 1]); return its prediction.

        With a deploy net (whose layers may differ from the train net's) the current training weights are
        copied into it by layer name first; a deploy net that shrinks its input (SRCNN's 'valid' one) gets
        the images with their borders replicated, as evaluation runs it (:func:`glrl.tiling.run_deploy_net`).
        """
        tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        with torch.no_grad():
            if self.deploy_net is not None:
                trained = self.net.layer_blobs()
                for layer, blobs in self.deploy_net.layer_blobs().items():
                    for target, source in zip(blobs, trained[layer]):
                        target.copy_(source)
                output = self.deploy_net.output_names[0]
                if self.deploy_border:
                    border = self.deploy_border
                    tensor = torch.nn.functional.pad(tensor, (border, border, border, border), mode="replicate")
                blobs = self.deploy_net.forward({self.deploy_net.input_names[0]: tensor}, keep=[output])
                return blobs[output].detach().float().cpu().numpy()
            blobs = self.net.forward({top: tensor for top in self.train_input.tops})
        return blobs[self.prediction_blob].detach().float().cpu().numpy()

    def _share_weights(self, other: Any) -> None:
        mine = {p.key: p.param for p in self.solver.params}
        with torch.no_grad():
            for p in other.learnable_params():
                p.param.copy_(mine[p.key])

    # -- snapshots -------------------------------------------------------------------------------------------
    def _prefix(self) -> str:
        return self.settings.snapshot_prefix or self.net_path.stem

    def _snapshot(self, started: float) -> None:
        if not self.dist.is_root:
            return
        if not self.solver.weights_finite():
            self._diverged(f"the weights hold NaN/Inf at iteration {self.solver.iter}")
        paths = SnapshotPaths.at(self.run_dir, self._prefix(), self.solver.iter)
        self._log(f"Snapshotting to binary proto file {paths.caffemodel}")
        this_piece = time.monotonic() - started  # seconds this process has trained
        sidecar = {
            "iter": self.solver.iter,
            "data": self.batches.state(),
            "torch_rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
            "loss_smoother": self.smoother.state(),
            "elapsed_seconds": self.elapsed_before + this_piece,
            "seed": self.seed,
            "world": self.dist.world,
            "precision": self._precision_name(),
            "hardware": self.hardware,
            "segments": self.segments_before + [{
                "from_iter": self.start_iter, "to_iter": self.solver.iter,
                "seconds": this_piece,
                "precision": self._precision_name(), "hardware": self.hardware}],
        }
        state = self.solver.state_proto(paths.learned_net)
        write_snapshot(paths, self.net.to_net_parameter(), state, sidecar)
        self._log(f"Snapshotting solver state to binary proto file {paths.solverstate}")
        self.last_snapshot = paths

    def _restore(self, solverstate: Path) -> None:
        from glrl.caffe.io import read_solverstate

        state = read_solverstate(solverstate)
        self.resumed_from = solverstate
        self.net.load_weights(str(resolve_learned_net(state.learned_net, solverstate)))
        self.solver.restore_state(state)
        sidecar = load_sidecar(solverstate)
        self.segments_before = training_segments(sidecar, self.solver.iter)
        if sidecar is None:
            rows = self.solver.iter * self.settings.iter_size * self.train_input.batch_size
            self.batches.skip_rows(rows)
            self.resume_note = (f"Resuming from {solverstate} at iteration {self.solver.iter} "
                                f"(no glrl sidecar: a Caffe state; the data reader skips {rows} rows)")
            return
        if int(sidecar["iter"]) != self.solver.iter:
            raise TrainingError(f"the sidecar of {solverstate} is for iteration {sidecar['iter']}, "
                                f"the state for {self.solver.iter}",
                                hint="resume from a snapshot written in one piece")
        self.batches.set_state(sidecar["data"])
        rng = np.frombuffer(base64.b64decode(sidecar["torch_rng"]), dtype=np.uint8).copy()
        torch.set_rng_state(torch.from_numpy(rng))
        self.smoother.set_state(sidecar["loss_smoother"])
        self.seed = int(sidecar.get("seed", self.seed))  # the run's seed, not this process's fresh one
        self.elapsed_before = float(sidecar.get("elapsed_seconds", 0.0))
        self.resume_note = f"Resuming from {solverstate} at iteration {self.solver.iter}"

    # -- helpers ---------------------------------------------------------------------------------------------
    def _diverged(self, what: str) -> None:
        last = self.last_snapshot.solverstate if self.last_snapshot else self.resumed_from
        raise TrainingError(
            f"training diverged: {what}; nothing was written for this iteration",
            hint=(f"the newest snapshot, {last}, holds finite weights (metrics.csv shows whether the loss was "
                  "already rising there); " if last else "")
            + "lower base_lr or set clip_gradients, then resume or restart",
        )

    def _precision_name(self) -> str:
        return self.options.precision + (" + Winograd" if self.options.winograd else "")

    def _seconds(self, started: float) -> float:
        return self.elapsed_before + time.monotonic() - started

    def _log(self, message: str) -> None:
        if self.monitor is not None:
            self.monitor.log(message)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))
        torch.manual_seed(seed)


def train(options: RunOptions) -> RunResult:
    """Build a :class:`Trainer` from ``options`` and run it."""
    trainer = Trainer(options)
    try:
        if options.on_ready is not None and trainer.dist.is_root:
            options.on_ready()
        return trainer.run()
    finally:
        trainer.dist.close()

