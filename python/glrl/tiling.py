"""Overlapping tiles for fully convolutional nets, so that any image size runs in bounded memory.

Why: a deep SR net keeps tens of feature maps per pixel (GLRL: hundreds of floats per output pixel), so a
4000×3000 image would need gigabytes. We cut the net's input into tiles, run each tile with a margin of
context around it and keep only its core. The result equals the whole-image result exactly (up to float
rounding) when the margin is at least the net's *receptive radius*: the number of pixels by which one
output pixel's dependencies reach out, i.e. the sum of ``dilation · (kernel - 1) / 2`` over the
convolutions on the longest path from the input to the output. Within that margin every intermediate value
the core depends on lies inside the tile; at the image edge the tile edge *is* the image edge, so the
net's zero padding is the same as on the whole image.

Memory per tile is bounded by ``4 bytes · (floats per pixel) · (tile + 2·radius)²`` (see
:func:`tile_memory_bytes`), whatever the image size: the PyTorch backend drops each blob after its last
reader, so it holds only the blobs still to be read (:func:`live_floats_per_pixel`; GLRL: 449 floats).
Real Caffe 1.0 needs more per pixel: besides its blobs, each convolution keeps its own im2col buffer
(:func:`caffe_floats_per_pixel`; GLRL: about 17,500 floats per pixel, so a whole 512×512 image takes 18 GB
there), hence :func:`caffe_tile`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from glrl.caffe.geometry import conv_geometry
from glrl.caffe.phase import layers_in_phase
from glrl.errors import ModelError

# Layers whose output pixel depends only on the same pixel of their inputs.
POINTWISE_LAYERS = frozenset({
    "Input", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL",
    "Eltwise", "Scale", "Bias", "BatchNorm", "Concat", "Split", "Dropout", "Silence",
})
# Layers with a spatial kernel (stride 1 required for tiling).
KERNEL_LAYERS = frozenset({"Convolution", "Deconvolution", "Pooling"})
# What real Caffe's forward pass may take per tile (GLRL: 106-pixel tiles; with what Caffe and Python take
# before a forward pass, about 0.45 GiB, the process stays under 1.8 GiB). Measured: docs/real-caffe.md.
CAFFE_MEMORY_BYTES = 5 << 28  # 1.25 GiB


def _kernel_extent(layer) -> Tuple[int, int]:
    """``(radius, channels_out)`` of one Convolution/Deconvolution/Pooling layer; refuses strides."""
    if layer.type == "Pooling":
        param = layer.pooling_param
        kernel = [param.kernel_h, param.kernel_w] if param.HasField("kernel_h") else [param.kernel_size]
        radius = max(math.ceil((k - 1) / 2) for k in kernel)
        strides = [param.stride_h, param.stride_w] if param.HasField("stride_h") else [param.stride]
        channels = -1
    else:
        geometry = conv_geometry(layer)
        strides, radius, channels = list(geometry.stride), geometry.radius, int(layer.convolution_param.num_output)
    if any(s not in (0, 1) for s in strides):
        raise ModelError(f"layer {layer.name!r} ({layer.type}) has stride {strides}: tiles need stride 1",
                         hint="run this net on whole images (tile size 0)")
    return radius, channels


def _input_blobs(net) -> Dict[str, int]:
    """Input blob -> channels, from ``input:``/``input_shape`` or Input layers."""
    blobs: Dict[str, int] = {}
    for i, name in enumerate(net.input):
        legacy = list(net.input_dim[4 * i: 4 * i + 4])
        dims = list(net.input_shape[i].dim) if i < len(net.input_shape) else legacy
        blobs[name] = int(dims[1]) if len(dims) > 1 else 1
    for layer in layers_in_phase(net, "TEST"):
        if layer.type == "Input":
            for j, top in enumerate(layer.top):
                shapes = layer.input_param.shape
                dims = list(shapes[min(j, len(shapes) - 1)].dim) if len(shapes) else []
                blobs[top] = int(dims[1]) if len(dims) > 1 else 1
    return blobs


def _walk(net) -> Tuple[Dict[str, int], Dict[str, int], List[str]]:
    """Per blob: receptive radius and channels; and the output blobs (tops that nothing consumes)."""
    channels = _input_blobs(net)
    radius = {name: 0 for name in channels}
    consumed = set()
    tops: List[str] = []
    for layer in layers_in_phase(net, "TEST"):
        if layer.type == "Input":
            continue
        missing = [b for b in layer.bottom if b not in radius]
        if missing:
            raise ModelError(f"layer {layer.name!r} reads blob(s) {missing} that no earlier layer makes")
        reach = max((radius[b] for b in layer.bottom), default=0)
        if layer.type in KERNEL_LAYERS:
            extra, out_channels = _kernel_extent(layer)
            if out_channels < 0:
                out_channels = channels[layer.bottom[0]]
        elif layer.type in POINTWISE_LAYERS:
            extra = 0
            if layer.type == "Concat":
                out_channels = sum(channels[b] for b in layer.bottom)
            else:
                out_channels = channels[layer.bottom[0]] if layer.bottom else 1
        else:
            raise ModelError(f"layer {layer.name!r} has type {layer.type}, unknown to tiled inference",
                             hint="run this net on whole images (tile size 0)")
        consumed.update(layer.bottom)
        for top in layer.top:
            radius[top] = reach + extra
            channels[top] = out_channels
            if top not in tops:
                tops.append(top)
    outputs = [t for t in tops if t not in consumed] or tops[-1:]
    return radius, channels, outputs


def receptive_radius(net) -> int:
    """How far (pixels) an output pixel's dependencies reach: the tile margin for exact tiled inference.

    ``net`` is a ``caffe_pb2.NetParameter`` (a deploy net). It is the maximum, over the net's output blobs,
    of the sum of ``ceil(dilation · (kernel - 1) / 2)`` along the longest path from the input.
    """
    radius, _, outputs = _walk(net)
    return max(radius[name] for name in outputs)


def border_loss(net) -> int:
    """How many pixels a deploy net's output lacks on each side of its input: along the longest path, the
    sum of ``ceil(dilation·(kernel−1)/2) − pad`` over its convolutions. 0 for nets that pad every
    convolution (GLRL, VDSR); 6 for SRCNN's 'valid' net (4 + 0 + 2). Layers of other types are taken to keep
    the size (a net they change is caught by :func:`run_deploy_net`'s size check)."""
    lost = {name: 0 for name in _input_blobs(net)}
    last = list(lost)[-1:]
    for layer in layers_in_phase(net, "TEST"):
        if layer.type == "Input":
            continue
        extra = 0
        if layer.type == "Convolution":
            geometry = conv_geometry(layer)
            extra = geometry.radius - max(geometry.pad)
        before = max((lost.get(b, 0) for b in layer.bottom), default=0)
        for top in layer.top:
            lost[top] = before + extra
        last = list(layer.top)[-1:] or last
    return max(0, lost[last[0]]) if last else 0


def run_deploy_net(net, window: np.ndarray, border: int = 0) -> np.ndarray:
    """An SR deploy net (``open_net``'s: one input, its last output the SR Y) on one 2-D window (float in
    [0, 1]); the result has the window's size. A net that shrinks its input by ``border`` pixels a side
    (:func:`border_loss`: trained on 'valid' convolutions, as SRCNN) gets the window with its edge pixels
    replicated ``border`` times first, as SRCNN's own test code pads (``imfilter(..., 'replicate')``)."""
    padded = np.pad(window, border, mode="edge") if border else window
    batch = np.ascontiguousarray(padded, dtype=np.float32)[None, None]
    output = net.run({net.input_names[0]: batch})[net.output_names[-1]]
    if output.shape[2:] != window.shape:
        raise ModelError(f"the net turned a {batch.shape} input into {output.shape}"
                         + (f" (the input padded by {border} a side)" if border else "")
                         + "; an SR deploy net keeps the size, or shrinks it by what its convolutions lose",
                         hint="check the deploy prototxt's padding (pad = dilation·(kernel-1)/2, or 0 in every "
                              "convolution of a 'valid' net)")
    return output[0, 0]


def floats_per_pixel(net) -> int:
    """Channels summed over every distinct blob of ``net``: the most float values it can hold per pixel."""
    _, channels, _ = _walk(net)
    return int(sum(channels.values()))


def live_floats_per_pixel(net) -> int:
    """The most floats per pixel the PyTorch backend's inference holds at once (``TorchNet.run``, which drops
    each blob after its last reader): at each layer, the blobs still to be read plus the layer's new tops,
    and twice the widest blob for what a layer makes on the way (a three-way sum's partial sum, oneDNN's
    buffers). GLRL: 449 (measured: 391; every blob would be 3,083), VDSR-20: 257 (135), SRCNN: 256 (128)."""
    channels, layers = _walk(net)[1], [layer for layer in layers_in_phase(net, "TEST") if layer.type != "Input"]
    outputs = set(_walk(net)[2])
    last_reader = {name: index for index, layer in enumerate(layers) for name in layer.bottom}
    live = dict(_input_blobs(net))
    peak = sum(live.values())
    for index, layer in enumerate(layers):
        peak = max(peak, sum(live.values()) + sum(channels[top] for top in layer.top))
        live.update((top, channels[top]) for top in layer.top)
        for name in set(layer.bottom):
            if last_reader[name] == index and name not in layer.top and name not in outputs:
                live.pop(name, None)
    return int(peak + 2 * max(channels.values()))


def caffe_floats_per_pixel(net) -> int:
    """Floats per pixel that real Caffe 1.0 holds in a forward pass of ``net``: every blob, plus the im2col
    buffer each Convolution/Deconvolution layer keeps for itself (``channels · kernel_h · kernel_w`` per
    pixel; 1×1 kernels never fill theirs). Measured for GLRL in the root: within 3 % of the process's growth."""
    _, channels, _ = _walk(net)
    total = sum(channels.values())
    for layer in layers_in_phase(net, "TEST"):
        if layer.type not in ("Convolution", "Deconvolution"):
            continue
        kernel = conv_geometry(layer).kernel
        area = kernel[0] * kernel[1]
        if area > 1:
            unfolded = (channels[layer.bottom[0]] if layer.type == "Convolution"
                        else int(layer.convolution_param.num_output))
            total += unfolded * area
    return int(total)


def caffe_tile(net, budget_bytes: int = CAFFE_MEMORY_BYTES) -> int:
    """The largest tile core size whose forward pass in real Caffe stays within ``budget_bytes``."""
    return tile_for_memory(net, budget_bytes, caffe_floats_per_pixel(net))


def tile_memory_bytes(net, tile: int, per_pixel: Optional[int] = None) -> int:
    """Upper bound on the activation memory (fp32) for one tile of core size ``tile``; ``per_pixel``
    floats per pixel (default :func:`floats_per_pixel`)."""
    side = tile + 2 * receptive_radius(net)
    return 4 * (per_pixel or floats_per_pixel(net)) * side * side


def tile_for_memory(net, budget_bytes: int, per_pixel: Optional[int] = None) -> int:
    """The largest tile core size whose :func:`tile_memory_bytes` stays within ``budget_bytes``."""
    side = math.isqrt(int(budget_bytes) // (4 * (per_pixel or floats_per_pixel(net))))
    tile = side - 2 * receptive_radius(net)
    if tile < 1:
        raise ModelError(f"{budget_bytes} bytes cannot hold even one tile of this net",
                         hint="allow more memory")
    return tile


@dataclass(frozen=True)
class Tile:
    """One tile: the window of the input it reads and the part of the window that is its exact core."""

    window: Tuple[slice, slice]  # into the whole image
    core: Tuple[slice, slice]    # into the whole image
    core_in_window: Tuple[slice, slice]


def _spans(length: int, tile: int, margin: int) -> Iterator[Tuple[slice, slice, slice]]:
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        lo, hi = max(0, start - margin), min(length, stop + margin)
        yield slice(lo, hi), slice(start, stop), slice(start - lo, stop - lo)


def plan_tiles(height: int, width: int, tile: int, margin: int) -> List[Tile]:
    """Tiles of core size ``tile`` (the last row/column smaller) with ``margin`` pixels of context."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, not {tile}")
    return [
        Tile((wy, wx), (cy, cx), (iy, ix))
        for wy, cy, iy in _spans(height, tile, margin)
        for wx, cx, ix in _spans(width, tile, margin)
    ]


def run_tiled(
    fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int, margin: int,
    on_tile: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Apply a same-size 2-D map ``fn`` to ``image`` tile by tile; ``tile <= 0`` runs it once, whole.
    ``on_tile(done, total)`` is called after each of two or more tiles (a progress bar for a big image)."""
    if tile <= 0 or (image.shape[0] <= tile and image.shape[1] <= tile):
        return _checked(fn, image)
    out = np.empty(image.shape, dtype=np.float32)
    parts = plan_tiles(image.shape[0], image.shape[1], tile, margin)
    for done, part in enumerate(parts, 1):
        result = _checked(fn, image[part.window])
        out[part.core] = result[part.core_in_window]
        if on_tile is not None:
            on_tile(done, len(parts))
    return out


def _checked(fn: Callable[[np.ndarray], np.ndarray], window: np.ndarray) -> np.ndarray:
    result = fn(window)
    if result.shape != window.shape:
        raise ModelError(f"the net turned a {window.shape} input into {result.shape}; it must keep the size",
                         hint="check the deploy prototxt's padding (pad = dilation·(kernel-1)/2)")
    return result
