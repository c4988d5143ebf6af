"""Without real Caffe: the oracle and the pycaffe backend say clearly what is missing and how to get it.

These run everywhere (no root, no Caffe needed); the comparisons with real Caffe are in test_oracle.py.
"""
from __future__ import annotations

import sys

import pytest
from glrl import oracle
from glrl.backends.pycaffe_net import PycaffeNet, PycaffeSolver
from glrl.errors import GlrlError, ModelError


def test_a_missing_root_is_refused_with_the_command_that_builds_it(tmp_path):
    missing = tmp_path / "no-root"
    assert not oracle.is_built(missing)
    with pytest.raises(GlrlError) as raised, oracle.RootSession(missing):
        pass
    assert str(missing) in raised.value.message and "make caffe-root" in raised.value.hint


def test_a_half_built_root_without_its_marker_counts_as_missing(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    assert not oracle.is_built(tmp_path)
    with pytest.raises(GlrlError):
        oracle.root_info(tmp_path)


def test_the_root_is_found_through_the_environment_and_its_marker_read(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / oracle.MARKER).write_text("recipe=abc\nsuite=bullseye\npackage python3-caffe=1.0.0-8\n")
    monkeypatch.setenv(oracle.ROOT_ENV, str(tmp_path))
    assert oracle.caffe_root() == tmp_path and oracle.is_built()
    info = oracle.root_info()
    assert info["suite"] == "bullseye" and info["package python3-caffe"] == "1.0.0-8"


@pytest.mark.parametrize("kind", ["net", "solver"])
def test_the_pycaffe_backend_without_caffe_names_the_alternatives(tmp_path, monkeypatch, kind):
    monkeypatch.setitem(sys.modules, "caffe", None)  # as if Caffe were not installed
    (tmp_path / "net.prototxt").write_text('name: "n"\n')
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nlr_policy: "fixed"\n')
    with pytest.raises(ModelError) as raised:
        if kind == "net":
            PycaffeNet(tmp_path / "net.prototxt")
        else:
            PycaffeSolver(tmp_path / "solver.prototxt")
    assert "Caffe's Python module" in raised.value.message
    assert "PyTorch backend" in raised.value.hint and "apt-get install python3-caffe" in raised.value.hint


def test_the_pycaffe_backend_refuses_a_gpu_device_and_a_missing_net(tmp_path):
    with pytest.raises(ModelError, match="CPU only"):
        PycaffeNet(tmp_path / "net.prototxt", device="cuda")
    with pytest.raises(GlrlError, match="does not exist"):
        PycaffeNet(tmp_path / "net.prototxt")
