"""All generated nets by name: ``NETS`` (ordered, the default first) and :func:`get_net`.

Iterate ``NETS.values()`` to check every net (tests, the real-Caffe oracle, benchmarks); each entry is a
:class:`glrl.nets.recipe.NetRecipe` with ``train_test``, ``deploy``, ``solver`` and ``patch_sizes``.
"""
from __future__ import annotations

from typing import Dict

from glrl.errors import ModelError
from glrl.nets import glrl, srcnn, vdsr
from glrl.nets.recipe import NetRecipe

NETS: Dict[str, NetRecipe] = {recipe.name: recipe for recipe in (*glrl.PRESETS, srcnn.RECIPE, vdsr.RECIPE)}


def get_net(name: str) -> NetRecipe:
    """The recipe named ``name``, or a clear error listing the known nets."""
    try:
        return NETS[name]
    except KeyError:
        raise ModelError(f"unknown net {name!r}", hint=f"choose one of: {', '.join(NETS)}") from None
