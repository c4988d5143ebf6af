"""Match a caffemodel's blobs to a net's parameters as Caffe's ``Net::CopyTrainedLayersFrom`` does, and put
arrays back into a NetParameter for writing a caffemodel. Both backends share these rules:

- layers are matched by name; model layers the net lacks are ignored, and net layers the model lacks keep
  their initial values (Caffe's behaviour, which is what lets a train caffemodel load into a deploy net);
- a matched layer must have the same number of blobs, each of the net's shape, else a FormatError names
  the layer, the blob and both shapes;
- a legacy 4-D blob (num, channels, height, width) fits a shape of at most four axes when it equals that
  shape padded with leading 1s (so a legacy 1x1x1x64 bias fits 64), as Caffe's ``Blob::ShapeEquals`` allows.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from glrl.caffe import io, pb
from glrl.errors import FormatError


def fit_layer_blobs(
    model: Any, expected: Dict[str, Sequence[Sequence[int]]], source: str = "caffemodel"
) -> Dict[str, List[np.ndarray]]:
    """The model's blobs for the layers of ``expected`` (layer name -> its parameter shapes), as float32
    arrays of exactly those shapes. ``model`` is a NetParameter read from a caffemodel."""
    fitted: Dict[str, List[np.ndarray]] = {}
    for layer in model.layer:
        if layer.name not in expected or not len(layer.blobs):
            continue
        targets = [tuple(int(d) for d in shape) for shape in expected[layer.name]]
        if len(layer.blobs) != len(targets):
            raise FormatError(
                f"{source}: layer '{layer.name}' has {len(layer.blobs)} blobs "
                f"but the net's layer has {len(targets)}",
                hint="the weights were trained for a different net definition (check bias_term, layer types)",
            )
        fitted[layer.name] = [
            _fit_blob(blob, target, f"{source}: layer '{layer.name}' blob {i}")
            for i, (blob, target) in enumerate(zip(layer.blobs, targets))
        ]
    return fitted


def _fit_blob(blob: Any, target: Tuple[int, ...], label: str) -> np.ndarray:
    array = io.blob_to_array(blob, label)
    if array.shape == target:
        return array
    if io.is_legacy_blob(blob) and len(target) <= 4 and array.shape == (1,) * (4 - len(target)) + target:
        return array.reshape(target)
    raise FormatError(
        f"{label} has shape {_format(array.shape)} but the net expects {_format(target)}",
        hint="the weights were trained for a different net definition (check num_output, kernel_size, "
        "and the input channels)",
    )


def _format(shape: Sequence[int]) -> str:
    return " x ".join(str(d) for d in shape) if len(shape) else "scalar"


def set_layer_blobs(net: Any, blobs: Dict[str, Sequence[Any]]) -> Any:
    """A copy of ``net`` whose named layers carry ``blobs`` (layer name -> arrays), ready for
    :func:`glrl.caffe.io.write_caffemodel`. Every name must be a layer of the net."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    by_name = {layer.name: layer for layer in out.layer}
    missing = sorted(set(blobs) - set(by_name))
    if missing:
        raise FormatError(
            f"no layer named {', '.join(repr(name) for name in missing)} in net '{net.name}'",
            hint="weights are stored under the layer names of the net definition",
        )
    for name, arrays in blobs.items():
        layer = by_name[name]
        del layer.blobs[:]
        layer.blobs.extend(io.array_to_blob(array) for array in arrays)
    return out
