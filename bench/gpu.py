"""GPU benchmarks (run only where CUDA exists): inference at 256², 512² and 1920×1080 in fp32, TF32 and
bf16, training iterations per second, achieved FLOP/s as a fraction of the GPU's measured matrix peak,
and the PSNR cost of each reduced precision on Set5.

FLOPs are counted from the deploy prototxt (2·k_h·k_w·C_in/group·C_out per output pixel of every
convolution); a training iteration counts three times its forward pass (forward, input and weight grads).

A GPU is lent for minutes (docs/gpu-slices.md), so the section can run under a time budget: measurements are
made in order of importance (GLRL before the other nets, the plain modes before the torch.compile ones, whose
compilation takes tens of seconds each), and those left when the budget is spent are recorded as skipped.
"""
from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from timing import measure

Record = Dict[str, Any]
SIZES = ((256, 256), (512, 512), (1080, 1920))
MODES = ("fp32", "tf32", "bf16")  # matmul peaks are measured in these
# bf16 = autocast (fp32 master weights, as a solver needs); "+ torch.compile" compiles the net's forward
# (and through AOTAutograd its backward), fusing the PReLUs and sums between the convolutions
# "+ CUDA graph": forward, backward and an Adam update (glrl train --optimizer adam, as the GPU runs train)
# captured as one graph and replayed: glrl train --cuda-graph's step (glrl.train.graphed), what a step costs
# without the host's launches, which bound every other mode (2026-12-04, H200: 15-20 ms at batch 32 and 256)
TRAINING_MODES = ("fp32", "tf32", "bf16", "bf16 + torch.compile", "bf16 + CUDA graph (Adam)",
                  "tf32 + CUDA graph (Adam)")  # TF32: what the released models trained in
# the paper's batch, and one large enough to fill a big GPU (what data-parallel training at batch 32 per
# GPU cannot show: at 32 patches of 31×31 a step is a few hundred small kernels)
TRAINING_BATCHES = (32, 256)


def conv_flops_per_pixel(net_param: Any) -> float:
    """Multiply-adds ×2 of every convolution per output pixel of a stride-1 deploy net."""
    from glrl.nets.stats import measure

    return 2.0 * measure(net_param).macs_per_pixel


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _precision(mode: str, device: str):
    """Context manager and TF32 switches for a precision mode."""
    import torch

    allow_tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if mode == "bf16":
        return lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext


def matrix_peak(device: str, n: int = 8192, repeats: int = 10) -> Dict[str, float]:
    """Measured dense matmul FLOP/s per precision mode (the 'peak' the fractions refer to)."""
    import torch

    peaks = {}
    for mode in MODES:
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        _precision(mode, device)
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)

        def run(a: Any = a, b: Any = b) -> None:
            torch.mm(a, b)
            _sync(device)

        peaks[mode] = 2.0 * n**3 / measure(run, repeats, warmup=3)["median_s"]
    return peaks


# mode -> (weights dtype, TF32 allowed, autocast to bf16, torch.compile with CUDA graphs)
INFERENCE_MODES = {
    "fp32": ("float32", False, False, False),
    "tf32": ("float32", True, False, False),
    "bf16 autocast": ("float32", False, True, False),
    "bf16": ("bfloat16", False, False, False),
    "bf16 + CUDA graphs (torch.compile)": ("bfloat16", False, False, True),
    # autocast keeps the image and the residual sums in fp32 (pure bf16 cost 0.018 dB of Set5 PSNR on an
    # H200, autocast none) but paid for its casts in launches (34.6 against 25.7 ms at 1080p): in a graph,
    # the casts cost no launches
    "bf16 autocast + CUDA graphs (torch.compile)": ("float32", False, True, True),
}
# On the CPU, fp32 with the Winograd 3×3 kernel (what glrl eval and glrl upscale run there) is a mode too,
# so that its rounding is priced in Set5 PSNR beside bf16's; "fp32" is oneDNN's direct convolution.
CPU_WINOGRAD = "fp32 Winograd"


def _peak_for(mode: str, peaks: Dict[str, float]) -> Optional[float]:
    return peaks.get("bf16" if mode.startswith("bf16") else mode)


