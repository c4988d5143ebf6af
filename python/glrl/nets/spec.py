"""A small builder for Caffe nets: write a network as Python calls, get a ``NetParameter``.

The idea is that of pycaffe's ``net_spec`` (layers as function calls, blobs as names), written for this
project: layer fields are given as plain nested dicts with Caffe's own field names and turned into the
protobuf messages of :mod:`glrl.caffe.pb` by ``json_format.ParseDict``, so a misspelt field fails at once
with protobuf's message instead of producing a prototxt that Caffe would refuse later. The text is written
by :mod:`glrl.caffe.io`; this module never formats prototxt itself.

Blobs are referred to by name (``str``); every layer call returns the name of its (first) top.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set

from google.protobuf import json_format

from glrl.errors import ModelError

Fields = Dict[str, Any]


def param(
    name: Optional[str] = None, lr_mult: Optional[float] = None, decay_mult: Optional[float] = None
) -> Fields:
    """A ``param { ... }`` entry: ``name`` shares the blob with every other layer naming it (Caffe's
    weight sharing); the multipliers scale the solver's learning rate and weight decay for that blob."""
    spec: Fields = {}
    if name is not None:
        spec["name"] = name
    if lr_mult is not None:
        spec["lr_mult"] = lr_mult
    if decay_mult is not None:
        spec["decay_mult"] = decay_mult
    return spec


def filler(kind: str, **fields: float) -> Fields:
    """A ``FillerParameter``: ``filler("msra")``, ``filler("constant", value=0)``, ``filler("gaussian", std=1e-3)``."""
    return {"type": kind, **fields}


class NetSpec:
    """An ordered list of layers that becomes a ``caffe.NetParameter``.

    Layer and top names must be unique except for in-place layers (top == bottom), as Caffe requires for
    the graph to be unambiguous; a repeated layer name is refused here rather than by Caffe later.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._layers: List[Fields] = []
        self._layer_names: Set[str] = set()

    def layer(
        self,
        type_: str,
        name: str,
        bottoms: Sequence[str] = (),
        tops: Optional[Sequence[str]] = None,
        *,
        phase: Optional[str] = None,
        params: Sequence[Fields] = (),
        loss_weight: Optional[float] = None,
        **fields: Fields,
    ) -> str:
        """Append a layer and return its first top (by default the layer's own name).

        ``fields`` are the layer's parameter messages by Caffe's field name, e.g.
        ``convolution_param={"num_output": 64, "kernel_size": [3]}``; ``phase`` (``"TRAIN"``/``"TEST"``)
        becomes an ``include`` rule.
        """
        if name in self._layer_names:
            raise ModelError(f"net {self.name!r}: layer name {name!r} is used twice",
                             hint="give every layer of a generator a unique name")
        self._layer_names.add(name)
        top_names = list(tops) if tops is not None else [name]
        layer: Fields = {"name": name, "type": type_, "bottom": list(bottoms), "top": top_names}
        if phase is not None:
            layer["include"] = [{"phase": phase}]
        if params:
            layer["param"] = [dict(spec) for spec in params]
        if loss_weight is not None:
            layer["loss_weight"] = [loss_weight]
        layer.update(fields)
        self._layers.append(layer)
        return top_names[0]

    def to_proto(self) -> Any:
        """The ``pb.NetParameter`` of the layers so far."""
        from glrl.caffe import pb

        message = pb.NetParameter()
        try:
            json_format.ParseDict({"name": self.name, "layer": self._layers}, message)
        except json_format.ParseError as exc:
            raise ModelError(f"net {self.name!r} has a field that caffe.proto does not define: {exc}",
                             hint="use Caffe 1.0's field names in the generator") from exc
        return message

    # Shorthands for the layers the generators use. Each returns its top's name.

    def conv(
        self,
        name: str,
        bottom: str,
        num_output: int,
        kernel_size: int,
        *,
        pad: int = 0,
        weight_filler: Fields,
        bias_filler: Optional[Fields] = None,
        bias_term: bool = True,
        params: Sequence[Fields] = (),
    ) -> str:
        """A ``Convolution`` with stride 1; ``pad`` (k-1)/2 keeps the size, 0 is Caffe's 'valid'."""
        conv_fields: Fields = {"num_output": num_output, "kernel_size": [kernel_size]}
        if pad:
            conv_fields["pad"] = [pad]
        if not bias_term:
            conv_fields["bias_term"] = False
        conv_fields["weight_filler"] = weight_filler
        if bias_term:
            conv_fields["bias_filler"] = bias_filler if bias_filler is not None else filler("constant", value=0)
        return self.layer("Convolution", name, [bottom], params=params, convolution_param=conv_fields)

    def prelu(self, name: str, bottom: str, *, in_place: bool = False, params: Sequence[Fields] = ()) -> str:
        """A channel-wise ``PReLU`` (Caffe's default: one slope per channel, initialised 0.25)."""
        tops = [bottom] if in_place else None
        return self.layer("PReLU", name, [bottom], tops, params=params)

    def relu(self, name: str, bottom: str, *, in_place: bool = True) -> str:
        """A ``ReLU``, in place by default as Caffe's reference nets do."""
        tops = [bottom] if in_place else None
        return self.layer("ReLU", name, [bottom], tops)

    def add(self, name: str, bottoms: Sequence[str]) -> str:
        """Element-wise sum of the bottoms (``Eltwise`` SUM)."""
        return self.layer("Eltwise", name, bottoms, eltwise_param={"operation": "SUM"})

    def concat(self, name: str, bottoms: Sequence[str]) -> str:
        """Stack the bottoms along the channel axis."""
        return self.layer("Concat", name, bottoms, concat_param={"axis": 1})

    def euclidean_loss(self, name: str, prediction: str, label: str, *, weight: Optional[float] = None) -> str:
        """Caffe's ``EuclideanLoss``: sum of squared differences over 2N (N = batch size)."""
        return self.layer("EuclideanLoss", name, [prediction, label], loss_weight=weight)

    def hdf5_data(self, name: str, source: str, batch_size: int, phase: str, *, shuffle: bool) -> List[str]:
        """An ``HDF5Data`` layer with tops ``data`` and ``label`` for one phase; ``source`` is the list file."""
        data_fields: Fields = {"source": source, "batch_size": batch_size}
        if shuffle:
            data_fields["shuffle"] = True
        self.layer("HDF5Data", name, [], ["data", "label"], phase=phase, hdf5_data_param=data_fields)
        return ["data", "label"]

    def input(self, name: str, shape: Sequence[int]) -> str:
        """An ``Input`` layer (deploy nets) giving blob ``name`` the N×C×H×W ``shape``."""
        return self.layer("Input", name, [], input_param={"shape": [{"dim": [int(d) for d in shape]}]})

