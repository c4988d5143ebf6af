"""Caffe's layers as PyTorch computations, with Caffe 1.0's semantics, defaults and parameter layouts.

Each layer is built from its ``LayerParameter`` and its bottom shapes (Caffe's ``LayerSetUp``/``Reshape``):
it checks its settings, computes its top shapes and declares its parameter blobs (shape and filler, in
Caffe's order and layout, so a ``.caffemodel`` loads unchanged). :class:`glrl.backends.torch_net.TorchNet`
creates the parameters (sharing them by ``param { name }``) and binds them with :meth:`Layer.bind`.
At run time :meth:`Layer.forward` maps bottom tensors to top tensors with out-of-place torch operations
only, so in-place layers (top == bottom) never disturb autograd; backward comes from autograd and
matches Caffe's hand-written gradients (the few places where that needs care say so).

Layers are plain objects rather than ``nn.Module``s: the net's forward loop is the only Python on the
hot path. Data layers (``Input``, ``HDF5Data``) live in :mod:`glrl.backends.torch_data`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F

from glrl.backends import winograd
from glrl.backends.torch_fillers import filler_or_default
from glrl.caffe import pb
from glrl.errors import ModelError

Shape = Tuple[int, ...]


@dataclass
class BlobSpec:
    """A parameter blob a layer needs: its Caffe shape and the filler that initialises it."""

    shape: Shape
    filler: "pb.FillerParameter"


class Layer:
    """One Caffe layer: set up from its parameters and bottom shapes; computes tops from bottoms."""

    type_name: ClassVar[str] = ""
    # (min, max) numbers of bottoms and tops; None = no upper bound.
    bottoms_range: ClassVar[Tuple[int, Optional[int]]] = (1, 1)
    tops_range: ClassVar[Tuple[int, Optional[int]]] = (1, 1)
    # Loss layers get loss_weight 1 on their first top unless the prototxt says otherwise.
    is_loss: ClassVar[bool] = False
    # Layers that produce tops without bottoms (Input, HDF5Data): the net feeds or asks them.
    is_source: ClassVar[bool] = False

    def __init__(self, param: "pb.LayerParameter", bottom_shapes: Sequence[Shape]) -> None:
        self.param = param
        self.name = param.name
        self._check_count("bottom", len(param.bottom), self.bottoms_range)
        self._check_count("top", len(param.top), self.tops_range)
        self.blob_specs: List[BlobSpec] = []
        self.top_shapes: List[Shape] = self.setup([tuple(s) for s in bottom_shapes])
        self._blobs: List[torch.Tensor] = []
        self._views: List[Optional[Shape]] = []
        self._detach: List[bool] = []

    # -- build time ----------------------------------------------------------------------------------
    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        """Check settings against the bottom shapes, declare ``blob_specs``, return the top shapes."""
        return [bottom_shapes[0]]

    def error(self, message: str, hint: Optional[str] = None) -> ModelError:
        return ModelError(f"layer '{self.name}' ({self.param.type}): {message}", hint)

    def _check_count(self, what: str, count: int, bounds: Tuple[int, Optional[int]]) -> None:
        low, high = bounds
        if count < low or (high is not None and count > high):
            wanted = str(low) if low == high else (f"at least {low}" if high is None else f"{low} to {high}")
            raise self.error(f"takes {wanted} {what}(s), the prototxt gives {count}")

    def canonical_axis(self, axis: int, num_axes: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
        if not -num_axes <= axis < num_axes:
            raise self.error(f"{what} {axis} is out of range for a blob with {num_axes} axes")
        return axis + num_axes if axis < 0 else axis

    def bind(self, blobs: Sequence[torch.Tensor], views: Sequence[Optional[Shape]],
             detach: Sequence[bool]) -> None:
        """Attach the parameter tensors (owned or shared); ``views[i]`` reshapes a blob shared with a
        permissive shape check; ``detach[i]`` stops gradients where this layer's ``lr_mult`` is 0."""
        self._blobs, self._views, self._detach = list(blobs), list(views), list(detach)

    def blob(self, index: int) -> torch.Tensor:
        """Parameter blob ``index`` as this layer computes with it."""
        tensor = self._blobs[index]
        if self._detach[index]:
            tensor = tensor.detach()
        view = self._views[index]
        return tensor if view is None else tensor.view(view)

    def blob_for_io(self, index: int) -> torch.Tensor:
        """Parameter blob ``index`` in this layer's Caffe shape, sharing storage with the parameter."""
        view = self._views[index]
        return self._blobs[index] if view is None else self._blobs[index].view(view)

    # -- run time ------------------------------------------------------------------------------------
    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        raise NotImplementedError


