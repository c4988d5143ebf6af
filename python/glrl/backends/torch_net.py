"""A Caffe net executed by PyTorch with Caffe 1.0's semantics: :class:`TorchNet`.

What Caffe's ``Net::Init`` does, done the same way here:

- NetState filtering (:mod:`glrl.caffe.phase`): a layer with ``include`` rules is kept when one rule meets
  the state (phase, level, stages); a layer with ``exclude`` rules is dropped when one meets it.
- Blobs are named; a layer whose top has its bottom's name works in place. Here every layer computes a new
  tensor and the name is rebound, so autograd sees no in-place writes and a blob read by several layers
  receives the sum of their gradients (what Caffe's inserted Split layers do).
- Parameters: each layer declares its blobs in Caffe's layout; ``param { name }`` shares one blob (one
  ``nn.Parameter``) between layers, with Caffe's shape check (strict, or counts only with
  ``share_mode: PERMISSIVE``) and its rule for a sharer's ``lr_mult``/``decay_mult`` (it may set an
  owner's unset multiplier, and must equal a set one). A layer whose own ``lr_mult`` is 0 computes no
  gradient for that blob, as Caffe's ``param_propagate_down``.
- ``propagate_down: false`` on a bottom stops this layer's gradient to it.
- Loss: Σ loss_weight · sum(top) over tops with a loss weight (loss layers default to 1, others to 0).
- Net inputs are the ``Input`` layers' tops; net outputs are the blobs no layer consumes, sorted by name.
- Weights load from a ``.caffemodel`` by layer name (layers the file lacks keep their initial values, as
  in ``CopyTrainedLayersFrom``) and save as one, with every blob in Caffe's shape.

The class is an ``nn.Module`` (its parameters are the learnable blobs, in Caffe's ``learnable_params_``
order) and also an :class:`glrl.backends.base.InferenceNet` through :meth:`TorchNet.run`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from glrl.backends import winograd
from glrl.backends.torch_data import HDF5Data, Input
from glrl.backends.torch_fillers import fill
from glrl.backends.torch_layers import LAYER_CLASSES, Convolution, Layer, PReLU, ReLU, Shape
from glrl.caffe import io, pb
from glrl.caffe.phase import filter_layers
from glrl.caffe.upgrade import upgrade_net
from glrl.caffe.weights import blob_key
from glrl.errors import FormatError, ModelError

# Layers whose forward pass returns new tensors (never a view of a bottom): what they make, a ReLU may
# overwrite in place without touching anything another blob shares
FRESH_TOP_LAYERS = frozenset({"Convolution", "Deconvolution", "InnerProduct"})

SOURCE_LAYERS = {cls.type_name: cls for cls in (Input, HDF5Data)}
SUPPORTED_TYPES = sorted(list(LAYER_CLASSES) + list(SOURCE_LAYERS))
PHASES = {"TRAIN": pb.TRAIN, "TEST": pb.TEST}
INFERENCE_PRECISIONS = ("fp32", "bf16")


@dataclass
class LearnableParam:
    """One learnable blob, listed once under the layer that owns it (Caffe's ``learnable_params_``)."""

    key: str  # the shared name from ``param { name }``, else "<layer>/<index>"
    layer_name: str
    index: int  # the blob's index within its owner layer
    param: nn.Parameter
    lr_mult: float
    decay_mult: float


def _caffe_shape_equals(blob: "pb.BlobProto", shape: Sequence[int]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy (num, channels, height, width) blobs compare 4-D, padded with 1s."""
    if io.is_legacy_blob(blob):
        if len(shape) > 4:
            return False
        return (1,) * (4 - len(shape)) + tuple(shape) == (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim) == tuple(shape)


class _ParamOwner:
    """Book-keeping for a blob while the net is built: Caffe's has_params_lr_/params_lr_ and users."""

    def __init__(self, entry: LearnableParam, shape: Shape, spec: "pb.ParamSpec") -> None:
        self.entry, self.shape = entry, shape
        self.has_lr, self.has_decay = spec.HasField("lr_mult"), spec.HasField("decay_mult")
        self.any_user_learns = False


class TorchNet(nn.Module):
    """Build a Caffe net for a phase and run it with PyTorch (see the module docstring).

    ``net`` is a NetParameter or a ``.prototxt`` path; ``phase`` "TRAIN" or "TEST"; ``stages`` and
    ``level`` complete the NetState. Parameters are created on ``device`` in ``dtype`` and initialised by
    their fillers from ``seed`` (random when None); ``seed`` also seeds HDF5Data's glibc ``rand()``
    shuffles (None: seed 1, Caffe's own, so shuffled batches are Caffe's).
    ``shard=(rank, count)`` makes TRAIN-phase HDF5Data layers read every count-th row (data parallel).
    HDF5Data sources that are relative and missing from the working directory are looked up in
    ``data_dirs``, then in the prototxt's folder (when ``net`` is a path).
    """

    def __init__(self, net: Union["pb.NetParameter", str, "os.PathLike[str]"], phase: str = "TEST", *,
                 device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
                 seed: Optional[int] = None, stages: Iterable[str] = (), level: int = 0,
                 shard: Tuple[int, int] = (0, 1), data_dirs: Iterable[Union[str, "os.PathLike[str]"]] = ()
                 ) -> None:
        super().__init__()
        self._data_dirs = [Path(d) for d in data_dirs]
        if isinstance(net, (str, os.PathLike)):
            self._data_dirs.append(Path(net).resolve().parent)
            net = io.read_net(net)
        else:
            original, net = net, pb.NetParameter()
            net.CopyFrom(original)
            upgrade_net(net)
        phase_name = str(phase).upper()
        if phase_name not in PHASES:
            raise ModelError(f"unknown phase '{phase}'", hint="use TRAIN or TEST")
        net.state.phase = PHASES[phase_name]
        net.state.stage.extend(stages)
        net.state.level = level
        self.name: str = net.name
        self.phase: str = phase_name
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = seed
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.run_precision = "fp32"
        self.layers: List[Layer] = []
        # (layer, bottom names, top names, per-bottom "propagate_down: false" flags or None)
        self._steps: List[Tuple[Layer, Tuple[str, ...], Tuple[str, ...], Optional[Tuple[bool, ...]]]] = []
        self._loss_terms: List[Tuple[str, float]] = []
        self._learnable: List[LearnableParam] = []
        self.blob_shapes: Dict[str, Shape] = {}
        self._shard = shard
        self._build(filter_layers(net, net.state))
        self._params = nn.ParameterList([entry.param for entry in self._learnable])

    # ------------------------------------------------------------------------------------ building
    def _build(self, layer_params: List["pb.LayerParameter"]) -> None:
        available: Dict[str, None] = {}  # blobs not (yet) consumed, in creation order
        names = set()
        owners: Dict[str, _ParamOwner] = {}  # by param { name }
        all_owners: List[_ParamOwner] = []
        bindings: List[Tuple[Layer, List[nn.Parameter], List[Optional[Shape]], List[float]]] = []
        for original in layer_params:
            param = pb.LayerParameter()
            param.CopyFrom(original)
            if not param.HasField("phase"):
                param.phase = PHASES[self.phase]
            if param.name in names:
                raise ModelError(f"two layers are named '{param.name}'",
                                 hint="layer names must be unique: weights are matched by name")
            names.add(param.name)
            layer = self._make_layer(param)
            for name in param.bottom:
                available.pop(name, None)
            for name, shape in zip(param.top, layer.top_shapes):
                self.blob_shapes[name] = shape
                available[name] = None
            self._add_loss_terms(layer)
            bindings.append(self._make_params(layer, owners, all_owners))
            self.layers.append(layer)
            self._steps.append((layer, tuple(param.bottom), tuple(param.top), self._gradient_stops(param)))
        for owner in all_owners:
            owner.entry.param.requires_grad_(owner.any_user_learns)
        for layer, blobs, views, own_lr in bindings:
            layer.bind(blobs, views, [lr == 0 and b.requires_grad for b, lr in zip(blobs, own_lr)])
        self.input_names: List[str] = [t for layer, _, tops, _ in self._steps if isinstance(layer, Input)
                                       for t in tops]
        self.output_names: List[str] = sorted(available)
        self._data_layers = [(layer, tops) for layer, _, tops, _ in self._steps if isinstance(layer, HDF5Data)]
        # per step, the blobs it reads for the last time (and does not rewrite in place): forward(keep=...)
        # drops them there, so inference holds a few feature maps at a time instead of every blob of the net
        last_reader = {name: index for index, (_, bottoms, _, _) in enumerate(self._steps) for name in bottoms}
        self._last_reads: List[Tuple[str, ...]] = [
            tuple(name for name in dict.fromkeys(bottoms) if last_reader[name] == index and name not in tops)
            for index, (_, bottoms, tops, _) in enumerate(self._steps)]
        # per step: a ReLU that rewrites in place, as the prototxt says, the one blob the step before made afresh
        # (so nothing else holds it); without autograd it then runs in place, one pass less over the feature map
        self._in_place: List[bool] = [
            isinstance(layer, ReLU) and tops == bottoms and index > 0 and self._steps[index - 1][2] == bottoms
            and self._steps[index - 1][0].param.type in FRESH_TOP_LAYERS
            for index, (layer, bottoms, tops, _) in enumerate(self._steps)]

    @staticmethod
    def _gradient_stops(param: "pb.LayerParameter") -> Optional[Tuple[bool, ...]]:
        """Which bottoms ``propagate_down: false`` cuts off from this layer's gradient (None: none)."""
        if not len(param.propagate_down):
            return None
        if len(param.propagate_down) != len(param.bottom):
            raise ModelError(f"layer '{param.name}': {len(param.propagate_down)} propagate_down values for "
                             f"{len(param.bottom)} bottoms", hint="give one per bottom, or none")
        stops = tuple(not flag for flag in param.propagate_down)
        return stops if any(stops) else None

    def _make_layer(self, param: "pb.LayerParameter") -> Layer:
        tops_here = set()
        for index, top in enumerate(param.top):
            in_place = index < len(param.bottom) and param.bottom[index] == top
            if (top in self.blob_shapes and not in_place) or top in tops_here:
                raise ModelError(f"layer '{param.name}': top blob '{top}' is produced by more than one layer",
                                 hint="give it a new name, or make the layer in-place (top = its bottom)")
            tops_here.add(top)
        for index, bottom in enumerate(param.bottom):
            if bottom not in self.blob_shapes:
                raise ModelError(f"layer '{param.name}': bottom blob '{bottom}' (bottom {index}) is not "
                                 "produced by any earlier layer",
                                 hint="check the blob name and the layer order (and the phase's filtering)")
        bottom_shapes = [self.blob_shapes[b] for b in param.bottom]
        if param.type == "HDF5Data":
            return HDF5Data(param, bottom_shapes, seed=self.seed, device=self.device, dtype=self.dtype,
                            shard=self._shard, search_dirs=self._data_dirs)
        cls = LAYER_CLASSES.get(param.type) or SOURCE_LAYERS.get(param.type)
        if cls is None:
            raise ModelError(f"layer '{param.name}': the PyTorch backend has no layer type '{param.type}'",
                             hint=f"supported types: {', '.join(SUPPORTED_TYPES)}")
        return cls(param, bottom_shapes)

    def _add_loss_terms(self, layer: Layer) -> None:
        param = layer.param
        weights = [float(w) for w in param.loss_weight]
        if weights and len(weights) != len(param.top):
            raise ModelError(f"layer '{param.name}': {len(weights)} loss_weight values for {len(param.top)} "
                             "tops", hint="give one loss_weight per top, or none")
        if not weights and layer.is_loss:
            weights = [1.0] + [0.0] * (len(param.top) - 1)
        self._loss_terms.extend((top, w) for top, w in zip(param.top, weights) if w != 0.0)

    def _make_params(self, layer: Layer, owners: Dict[str, _ParamOwner], all_owners: List[_ParamOwner]):
        param = layer.param
        if len(param.param) > len(layer.blob_specs):
            raise ModelError(f"layer '{param.name}': {len(param.param)} param specs for "
                             f"{len(layer.blob_specs)} parameter blobs", hint="remove the extra param { }")
        blobs, views, own_lr = [], [], []
        for index, spec in enumerate(layer.blob_specs):
            ps = param.param[index] if index < len(param.param) else pb.ParamSpec()
            owner = owners.get(ps.name) if ps.name else None
            if owner is None:
                data = fill(spec.filler, spec.shape, dtype=self.dtype, generator=self._generator,
                            what=f"layer '{param.name}' blob {index}")
                entry = LearnableParam(key=blob_key(param, index), layer_name=param.name,
                                       index=index, param=nn.Parameter(data.to(self.device)),
                                       lr_mult=float(ps.lr_mult), decay_mult=float(ps.decay_mult))
                self._learnable.append(entry)
                owner = _ParamOwner(entry, spec.shape, ps)
                all_owners.append(owner)
                if ps.name:
                    owners[ps.name] = owner
                view = None
            else:
                view = self._check_sharing(param.name, ps, spec.shape, owner)
            owner.any_user_learns |= ps.lr_mult != 0
            blobs.append(owner.entry.param)
            views.append(view)
            own_lr.append(float(ps.lr_mult))
        return layer, blobs, views, own_lr

    @staticmethod
    def _check_sharing(layer_name: str, ps: "pb.ParamSpec", shape: Shape, owner: _ParamOwner) -> Optional[Shape]:
        entry = owner.entry
        where = f"layer '{layer_name}' cannot share param '{ps.name}' owned by layer '{entry.layer_name}'"
        if ps.share_mode == pb.ParamSpec.PERMISSIVE:
            if int(np.prod(shape)) != int(np.prod(owner.shape)):
                raise ModelError(f"{where}: counts differ (owner shape {owner.shape}, this layer {shape})")
        elif tuple(shape) != tuple(owner.shape):
            raise ModelError(f"{where}: shapes differ (owner {owner.shape}, this layer {shape})",
                             hint="make the layers' shapes equal, or set share_mode: PERMISSIVE")
        for field, has in (("lr_mult", "has_lr"), ("decay_mult", "has_decay")):
            if ps.HasField(field):
                value = float(getattr(ps, field))
                if getattr(owner, has):
                    if value != getattr(entry, field):
                        raise ModelError(f"shared param '{ps.name}' has mismatched {field}: "
                                         f"{getattr(entry, field)} in layer '{entry.layer_name}', "
                                         f"{value} in layer '{layer_name}'")
                else:
                    setattr(owner, has, True)
                    setattr(entry, field, value)
        return None if tuple(shape) == tuple(owner.shape) else tuple(shape)

    # ------------------------------------------------------------------------------------ running
    def forward(self, inputs: Optional[Dict[str, torch.Tensor]] = None,
                keep: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """Run every layer; return all blobs by name (after in-place layers). ``inputs`` must give every
        Input top and may give the tops of data layers, which otherwise read their next batch.

        With ``keep``, each blob not named there is dropped after its last reader and only those still held
        are returned (a forward pass without autograd then holds a few feature maps at a time)."""
        kept = None if keep is None else set(keep)
        blobs: Dict[str, torch.Tensor] = {}
        if inputs:
            for name, value in inputs.items():
                if name not in self.blob_shapes or not self._feedable(name):
                    raise ModelError(f"'{name}' is not an input of net '{self.name}'",
                                     hint=f"its inputs are: {', '.join(self.input_names) or 'none'}")
                if not isinstance(value, torch.Tensor):
                    value = torch.as_tensor(np.asarray(value))
                blobs[name] = value.to(device=self.device, dtype=self.dtype)
        missing = [name for name in self.input_names if name not in blobs]
        if missing:
            raise ModelError(f"net '{self.name}' needs the input(s) {', '.join(missing)}",
                             hint="pass a tensor for each by name")
        for layer, tops in self._data_layers:
            given = [top in blobs for top in tops]
            if any(given) and not all(given):
                raise ModelError(f"layer '{layer.name}': give all of its tops ({', '.join(tops)}) or none")
        layer = None
        try:
            for index, (layer, bottoms, tops, stops) in enumerate(self._steps):
                if layer.is_source:
                    if tops[0] in blobs:
                        continue
                    outputs = layer.forward()
                elif self._in_place[index] and not torch.is_grad_enabled():
                    outputs = layer.forward_in_place(blobs[bottoms[0]])
                elif stops is None:
                    outputs = layer.forward(*[blobs[name] for name in bottoms])
                else:
                    outputs = layer.forward(*[blobs[name].detach() if stop else blobs[name]
                                              for name, stop in zip(bottoms, stops)])
                for name, value in zip(tops, outputs):
                    blobs[name] = value
                if kept is not None:
                    for name in self._last_reads[index]:
                        if name not in kept:
                            blobs.pop(name, None)
        except RuntimeError as exc:
            raise ModelError(f"layer '{layer.name}' ({layer.param.type}) failed: {exc}",
                             hint="check the input shapes against the net "
                                  f"(built for {self._input_shapes_text()})") from exc
        return blobs

    def _feedable(self, name: str) -> bool:
        return name in self.input_names or any(name in tops for _, tops in self._data_layers)

    def _input_shapes_text(self) -> str:
        return ", ".join(f"{name} {self.blob_shapes[name]}" for name in self.input_names) or "no inputs"

    def loss(self, blobs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ loss_weight · sum(top) over the tops with a loss weight (0 when the net has none)."""
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        for name, weight in self._loss_terms:
            total = total + weight * blobs[name].sum()
        return total

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """InferenceNet: forward NumPy inputs (any spatial size) without autograd, at the precision
        :meth:`use_precision` chose (fp32 unless told); return the outputs as float32 arrays."""
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.run_precision == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in inputs.items()}
            blobs = self.forward(tensors, keep=self.output_names)
            return {name: blobs[name].float().cpu().numpy() for name in self.output_names}

    def use_precision(self, precision: str) -> "TorchNet":
        """Make :meth:`run` compute in ``precision``: ``fp32`` (Caffe's arithmetic, the default) or ``bf16``
        (autocast: bf16 convolutions with fp32 weights, single-channel convolutions in fp32; about twice as
        fast on CPUs with AVX-512 BF16 and on recent GPUs, at a Set5 PSNR cost measured by ``make bench``)."""
        if precision not in INFERENCE_PRECISIONS:
            raise ModelError(f"unknown inference precision {precision!r}",
                             hint=f"use one of {', '.join(INFERENCE_PRECISIONS)}")
        self.run_precision = precision
        return self

    # ------------------------------------------------------------------------------------ parameters
    def learnable_params(self) -> List[LearnableParam]:
        """The learnable blobs in Caffe's ``learnable_params_`` order, shared ones once (under the owner)."""
        return list(self._learnable)

    def layer_blobs(self) -> Dict[str, List[torch.Tensor]]:
        """Each layer's parameter blobs in Caffe's shapes (shared blobs appear under every user)."""
        return {layer.name: [layer.blob_for_io(i) for i in range(len(layer.blob_specs))]
                for layer in self.layers if layer.blob_specs}

    def load_weights(self, source: Union["pb.NetParameter", str, "os.PathLike[str]"]) -> List[str]:
        """Copy blobs by layer name from a ``.caffemodel`` path or a NetParameter, as Caffe's
        CopyTrainedLayersFrom: layers the net lacks are ignored, layers the source lacks keep their values.
        Returns the names of the layers whose blobs were copied."""
        if isinstance(source, (str, os.PathLike)):
            model, where = io.read_caffemodel(source), str(source)
        else:
            model, where = source, f"weights of net '{source.name}'"
            if len(model.layers):
                model = pb.NetParameter()
                model.CopyFrom(source)
                upgrade_net(model)
        by_name = {layer.name: layer for layer in self.layers}
        copied: List[str] = []
        with torch.no_grad():
            for stored in model.layer:
                layer = by_name.get(stored.name)
                if layer is None:
                    continue
                if len(stored.blobs) != len(layer.blob_specs):
                    raise FormatError(f"{where}: layer '{stored.name}' has {len(stored.blobs)} blobs, but the "
                                      f"net's layer '{stored.name}' ({layer.param.type}) has "
                                      f"{len(layer.blob_specs)}",
                                      hint="the weights belong to a different net; rename the layer to train "
                                           "it from scratch instead")
                for index, blob in enumerate(stored.blobs):
                    target = layer.blob_for_io(index)
                    if not _caffe_shape_equals(blob, target.shape):
                        raise FormatError(
                            f"{where}: layer '{stored.name}' blob {index} has shape "
                            f"{tuple(io.blob_shape(blob))}, but the net expects {tuple(target.shape)}",
                            hint="the weights belong to a different net (or scale); rename the layer to "
                                 "train it from scratch instead")
                    array = io.blob_to_array(blob, name=f"layer '{stored.name}' blob {index}")
                    target.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(target.shape))
                if stored.blobs:
                    copied.append(stored.name)
        return copied

    def to_net_parameter(self) -> "pb.NetParameter":
        """The built net as a NetParameter (Caffe's Net::ToProto): its layers, with their blobs."""
        out = pb.NetParameter(name=self.name)
        for layer in self.layers:
            stored = out.layer.add()
            stored.CopyFrom(layer.param)
            del stored.blobs[:]
            for index in range(len(layer.blob_specs)):
                array = layer.blob_for_io(index).detach().to("cpu", torch.float32).numpy()
                stored.blobs.add().CopyFrom(io.array_to_blob(array))
        return out

    def save_caffemodel(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the weights as a binary ``.caffemodel`` (atomically)."""
        io.write_caffemodel(self.to_net_parameter(), path)

    def use_winograd(self, enabled: bool = True, gradients: bool = False) -> "TorchNet":
        """Let the eligible 3×3 convolutions run on the Winograd F(4×4, 3×3) kernel for CPU float32 inputs
        when no gradient is wanted (:mod:`glrl.backends.winograd`: about twice as fast as oneDNN, rounding
        a few 1e-6 of the output's range differently) and, with ``gradients``, under autograd too (forward,
        input and weight gradients on the kernel), with PReLU's backward pass on the same compiled module,
        and the convolutions that make one channel on its direct kernel when no gradient is wanted;
        ``False`` restores oneDNN and PyTorch's elementwise PReLU backward everywhere. Returns the net."""
        for layer in self.layers:
            if isinstance(layer, Convolution):
                layer.single_output = enabled and layer.single_output_eligible
                layer.winograd = enabled and layer.winograd_eligible
                layer.winograd_gradients = layer.winograd and gradients and winograd.gradients_eligible(
                    layer.pad[0])
            elif isinstance(layer, PReLU):
                layer.compiled_backward = enabled and gradients
        return self

    def use_channels_last(self) -> "TorchNet":
        """Store the 4-D weights channels-last (NHWC), in place; returns the net.

        A 1×C×H×W input with C = 1 (every SR net here) is the same in both layouts and the layout then follows
        the weights through the net, so every convolution runs oneDNN's NHWC kernels: GLRL inference was 1.13×
        faster than NCHW on our AMD development machine, 1.4–2.2× on an earlier Intel one (docs/benchmarks.md),
        with the same result to float rounding. Shared blobs stay shared (the parameters are converted in place).
        """
        return self.to(memory_format=torch.channels_last)
