#!/usr/bin/env python3
"""The figures behind the compiled kernels' thresholds and the allocator choice, in one run:
``python bench/kernels.py``.

1. Our Winograd 3×3 kernel (``glrl.backends.winograd``) against oneDNN's direct convolution, one
   convolution at a time, by channel count (where the kernel starts to pay: ``winograd.MIN_CHANNELS``) and
   for the whole GLRL deploy net at 256² and 512².
2. The training kernels of ``glrl train --winograd``: the weight gradient against oneDNN's by the number of
   4×4 tiles (where it starts to pay: ``winograd.MIN_GRADIENT_TILES``), and PReLU's one-pass backward
   against the elementwise fallback on a GLRL batch.
3. Serving every block from glibc's heap (``glrl.allocator.retain_freed_memory``) against glibc's defaults,
   for GLRL at 512² (64 MiB feature maps), each in a fresh process since the setting cannot be undone.

Medians of interleaved runs; ratio = oneDNN's (PyTorch's, default glibc's) time / ours. Run it on a quiet machine.
``ONEDNN_MAX_CPU_ISA=AVX2`` in the environment shows what an AVX2-only CPU would get from oneDNN.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

REPO = Path(__file__).resolve().parent.parent
ALLOCATOR_SCRIPT = r"""
import sys, time, statistics, numpy as np, torch
if sys.argv[1] == "retain":
    from glrl.allocator import retain_freed_memory
    retain_freed_memory()
from glrl.backends import open_net
net = open_net(sys.argv[2], sys.argv[3])
feed = {net.input_names[0]: np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)}
net.run(feed)
runs = []
for _ in range(5):
    start = time.perf_counter(); net.run(feed); runs.append(time.perf_counter() - start)
print(statistics.median(runs))
"""


def interleaved(first: Callable[[], object], second: Callable[[], object], repeats: int = 9) -> Tuple[float, float]:
    """Median seconds of ``first`` and of ``second``, run alternately after one warm-up each."""
    first(), second()
    a: List[float] = []
    b: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        first()
        a.append(time.perf_counter() - start)
        start = time.perf_counter()
        second()
        b.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def training_kernels(module: object) -> None:
    """Section 2: the weight gradient by tile count and PReLU's backward, as ``glrl train --winograd`` uses them."""
    import torch

    from glrl.backends import winograd
    from glrl.backends.torch_layers import prelu

    print("\n| 64→64 weight gradient | 4×4 tiles | Winograd | oneDNN direct | ratio |\n|---|---|---|---|---|")
    for batch, size in ((4, 31), (8, 31), (16, 31), (32, 31), (1, 256)):
        x = torch.randn(batch, 64, size, size).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(batch, 64, size, size).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(64, 64, 3, 3)
        ours, direct = interleaved(
            lambda x=x, grad=grad: winograd.weight_gradient(x, grad, 1, module),
            lambda x=x, grad=grad, weight=weight: torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]))
        print(f"| {batch} × {size}² | {winograd.tiles(grad)} | {ours * 1e3:.2f} ms | {direct * 1e3:.2f} ms | "
              f"{direct / ours:.2f}× |")

    print("\n| PReLU forward + backward, 32 × 64 × 31² | one pass | elementwise | ratio |\n|---|---|---|---|")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(32, 64, 31, 31).contiguous(memory_format=layout).requires_grad_()
        slope = torch.rand(64).requires_grad_()
        grad = torch.randn(32, 64, 31, 31).contiguous(memory_format=layout)
        ours, fallback = interleaved(lambda x=x, s=slope, grad=grad: prelu(x, s, module).backward(grad),
                                     lambda x=x, s=slope, grad=grad: prelu(x, s, None).backward(grad))
        name = "channels-last" if layout == torch.channels_last else "NCHW"
        print(f"| {name} | {ours * 1e3:.2f} ms | {fallback * 1e3:.2f} ms | {fallback / ours:.2f}× |")


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F

    from glrl.allocator import retain_freed_memory
    from glrl.backends import open_net, winograd
    from glrl.machine import cpu_model, cpu_speed_features

    retain_freed_memory()  # as the glrl command runs (the last table shows what it is worth)
    module = winograd.kernel()
    if module is None:
        print("the Winograd kernel is unavailable here (see the message above)")
        return 1
    deploy, weights = REPO / "prototxt" / "glrl" / "deploy.prototxt", REPO / "models" / "glrl_x234.caffemodel"
    print(f"{cpu_model()} ({cpu_speed_features()}), {torch.get_num_threads()} threads, torch {torch.__version__}\n")

    print("| one 3×3 convolution | Winograd | oneDNN direct | ratio |\n|---|---|---|---|")
    with torch.inference_mode():
        for channels, size in ((16, 256), (24, 256), (32, 256), (48, 256), (64, 256), (64, 512)):
            x = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
            weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
            bias = torch.randn(channels)
            transformed = winograd.transform_weights(weight)
            ours, direct = interleaved(
                lambda x=x, transformed=transformed, bias=bias: winograd.conv3x3(x, transformed, bias, 1, module),
                lambda x=x, weight=weight, bias=bias: F.conv2d(x, weight, bias, padding=1))
            print(f"| {channels}→{channels}, {size}² | {ours * 1e3:.2f} ms | {direct * 1e3:.2f} ms | "
                  f"{direct / ours:.2f}× |")

    net = open_net(str(deploy), str(weights))
    print("\n| GLRL deploy net | Winograd | oneDNN direct | ratio |\n|---|---|---|---|")
    for size in (256, 512):
        feed = {net.input_names[0]: np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)}
        ours, direct = interleaved(lambda feed=feed: net.use_winograd(True).run(feed),
                                   lambda feed=feed: net.use_winograd(False).run(feed), repeats=5)
        print(f"| {size}² | {ours * 1e3:.0f} ms | {direct * 1e3:.0f} ms | {direct / ours:.2f}× |")

    training_kernels(module)

    print("\n| GLRL 512² (Winograd), glibc | median |\n|---|---|")
    times = {}
    for mode in ("default", "retain"):
        done = subprocess.run([sys.executable, "-c", ALLOCATOR_SCRIPT, mode, str(deploy), str(weights)],
                              capture_output=True, text=True, check=True)
        times[mode] = float(done.stdout.strip().splitlines()[-1])
        label = "defaults" if mode == "default" else "every block from the heap (retain_freed_memory)"
        print(f"| {label} | {times[mode] * 1e3:.0f} ms |")
    print(f"\nratio: {times['default'] / times['retain']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
