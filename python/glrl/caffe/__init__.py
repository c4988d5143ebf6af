"""Caffe's file formats: the protobuf messages (``pb``), reading/writing prototxt, caffemodel and
solverstate files (``glrl.caffe.io``) and upgrading legacy nets as Caffe does (``glrl.caffe.upgrade``).

No torch and no pycaffe here: this is the core that every backend and generator shares.
"""
from __future__ import annotations

from glrl.caffe import proto as pb

__all__ = ["pb"]
