"""The 2-D geometry of a Caffe convolution, read as Caffe 1.0's ``BaseConvolutionLayer`` reads it.

``kernel_size``, ``pad``, ``stride`` and ``dilation`` are repeated fields: no value means the default (no
kernel; pad 0, stride 1, dilation 1), one value holds for both axes, two are (height, width). ``kernel_h``/
``kernel_w``, ``pad_h``/``pad_w`` and ``stride_h``/``stride_w`` give the two axes instead. Whoever needs a
convolution's size (shape inference, tiling margins, memory bounds, diagrams, ``glrl caffe info``) reads it
here, so they all agree with Caffe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Tuple

from glrl.errors import FormatError

Pair = Tuple[int, int]


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, pad, stride and dilation of a 2-D convolution, each as (height, width)."""

    kernel: Pair
    pad: Pair
    stride: Pair
    dilation: Pair

    @property
    def radius(self) -> int:
        """How far one output pixel's inputs reach from its centre: ``ceil(dilation · (kernel − 1) / 2)``,
        the larger over the two axes."""
        return max(math.ceil(d * (k - 1) / 2) for k, d in zip(self.kernel, self.dilation))

    def output_size(self, height: int, width: int) -> Pair:
        """Caffe's output size of a ``height`` × ``width`` input."""
        return tuple(  # type: ignore[return-value]
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, p, s, d in zip((height, width), self.kernel, self.pad, self.stride, self.dilation))


def _pair(values: Sequence[int], default: int, field: str, layer: str) -> Pair:
    if len(values) > 2:
        raise FormatError(f"layer {layer!r}: {field} has {len(values)} values; a 2-D convolution takes 1 or 2")
    if not len(values):
        return default, default
    return (int(values[0]), int(values[-1]))


def _axes(param: Any, field: str, prefix: str, default: int, layer: str) -> Pair:
    """A repeated ``field`` (one value, or two), or its ``<prefix>_h``/``<prefix>_w`` pair."""
    if param.HasField(f"{prefix}_h") or param.HasField(f"{prefix}_w"):
        if len(getattr(param, field)):
            raise FormatError(f"layer {layer!r}: give {field} or {prefix}_h/{prefix}_w, not both")
        return int(getattr(param, f"{prefix}_h")), int(getattr(param, f"{prefix}_w"))
    return _pair(getattr(param, field), default, field, layer)


def conv_geometry(layer: Any) -> ConvGeometry:
    """The geometry of a Convolution or Deconvolution ``layer`` (a ``LayerParameter``)."""
    param = layer.convolution_param
    kernel = _axes(param, "kernel_size", "kernel", 0, layer.name)
    if min(kernel) < 1:
        raise FormatError(f"layer {layer.name!r}: convolution without a kernel size",
                          hint="set kernel_size (or kernel_h and kernel_w)")
    return ConvGeometry(kernel, _axes(param, "pad", "pad", 0, layer.name),
                        _axes(param, "stride", "stride", 1, layer.name),
                        _pair(param.dilation, 1, "dilation", layer.name))
