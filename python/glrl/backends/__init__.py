"""Backends that execute Caffe nets: PyTorch (default; CPU/CUDA) and real Caffe through pycaffe.

``open_net(prototxt, weights)`` gives an :class:`~glrl.backends.base.InferenceNet` for either; this
package imports neither torch nor caffe until a backend is asked for, so the core stays torch-free.
Training and anything that needs gradients use :class:`glrl.backends.torch_net.TorchNet` directly.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from glrl.backends.base import InferenceNet
from glrl.errors import ModelError

BACKENDS = ("torch", "caffe")

PathLike = Union[str, "os.PathLike[str]"]


def open_net(prototxt: PathLike, weights: Optional[PathLike] = None, *, backend: str = "torch",
             device: str = "cpu") -> InferenceNet:
    """The TEST-phase net of ``prototxt`` with ``weights`` (a ``.caffemodel``) loaded, on ``backend``.

    ``device`` is a torch device for the torch backend ("cpu", "cuda", "cuda:1"); the caffe backend
    runs on the CPU (Debian's Caffe build) and accepts only "cpu".
    """
    if backend == "torch":
        from glrl.backends.torch_net import TorchNet

        net = TorchNet(prototxt, "TEST", device=device)
        if weights is not None:
            net.load_weights(weights)
        net.eval()
        return net
    if backend == "caffe":
        if device != "cpu":
            raise ModelError(f"the caffe backend runs on the CPU only, not on '{device}'",
                             hint="use --device cpu, or the torch backend for GPUs")
        from glrl.backends.pycaffe_net import PycaffeNet

        return PycaffeNet(prototxt, weights)
    raise ModelError(f"unknown backend '{backend}'", hint=f"use one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "InferenceNet", "open_net"]
