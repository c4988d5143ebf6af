"""VDSR-20 (Kim et al. 2016), a well-known reference net for the same task and data.

Twenty 3×3 convolutions, 64 wide, ReLU after all but the last, and the input image added to the result
(global residual learning). Initialised with ``msra`` (He et al.), as Kim et al. did, and trained with the
GLRL paper's solver so the two nets differ only in architecture.
"""
from __future__ import annotations

from glrl.nets.recipe import Body, NetRecipe
from glrl.nets.solver import PAPER_SGD
from glrl.nets.spec import NetSpec, filler

DEPTH, WIDTH = 20, 64
MSRA = filler("msra")


def _body(net: NetSpec, data: str, training: bool) -> Body:
    x = data
    for index in range(1, DEPTH + 1):
        outputs = 1 if index == DEPTH else WIDTH
        x = net.conv(f"conv{index}", x, outputs, 3, pad=1, weight_filler=MSRA)
        if index < DEPTH:
            x = net.relu(f"relu{index}", x)
    return Body(net.add("output", [x, data]))


RECIPE = NetRecipe("vdsr", "VDSR-20 (Kim et al. 2016): 20 3x3 convs, ReLU, global residual",
                   (31, 31), _body, PAPER_SGD)
