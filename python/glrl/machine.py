"""What machine this is, in one line: recorded by training runs, released models and benchmarks; what
its CPU can do fast (the features that decide whether bf16 helps or hurts, noted to the user when it hurts);
and which device a ``--device`` choice means here (:func:`resolve_device`, for eval, upscale and train).

Torch is optional: without it (the core, the real-Caffe image) the GPU part is left out.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import FrozenSet, Optional

from glrl.errors import ModelError

# The CPU features that decide how fast our convolutions run: bf16 is native only with AVX-512 BF16 or AMX;
# on an AVX2-only CPU oneDNN emulates it (8-15x slower than fp32 on a Zen 2 EPYC: docs/benchmarks.md).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo(field: str) -> Optional[str]:
    """The first ``field`` of ``/proc/cpuinfo``; None where the system has no such file or field."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> Optional[FrozenSet[str]]:
    """The CPU's feature flags (``/proc/cpuinfo``); None where the system does not tell."""
    flags = _cpuinfo("flags")
    return None if flags is None else frozenset(flags.split())


def cpu_speed_features() -> str:
    """Which of :data:`SPEED_FLAGS` this CPU has, e.g. ``"avx2"`` or ``"avx2 avx512f avx512_bf16"``."""
    flags = cpu_flags()
    if flags is None:
        return "unknown"
    return " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none of " + ", ".join(SPEED_FLAGS)


def bf16_emulation_note(precision: str, device: str) -> Optional[str]:
    """A warning when bf16 is asked for on a CPU that has no native bf16 arithmetic (then it is slower than
    fp32, not faster); None where bf16 is native, not asked for, or on a GPU."""
    if precision != "bf16" or str(device).startswith("cuda"):
        return None
    if device == "auto":
        try:
            import torch
        except ImportError:
            return None
        if torch.cuda.is_available():
            return None
    flags = cpu_flags()
    if flags is None or any(flag in flags for flag in NATIVE_BF16_FLAGS):
        return None
    return ("note: this CPU has no native bf16 (neither AVX-512 BF16 nor AMX), so bf16 is emulated and "
            "about ten times slower than fp32 here; --precision fp32 is faster and exact")


def warn_if_bf16_emulated(precision: str, device: str) -> None:
    """Print :func:`bf16_emulation_note` to stderr where it applies."""
    note = bf16_emulation_note(precision, device)
    if note:
        print(note, file=sys.stderr)


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


def resolve_device(device: str, backend: str = "torch") -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as the device to run on: ``auto`` is ``cuda`` when the torch
    backend has a GPU, else ``cpu``; a GPU that is not there is a clear error; real Caffe here is CPU only."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")
    if backend == "caffe":
        if device.startswith("cuda"):
            raise ModelError("the caffe backend (Debian's Caffe) runs on the CPU only",
                             hint="use --device cpu, or --backend torch for a GPU")
        return "cpu"
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ModelError(f"--device {device} was asked for but PyTorch sees no CUDA GPU",
                         hint="use --device cpu (or auto), or install a CUDA build of PyTorch")
    index = device.partition(":")[2]
    if device != "cuda" and not (index.isdigit() and int(index) < torch.cuda.device_count()):
        raise ModelError(f"--device {device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)",
                         hint="use cuda or cuda:N with N from 0 to the count less one")
    return device