def _inference_runner(bench_net: Any, image: Any, mode: str, device: str) -> Callable[[], Any]:
    """A function running the deploy net once on ``image`` (1×1×H×W on ``device``) in ``mode``."""
    import torch
    from glrl.backends.torch_net import TorchNet

    dtype_name, tf32, autocast, graphs = INFERENCE_MODES["fp32" if mode == CPU_WINOGRAD else mode]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = getattr(torch, dtype_name)
    net = TorchNet(str(bench_net.deploy), "TEST", device=device, dtype=dtype)
    net.load_weights(str(bench_net.weights))
    net.eval().use_channels_last().use_winograd(mode == CPU_WINOGRAD)
    name, out_name = net.input_names[0], net.output_names[-1]

    def forward(x: Any) -> Any:
        return net.forward({name: x}, keep=[out_name])[out_name]

    if graphs:
        torch._dynamo.reset()  # a fresh compile per net and size: the recompile limit (8) would fall back to eager
    step = torch.compile(forward, mode="reduce-overhead") if graphs else forward
    context = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)) if autocast \
        else contextlib.nullcontext
    x = image.to(dtype)

    def run() -> Any:
        with torch.inference_mode(), context():
            out = step(x)
        _sync(device)
        return out

    return run


class Budget:
    """The seconds a section may still spend (None: no limit)."""

    def __init__(self, seconds: Optional[float] = None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    def spent(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def skip(self, record: Record) -> bool:
        """Mark ``record`` skipped if the budget is spent; say whether it was."""
        if self.spent():
            record["skipped"] = f"the benchmark's time budget ({self.seconds:g} s) was spent"
        return "skipped" in record


UNLIMITED = Budget()


def _measured(record: Record, make_run: Callable[[], Callable[[], Any]], repeats: int, flops_per_run: float,
              peak: Optional[float], budget: Budget = UNLIMITED) -> Record:
    """``record`` with the timing of the runner ``make_run`` builds, its FLOP/s and the fraction of ``peak``;
    a failure (a mode this GPU or build lacks) is recorded as the record's ``error`` instead, and a record
    reached after ``budget`` is spent as ``skipped``."""
    if budget.skip(record):
        return record
    try:
        record.update(measure(make_run(), repeats, warmup=3))
        achieved = flops_per_run / record["median_s"]
        record["tflop_per_s"] = achieved / 1e12
        record["fraction_of_peak"] = achieved / peak if peak else None
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return record


def inference(nets: List[Any], device: str, repeats: int, peaks: Dict[str, float], sizes=SIZES,
              modes: Optional[Sequence[str]] = None, budget: Budget = UNLIMITED) -> List[Record]:
    """Every net at every size in each of ``modes`` (default: all modes of ``device``)."""
    import torch
    from glrl.caffe.io import read_net

    torch.backends.cudnn.benchmark = True
    records = []
    for bench_net in nets:
        flops_pp = conv_flops_per_pixel(read_net(bench_net.deploy))
        for height, width in sizes:
            image = torch.rand(1, 1, height, width, device=device)
            for mode in modes if modes is not None else modes_here(device):
                record: Record = {"net": bench_net.name, "tool": "ours (PyTorch)", "setting": mode,
                                  "case": f"{width}x{height}"}
                records.append(_measured(
                    record, functools.partial(_inference_runner, bench_net, image, mode, device), repeats,
                    flops_pp * height * width, _peak_for(mode, peaks), budget))
    return records


def modes_here(device: str) -> List[str]:
    """Every mode on a GPU; on a CPU (used only to check this code) those that make sense there."""
    if device.startswith("cuda"):
        return list(INFERENCE_MODES)
    return ["fp32", CPU_WINOGRAD, "bf16 autocast", "bf16"]


def training(work: Path, net_name: str, device: str, repeats: int, peaks: Dict[str, float],
             modes: Sequence[str] = TRAINING_MODES, batches: Sequence[int] = TRAINING_BATCHES,
             budget: Budget = UNLIMITED) -> List[Record]:
    """Iterations per second at each of ``batches`` patches of 31×31 in each of ``modes``, with the layout
    ``glrl train`` uses at that precision."""
    import torch
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe.io import read_solver
    from glrl.nets.registry import get_net
    from glrl.train.batches import HDF5Batches
    from glrl.train.run import channels_last_for
    from glrl.train.settings import SolverSettings
    from glrl.train.solver import CaffeSolver
    from training import PATCH, read_train_net, write_training_files

    deploy_flops = conv_flops_per_pixel(get_net(net_name).deploy())
    records = []
    for batch_size, mode in ((b, m) for b in batches for m in modes):
        record: Record = {"net": net_name, "tool": "ours (PyTorch)", "setting": mode,
                          "case": f"train batch {batch_size} of {PATCH}x{PATCH}"}
        if budget.skip(record):
            records.append(record)
            continue
        folder = work / f"gpu_train_{net_name}_{batch_size}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            write_training_files(folder, net_name, batch_size)
        settings = SolverSettings.from_proto(read_solver(folder / "solver.prototxt"))
        precision, compiled = mode.split(" + ")[0], mode.endswith("torch.compile")
        graphed = "CUDA graph" in mode
        net = TorchNet(read_train_net(folder), "TRAIN", device=device, seed=0)
        if channels_last_for(precision):
            net.use_channels_last()
        if compiled:
            torch._dynamo.reset()
            net.forward = torch.compile(net.forward)
        reader = HDF5Batches(folder / "train.txt", ["data", "label"], batch_size, shuffle=True)
        # the batches live on the device, so the loop measures the solver, not the host-to-device copies
        batch = {k: torch.as_tensor(v, device=device) for k, v in next(reader).items()}
        reader.close()
        feed = iter(lambda batch=batch: batch, None)
        autocast = _precision(precision, device)
        if graphed:  # captured inside _measured, so that a failed capture is recorded, not raised
            solver = CaffeSolver(adam_settings(settings), net, autocast=autocast)
            make_run = functools.partial(_graphed_runner, solver, feed, device)
        else:
            make_run = functools.partial(_solver_runner, CaffeSolver(settings, net, autocast=autocast), feed,
                                         device)
        _measured(record, make_run, repeats, 3 * deploy_flops * batch_size * PATCH * PATCH,
                  _peak_for(mode, peaks))
        if "median_s" in record:
            record["iters_per_s"] = 1.0 / record["median_s"]
        records.append(record)
    return records


def _solver_runner(solver: Any, feed: Any, device: str) -> Callable[[], None]:
    """A function running one of ``solver``'s iterations on ``feed`` and waiting for it."""

    def run() -> None:
        solver.iteration(feed)
        _sync(device)

    return run


def adam_settings(settings: Any) -> Any:
    """``settings`` with ``glrl train --optimizer adam``'s solver (``glrl.nets.solver.OPTIMIZERS["adam"]``)
    in place of the bench's paper SGD."""
    import dataclasses

    from glrl.nets.solver import OPTIMIZERS

    adam = OPTIMIZERS["adam"]
    return dataclasses.replace(
        settings, type=adam.solver_type, base_lr=adam.base_lr, momentum=adam.momentum,
        momentum2=adam.momentum2, weight_decay=adam.weight_decay,
        clip_gradients=-1.0 if adam.clip_gradients is None else adam.clip_gradients)


def _graphed_runner(solver: Any, feed: Any, device: str) -> Callable[[], None]:
    """A function running one iteration of ``glrl train --cuda-graph``
    (:class:`glrl.train.graphed.GraphedAdamIteration` over ``solver``) on ``feed``: the warm-up and the
    capture happen here, so each call is what a captured iteration costs the trainer (the batch copied in,
    the step sizes set, one replay, the loss read back)."""
    from glrl.train.graphed import WARMUP_ITERATIONS, GraphedAdamIteration

    if not device.startswith("cuda"):
        raise RuntimeError("a CUDA graph needs a CUDA device")
    notes: List[str] = []
    step = GraphedAdamIteration(solver, log=notes.append)
    for _ in range(WARMUP_ITERATIONS + 1):
        step(feed)
    if step.graph is None:
        raise RuntimeError(" ".join(notes) or "the iteration was not captured")

    def run() -> None:
        step(feed)  # reads the loss back: waits for the replay

    return run


def set5_psnr_cost(bench_net: Any, data_root: Path, device: str, scale: int = 3,
                   budget: Budget = UNLIMITED, modes: Optional[Sequence[str]] = None) -> List[Record]:
    """Set5 ×3 PSNR with the benchmark protocol (as ``glrl eval``) in each precision mode (of ``modes``,
    default all; fp32 always, as the reference), and its difference from fp32."""
    import torch
    from glrl.train.set5 import Set5Probe

    probe = Set5Probe(data_root / "test" / "Set5", scale)
    records = []
    wanted = [m for m in modes_here(device) if "CUDA graphs" not in m]  # graphs change speed, not values
    if modes is not None:
        wanted = [m for m in wanted if m == "fp32" or m in modes]
    for mode in wanted:
        if budget.spent() and records:
            break

        def predict(batch: np.ndarray, mode: str = mode) -> np.ndarray:
            image = torch.from_numpy(batch).to(device)
            return _inference_runner(bench_net, image, mode, device)().float().cpu().numpy()

        records.append({"net": bench_net.name, "tool": "ours (PyTorch)", "setting": mode,
                        "case": f"Set5 x{scale} PSNR", "psnr_db": probe(predict),
                        "weights": bench_net.weights_source})
    for record in records:
        record["psnr_cost_db"] = records[0]["psnr_db"] - record["psnr_db"]  # records[0] is fp32
    return records


def check_modes(names: Sequence[str]) -> None:
    """Raise ValueError naming any of ``names`` that is neither an inference nor a training mode."""
    known = list(INFERENCE_MODES) + [CPU_WINOGRAD] + [m for m in TRAINING_MODES if m not in INFERENCE_MODES]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown GPU mode(s) {unknown}; the modes are: {'; '.join(known)}")


def run_section(work: Path, nets: List[Any], data_root: Optional[Path], repeats: int, device: str = "cuda",
                sizes: Sequence[Tuple[int, int]] = SIZES, matmul_size: int = 8192,
                training_modes: Optional[Sequence[str]] = None,
                training_batches: Sequence[int] = TRAINING_BATCHES,
                budget_s: Optional[float] = None, only: Optional[Sequence[str]] = None) -> List[Record]:
    """Matrix peaks, inference, training and the PSNR cost of reduced precision on ``device``, in order of
    importance within ``budget_s`` seconds (None: no limit; what is left is recorded as skipped); ``only``
    names the inference and training modes to measure (default all; :func:`check_modes` first). The CPU
    (small ``sizes`` and ``matmul_size``) only checks this code: the tests run it so, since CI has no GPU."""
    budget = Budget(budget_s)
    if only is not None:
        check_modes(only)
    peaks = matrix_peak(device, matmul_size)
    records: List[Record] = [{"tool": "torch.mm", "case": "matrix peak", "setting": mode,
                              "tflop_per_s": value / 1e12} for mode, value in peaks.items()]
    nets = sorted(nets, key=lambda n: n.name != "glrl")  # GLRL first: the goals are about it
    glrl_nets = [n for n in nets if n.name == "glrl"]
    plain = [m for m in modes_here(device) if "torch.compile" not in m]
    compiled = [m for m in modes_here(device) if "torch.compile" in m]
    if training_modes is None:
        training_modes = TRAINING_MODES if device.startswith("cuda") else ("fp32", "bf16")
    if only is not None:
        plain, compiled = [m for m in plain if m in only], [m for m in compiled if m in only]
        training_modes = [m for m in training_modes if m in only]
    plain_training = [m for m in training_modes if " + " not in m]
    # the whole-step graphs before torch.compile: they take no compiling and answer how host-bound a step is
    compiled_training = sorted((m for m in training_modes if " + " in m), key=lambda m: "torch.compile" in m)
    records += inference(glrl_nets, device, repeats, peaks, sizes, plain, budget)
    records += training(work, "glrl", device, repeats, peaks, plain_training, training_batches, budget)
    if data_root is not None and glrl_nets:
        records += set5_psnr_cost(glrl_nets[0], data_root, device, budget=budget, modes=only)
    records += inference(glrl_nets, device, repeats, peaks, sizes, compiled, budget)
    records += training(work, "glrl", device, repeats, peaks, compiled_training, training_batches[::-1], budget)
    others = [n for n in nets if n.name != "glrl"]
    records += inference(others, device, repeats, peaks, sizes, plain + compiled, budget)
    return records