def autocast_active(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``torch.is_autocast_enabled(device)`` from torch 2.4)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device kind
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


# ---- vision layers -----------------------------------------------------------------------------------
class Convolution(Layer):
    """Caffe's Convolution (cross-correlation): weight num_output × C/group × k…, bias num_output."""

    type_name = "Convolution"
    bottoms_range = (1, None)
    tops_range = (1, None)
    transposed = False
    _functions: ClassVar[Dict[int, Tuple]] = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d),
                  3: (F.conv3d, F.conv_transpose3d)}
    # Set by TorchNet.use_winograd: run on the Winograd kernel when no gradient is wanted (glrl.backends.winograd),
    # and with gradients too where winograd_gradients is set.
    winograd = False
    winograd_gradients = False
    # Set by TorchNet.use_winograd too: a convolution that makes one channel runs on the same module's
    # single_output_conv when no gradient is wanted.
    single_output = False
    # The weights as the Winograd kernel wants them, and the (version, address) of the blob they came from.
    _winograd_weights: Optional[Tuple[Tuple[int, int], torch.Tensor]] = None

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        cp = self.param.convolution_param
        shape = bottom_shapes[0]
        if self.canonical_axis(cp.axis, len(shape)) != 1:
            raise self.error("only axis 1 (channels) is supported as the channel axis")
        if len(self.param.top) != len(bottom_shapes):
            raise self.error(f"needs one top per bottom, got {len(bottom_shapes)} bottoms and "
                             f"{len(self.param.top)} tops")
        for other in bottom_shapes[1:]:
            if other != shape:
                raise self.error(f"all bottoms must have the same shape, got {shape} and {other}")
        spatial = len(shape) - 2
        if spatial not in self._functions:
            raise self.error(f"needs a blob with 3 to 5 axes (N, C, spatial…), got shape {shape}")
        self.kernel = self._spatial("kernel", cp.kernel_size, ("kernel_h", "kernel_w"), spatial, None)
        self.stride = self._spatial("stride", cp.stride, ("stride_h", "stride_w"), spatial, 1)
        self.pad = self._spatial("pad", cp.pad, ("pad_h", "pad_w"), spatial, 0)
        self.dilation = self._spatial("dilation", cp.dilation, None, spatial, 1)
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error("kernel, stride and dilation must be positive")
        if not cp.HasField("num_output") or cp.num_output <= 0:
            raise self.error("convolution_param.num_output must be set to a positive number")
        self.groups = cp.group
        channels = shape[1]
        if self.groups <= 0 or channels % self.groups or cp.num_output % self.groups:
            raise self.error(f"group {self.groups} must divide the input channels ({channels}) "
                             f"and num_output ({cp.num_output})")
        if self.transposed:
            weight_shape = (channels, cp.num_output // self.groups) + self.kernel
        else:
            weight_shape = (cp.num_output, channels // self.groups) + self.kernel
        self.blob_specs.append(BlobSpec(weight_shape, filler_or_default(
            cp.weight_filler, cp.HasField("weight_filler"), value=0.0)))
        self.bias_term = cp.bias_term
        if self.bias_term:
            self.blob_specs.append(BlobSpec((cp.num_output,), filler_or_default(
                cp.bias_filler, cp.HasField("bias_filler"), value=0.0)))
        self._conv = self._functions[spatial][1 if self.transposed else 0]
        self.winograd_eligible = not self.transposed and spatial == 2 and winograd.eligible(
            self.kernel, self.stride, self.dilation, self.pad, self.groups, channels, cp.num_output)
        self.single_output_eligible = not self.transposed and spatial == 2 and winograd.single_output_eligible(
            self.kernel, self.stride, self.dilation, self.pad, self.groups, cp.num_output)
        out_spatial = tuple(self._output_size(size, k, s, p, d) for size, k, s, p, d in zip(
            shape[2:], self.kernel, self.stride, self.pad, self.dilation))
        return [(shape[0], cp.num_output) + out_spatial for _ in bottom_shapes]

    def _spatial(self, what: str, repeated: Sequence[int], hw_fields: Optional[Tuple[str, str]],
                 spatial: int, default: Optional[int]) -> Tuple[int, ...]:
        cp = self.param.convolution_param
        if hw_fields and (cp.HasField(hw_fields[0]) or cp.HasField(hw_fields[1])):
            if spatial != 2:
                raise self.error(f"{hw_fields[0]}/{hw_fields[1]} need 2 spatial axes; use {what} instead")
            if len(repeated):
                raise self.error(f"give either {what} or {hw_fields[0]}/{hw_fields[1]}, not both")
            if what == "kernel" and not (cp.HasField(hw_fields[0]) and cp.HasField(hw_fields[1])):
                raise self.error("kernel_h and kernel_w must be given together")
            return (getattr(cp, hw_fields[0]), getattr(cp, hw_fields[1]))
        if len(repeated) == 0:
            if default is None:
                raise self.error(f"convolution_param.{what}_size must be given")
            return (default,) * spatial
        if len(repeated) == 1:
            return (int(repeated[0]),) * spatial
        if len(repeated) != spatial:
            raise self.error(f"{what} has {len(repeated)} values; give 1 or {spatial} (one per spatial axis)")
        return tuple(int(v) for v in repeated)

    def _output_size(self, size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
        extent = dilation * (kernel - 1) + 1
        if self.transposed:
            out = stride * (size - 1) + extent - 2 * pad
        else:
            span = size + 2 * pad - extent
            out = span // stride + 1 if span >= 0 else 0
        if out <= 0:
            raise self.error(f"input size {size} is too small for kernel {kernel} (pad {pad}, "
                             f"stride {stride}, dilation {dilation})")
        return out

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        weight = self.blob(0)
        bias = self.blob(1) if self.bias_term else None
        device_type = bottoms[0].device.type
        gradients = torch.is_grad_enabled()
        plain_cpu_float = (device_type == "cpu" and bottoms[0].dtype == torch.float32
                           and not autocast_active(device_type))
        if self.single_output and not gradients and plain_cpu_float:
            module = winograd.kernel()
            if module is not None:
                return [winograd.single_output_conv(x, weight, bias, self.pad, module) for x in bottoms]
        if self.winograd and (self.winograd_gradients or not gradients) and plain_cpu_float:
            module = winograd.kernel()
            if module is not None and gradients:
                return [winograd.Conv3x3Function.apply(x, weight, bias, self.pad[0], module) for x in bottoms]
            if module is not None:
                transformed = self._winograd_transformed(weight)
                return [winograd.conv3x3(x, transformed, bias, self.pad[0], module) for x in bottoms]
        if self.param.convolution_param.num_output == 1 and autocast_active(device_type):
            # A convolution that makes a single-channel map makes an image (or a residual added to one):
            # under bf16 autocast its output would keep 8 bits of mantissa, about half a grey level at
            # white. It costs a few per cent of the net's work, so it runs in fp32 (GLRL's Set5 x3 cost of
            # bf16 autocast: 0.018 dB with bf16 there, 0.001 dB without; docs/benchmarks.md).
            with torch.autocast(device_type, enabled=False):
                return [self._conv(x.float(), weight.float(), None if bias is None else bias.float(),
                                   stride=self.stride, padding=self.pad, dilation=self.dilation,
                                   groups=self.groups) for x in bottoms]
        return [self._conv(x, weight, bias, stride=self.stride, padding=self.pad, dilation=self.dilation,
                           groups=self.groups) for x in bottoms]

    def _winograd_transformed(self, weight: torch.Tensor) -> torch.Tensor:
        """The Winograd form of ``weight``, recomputed only when the blob was written to or replaced (or on
        every call for a net built under ``torch.inference_mode``, whose blobs keep no version counter)."""
        if weight.is_inference():
            return winograd.transform_weights(weight)
        key = (weight._version, weight.data_ptr())
        if self._winograd_weights is None or self._winograd_weights[0] != key:
            self._winograd_weights = (key, winograd.transform_weights(weight))
        return self._winograd_weights[1]


class Deconvolution(Convolution):
    """Caffe's Deconvolution (the transpose of Convolution): weight C × num_output/group × k…."""

    type_name = "Deconvolution"
    transposed = True


# ---- neurons -----------------------------------------------------------------------------------------
class ReLU(Layer):
    """max(0, x) + negative_slope · min(0, x); gradient slope 1 for x > 0, negative_slope for x ≤ 0."""

    type_name = "ReLU"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        self.slope = float(self.param.relu_param.negative_slope)
        return [bottom_shapes[0]]

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [torch.relu(x) if self.slope == 0.0 else F.leaky_relu(x, self.slope)]

    def forward_in_place(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        """The same, overwriting ``x`` (Caffe's in-place ReLU); for tensors no one else holds, without autograd."""
        return [torch.relu_(x) if self.slope == 0.0 else F.leaky_relu_(x, self.slope)]


class PReLU(Layer):
    """ReLU with learned negative slopes: one per channel (shape (C,)) or one for all (shape ())."""

    type_name = "PReLU"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"needs a bottom with at least 2 axes, got shape {shape}")
        pp = self.param.prelu_param
        slope_shape: Shape = () if pp.channel_shared else (shape[1],)
        self.blob_specs.append(BlobSpec(slope_shape, filler_or_default(
            pp.filler, pp.HasField("filler"), value=0.25)))
        return [shape]

    # Set by TorchNet.use_winograd(gradients=True): compute the backward pass with the compiled kernel
    # (glrl.backends.winograd) for CPU float32 tensors.
    compiled_backward = False

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        module = None
        if (self.compiled_backward and torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32):
            module = winograd.kernel()
        return [prelu(x, self.blob(0), module)]


class _PReLUFunction(torch.autograd.Function):
    """PReLU with Caffe's gradients, computed in one pass by the compiled kernel or in a few fused ones.

    Forward is ``F.prelu``. Backward (Caffe's ``PReLULayer::Backward_cpu``): the bottom gradient is the top
    gradient where x > 0 and slope · top gradient where x <= 0; the slope gradient is Σ top gradient · x over
    x <= 0 (per channel, or over everything for a shared slope). PyTorch's own PReLU backward writes a
    full-size slope-gradient buffer before reducing it and took ~22 % of a GLRL training step on the CPU;
    the fallback here is ``threshold_backward`` (ReLU's fused mask) plus three elementwise passes and a
    reduction, and the kernel (``prelu_backward.cpp``) reads x and the gradient once.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor, module: Optional[ModuleType]) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        ctx.module = module
        return F.prelu(x, slope.to(x.dtype).reshape(-1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, slope = ctx.saved_tensors
        if (ctx.module is not None and grad.dtype == torch.float32 and slope.dtype == torch.float32
                and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
            if grad.stride() != x.stride():
                grad = torch.empty_like(x).copy_(grad)
            grad_x, grad_slope = ctx.module.prelu_backward(grad, x, slope.detach().contiguous())
            return grad_x, grad_slope.view(slope.shape), None
        per_channel = slope.dim() > 0
        broadcast = (1, -1) + (1,) * (x.dim() - 2) if per_channel else ()
        positive = torch.ops.aten.threshold_backward(grad, x, 0)  # grad where x > 0, else 0
        negative = grad - positive  # grad where x <= 0, else 0
        grad_x = grad_slope = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(positive, negative, slope.to(grad.dtype).reshape(broadcast))
        if ctx.needs_input_grad[1]:
            dims = [0] + list(range(2, x.dim())) if per_channel else list(range(x.dim()))
            accumulate = torch.promote_types(grad.dtype, torch.float32)  # bf16 grads sum in fp32
            grad_slope = (negative * x).sum(dims, dtype=accumulate).to(slope.dtype).reshape(slope.shape)
        return grad_x, grad_slope, None


def prelu(x: torch.Tensor, slope: torch.Tensor, module: Optional[ModuleType] = None) -> torch.Tensor:
    """PReLU of ``x`` (N, C, ...) with ``slope`` of shape (C,) or () (shared), with Caffe's gradients
    (computed by ``module``'s ``prelu_backward`` when a compiled kernel is given)."""
    return _PReLUFunction.apply(x, slope, module)


class Sigmoid(Layer):
    type_name = "Sigmoid"

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [torch.sigmoid(x)]


class TanH(Layer):
    type_name = "TanH"

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [torch.tanh(x)]


class Power(Layer):
    """(shift + scale · x) ^ power; constant (and gradient 0) when power or scale is 0, as in Caffe."""

    type_name = "Power"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        pp = self.param.power_param
        self.power, self.scale, self.shift = float(pp.power), float(pp.scale), float(pp.shift)
        return [bottom_shapes[0]]

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        if self.power == 0.0 or self.scale == 0.0:
            value = 1.0 if self.power == 0.0 else self.shift ** self.power
            return [torch.full_like(x, value)]
        y = x if self.scale == 1.0 else x * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        if self.power != 1.0:
            y = y.square() if self.power == 2.0 else torch.pow(y, self.power)
        return [y]


# ---- blob plumbing -----------------------------------------------------------------------------------
class Split(Layer):
    """Copies its bottom to every top (in autograd the gradients of the copies add up, as in Caffe)."""

    type_name = "Split"
    tops_range = (1, None)

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        return [bottom_shapes[0]] * len(self.param.top)

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [x] * len(self.param.top)


class Silence(Layer):
    """Consumes its bottoms and produces nothing (so they are not net outputs)."""

    type_name = "Silence"
    bottoms_range = (1, None)
    tops_range = (0, 0)

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        return []

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        return []


class Concat(Layer):
    """Concatenates along ``axis`` (legacy ``concat_dim`` when it is given instead)."""

    type_name = "Concat"
    bottoms_range = (1, None)

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        cp = self.param.concat_param
        if cp.HasField("axis") and cp.HasField("concat_dim"):
            raise self.error("give either axis or concat_dim, not both")
        first = bottom_shapes[0]
        axis = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
        self.axis = self.canonical_axis(axis, len(first))
        total = 0
        for shape in bottom_shapes:
            if len(shape) != len(first) or any(
                    a != b for i, (a, b) in enumerate(zip(shape, first)) if i != self.axis):
                raise self.error(f"bottom shapes {first} and {shape} differ outside axis {self.axis}")
            total += shape[self.axis]
        return [first[:self.axis] + (total,) + first[self.axis + 1:]]

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        return [torch.cat(bottoms, dim=self.axis) if len(bottoms) > 1 else bottoms[0]]


class Slice(Layer):
    """Cuts its bottom along ``axis`` at ``slice_point``s (or into equal parts, one per top)."""

    type_name = "Slice"
    tops_range = (1, None)

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        sp = self.param.slice_param
        if sp.HasField("axis") and sp.HasField("slice_dim"):
            raise self.error("give either axis or slice_dim, not both")
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(sp.slice_dim if sp.HasField("slice_dim") else sp.axis, len(shape))
        size, tops = shape[self.axis], len(self.param.top)
        points = [int(p) for p in sp.slice_point]
        if points:
            if len(points) != tops - 1:
                raise self.error(f"{len(points)} slice_point(s) for {tops} tops; give one fewer than tops")
            bounds = [0] + points + [size]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.error(f"slice points {points} must increase strictly within (0, {size})")
            self.sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            if size % tops:
                raise self.error(f"axis {self.axis} has size {size}, which does not split into {tops} "
                                 "equal parts", hint="give slice_point")
            self.sizes = [size // tops] * tops
        return [shape[:self.axis] + (n,) + shape[self.axis + 1:] for n in self.sizes]

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return torch.split(x, self.sizes, dim=self.axis)


class Flatten(Layer):
    """Merges axes ``axis`` … ``end_axis`` into one."""

    type_name = "Flatten"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        shape = bottom_shapes[0]
        fp = self.param.flatten_param
        self.start = self.canonical_axis(fp.axis, len(shape))
        self.end = self.canonical_axis(fp.end_axis, len(shape), "end_axis")
        if self.end < self.start:
            raise self.error(f"end_axis {fp.end_axis} comes before axis {fp.axis}")
        return [shape[:self.start] + (math.prod(shape[self.start:self.end + 1]),) + shape[self.end + 1:]]

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [torch.flatten(x, self.start, self.end)]


class Reshape(Layer):
    """Replaces axes [axis, axis + num_axes) by ``shape`` (0 copies a bottom dimension, -1 infers one)."""

    type_name = "Reshape"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        rp = self.param.reshape_param
        self.dims = [int(d) for d in rp.shape.dim]
        if self.dims.count(-1) > 1:
            raise self.error("at most one dimension of reshape_param.shape may be -1")
        if any(d < -1 for d in self.dims):
            raise self.error(f"reshape_param.shape {self.dims} has a dimension below -1")
        self.axis, self.num_axes = rp.axis, rp.num_axes
        if self.num_axes < -1:
            raise self.error("reshape_param.num_axes must be -1 (all) or at least 0")
        return [self._top_shape(bottom_shapes[0])]

    def _top_shape(self, shape: Shape) -> Shape:
        ndim = len(shape)
        start = self.axis if self.axis >= 0 else ndim + self.axis + 1
        if not 0 <= start <= ndim:
            raise self.error(f"reshape_param.axis {self.axis} is out of range for shape {shape}")
        end = ndim if self.num_axes == -1 else start + self.num_axes
        if end > ndim:
            raise self.error(f"axis {self.axis} with num_axes {self.num_axes} runs past shape {shape}")
        middle = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= ndim:
                    raise self.error(f"dimension {i} copies axis {start + i}, which shape {shape} lacks")
                middle.append(shape[start + i])
            else:
                middle.append(d)
        top = list(shape[:start]) + middle + list(shape[end:])
        count = math.prod(shape)
        if -1 in top:
            known = math.prod(d for d in top if d != -1)
            if known == 0 or count % known:
                raise self.error(f"cannot infer the -1 dimension: {count} elements into {top}")
            top[top.index(-1)] = count // known
        if math.prod(top) != count:
            raise self.error(f"shape {tuple(top)} does not hold the {count} elements of shape {shape}")
        return tuple(top)

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        return [x.reshape(self._top_shape(tuple(x.shape)))]


# ---- arithmetic --------------------------------------------------------------------------------------
class Eltwise(Layer):
    """Element-wise SUM (with optional ``coeff``), PROD or MAX of equally shaped bottoms."""

    type_name = "Eltwise"
    bottoms_range = (2, None)

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        ep = self.param.eltwise_param
        self.operation = ep.operation
        self.coeff = [float(c) for c in ep.coeff] or [1.0] * len(bottom_shapes)
        if ep.coeff and self.operation != pb.EltwiseParameter.SUM:
            raise self.error("coeff is only allowed with operation SUM")
        if len(self.coeff) != len(bottom_shapes):
            raise self.error(f"{len(self.coeff)} coeff values for {len(bottom_shapes)} bottoms; give one each")
        for shape in bottom_shapes[1:]:
            if shape != bottom_shapes[0]:
                raise self.error(f"bottoms must have equal shapes, got {bottom_shapes[0]} and {shape}")
        return [bottom_shapes[0]]

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        if self.operation == pb.EltwiseParameter.SUM:
            first, c0 = bottoms[0], self.coeff[0]
            out = first * c0 if c0 != 1.0 else first
            for x, c in zip(bottoms[1:], self.coeff[1:]):
                out = torch.add(out, x, alpha=c) if c != 1.0 else out + x
            return [out]
        if self.operation == pb.EltwiseParameter.PROD:
            out = bottoms[0] * bottoms[1]
            for x in bottoms[2:]:
                out = out * x
            return [out]
        # MAX: Caffe routes the gradient to the first bottom holding the maximum; torch.maximum would
        # split it between tied bottoms, so choose explicitly (strictly greater replaces).
        out = bottoms[0]
        for x in bottoms[1:]:
            out = torch.where(x > out, x, out)
        return [out]


class Scale(Layer):
    """x · s (+ b), s broadcast over axes [axis, axis + num_axes): a learned blob, or the second bottom."""

    type_name = "Scale"
    bottoms_range = (1, 2)

    def _operand_setup(self, bottom_shapes: List[Shape], axis: int, num_axes: int,
                       filler: "pb.FillerParameter") -> Shape:
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            operand = bottom_shapes[1]
            self.axis = 0 if len(operand) == 0 else self.canonical_axis(axis, len(shape))
        else:
            self.axis = self.canonical_axis(axis, len(shape)) if len(shape) else 0
            if num_axes < -1:
                raise self.error("num_axes must be -1 (all remaining axes) or at least 0")
            end = len(shape) if num_axes == -1 else self.axis + num_axes
            if end > len(shape):
                raise self.error(f"axis {axis} with num_axes {num_axes} runs past bottom shape {shape}")
            operand = shape[self.axis:end]
            self.blob_specs.append(BlobSpec(operand, filler))
        if tuple(shape[self.axis:self.axis + len(operand)]) != tuple(operand):
            raise self.error(f"operand shape {operand} does not match bottom shape {shape} from axis {self.axis}")
        return operand

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        sp = self.param.scale_param
        operand = self._operand_setup(bottom_shapes, sp.axis, sp.num_axes,
                                      filler_or_default(sp.filler, sp.HasField("filler"), value=1.0))
        self.two_bottoms = len(bottom_shapes) == 2
        self.bias_term = sp.bias_term
        if self.bias_term:
            self.blob_specs.append(BlobSpec(tuple(operand), filler_or_default(
                sp.bias_filler, sp.HasField("bias_filler"), value=0.0)))
        return [bottom_shapes[0]]

    def _view(self, operand: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The operand's axes line up with x's from self.axis; trailing ones broadcast.
        return operand.reshape(tuple(operand.shape) + (1,) * (x.dim() - self.axis - operand.dim()))

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        x = bottoms[0]
        scale = bottoms[1] if self.two_bottoms else self.blob(0)
        out = x * self._view(scale, x)
        if self.bias_term:
            out = out + self._view(self.blob(0 if self.two_bottoms else 1), x)
        return [out]


class Bias(Scale):
    """x + b, b broadcast over axes [axis, axis + num_axes): a learned blob, or the second bottom."""

    type_name = "Bias"

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        bp = self.param.bias_param
        self._operand_setup(bottom_shapes, bp.axis, bp.num_axes,
                            filler_or_default(bp.filler, bp.HasField("filler"), value=0.0))
        self.two_bottoms = len(bottom_shapes) == 2
        return [bottom_shapes[0]]

    def forward(self, *bottoms: torch.Tensor) -> Sequence[torch.Tensor]:
        x = bottoms[0]
        bias = bottoms[1] if self.two_bottoms else self.blob(0)
        return [x + self._view(bias, x)]


# ---- losses ------------------------------------------------------------------------------------------
class EuclideanLoss(Layer):
    """Σ (a − b)² / (2N), N = the batch size (first axis); a and b need equal counts per item."""

    type_name = "EuclideanLoss"
    bottoms_range = (2, 2)
    is_loss = True

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        a, b = bottom_shapes
        if not a or not b or math.prod(a[1:]) != math.prod(b[1:]) or a[0] != b[0]:
            raise self.error(f"bottoms must hold the same number of values per item, got {a} and {b}",
                             hint="the prediction and the label need the same shape")
        return [()]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Sequence[torch.Tensor]:
        diff = a - (b if b.shape == a.shape else b.reshape(a.shape))
        return [torch.sum(diff * diff) / (2.0 * a.shape[0])]


LAYER_CLASSES: Dict[str, Type[Layer]] = {cls.type_name: cls for cls in (
    Convolution, Deconvolution, ReLU, PReLU, Sigmoid, TanH, Power, Split, Silence, Concat, Slice,
    Flatten, Reshape, Eltwise, Scale, Bias, EuclideanLoss)}
