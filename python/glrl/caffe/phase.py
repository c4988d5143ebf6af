"""Which layers of a net a phase keeps: Caffe 1.0's ``StateMeetsRule`` and ``FilterNet``.

A train/test prototxt holds the layers of both phases; ``include``/``exclude`` rules (phase, level range,
stages) say which ones a ``NetState`` keeps. Every reader of a net that asks "what runs in TRAIN?" (the
torch backend building a net, the trainer finding its data and loss layers, the tiler reading a deploy net,
the release recording a batch size) goes through here, so they all agree with Caffe.
"""
from __future__ import annotations

from typing import Any, List

from glrl.caffe import pb
from glrl.errors import ModelError


def state_meets_rule(state: Any, rule: Any) -> bool:
    """Caffe's StateMeetsRule: the phase, level range, required stages and excluded stages all fit."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_layers(net: Any, state: Any) -> List[Any]:
    """Caffe's FilterNet: the layers of ``net`` (a ``NetParameter``) that its rules keep for ``state``."""
    kept = []
    for layer in net.layer:
        if len(layer.include) and len(layer.exclude):
            raise ModelError(f"layer '{layer.name}' has both include and exclude rules",
                             hint="Caffe allows either include rules or exclude rules on a layer, not both")
        if len(layer.include):
            included = any(state_meets_rule(state, rule) for rule in layer.include)
        else:
            included = not any(state_meets_rule(state, rule) for rule in layer.exclude)
        if included:
            kept.append(layer)
    return kept


def layers_in_phase(net: Any, phase: str) -> List[Any]:
    """The layers ``net`` runs in ``phase`` ("TRAIN" or "TEST"), at level 0 with no stages."""
    return filter_layers(net, pb.NetState(phase=pb.Phase.Value(phase)))
