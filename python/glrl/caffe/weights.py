"""Match a caffemodel's blobs to a net's parameters as Caffe's ``Net::CopyTrainedLayersFrom`` does, and put
arrays back into a NetParameter for writing a caffemodel. Both backends share these rules:

- layers are matched by name; model layers the net lacks are ignored, and net layers the model lacks keep
  their initial values (Caffe's behaviour, which is what lets a train caffemodel load into a deploy net);
- a matched layer must have the same number of blobs, each of the net's shape, else a FormatError names
  the layer, the blob and both shapes;
- a legacy 4-D blob (num, channels, height, width) fits a shape of at most four axes when it equals that
  shape padded with leading 1s (so a legacy 1x1x1x64 bias fits 64), as Caffe's ``Blob::ShapeEquals`` allows.

Running a net is stricter than Caffe's loading: :func:`require_complete_weights` refuses weights that leave
a layer at its initial values (weights of another net whose layer names do not match would otherwise run
the net on its fillers and report numbers for a net nobody trained).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

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


def layers_left_unset(net: Any, blob_counts: Mapping[str, int], model: Any) -> List[str]:
    """The layers of ``net`` (an upgraded NetParameter) with parameters (``blob_counts``: layer name -> its
    number of parameter blobs, as the backend built them) that ``model`` (a caffemodel's NetParameter) gives no
    values for: no blobs under the layer's name, nor, for some blob, under a layer sharing it by
    ``param { name }`` (Caffe copies into shared blobs through any of their layers)."""
    stored = {layer.name for layer in model.layer if len(layer.blobs)}
    shared_and_stored = {spec.name for layer in net.layer if layer.name in stored
                         for spec in layer.param if spec.name}
    unset = []
    for layer in net.layer:
        count = blob_counts.get(layer.name, 0)
        if not count or layer.name in stored:
            continue
        names = [spec.name for spec in layer.param][:count]
        if len(names) < count or not all(name in shared_and_stored for name in names):
            unset.append(layer.name)
    return unset


def require_complete_weights(net: Any, blob_counts: Mapping[str, int], model: Any, weights: str,
                             prototxt: str) -> None:
    """Raise a FormatError naming the layers of ``prototxt`` that ``weights`` would leave at their fillers."""
    unset = layers_left_unset(net, blob_counts, model)
    if not unset:
        return
    shown = ", ".join(f"'{name}'" for name in unset[:6]) + (f" and {len(unset) - 6} more" if len(unset) > 6 else "")
    with_parameters = sum(1 for count in blob_counts.values() if count)
    what = ("any layer" if len(unset) == with_parameters
            else f"{len(unset)} of the {with_parameters} layers with parameters")
    raise FormatError(
        f"{weights} holds no weights for {what} of {prototxt} (left at their initial values: {shown})",
        hint="the weights belong to another net: pass the deploy prototxt they were trained with "
             "(glrl models list shows each released model's)",
    )
