"""What every backend offers for inference, at the NumPy level: :class:`InferenceNet`.

The PyTorch backend (:class:`glrl.backends.torch_net.TorchNet`) and the real-Caffe backend
(``glrl.backends.pycaffe_net.PycaffeNet``) both satisfy it, so evaluation, upscaling and benchmarks
run either one through :func:`glrl.backends.open_net` without knowing which.
"""
from __future__ import annotations

from typing import Dict, List, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InferenceNet(Protocol):
    """A net ready to run: named float32 NCHW arrays in, its output blobs out."""

    input_names: List[str]
    """The tops of the net's Input layers, in net order."""

    output_names: List[str]
    """The blobs no layer consumes (Caffe's net outputs), sorted by name."""

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Forward one batch. Inputs may have any size the net accepts: the net reshapes to them."""
        ...
