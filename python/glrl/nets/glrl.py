"""GLRL (Hou, Si, Li 2018) as we read the paper; ``docs/architecture.md`` gives the sentence behind each choice.

    data ──conv──PReLU──conv──► x                                  patch extraction (2 convs, eq. 11)
    x ──LRB 1──LRB 2── … ──LRB B                                    nonlinear mapping
        LRB b, input x⁰: U units, weights shared across the units of the block (not across blocks):
            a  = PReLU(xᵘ⁻¹)
            xᵘ = x⁰ + conv(PReLU(conv(a))) + conv(a)                deep + shallow branch (eq. 12), local residual
    y_b = conv(PReLU(conv(PReLU(LRB b output)))) + data            one shared reconstruction, global residual
    output = Σ_b w_b · y_b                                          Concat + 1×1 conv without bias, w_b = 1/B

Pre-activation throughout (eq. 11): a convolution sees PReLU of its input, except the first, which sees
the image. PReLU is channel-wise with slope 0.25 (Caffe's default) and, as He et al. advise for PReLU, no
weight decay on the slopes. 3×3 kernels use Caffe's ``msra`` filler (He et al.'s initialisation, derived
for rectifier nets such as this PReLU net), except the reconstruction's last conv (zero: the untrained net is
bicubic interpolation); biases start at 0. The longest path has 2 + 2·B·U + 2
convolutions (16 for B=3, U=2, "a network depth of 16 layers"), not counting the averaging 1×1 conv.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from glrl.errors import ModelError
from glrl.nets.recipe import Body, BodyBuilder, NetRecipe
from glrl.nets.solver import PAPER_SGD
from glrl.nets.spec import Fields, NetSpec, filler, param

MSRA = filler("msra")
# The last reconstruction conv (64 -> 1) starts at zero, so that every y_b, and the output, start as the
# bicubic input: with msra there too, the residuals the LRBs accumulate reach an output of magnitude ~6
# (the input is in [0, 1]), the first loss is ~1e3 per patch and, under clip_gradients 0.01, hundreds of
# iterations go into undoing the initialisation. Even a Gaussian with std 1e-3 leaves a residual of std
# 0.05, because the features reach std ~13 after the third LRB (measured; docs/architecture.md).
RESIDUAL_OUT = filler("constant", value=0.0)
ACTIVATIONS = ("prelu", "relu")


@dataclass(frozen=True)
class GlrlOptions:
    """The generator's options. Defaults are the paper's net (3 LRBs, the 16-layer model)."""

    blocks: int = 3  # B, local residual blocks
    units: int = 2  # U, recursive residual units per block
    width: int = 64  # feature channels
    shallow_kernel: int = 3  # kernel of the shallow branch conv
    share_units: bool = True  # one weight set per LRB, reused by its U units (DRRN's recursion)
    activation: str = "prelu"  # "relu" replaces every PReLU
    deep_supervision: bool = False  # also a loss on each y_b (weight 1/B), as DRCN supervises its y_t

    def validate(self) -> None:
        for field in ("blocks", "units", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ModelError(f"GLRL option {field} must be a positive integer, not {value!r}")
        if not isinstance(self.shallow_kernel, int) or self.shallow_kernel < 1 or self.shallow_kernel % 2 == 0:
            raise ModelError(f"GLRL shallow-branch kernel must be odd and positive, not {self.shallow_kernel!r}",
                             hint="an odd kernel with padding (k-1)/2 keeps the feature map's size")
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"unknown GLRL activation {self.activation!r}",
                             hint=f"choose one of: {', '.join(ACTIVATIONS)}")

    def conv_depth(self) -> int:
        """Convolutions on the longest path, the paper's "network depth"."""
        return 2 + 2 * self.blocks * self.units + 2


