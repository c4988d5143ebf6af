"""Backends that execute Caffe nets: PyTorch (default; CPU/CUDA) and real Caffe through pycaffe.

``resolve_backend(name)`` is the one place that turns what a user asked for (``--backend``, else
``$GLRL_BACKEND``, else ``auto``) into ``torch`` or ``caffe``: ``auto`` is torch where it is installed and
real Caffe where only that is (the glrl-caffe image), so every command works in both places.
``open_net(prototxt, weights)`` gives an :class:`~glrl.backends.base.InferenceNet` for either; this
package imports neither torch nor caffe until a backend is asked for, so the core stays torch-free.
Training and anything that needs gradients use :class:`glrl.backends.torch_net.TorchNet` directly.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional, Union

from glrl.backends.base import InferenceNet
from glrl.errors import ModelError

BACKENDS = ("torch", "caffe")
# What --backend accepts: a backend, or auto (torch when importable, else real Caffe).
BACKEND_CHOICES = ("auto",) + BACKENDS
# Chooses the backend when no --backend is given (the glrl-caffe image sets it to caffe).
BACKEND_ENV = "GLRL_BACKEND"
INSTALL_HINT = ("install PyTorch for the torch backend (pip install torch), or real Caffe for the caffe "
                "backend (Debian bullseye: apt-get install python3-caffe; or use the glrl-caffe image)")

PathLike = Union[str, "os.PathLike[str]"]


def resolve_backend(name: Optional[str] = None) -> str:
    """``torch`` or ``caffe`` for ``name``: ``torch``/``caffe`` as given; ``None`` means ``$GLRL_BACKEND``,
    or ``auto`` when that is unset; ``auto`` is torch when it is importable, else caffe when ``import caffe``
    works, else a ModelError saying how to install either."""
    source = "--backend"
    if name is None:
        name = os.environ.get(BACKEND_ENV) or "auto"
        source = BACKEND_ENV
    if name not in BACKEND_CHOICES:
        raise ModelError(f"unknown backend {name!r} (from {source})",
                         hint=f"use one of: {', '.join(BACKEND_CHOICES)}")
    if name != "auto":
        return name
    if importlib.util.find_spec("torch") is not None:
        return "torch"
    if _caffe_importable():
        return "caffe"
    raise ModelError("no backend to run nets: neither torch nor caffe can be imported", hint=INSTALL_HINT)


def _caffe_importable() -> bool:
    try:
        import caffe  # noqa: F401  (pycaffe; heavy, so only when torch is absent)
    except Exception:  # noqa: BLE001  (a broken Caffe fails in many ways: ImportError, OSError, ...)
        return False
    return True


def open_net(prototxt: PathLike, weights: Optional[PathLike] = None, *, backend: str = "torch",
             device: str = "cpu", precision: str = "fp32") -> InferenceNet:
    """The TEST-phase net of ``prototxt`` with ``weights`` (a ``.caffemodel``) loaded, on ``backend``.

    ``device`` is a torch device for the torch backend ("cpu", "cuda", "cuda:1"); the caffe backend
    runs on the CPU (Debian's Caffe build) and accepts only "cpu". ``backend`` may also be ``auto``
    (see :func:`resolve_backend`). ``precision`` is ``fp32`` or, on the torch backend, ``bf16``
    (:meth:`glrl.backends.torch_net.TorchNet.use_precision`). On the CPU the torch backend runs fp32 3×3
    convolutions with Winograd's algorithm unless ``$GLRL_WINOGRAD`` is 0 (:mod:`glrl.backends.winograd`).
    """
    backend = resolve_backend(backend)
    if backend == "torch":
        from glrl.backends.torch_net import TorchNet

        net = TorchNet(prototxt, "TEST", device=device)
        if weights is not None:
            _require_complete(prototxt, {name: len(blobs) for name, blobs in net.layer_blobs().items()}, weights)
            net.load_weights(weights)
        net.eval()
        from glrl.backends import winograd

        return net.use_channels_last().use_precision(precision).use_winograd(not winograd.switched_off())
    if device != "cpu":
        raise ModelError(f"the caffe backend runs on the CPU only, not on '{device}'",
                         hint="use --device cpu, or the torch backend for GPUs")
    if precision != "fp32":
        raise ModelError(f"the caffe backend computes in fp32 only, not in {precision}",
                         hint="use --precision fp32, or the torch backend")
    from glrl.backends.pycaffe_net import PycaffeNet

    net = PycaffeNet(prototxt, weights)
    if weights is not None:
        _require_complete(prototxt, {name: len(blobs) for name, blobs in net.params.items()}, weights)
    return net


def _require_complete(prototxt: PathLike, blob_counts: Dict[str, int], weights: PathLike) -> None:
    """Inference needs every parameter of the net from the weights (see
    :func:`glrl.caffe.weights.require_complete_weights`)."""
    from glrl.caffe import io
    from glrl.caffe.weights import require_complete_weights

    require_complete_weights(io.read_net(prototxt), blob_counts, io.read_caffemodel(weights), str(weights),
                             str(prototxt))


__all__ = ["BACKENDS", "BACKEND_CHOICES", "BACKEND_ENV", "InferenceNet", "open_net", "resolve_backend"]
