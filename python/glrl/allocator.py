"""Keep freed memory in the process instead of handing it back to the kernel after every tensor (glibc only).

A GLRL training step on the CPU allocates and frees dozens of 8 MB activations and gradients (32×64×31×31
floats); inference on a 512² image, feature maps of 64 MiB. glibc's ``malloc`` serves blocks that large with
``mmap`` and gives them back with ``munmap`` (or trims the heap top) as soon as they are freed, so every new
tensor starts as fresh pages that fault in one 4 KiB page at a time. Serving every block from the heap
(no ``mmap``: glibc's own mmap threshold stops at 32 MiB) and never trimming it makes freed blocks stay
mapped for the next tensor, as a caching allocator would: GLRL inference on a 512² image took 673 ms
instead of 1,975 ms on a 2-core AMD EPYC (``python bench/kernels.py``, docs/benchmarks.md). The process
then keeps its peak footprint instead of shrinking; results are bit-identical.

The ``glrl`` command calls :func:`retain_freed_memory` once at start-up. Library users decide for their own
process. Elsewhere than glibc (musl, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2 ** 31 - 1  # mallopt takes an int: the largest value means "do not trim"


def retain_freed_memory() -> bool:
    """Ask glibc to serve every block from its heap (none by mmap) and never trim it; True when glibc took
    both.

    Safe to call more than once; where glibc is absent it does nothing and returns False.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # not glibc
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
