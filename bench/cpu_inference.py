"""CPU inference of one Y image through the same deploy prototxt + caffemodel with three tools:
our PyTorch backend (under each of its settings), real Caffe (Debian's, in the oracle root) and cv2.dnn.

Each tool's output is compared with ours, so the table only ever compares runs of the same computation.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from timing import measure, threads_text

Record = Dict[str, Any]
BUDGET_S = 25.0  # timed runs per measurement: `repeats`, fewer (at least 3) if they would take longer
SLOW_CUTOFF = 3.0  # a setting whose first run is this much slower than the best so far is not timed further


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture Y image in [0, 1], shape 1×1×size×size, float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.05 * rng.standard_normal((size, size))
    return np.clip(image, 0, 1).astype(np.float32)[None, None]


# ------------------------------------------------------------------------------------------ ours


def _torch_variants(cores: int) -> List[Tuple[str, Dict[str, Any]]]:
    """The settings tried, the usually fastest first (so slow ones can be cut short against it). The
    first two are what ``glrl eval`` and ``glrl upscale`` run: ``open_net``'s channels-last net with
    Winograd 3×3 convolutions, whose ``run`` drops each blob after its last reader. The others run
    oneDNN's direct convolutions (what ``GLRL_WINOGRAD=0`` gives; torch.compile and tracing cannot see
    into the Winograd kernel)."""
    variants = [
        ("as glrl eval runs (channels_last, Winograd), 1 thread", {"threads": 1}),
        (f"as glrl eval runs (channels_last, Winograd), {cores} threads", {"threads": cores}),
        ("channels_last, oneDNN direct, 1 thread", {"threads": 1, "direct": True}),
        (f"channels_last, oneDNN direct, {cores} threads", {"threads": cores, "direct": True}),
        ("channels_last + torch.compile, 1 thread", {"threads": 1, "compile": True}),
        (f"channels_last + torch.compile, {cores} threads", {"threads": cores, "compile": True}),
        (f"NCHW, {cores} threads", {"threads": cores, "nchw": True}),
        (f"traced+frozen (oneDNN prepacked), {cores} threads", {"threads": cores, "freeze": True}),
        (f"oneDNN off, {cores} threads", {"threads": cores, "mkldnn": False}),
        # reduced precision (glrl upscale --precision bf16): timed and reported apart from fp32
        ("bf16 autocast, 1 thread", {"threads": 1, "precision": "bf16"}),
        (f"bf16 autocast, {cores} threads", {"threads": cores, "precision": "bf16"}),
    ]
    return variants if cores > 1 else [v for v in variants if "1 thread" not in v[0]]


def _precision(options: Dict[str, Any]) -> str:
    return options.get("precision", "fp32")


def _our_runner(deploy: Path, weights: Path, image: np.ndarray, options: Dict[str, Any]) -> Callable[[], Any]:
    """A zero-argument function running our backend once on ``image`` with the given settings."""
    import torch
    from glrl.backends import open_net

    torch.set_num_threads(options["threads"])
    torch.backends.mkldnn.enabled = options.get("mkldnn", True)
    net = open_net(str(deploy), str(weights), backend="torch", device="cpu", precision=_precision(options))
    if any(options.get(k) for k in ("direct", "nchw", "freeze", "compile")):
        net.use_winograd(False)
    if not any(options.get(k) for k in ("nchw", "freeze", "compile")):
        feed = {net.input_names[0]: image}
        return lambda: net.run(feed)
    name = net.input_names[0]
    out_name = net.output_names[-1]

    class Single(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net({name: x}, keep=[out_name])[out_name]

    single = Single().eval()
    if options.get("nchw"):
        single = single.to(memory_format=torch.contiguous_format)
    x = torch.from_numpy(image)
    if options.get("freeze"):
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(single, x, check_trace=False)
            single = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    if options.get("compile"):
        torch._dynamo.reset()  # a fresh compile per setting (dynamo stops recompiling after 8 variants)
        single = torch.compile(single, dynamic=False)

    def run() -> Any:
        with torch.inference_mode():
            return single(x)

    return run


def ours(deploy: Path, weights: Path, sizes: List[int], repeats: int, cores: int,
         reference: Optional[Dict[int, np.ndarray]] = None) -> List[Record]:
    """Every setting at the first size; at larger sizes only the (at most two) settings within 1.5× of that
    size's best (the others are recorded as skipped, with their ratio), so slow settings do not eat the
    run's time. fp32 and bf16 settings compete separately; bf16 outputs are compared with fp32's."""
    records: List[Record] = []
    variants = _torch_variants(cores)
    for precision in ("fp32", "bf16"):
        group = [(label, options) for label, options in variants if _precision(options) == precision]
        records += _time_settings(deploy, weights, sizes, repeats, group, reference if precision != "fp32" else None)
    for record in records:
        record["precision"] = "bf16" if record["setting"].startswith("bf16") else "fp32"
    return records


def _time_settings(deploy: Path, weights: Path, sizes: List[int], repeats: int,
                   contenders: List[Tuple[str, Dict[str, Any]]],
                   reference: Optional[Dict[int, np.ndarray]]) -> List[Record]:
    import torch

    records: List[Record] = []
    default_threads = torch.get_num_threads()
    for index, size in enumerate(sizes):
        timed: List[Record] = []
        for label, options in contenders:
            record: Record = {"tool": "ours (PyTorch)", "setting": label, "case": f"{size}x{size}"}
            try:
                run = _our_runner(deploy, weights, test_image(size), options)
                if options.get("compile"):
                    run()  # compiles
                start = time.perf_counter()
                output = run()
                first = time.perf_counter() - start
                if reference is not None:
                    array = next(iter(output.values())) if isinstance(output, dict) else output.float().numpy()
                    record["max_rel_diff_vs_ours"] = _relative_difference(array, reference[size])
                best = min((r["median_s"] for r in timed), default=None)
                if best is not None and first > SLOW_CUTOFF * best:
                    record["skipped"] = f"one run took {first:.2f} s, over {SLOW_CUTOFF:g}x the best so far"
                else:
                    within_budget = max(3, min(repeats, int(BUDGET_S / max(first, 1e-9))))
                    record.update(measure(run, within_budget, warmup=0))
                    timed.append(record)
            except Exception as exc:  # a setting that does not work here is reported, not fatal
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                torch.backends.mkldnn.enabled = True
                torch.set_num_threads(default_threads)
            records.append(record)
        if index == 0 and timed:
            # choose on each setting's fastest run: on a shared machine that is the least disturbed one
            best = min(min(r["runs_s"]) for r in timed)
            ranked = sorted(timed, key=lambda r: min(r["runs_s"]))[:2]
            keep = {r["setting"] for r in ranked if min(r["runs_s"]) <= 1.5 * best}
            for r in (r for r in timed if r["setting"] not in keep):
                why = f"{min(r['runs_s']) / best:.1f}x slower than the best at {size}x{size} (fastest runs)"
                records += [{"tool": "ours (PyTorch)", "setting": r["setting"], "case": f"{later}x{later}",
                             "skipped": why} for later in sizes[1:]]
            contenders = [(label, options) for label, options in contenders if label in keep]
    return records


def _relative_difference(theirs: np.ndarray, ours: np.ndarray) -> float:
    """max |theirs - ours| / max |ours|: random weights make outputs of any magnitude."""
    return float(np.abs(theirs - ours).max() / max(np.abs(ours).max(), 1e-12))


def reference_output(deploy: Path, weights: Path, size: int) -> np.ndarray:
    from glrl.backends import open_net

    net = open_net(str(deploy), str(weights), backend="torch", device="cpu")
    return net.run({net.input_names[0]: test_image(size)})[net.output_names[-1]]


# ------------------------------------------------------------------------------------------ cv2.dnn


def opencv(deploy: Path, weights: Path, sizes: List[int], repeats: int, cores: int,
           reference: Dict[int, np.ndarray]) -> List[Record]:
    """cv2.dnn with 1 and with all threads at the first size, then its faster thread count."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    records = []
    thread_choices = sorted({1, cores})
    for index, size in enumerate(sizes):
        image = test_image(size)

        def run(image: np.ndarray = image) -> np.ndarray:
            net.setInput(image)
            return net.forward()

        timed = []
        for threads in thread_choices:
            cv2.setNumThreads(threads)
            setting = f"OpenCV {cv2.__version__}, {threads_text(threads)}"
            record: Record = {"tool": "cv2.dnn", "setting": setting, "case": f"{size}x{size}",
                              "threads": threads}
            record.update(measure(run, repeats))
            if size in reference:
                record["max_rel_diff_vs_ours"] = _relative_difference(run(), reference[size])
            records.append(record)
            timed.append(record)
        if index == 0:
            thread_choices = [min(timed, key=lambda r: r["median_s"])["threads"]]
    return records


