"""SRCNN 9-1-5 (Dong et al. 2014), the baseline of the paper's Table 2, with its own training recipe.

conv 9×9 1→64, ReLU, conv 1×1 64→32, ReLU, conv 5×5 32→1 (eqs. 1-3 of the GLRL paper). Trained as Dong et
al. did: 'valid' convolutions on 33×33 inputs give 21×21 predictions compared with the central 21×21 of
the HR patch; Gaussian weights (std 0.001), zero biases; SGD at 1e-4 with the last layer at a tenth of
that. The deploy net pads each convolution by (k-1)/2 so a whole image keeps its size.
"""
from __future__ import annotations

from glrl.nets.recipe import Body, NetRecipe
from glrl.nets.solver import SRCNN_SGD
from glrl.nets.spec import NetSpec, filler, param

GAUSSIAN = filler("gaussian", std=0.001)
# (name, kernel, outputs); the last layer learns at lr_mult 0.1, as in Dong et al.
LAYERS = (("conv1", 9, 64), ("conv2", 1, 32), ("conv3", 5, 1))
INPUT_PATCH, LABEL_PATCH = 33, 21


def _body(net: NetSpec, data: str, training: bool) -> Body:
    x = data
    for index, (name, kernel, outputs) in enumerate(LAYERS, start=1):
        last = index == len(LAYERS)
        params = [param(lr_mult=0.1), param(lr_mult=0.1)] if last else []
        pad = 0 if training else (kernel - 1) // 2
        x = net.conv(name, x, outputs, kernel, pad=pad, weight_filler=GAUSSIAN, params=params)
        if not last:
            x = net.relu(f"relu{index}", x)
    return Body(x)


RECIPE = NetRecipe("srcnn", "SRCNN 9-1-5 (Dong et al. 2014), its own recipe: 33->21 valid, SGD 1e-4",
                   (INPUT_PATCH, LABEL_PATCH), _body, SRCNN_SGD)
