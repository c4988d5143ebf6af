"""The glrl command keeps freed memory mapped (glibc's mallopt), so large tensors do not fault in anew."""
from __future__ import annotations

import platform

import pytest
from glrl.allocator import retain_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_both_settings_and_a_second_call_is_harmless():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True