# ------------------------------------------------------------------------------------------ real Caffe

CAFFE_SCRIPT = r"""
import json, statistics, time
import numpy as np
import caffe
caffe.set_mode_cpu()
net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
name_in = net.inputs[0]
name_out = net.outputs[-1]
results = {}
for size in SIZES:
    image = np.load("image_%d.npy" % size)
    net.blobs[name_in].reshape(*image.shape)
    net.reshape()
    net.blobs[name_in].data[...] = image
    start = time.perf_counter()
    net.forward()
    first = time.perf_counter() - start
    runs, cpu = [], []
    for _ in range(max(3, min(REPEATS, int(25.0 / first)))):
        start, start_cpu = time.perf_counter(), time.process_time()
        net.forward()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    np.save("out_%d.npy" % size, net.blobs[name_out].data)
    results[size] = [runs, statistics.median(cpu)]
print(json.dumps(results))
"""


def _caffe_session(deploy: Path, weights: Path, sizes: List[int], repeats: int, threads: int,
                   reference: Dict[int, np.ndarray]) -> List[Record]:
    import shutil
    import statistics

    from glrl import oracle

    with oracle.RootSession(threads=threads) as session:
        shutil.copy(deploy, session.path / "deploy.prototxt")
        shutil.copy(weights, session.path / "weights.caffemodel")
        for size in sizes:
            np.save(session.path / f"image_{size}.npy", test_image(size))
        script = CAFFE_SCRIPT.replace("SIZES", repr(sizes)).replace("REPEATS", str(repeats))
        runs = json.loads(session.run_python(script, timeout=3600).strip().splitlines()[-1])
        outputs = {size: np.load(session.path / f"out_{size}.npy") for size in sizes}
    records = []
    for size in sizes:
        times, cpu = runs[str(size)]
        record: Record = {"tool": "Caffe (Debian, OpenBLAS)", "setting": threads_text(threads),
                          "case": f"{size}x{size}", "threads": threads, "median_s": statistics.median(times),
                          "runs_s": [round(t, 6) for t in times], "median_cpu_s": cpu}
        if size in reference:
            record["max_rel_diff_vs_ours"] = _relative_difference(outputs[size], reference[size])
        records.append(record)
    return records


