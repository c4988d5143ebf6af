"""Caffe's weight fillers (``FillerParameter``) for the PyTorch backend.

The distributions and their parameters are Caffe 1.0's (``include/caffe/filler.hpp``):

- ``constant``: every value is ``value``.
- ``uniform``: U(``min``, ``max``).
- ``gaussian``: N(``mean``, ``std``²); with ``sparse`` ≥ 0 each value is kept with probability
  ``sparse / shape[0]`` and zeroed otherwise.
- ``xavier``: U(-√(3/n), √(3/n)); ``msra``: N(0, 2/n); where n is fan_in, fan_out or their mean as
  ``variance_norm`` says, with Caffe's definitions fan_in = count / shape[0] and
  fan_out = count / shape[1] (shape[1] counts as 1 for a blob with fewer than two axes).
- ``bilinear``: the bilinear-upsampling kernel Caffe uses to initialise Deconvolution.

Random numbers come from a ``torch.Generator`` on the CPU, so a seed gives the same weights on every
device. (Caffe's own random stream cannot be reproduced bit for bit; the distributions are the same.)
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import torch

from glrl.caffe import pb
from glrl.errors import ModelError


def _fan_in_out(shape: Sequence[int]) -> "tuple[float, float]":
    count = math.prod(shape)
    num = shape[0] if len(shape) >= 1 else 1
    channels = shape[1] if len(shape) >= 2 else 1
    return count / num, count / channels


def _variance_n(filler: "pb.FillerParameter", shape: Sequence[int]) -> float:
    fan_in, fan_out = _fan_in_out(shape)
    if filler.variance_norm == pb.FillerParameter.FAN_OUT:
        return fan_out
    if filler.variance_norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(filler, shape, dtype, generator):
    return torch.full(tuple(shape), float(filler.value), dtype=dtype)


def _uniform(filler, shape, dtype, generator):
    out = torch.empty(tuple(shape), dtype=dtype)
    return out.uniform_(float(filler.min), float(filler.max), generator=generator)


def _gaussian(filler, shape, dtype, generator):
    out = torch.empty(tuple(shape), dtype=dtype).normal_(float(filler.mean), float(filler.std),
                                                         generator=generator)
    if filler.sparse >= 0:
        if len(shape) < 1:
            raise ModelError("the gaussian filler's 'sparse' needs a blob with at least one axis")
        keep_probability = filler.sparse / shape[0]
        mask = torch.empty(tuple(shape), dtype=dtype).bernoulli_(keep_probability, generator=generator)
        out.mul_(mask)
    return out


def _xavier(filler, shape, dtype, generator):
    scale = math.sqrt(3.0 / _variance_n(filler, shape))
    return torch.empty(tuple(shape), dtype=dtype).uniform_(-scale, scale, generator=generator)


def _msra(filler, shape, dtype, generator):
    std = math.sqrt(2.0 / _variance_n(filler, shape))
    return torch.empty(tuple(shape), dtype=dtype).normal_(0.0, std, generator=generator)


def _bilinear(filler, shape, dtype, generator):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ModelError(f"the bilinear filler needs a 4-axis blob with a square kernel, not {tuple(shape)}",
                         hint="use it for Deconvolution weights with kernel_h == kernel_w")
    size = shape[3]
    factor = math.ceil(size / 2.0)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    ramp = 1.0 - torch.abs(torch.arange(size, dtype=torch.float64) / factor - centre)
    kernel = (ramp[:, None] * ramp[None, :]).to(dtype)
    return kernel.expand(tuple(shape)).clone()


FILLERS: Dict[str, Callable] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(filler: "pb.FillerParameter", shape: Sequence[int], *, dtype: torch.dtype,
         generator: torch.Generator, what: str) -> torch.Tensor:
    """A new CPU tensor of ``shape`` filled as ``filler`` says; ``what`` names the blob in errors."""
    make = FILLERS.get(filler.type)
    if make is None:
        raise ModelError(f"{what}: unknown filler type '{filler.type}'",
                         hint=f"use one of: {', '.join(sorted(FILLERS))}")
    if filler.type in ("constant", "uniform", "xavier", "msra") and filler.sparse != -1:
        raise ModelError(f"{what}: the {filler.type} filler does not support 'sparse'",
                         hint="only the gaussian filler takes 'sparse'")
    if math.prod(shape) == 0:
        raise ModelError(f"{what}: cannot fill a blob with no elements (shape {tuple(shape)})")
    return make(filler, shape, dtype, generator)


def filler_or_default(message: "pb.FillerParameter", has_it: bool, *, value: float) -> "pb.FillerParameter":
    """``message`` when the prototxt gave it, else Caffe's default for that slot: constant ``value``."""
    if has_it:
        return message
    return pb.FillerParameter(type="constant", value=value)


def randomize_conv_weights(net, seed: int = 0):
    """Give every convolution of a TorchNet He-normal weights (std sqrt(2 / fan_in)), in place; return the net.

    For benchmarks and tests that need a net whose every layer matters: the generated nets' own fillers leave
    some weights at zero (GLRL's last reconstruction conv, so that it starts as bicubic interpolation).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blobs in net.layer_blobs().values():
            if blobs and blobs[0].dim() == 4:
                fan_in = blobs[0][0].numel()
                blobs[0].copy_(torch.randn(blobs[0].shape, generator=generator) * math.sqrt(2.0 / fan_in))
    return net
