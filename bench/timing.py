"""Timing and machine description for the benchmarks: medians of repeated runs, and what ran them.

Why medians: the benchmark machine may be shared; the median of several runs after a warm-up is robust to
the odd slow run, and we keep every run so the spread can be judged.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List

from glrl.machine import cpu_model, cpu_speed_features


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1, budget_s: float = 25.0) -> Dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then time it ``repeats`` times — fewer (but at least 3) when
    that would take longer than ``budget_s`` by the warm-up's duration (with ``warmup=0``, exactly
    ``repeats`` times). The median and every run (wall clock), in seconds, and the median process CPU
    time: on a shared machine, wall ≫ CPU × threads shows that other work took the cores."""
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
    runs: List[float] = []
    count = repeats
    if warmup:
        per_run = (time.perf_counter() - started) / warmup
        count = max(3, min(repeats, int(budget_s / per_run))) if per_run > 0 else repeats
    cpu: List[float] = []
    for _ in range(count):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"median_s": statistics.median(runs), "runs_s": [round(r, 6) for r in runs],
            "median_cpu_s": statistics.median(cpu)}


def threads_text(threads: int) -> str:
    return "1 thread" if threads == 1 else f"{threads} threads"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def machine_description() -> Dict[str, Any]:
    """CPU, cores, memory, load, library versions and GPU (if any) of this run."""
    import numpy

    info: Dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_features": cpu_speed_features(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads_default"] = torch.get_num_threads()
        info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    try:
        from glrl import oracle

        packages = oracle.root_info() if oracle.is_built() else {}
        if packages:
            info["caffe"] = (f"Debian {packages.get('suite', '?')} python3-caffe "
                             f"{packages.get('package python3-caffe', '?')}, OpenBLAS "
                             f"{packages.get('package libopenblas0-pthread', '?')} (oracle root)")
            core = oracle.blas_core()
            if core:
                info["caffe"] += f", {oracle.BLAS_CORE_ENV}={core}"
        else:
            info["caffe"] = None
    except Exception as exc:  # the root is optional for a benchmark run
        info["caffe"] = f"unavailable ({exc})"
    return info
