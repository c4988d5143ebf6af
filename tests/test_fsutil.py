"""Atomic writes: a final name holds the old content or the complete new one, never half of either."""
from __future__ import annotations

import os

import pytest

from glrl.fsutil import atomic_path, atomic_write_text, replace_folder


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["result.txt"]
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target
        temporary.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["result.txt"]


def test_a_folder_is_replaced_whole_and_the_old_one_comes_back_when_the_new_one_cannot_go_in(tmp_path):
    target, partial = tmp_path / "set", tmp_path / ".set.partial"
    target.mkdir()
    (target / "old.h5").write_text("old")
    with pytest.raises(OSError):
        replace_folder(tmp_path / "missing", target)
    assert sorted(os.listdir(tmp_path)) == ["set"] and (target / "old.h5").read_text() == "old"
    partial.mkdir()
    (partial / "new.h5").write_text("new")
    replace_folder(partial, target)
    assert sorted(os.listdir(tmp_path)) == ["set"] and os.listdir(target) == ["new.h5"]
