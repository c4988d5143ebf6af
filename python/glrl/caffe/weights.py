"""Whether a caffemodel gives every parameter of a net a value: stricter than Caffe's loading.

Caffe's ``Net::CopyTrainedLayersFrom`` (the torch backend's ``TorchNet.load_weights``, real Caffe's own
for the pycaffe backend) matches layers by name and leaves a net layer that the model lacks at its initial
values. That is what lets a train caffemodel load into a deploy net, and also what lets the weights of
another net, whose layer names do not match, run this net on its fillers and report figures for a net
nobody trained. :func:`require_complete_weights` refuses such weights before a net is run for results.
"""
from __future__ import annotations

from typing import Any, List, Mapping


from glrl.errors import FormatError


def blob_key(layer: Any, index: int) -> str:
    """The identity of a layer's parameter blob ``index``: the name it is shared under (``param { name }``),
    else ``<layer>/<index>``. Blobs with one key are one blob, whatever layers use it."""
    name = layer.param[index].name if index < len(layer.param) else ""
    return name or f"{layer.name}/{index}"


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
