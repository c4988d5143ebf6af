"""The glrl command keeps freed memory mapped (glibc's mallopt), so a large tensor freed and allocated again
does not fault its pages in anew."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from glrl.allocator import retain_freed_memory
    assert retain_freed_memory() and retain_freed_memory()  # a second call is harmless

def page_faults_of_a_new_64_mib_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    array = np.ones(16 << 20, dtype=np.float32)  # 64 MiB: above glibc's largest mmap threshold
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del array
    return faults

page_faults_of_a_new_64_mib_array()
print(page_faults_of_a_new_64_mib_array())
"""


def page_faults_of_the_second_array(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_64_mib_block_is_reused_without_faulting_its_pages_again():
    default = page_faults_of_the_second_array("default")
    retained = page_faults_of_the_second_array("retain")
    assert default > 0  # glibc's default hands the block back and maps a fresh one
    assert retained <= default // 10, (retained, default)
