"""What machine this is, in one line: recorded by training runs, released models and benchmarks.

Torch is optional: without it (the core, the real-Caffe image) the GPU part is left out.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_hardware() -> str:
    """CPU model and count, and the CUDA GPUs PyTorch sees: ``"<cpu>, 2 CPUs; GPU: NVIDIA H100"``."""
    text = f"{cpu_model()}, {os.cpu_count()} CPUs"
    try:
        import torch
    except ImportError:
        return text
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        text += f"; GPU: {', '.join(gpus)}"
    return text