class _Builder:
    """Emits one GLRL body into a :class:`NetSpec`."""

    def __init__(self, net: NetSpec, options: GlrlOptions) -> None:
        self.net = net
        self.options = options

    def activation(self, name: str, bottom: str, shared_as: Optional[str]) -> str:
        if self.options.activation == "relu":
            return self.net.relu(name, bottom, in_place=False)
        return self.net.prelu(name, bottom, params=[param(name=shared_as and f"{shared_as}_slope", decay_mult=0)])

    def conv3(self, name: str, bottom: str, num_output: int, shared_as: Optional[str], kernel: int = 3,
              weight_filler: Fields = MSRA) -> str:
        params: Sequence[Fields] = ()
        if shared_as is not None:
            params = [param(name=f"{shared_as}_w"), param(name=f"{shared_as}_b")]
        return self.net.conv(name, bottom, num_output, kernel, pad=(kernel - 1) // 2, weight_filler=weight_filler,
                             params=params)

    def shared(self, b: int, part: str) -> Optional[str]:
        """The name under which block b's units share a weight set, or None without sharing."""
        return f"lrb{b}_{part}" if self.options.share_units else None

    def local_residual_block(self, b: int, block_input: str) -> str:
        """U residual units; with sharing, unit u of block b reuses the weights named ``lrb<b>_*``."""
        width, x = self.options.width, block_input
        for u in range(1, self.options.units + 1):
            unit = f"lrb{b}_u{u}"
            a = self.activation(f"{unit}_act", x, self.shared(b, "act"))
            deep = self.conv3(f"{unit}_deep1", a, width, self.shared(b, "deep1"))
            deep = self.activation(f"{unit}_deep_act", deep, self.shared(b, "deep_act"))
            deep = self.conv3(f"{unit}_deep2", deep, width, self.shared(b, "deep2"))
            shallow = self.conv3(f"{unit}_shallow", a, width, self.shared(b, "shallow"), self.options.shallow_kernel)
            x = self.net.add(unit, [block_input, deep, shallow])
        return x

    def reconstruct(self, b: int, features: str, data: str) -> str:
        """y_b: the shared two-conv reconstruction of LRB b's output, plus the input image."""
        r = self.activation(f"rec{b}_act1", features, "rec_act1")
        r = self.conv3(f"rec{b}_conv1", r, self.options.width, "rec_conv1")
        r = self.activation(f"rec{b}_act2", r, "rec_act2")
        r = self.conv3(f"rec{b}_conv2", r, 1, "rec_conv2", weight_filler=RESIDUAL_OUT)
        return self.net.add(f"pred{b}", [r, data])

    def body(self, data: str, training: bool) -> Body:
        width, blocks = self.options.width, self.options.blocks
        x = self.net.conv("fe_conv1", data, width, 3, pad=1, weight_filler=MSRA)
        x = self.activation("fe_act1", x, None)
        x = self.net.conv("fe_conv2", x, width, 3, pad=1, weight_filler=MSRA)
        block_outputs: List[str] = []
        for b in range(1, blocks + 1):
            x = self.local_residual_block(b, x)
            block_outputs.append(x)
        predictions = [self.reconstruct(b, out, data) for b, out in enumerate(block_outputs, start=1)]
        stacked = self.net.concat("predictions", predictions)
        output = self.net.conv("output", stacked, 1, 1, bias_term=False,
                               weight_filler=filler("constant", value=1.0 / blocks))
        supervised = [(p, 1.0 / blocks) for p in predictions] if training and self.options.deep_supervision else []
        return Body(output, supervised)


def glrl_body(options: GlrlOptions) -> BodyBuilder:
    """A body builder for GLRL with ``options`` (validated now, so a bad option fails early)."""
    options.validate()
    return lambda net, data, training: _Builder(net, options).body(data, training)


def glrl_recipe(name: str, description: str, options: GlrlOptions) -> NetRecipe:
    """A GLRL net trained with the paper's solver on 31×31 patches (input and label the same size)."""
    return NetRecipe(name, description, (31, 31), glrl_body(options), PAPER_SGD)


PRESETS = (
    glrl_recipe("glrl", "GLRL, 3 LRBs x 2 shared units, PReLU, 64 wide: the paper's 16-layer net",
                GlrlOptions()),
    glrl_recipe("glrl-2lrb", "GLRL with 2 LRBs (Table 1's 2LRB)", GlrlOptions(blocks=2)),
    glrl_recipe("glrl-relu", "GLRL with ReLU instead of PReLU (ablation)", GlrlOptions(activation="relu")),
    glrl_recipe("glrl-noshare", "GLRL without weight sharing between the units of an LRB (ablation)",
                GlrlOptions(share_units=False)),
    glrl_recipe("glrl-ds", "GLRL with each y_b supervised too, DRCN-style (ablation)",
                GlrlOptions(deep_supervision=True)),
)
