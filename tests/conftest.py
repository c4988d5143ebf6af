"""Shared fixtures: the data root (CI points GLRL_DATA at ../shared/datasets) and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from glrl import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(reason: str) -> None:
    """Skip locally, but fail under CI: CI has everything, so a missing prerequisite there is a defect."""
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The datasets folder (``shared/datasets`` layout)."""
    candidates = [settings.data_root(), settings.REPO_ROOT.parent / "shared" / "datasets"]
    for root in candidates:
        if (root / "test" / "Set5").is_dir():
            return root
    _require(f"no datasets found (looked in {', '.join(map(str, candidates))}); set GLRL_DATA")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def require():
    """``require(reason)``: skip locally, fail under CI."""
    return _require


@pytest.fixture(scope="session")
def caffe_root() -> Path:
    """The real-Caffe root (``make caffe-root`` builds it): the oracle's tests skip locally without it and
    fail under CI."""
    from glrl import oracle

    if not oracle.is_built():
        _require(f"the real-Caffe root is not built at {oracle.caffe_root()}; {oracle.BUILD_HINT}")
    return oracle.caffe_root()
