"""SRCNN 9-1-5 (Dong et al. 2014), the baseline of the paper's Table 2, with its own training layout.

conv 9×9 1→64, ReLU, conv 1×1 64→32, ReLU, conv 5×5 32→1 (eqs. 1-3 of the GLRL paper). Trained as Dong et
al. did: 'valid' convolutions on 33×33 inputs give 21×21 predictions compared with the central 21×21 of
the HR patch; the last layer learns at a tenth of the rate.

The deploy net is the same 'valid' net: it shrinks an image by 6 pixels on each side, and whoever runs it
pads the input by replicating its border first (:class:`glrl.eval.models.NetMethod`, ``glrl upscale``, the
training's Set5 probe), as SRCNN's own test code does (``imfilter(..., 'same', 'replicate')``). A net
trained without padding never saw Caffe's zero padding: padded with zeros, the released x234 model lost
0.29 dB of Set5 x2 PSNR, and a well-trained x2 model 2.2 dB (35.55 -> 33.39).

Fillers: Dong et al. drew every weight from N(0, 0.001²). Trained with Adam, the two ReLU layers then
lost most of their units for good (the x234 model: 38 of 64 and 23 of 32 never active on Set5, since an
input in [0, 1] cannot revive a unit whose weights and bias turned negative). They take ``msra`` now
(4-5 of 64 dead after 20,000 iterations); the last layer keeps N(0, 0.001²), so the net starts near zero.
"""
from __future__ import annotations

from glrl.nets.recipe import Body, NetRecipe
from glrl.nets.solver import SRCNN_SGD
from glrl.nets.spec import NetSpec, filler, param

MSRA, GAUSSIAN = filler("msra"), filler("gaussian", std=0.001)
# (name, kernel, outputs); the last layer learns at lr_mult 0.1, as in Dong et al.
LAYERS = (("conv1", 9, 64), ("conv2", 1, 32), ("conv3", 5, 1))
INPUT_PATCH, LABEL_PATCH = 33, 21


def _body(net: NetSpec, data: str, training: bool) -> Body:
    x = data
    for index, (name, kernel, outputs) in enumerate(LAYERS, start=1):
        last = index == len(LAYERS)
        params = [param(lr_mult=0.1), param(lr_mult=0.1)] if last else []
        x = net.conv(name, x, outputs, kernel, pad=0, weight_filler=GAUSSIAN if last else MSRA, params=params)
        if not last:
            x = net.relu(f"relu{index}", x)
    return Body(x)


RECIPE = NetRecipe("srcnn", "SRCNN 9-1-5 (Dong et al. 2014): 33->21 valid (deploy too: inputs border-"
                   "replicated by 6), msra + last layer N(0, 1e-3), SGD 1e-4", (INPUT_PATCH, LABEL_PATCH), _body,
                   SRCNN_SGD)
