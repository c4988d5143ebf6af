"""Measure a net from its prototxt: learnable parameters, multiply-accumulates per output pixel, depth.

Everything is read from the ``NetParameter`` itself (a parsed ``.prototxt`` or a generator's message), so
the numbers describe the file that Caffe runs, not what a generator meant to write. Blob shapes are
propagated from the ``Input`` layer through the layer types our generators emit; any other type is refused
by name. Parameters shared through ``param { name }`` count once. Multiply-accumulates are those of the
convolutions (element-wise layers are a rounding error next to them); depth is the longest chain of
convolutions from the input to the output, where a bias-free 1×1 convolution to one channel, a per-pixel
weighted sum of its inputs like GLRL's average of the B predictions (DRCN's learned "integration"), is not
a layer of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from glrl.caffe.geometry import ConvGeometry, conv_geometry
from glrl.caffe.weights import blob_key
from glrl.errors import FormatError

Shape = Tuple[int, ...]
SHAPE_PRESERVING = ("ReLU", "PReLU", "Sigmoid", "TanH")
SUPPORTED = ("Input", "Convolution", "Eltwise", "Concat", "EuclideanLoss") + SHAPE_PRESERVING


@dataclass(frozen=True)
class NetStats:
    """What :func:`measure` finds in a deploy net."""

    params: int  # learnable scalars, shared blobs counted once
    params_with_sharing: int  # as if every layer had its own copy (what recursion saves is the difference)
    macs_per_pixel: float  # convolution multiply-accumulates per pixel of the output (of a large image)
    conv_depth: int  # convolutions on the longest input-to-output path (averaging 1×1 convs excluded)
    conv_layers: int  # all Convolution layers
    shared_blobs: Dict[str, List[str]]  # param name -> layers that use it (only names used more than once)
    output: str  # the blob no layer consumes
    output_shape: Shape


def _conv_geometry(layer: Any) -> ConvGeometry:
    """The layer's geometry, whose stride the density of output pixels follows: the same on both axes."""
    geometry = conv_geometry(layer)
    if geometry.stride[0] != geometry.stride[1]:
        raise FormatError(f"layer {layer.name!r}: per-axis strides {geometry.stride} are not supported by stats")
    return geometry


def _is_averaging(layer: Any) -> bool:
    """A bias-free 1×1 convolution to one channel: a learned per-pixel weighted sum of its inputs."""
    if layer.type != "Convolution":
        return False
    p = layer.convolution_param
    return conv_geometry(layer).kernel == (1, 1) and not p.bias_term and p.num_output == 1


def measure(net: Any) -> NetStats:
    """Measure a deploy net (``Input`` layer, no phases). Raises FormatError for what it cannot follow."""
    shapes: Dict[str, Shape] = {}
    depth: Dict[str, int] = {}  # blob -> counted convolutions on the longest path that produced it
    unread: Dict[str, None] = {}  # blobs written and not read since, in order (the output is the last)
    owners: Dict[str, List[str]] = {}  # shared param name -> layers
    param_sizes: Dict[str, int] = {}  # blob key -> size
    with_sharing = 0
    # blob -> its pixels per input pixel on a large image (1 unless strides shrink it): MACs per output
    # pixel are then independent of the image size, also for a 'valid' net whose borders are padded first
    density: Dict[str, float] = {}
    macs = 0.0
    conv_layers = 0
    for layer in net.layer:
        if layer.include or layer.exclude:
            raise FormatError(f"layer {layer.name!r} has phase rules; measure a deploy net",
                              hint="use the recipe's deploy() net or prototxt/<net>/deploy.prototxt")
        if layer.type not in SUPPORTED:
            raise FormatError(f"layer {layer.name!r}: type {layer.type!r} is not one glrl.nets.stats can measure",
                              hint=f"supported: {', '.join(SUPPORTED)}")
        for bottom in layer.bottom:
            if bottom not in shapes:
                raise FormatError(f"layer {layer.name!r} reads blob {bottom!r} that no earlier layer produces")
            unread.pop(bottom, None)
        bottoms = [shapes[b] for b in layer.bottom]
        in_depth = max((depth[b] for b in layer.bottom), default=0)
        top_density = density[layer.bottom[0]] if layer.bottom else 1.0
        blobs: List[int] = []
        if layer.type == "Input":
            top_shapes = [tuple(int(d) for d in shape.dim) for shape in layer.input_param.shape]
        elif layer.type == "Convolution":
            geometry = _conv_geometry(layer)
            n, channels, height, width = bottoms[0]
            p = layer.convolution_param
            group = p.group
            out_h, out_w = geometry.output_size(height, width)
            if out_h < 1 or out_w < 1:
                raise FormatError(f"layer {layer.name!r}: a {height}×{width} input is smaller than its kernel")
            weights = p.num_output * (channels // group) * geometry.kernel[0] * geometry.kernel[1]
            blobs = [weights] + ([p.num_output] if p.bias_term else [])
            top_density /= geometry.stride[0] * geometry.stride[1]
            macs += weights * top_density
            conv_layers += 1
            top_shapes = [(n, p.num_output, out_h, out_w)]
            in_depth += 0 if _is_averaging(layer) else 1
        elif layer.type in SHAPE_PRESERVING:
            top_shapes = [bottoms[0]]
            if layer.type == "PReLU":
                blobs = [1 if layer.prelu_param.channel_shared else bottoms[0][1]]
        elif layer.type == "Eltwise":
            if any(shape != bottoms[0] for shape in bottoms):
                raise FormatError(f"layer {layer.name!r} adds blobs of different shapes: {bottoms}")
            top_shapes = [bottoms[0]]
        elif layer.type == "Concat":
            axis = layer.concat_param.axis
            merged = list(bottoms[0])
            merged[axis] = sum(shape[axis] for shape in bottoms)
            top_shapes = [tuple(merged)]
        else:  # EuclideanLoss
            top_shapes = [()]
        for index, size in enumerate(blobs):
            spec = layer.param[index] if index < len(layer.param) else None
            key = blob_key(layer, index)
            if spec is not None and spec.name:
                owners.setdefault(spec.name, []).append(layer.name)
                if spec.name in param_sizes and param_sizes[spec.name] != size:
                    raise FormatError(f"layer {layer.name!r} shares {spec.name!r} with a blob of another size")
            param_sizes[key] = size
            with_sharing += size
        for top, shape in zip(layer.top, top_shapes):
            shapes[top] = shape
            depth[top] = in_depth
            density[top] = top_density
            unread[top] = None
    outputs = [blob for blob in unread if shapes[blob]]  # a loss's scalar is not an image output
    if len(outputs) != 1:
        raise FormatError(f"net {net.name!r} has {len(outputs)} outputs ({', '.join(outputs)}); expected one")
    output = outputs[0]
    return NetStats(
        params=sum(param_sizes.values()),
        params_with_sharing=with_sharing,
        macs_per_pixel=macs / density[output],
        conv_depth=depth[output],
        conv_layers=conv_layers,
        shared_blobs={name: layers for name, layers in owners.items() if len(layers) > 1},
        output=output,
        output_shape=shapes[output],
    )