def caffe(deploy: Path, weights: Path, sizes: List[int], repeats: int, cores: int,
          reference: Dict[int, np.ndarray]) -> List[Record]:
    """Real Caffe with 1 and with all OpenBLAS threads at the first size, then its faster thread count."""
    from glrl import oracle

    if not oracle.is_built():
        raise RuntimeError(f"the real-Caffe root is not built at {oracle.caffe_root()} (make caffe-root)")
    fits, too_big = _caffe_fits(deploy, sizes)
    skipped = [{"tool": "Caffe (Debian, OpenBLAS)", "case": f"{size}x{size}", "setting": "",
                "skipped": reason} for size, reason in too_big]
    if not fits:
        return skipped
    first = [r for threads in sorted({1, cores})
             for r in _caffe_session(deploy, weights, fits[:1], repeats, threads, reference)]
    best = min(first, key=lambda r: r["median_s"])["threads"]
    later = _caffe_session(deploy, weights, fits[1:], repeats, best, reference) if fits[1:] else []
    return first + later + skipped


def _caffe_fits(deploy: Path, sizes: List[int]) -> Tuple[List[int], List[Tuple[int, str]]]:
    """The sizes whose Caffe forward pass (every blob plus an im2col buffer per convolution) takes at most
    half of the memory available now — on a shared machine a bigger one could push others out."""
    from glrl import tiling
    from glrl.caffe.io import read_net

    per_pixel = 4 * tiling.caffe_floats_per_pixel(read_net(deploy))
    available = _available_bytes()
    fits, too_big = [], []
    for size in sizes:
        needed = per_pixel * size * size
        if available and needed > available / 2:
            why = (f"needs {needed / 2**30:.1f} GiB in Caffe (an im2col buffer per convolution), "
                   f"over half the {available / 2**30:.1f} GiB available")
            too_big.append((size, why))
        else:
            fits.append(size)
    return fits, too_big


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_section(nets: List[Any], sizes: List[int], repeats: int, tools: Optional[List[str]] = None
                ) -> List[Record]:
    """Every net × size × tool; a tool that is missing gives one record with ``skipped``."""
    cores = len(os.sched_getaffinity(0))
    records: List[Record] = []
    for bench_net in nets:
        reference = {size: reference_output(bench_net.deploy, bench_net.weights, size) for size in sizes}
        for tool, fn in (("ours", ours), ("cv2.dnn", opencv), ("caffe", caffe)):
            if tools and tool not in tools:
                continue
            try:
                if fn is ours:
                    found = ours(bench_net.deploy, bench_net.weights, sizes, repeats, cores, reference)
                else:
                    found = fn(bench_net.deploy, bench_net.weights, sizes, repeats, cores, reference)
            except Exception as exc:
                found = [{"tool": tool, "skipped": f"{type(exc).__name__}: {exc}"[:400]}]
            for record in found:
                record["net"] = bench_net.name
                records.append(record)
            print(f"  {bench_net.name} {tool}: done", flush=True)
    return records
