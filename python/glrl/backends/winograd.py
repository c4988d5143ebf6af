"""Winograd F(4×4, 3×3) convolution for fp32 on the CPU, and PReLU's one-pass backward: a small C++ module,
built on first use.

Why: almost all of GLRL's and VDSR's work is 64→64 3×3 convolutions. oneDNN runs them as direct
convolutions at the core's arithmetic peak, and on x86 CPUs PyTorch has no faster algorithm (oneDNN 3
dropped its Winograd kernels); OpenCV's dnn module uses Winograd and so matched us in fp32. Winograd's
F(4×4, 3×3) does each 4×4 output tile's work as 36 matrix products over the channels instead of 144
multiply-adds per channel pair (4× fewer multiplications), at a rounding error of a few 1e-6 of the output's
range instead of about 1e-7 — invisible in 8-bit images and within 1e-4 dB in PSNR (docs/benchmarks.md).

When: :meth:`glrl.backends.torch_net.TorchNet.use_winograd` marks the eligible convolutions (3×3, stride 1,
dilation 1, one group, ≥ 24 input and output channels) and they use this kernel for CPU float32 tensors when
no gradient is wanted — inference through ``open_net`` (``glrl upscale``, ``glrl eval``). Training keeps
oneDNN's direct convolutions (Caffe's arithmetic, checked against real Caffe to 1e-5) unless asked
(``glrl train --winograd``, ``use_winograd(gradients=True)``): then :class:`Conv3x3Function` runs the
forward pass, the input gradient (a 3×3 convolution with the flipped, transposed weights) and, for maps of
at least :data:`MIN_GRADIENT_TILES` tiles, the weight gradient (the transposed algorithm: per tile
position, the transformed inputs times the transformed output gradients, summed over tiles) on the kernel,
and the net's PReLU layers take their backward pass from the module's ``prelu_backward`` (one read of the
input and gradient instead of five elementwise passes). A GLRL step: 1.7× faster (docs/benchmarks.md).

The same module holds :func:`single_output_conv`, a direct convolution for layers that make one channel (the
last layer of SRCNN, VDSR and GLRL's reconstruction), which ``use_winograd`` marks too, for inference only:
oneDNN has no fast path for one output channel, and SRCNN's 5×5 32→1 layer took over half its CPU time.

Building needs a C++ compiler and ninja (both come with a development setup; the kernel is compiled with
``-march=native``, about 40 s once, cached under ``$GLRL_CACHE`` or ``~/.cache/glrl``, keyed by the
sources, their paths, torch version and CPU). Where it cannot be built, or fails its first run against
PyTorch's convolution, weight gradient, one-output-channel convolution or PReLU backward (ATen's float
batch-reduce GEMM may be missing on other CPUs and builds), nets use oneDNN's direct convolution and PyTorch's
elementwise PReLU backward and say so once. ``GLRL_WINOGRAD=0`` switches the kernel off.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Tuple

import torch

# The convolution and its gradients, PReLU's one-pass backward (the other half of a GLRL training step), and the
# convolutions that make one channel (an image or its residual: the last layer of SRCNN, VDSR and GLRL).
SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("winograd_f43.cpp", "prelu_backward.cpp", "single_output_conv.cpp"))
HEADERS = (Path(__file__).with_name("partial_sums.h"),)
SWITCH_ENV = "GLRL_WINOGRAD"
CACHE_ENV = "GLRL_CACHE"
# Fewer channels make the 36 matrix products too thin to pay for the transforms: one convolution of a 256² map
# on 2 Zen 5 threads ran 0.69-0.91x oneDNN's speed at 16->16 channels, 1.3-1.8x at 24->24, 1.9-2.6x at 64->64
# (python bench/kernels.py, four runs).
MIN_CHANNELS = 24
# The weight gradient's fixed costs (per-range accumulators, the final Gᵀ·G) pay off only over many 4×4 tiles
# (batch × tiles per map): on 2 threads of an AVX-512/AMX Xeon at 64->64 channels it ran 0.88x oneDNN's speed
# at 256 tiles, 1.13x at 512, 1.32x at 2048 (a batch of 32 GLRL patches), 1.64x at 4096 (one 256² map)
# (python bench/kernels.py, bench/results/vm-20261202-xeon-kernels.md).
MIN_GRADIENT_TILES = 512

# G of F(4×4, 3×3) (Lavin & Gray 2016): the weight transform U = G g Gᵀ.
_G = ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0))

_kernel: Optional[ModuleType] = None
_failure: Optional[str] = None


def switched_off() -> bool:
    """Whether ``$GLRL_WINOGRAD`` turns the kernel off (``0``, ``off``, ``false``, ``no``)."""
    return os.environ.get(SWITCH_ENV, "").strip().lower() in ("0", "off", "false", "no")


def _build_directory() -> Path:
    from glrl.machine import cpu_flags

    digest = hashlib.sha256()
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
        digest.update(str(source).encode())  # each checkout its own build: ninja rebuilds when the path changes
    digest.update(torch.__version__.encode())
    digest.update(" ".join(sorted(cpu_flags() or ())).encode())
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "glrl")
    return root / "winograd" / digest.hexdigest()[:16]


def kernel() -> Optional[ModuleType]:
    """The compiled kernel module, building it on the first call; None where it cannot be built or fails
    its first check (the reason is printed once to stderr) or where ``$GLRL_WINOGRAD`` switches it off."""
    global _kernel, _failure
    if _kernel is not None or switched_off():
        return _kernel
    if _failure is not None:
        return None
    from torch.utils import cpp_extension

    directory = _build_directory()
    fresh = not any(directory.glob("glrl_winograd*.so"))
    if fresh:
        print(f"glrl: building the Winograd convolution kernel for this CPU (once, about 40 s; cached in "
              f"{directory})", file=sys.stderr)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        module = cpp_extension.load(
            name="glrl_winograd", sources=[str(source) for source in SOURCES], build_directory=str(directory),
            extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        _self_check(module)
    except Exception as exc:  # noqa: BLE001  (no compiler, no ninja, no headers, a full disk: all fall back)
        _failure = f"{type(exc).__name__}: {_reason(str(exc))}"
        print(f"glrl: the Winograd convolution kernel is unavailable ({_failure}); using oneDNN's direct "
              f"convolution, which is slower (install a C++ compiler and ninja, or set {SWITCH_ENV}=0 to "
              f"silence this; the build's files are in {directory})", file=sys.stderr)
        return None
    _kernel = module
    return _kernel


def _reason(message: str) -> str:
    """The line of a failed build's message that says why: the compiler's first error where there is one
    (ninja's own last line, "build stopped: subcommand failed", says nothing), else the last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line and not line.startswith("ninja:")]
    if errors:
        return errors[0]
    return lines[-1] if lines else ""


def _self_check(module: ModuleType) -> None:
    """Run the freshly loaded module once against PyTorch's convolution, its weight gradient and Caffe's PReLU
    backward: ATen's float batch-reduce GEMM may be missing on other CPUs and builds, and a kernel that fails
    or computes wrongly must not be used."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 9, 7, generator=generator)
    weight = torch.randn(16, 16, 3, 3, generator=generator)
    bias = torch.randn(16, generator=generator)
    grad = torch.randn(1, 16, 9, 7, generator=generator)
    slope = torch.rand(16, generator=generator)
    with torch.no_grad():
        checks = {
            "convolution": (conv3x3(x, transform_weights(weight), bias, 1, module),
                            torch.nn.functional.conv2d(x, weight, bias, padding=1)),
            "weight gradient": (weight_gradient(x, grad, 1, module), torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]),
            "one-output-channel convolution": (
                single_output_conv(x, weight[:1], bias[:1], (1, 2), module),
                torch.nn.functional.conv2d(x, weight[:1], bias[:1], padding=(1, 2))),
            "PReLU backward": (torch.cat([t.flatten() for t in module.prelu_backward(grad, x, slope)]),
                               torch.cat([torch.where(x > 0, grad, grad * slope.view(-1, 1, 1)).flatten(),
                                          (grad * x.clamp(max=0)).sum((0, 2, 3))])),
        }
    for name, (ours, expected) in checks.items():
        error = float((ours - expected).abs().max() / expected.abs().max())
        if not error <= 1e-4:
            raise RuntimeError(f"the built kernel's {name} is {error:.1e} off PyTorch's")


def eligible(kernel_size: Tuple[int, ...], stride: Tuple[int, ...], dilation: Tuple[int, ...],
             pad: Tuple[int, ...], groups: int, channels: int, outputs: int) -> bool:
    """Whether a (non-transposed) convolution with these settings can use the kernel."""
    return (tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and len(pad) == 2 and pad[0] == pad[1] and groups == 1
            and channels >= MIN_CHANNELS and outputs >= MIN_CHANNELS)


def transform_weights(weight: torch.Tensor) -> torch.Tensor:
    """Caffe's K × C × 3 × 3 weights as the kernel wants them: 36 × C × K, position i·6+j holding
    (G g Gᵀ)[i][j] for every (input, output) channel pair, computed in float64."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ia,kcab,jb->ijck", g, weight.detach().to("cpu", torch.float64), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(torch.float32).contiguous()


def gradients_eligible(pad: int) -> bool:
    """Whether the input gradient of a 3×3 convolution padded by ``pad`` is a 3×3 convolution the kernel
    runs (padded by 2 − pad)."""
    return 0 <= pad <= 2


class Conv3x3Function(torch.autograd.Function):
    """A 3×3 convolution (stride 1) whose forward pass, input gradient and weight gradient run on the
    Winograd kernel (the weight gradient on oneDNN's ``aten.convolution_backward`` for maps of fewer than
    :data:`MIN_GRADIENT_TILES` tiles)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], pad: int,
                module: ModuleType) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.pad, ctx.module, ctx.has_bias = pad, module, bias is not None
        return conv3x3(x, transform_weights(weight), bias, pad, module)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = None
        if ctx.needs_input_grad[0]:
            flipped = weight.detach().transpose(0, 1).flip(2, 3)
            grad_x = conv3x3(grad, transform_weights(flipped), None, 2 - ctx.pad, ctx.module)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            if tiles(grad) >= MIN_GRADIENT_TILES:
                grad_w = weight_gradient(x, grad, ctx.pad, ctx.module)
            else:
                grad_w = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, [1, 1], [ctx.pad, ctx.pad], [1, 1], False, [0, 0], 1,
                    [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def conv3x3(x: torch.Tensor, transformed: torch.Tensor, bias: Optional[torch.Tensor], pad: int,
            module: ModuleType) -> torch.Tensor:
    """Caffe's 3×3 convolution (stride 1, ``pad`` zeros on every side) of the N × C × H × W float32 CPU
    tensor ``x`` with weights ``transformed`` by :func:`transform_weights`; the result is N × K × H' × W',
    stored channels-last."""
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    empty = torch.empty(0, dtype=torch.float32)
    out = module.conv3x3(nhwc, transformed, empty if bias is None else bias.detach().contiguous(), pad)
    return out.permute(0, 3, 1, 2)


def single_output_eligible(kernel_size: Tuple[int, ...], stride: Tuple[int, ...], dilation: Tuple[int, ...],
                           pad: Tuple[int, ...], groups: int, outputs: int) -> bool:
    """Whether a (non-transposed, 2-D) convolution can use the module's one-output-channel convolution."""
    return (outputs == 1 and groups == 1 and len(kernel_size) == 2 and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and len(pad) == 2)


def single_output_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       pad: Tuple[int, int], module: ModuleType) -> torch.Tensor:
    """Caffe's convolution (stride 1, ``pad`` zeros) of the N × C × H × W float32 CPU tensor ``x`` with the
    1 × C × KH × KW ``weight``: per output pixel one dot product per kernel row (oneDNN has no fast path for a
    single output channel: SRCNN's 5×5 32→1 layer 2.8× faster, docs/benchmarks.md). Returns N × 1 × H' × W'."""
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    taps = weight.detach()[0].permute(1, 2, 0).contiguous()
    empty = torch.empty(0, dtype=torch.float32)
    out = module.single_output_conv(nhwc, taps, empty if bias is None else bias.detach(), pad[0], pad[1])
    return out.unsqueeze(1)


def tiles(output: torch.Tensor) -> int:
    """How many 4×4 tiles cover the N × K × H × W ``output`` of a 3×3 convolution."""
    batch, _, height, width = output.shape
    return batch * -(-height // 4) * -(-width // 4)


def weight_gradient(x: torch.Tensor, grad: torch.Tensor, pad: int, module: ModuleType) -> torch.Tensor:
    """The K × C × 3 × 3 gradient of Caffe's 3×3 convolution (stride 1, ``pad``) with respect to its weights,
    for the N × C × H × W float32 CPU input ``x`` and the gradient ``grad`` of its N × K × H' × W' output:
    the kernel sums over tiles in the Winograd domain, and Gᵀ · G brings each position back (in float64)."""
    transformed = module.conv3x3_weight_grad(x.detach().permute(0, 2, 3, 1).contiguous(),
                                             grad.permute(0, 2, 3, 1).contiguous(), pad)
    g = torch.tensor(_G, dtype=torch.float64)
    positions = transformed.to(torch.float64).view(6, 6, x.shape[1], grad.shape[1])
    return torch.einsum("ia,ijck,jb->kcab", g, positions, g).to(torch.float32)
