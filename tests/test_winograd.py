"""The compiled kernel computes Caffe's 3×3 convolution and its weight gradient (Winograd F(4×4, 3×3), to float
rounding), PReLU's backward pass and a direct convolution for one output channel. Inference nets use the
convolutions only where they apply: CPU, float32, no gradient; 3×3 stride-1 single-group convolutions of at
least 24 channels in and out, and stride-1 single-group ones with one output channel; training nets use the
first three when asked. Where the kernel cannot be built or fails its first check, nets fall back to oneDNN and
PyTorch and say so."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from glrl.backends import open_net, winograd  # noqa: E402
from glrl.backends.torch_net import TorchNet  # noqa: E402

# Measured: a few 1e-6 of the output's largest magnitude (oneDNN's direct convolution: about 1e-7).
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def kernel():
    module = winograd.kernel()
    if module is None:
        if os.environ.get("CI"):
            pytest.fail("the Winograd kernel must build under CI (a C++ compiler and ninja are installed)")
        pytest.skip("the Winograd kernel cannot be built here")
    return module


def reference(x, weight, bias, pad):
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=pad).float()


@pytest.mark.parametrize("batch, channels, outputs, height, width, pad, with_bias", [
    (1, 64, 64, 32, 32, 1, True),     # GLRL's convolution, whole tiles
    (2, 24, 17, 13, 19, 1, True),     # partial tiles, channel counts off the vector width, a batch
    (1, 16, 16, 5, 7, 0, False),      # no padding, no bias
    (1, 16, 32, 6, 3, 2, True),       # wide padding, an output narrower than one tile
])
def test_the_kernel_computes_caffe_convolution(kernel, batch, channels, outputs, height, width, pad, with_bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(outputs, channels, 3, 3, generator=generator) * 0.1
    bias = torch.randn(outputs, generator=generator) if with_bias else None
    ours = winograd.conv3x3(x.contiguous(memory_format=torch.channels_last), winograd.transform_weights(weight),
                            bias, pad, kernel)
    expected = reference(x, weight, bias, pad)
    assert ours.shape == expected.shape
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()


@pytest.mark.parametrize("batch, channels, height, width, kernel_size, pad, with_bias", [
    (1, 32, 24, 30, (5, 5), (0, 0), True),    # SRCNN's last layer: 5x5, 32 -> 1, 'valid'
    (2, 64, 17, 13, (3, 3), (1, 1), True),    # GLRL's and VDSR's last layers, a batch
    (1, 3, 6, 9, (7, 7), (3, 2), False),      # a kernel wider than the map's border, uneven padding, no bias
    (2, 5, 11, 14, (3, 5), (1, 2), True),     # kernel_h != kernel_w: rows and columns not mixed up
])
def test_the_kernel_computes_a_convolution_with_one_output_channel(kernel, batch, channels, height, width,
                                                                   kernel_size, pad, with_bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(1, channels, *kernel_size, generator=generator) * 0.1
    bias = torch.randn(1, generator=generator) if with_bias else None
    ours = winograd.single_output_conv(x, weight, bias, pad, kernel)
    expected = reference(x, weight, bias, pad)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()


NET = """
name: "mixed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 20 dim: 20 } } }
layer { name: "first" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "body" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "msra" }
                      bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "act" type: "PReLU" bottom: "b" top: "b" }
layer { name: "strided" type: "Convolution" bottom: "b" top: "c"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "msra" } } }
layer { name: "grouped" type: "Convolution" bottom: "b" top: "d"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 2 weight_filler { type: "msra" } } }
layer { name: "narrow" type: "Convolution" bottom: "b" top: "f"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "wide" type: "Convolution" bottom: "b" top: "e"
  convolution_param { num_output: 32 kernel_size: 5 pad: 2 weight_filler { type: "msra" } } }
layer { name: "last" type: "Convolution" bottom: "b" top: "out"
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
"""


@pytest.fixture
def mixed_net(tmp_path):
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(NET)
    weights = tmp_path / "weights.caffemodel"
    TorchNet(str(prototxt), "TEST", seed=0).save_caffemodel(weights)
    return prototxt, weights


def winograd_layers(net):
    return sorted(layer.name for layer in net.layers if getattr(layer, "winograd", False))


def single_output_layers(net):
    return sorted(layer.name for layer in net.layers if getattr(layer, "single_output", False))


def test_inference_nets_use_it_for_the_eligible_convolutions_only(kernel, mixed_net):
    net = open_net(*mixed_net)
    assert winograd_layers(net) == ["body"]  # not 1 or 16 channels in or out, strided, grouped or 5x5
    assert single_output_layers(net) == ["last"]  # the one convolution that makes one channel
    image = {"data": np.random.default_rng(0).random((1, 1, 20, 20), dtype=np.float32)}
    fast = net.run(image)
    direct = net.use_winograd(False).run(image)
    for name in net.output_names:
        scale = np.abs(direct[name]).max()
        assert np.abs(fast[name] - direct[name]).max() <= TOLERANCE * scale, name
        assert np.abs(fast[name] - direct[name]).max() > 0, f"{name}: the Winograd kernel did not run"


def test_new_weights_reach_the_kernel(kernel, mixed_net, tmp_path):
    prototxt, weights = mixed_net
    net = open_net(prototxt, weights)
    image = {"data": np.random.default_rng(1).random((1, 1, 20, 20), dtype=np.float32)}
    net.run(image)  # transforms the first weights
    other = tmp_path / "other.caffemodel"
    TorchNet(str(prototxt), "TEST", seed=1).save_caffemodel(other)
    net.load_weights(str(other))
    fresh = open_net(prototxt, other).use_winograd(False)
    for name in net.output_names:  # "out" comes from the one-output-channel kernel, "b" feeds it from Winograd
        np.testing.assert_allclose(net.run(image)[name], fresh.run(image)[name], rtol=0,
                                   atol=TOLERANCE * np.abs(fresh.run(image)[name]).max())


def test_gradients_and_training_use_the_direct_convolution(kernel, mixed_net):
    net = open_net(*mixed_net)
    x = torch.rand(1, 1, 20, 20, requires_grad=True)
    with_grad = net({"data": x})["out"]
    with_grad.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    direct = net.use_winograd(False)({"data": x.detach()})["out"]
    assert torch.equal(with_grad.detach(), direct)


def test_glrl_winograd_0_switches_it_off(kernel, mixed_net, monkeypatch):
    assert winograd_layers(open_net(*mixed_net)) != []  # on without the switch, so the switch is what turns it off
    monkeypatch.setenv(winograd.SWITCH_ENV, "0")
    assert winograd_layers(open_net(*mixed_net)) == []


def test_a_kernel_that_cannot_be_built_falls_back_to_onednn_and_says_why(mixed_net, monkeypatch, capsys):
    from torch.utils import cpp_extension

    def no_compiler(**_):
        raise RuntimeError("Error building extension 'glrl_winograd': c++: command not found")

    monkeypatch.setattr(winograd, "_kernel", None)
    monkeypatch.setattr(winograd, "_failure", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    net = open_net(*mixed_net)
    image = {"data": np.random.default_rng(2).random((1, 1, 20, 20), dtype=np.float32)}
    out = net.run(image)["out"]
    assert "is unavailable (RuntimeError: Error building extension 'glrl_winograd': c++: command not " \
           "found); using oneDNN's direct convolution" in capsys.readouterr().err
    np.testing.assert_array_equal(out, net.use_winograd(False).run(image)["out"])
    net.run(image)
    assert "unavailable" not in capsys.readouterr().err  # said once


def test_a_failed_compilation_is_reported_by_its_first_compiler_error(mixed_net, monkeypatch, capsys):
    from torch.utils import cpp_extension

    def compiler_error(**_):
        raise RuntimeError("Error building extension 'glrl_winograd': [1/3] c++ -MMD ... -c winograd_f43.cpp\n"
                           "FAILED: winograd_f43.o\n"
                           "winograd_f43.cpp:12:10: fatal error: ATen/native/CPUBlas.h: No such file or directory\n"
                           "compilation terminated.\nninja: build stopped: subcommand failed.\n")

    monkeypatch.setattr(winograd, "_kernel", None)
    monkeypatch.setattr(winograd, "_failure", None)
    monkeypatch.setattr(cpp_extension, "load", compiler_error)
    assert winograd.kernel() is None
    err = capsys.readouterr().err
    assert "unavailable (RuntimeError: winograd_f43.cpp:12:10: fatal error: ATen/native/CPUBlas.h: No such file " \
           "or directory)" in err
    assert "the build's files are in " in err


@pytest.mark.parametrize("wrong, name", [("conv3x3", "convolution"), ("conv3x3_weight_grad", "weight gradient"),
                                         ("prelu_backward", "PReLU backward"),
                                         ("single_output_conv", "one-output-channel convolution")])
def test_a_kernel_that_computes_wrongly_is_not_used(kernel, mixed_net, monkeypatch, capsys, wrong, name):
    class Wrong:
        conv3x3 = staticmethod(kernel.conv3x3)
        conv3x3_weight_grad = staticmethod(kernel.conv3x3_weight_grad)
        prelu_backward = staticmethod(kernel.prelu_backward)
        single_output_conv = staticmethod(kernel.single_output_conv)

    def off_by_one_percent(*args):
        result = getattr(kernel, wrong)(*args)
        return [t * 1.01 for t in result] if isinstance(result, list) else result * 1.01

    setattr(Wrong, wrong, staticmethod(off_by_one_percent))
    from torch.utils import cpp_extension

    monkeypatch.setattr(winograd, "_kernel", None)
    monkeypatch.setattr(winograd, "_failure", None)
    monkeypatch.setattr(cpp_extension, "load", lambda **_: Wrong())
    assert winograd.kernel() is None
    assert f"is unavailable (RuntimeError: the built kernel's {name} is 1.0e-02 off PyTorch's)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("batch, channels, outputs, height, width, pad", [
    (4, 64, 64, 31, 31, 1),     # GLRL's training patches: partial tiles at the edge
    (2, 24, 17, 13, 19, 0),     # channel counts off the vector width, no padding
    (1, 32, 24, 6, 3, 2),       # wide padding, an output narrower than one tile
    (3, 24, 24, 40, 36, 1),     # several blocks of tiles per thread
])
def test_the_kernel_computes_the_weight_gradient(kernel, batch, channels, outputs, height, width, pad):
    generator = torch.Generator().manual_seed(height)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(outputs, channels, 3, 3, generator=generator)
    grad = torch.randn(batch, outputs, height + 2 * pad - 2, width + 2 * pad - 2, generator=generator)
    ours = winograd.weight_gradient(x.contiguous(memory_format=torch.channels_last), grad, pad, kernel)
    expected = torch.ops.aten.convolution_backward(
        grad.double(), x.double(), weight.double(), None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
        [False, True, False])[1].float()
    assert ours.shape == weight.shape
    assert (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()
    assert torch.equal(winograd.weight_gradient(x, grad, pad, kernel), ours)  # the same sum every time


@pytest.mark.parametrize("batch, height, width, pad", [
    (3, 11, 9, 0), (3, 11, 9, 1), (3, 11, 9, 2),   # few tiles: the weight gradient on oneDNN
    (8, 30, 31, 1),                                 # 512 tiles: on the kernel
])
def test_with_gradients_the_kernel_gives_the_direct_convolutions_gradients(kernel, batch, height, width, pad):
    generator = torch.Generator().manual_seed(pad)
    x = torch.randn(batch, 24, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(20, 24, 3, 3, generator=generator) * 0.1
    bias = torch.randn(20, generator=generator)
    upstream = torch.randn_like(F.conv2d(x, weight, bias, padding=pad), memory_format=torch.channels_last)
    results = []
    for use_kernel in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = (winograd.Conv3x3Function.apply(*leaves, pad, kernel) if use_kernel
               else F.conv2d(leaves[0], leaves[1], leaves[2], padding=pad))
        (out * upstream).sum().backward()
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for name, ours, expected in zip(("output", "input grad", "weight grad", "bias grad"), *results):
        assert (ours - expected).abs().max() <= TOLERANCE * expected.abs().max(), name


def test_a_training_net_uses_it_only_when_asked_and_gets_the_direct_nets_gradients(kernel, mixed_net,
                                                                                   monkeypatch):
    monkeypatch.setattr(winograd, "MIN_GRADIENT_TILES", 0)  # the weight gradients on the kernel too
    prototxt, _ = mixed_net
    x = torch.rand(1, 1, 20, 20)
    nets = [TorchNet(str(prototxt), "TEST", seed=0).use_channels_last() for _ in range(2)]
    direct, fast = (net({"data": x})["out"] for net in nets)
    assert torch.equal(fast, direct)
    assert not any(layer.compiled_backward for layer in nets[1].layers if layer.type_name == "PReLU")
    nets[1].use_winograd(gradients=True)
    assert all(layer.compiled_backward for layer in nets[1].layers if layer.type_name == "PReLU")
    fast = nets[1]({"data": x})["out"]
    assert 0 < (fast - direct).abs().max() <= TOLERANCE * direct.abs().max()
    direct.sum().backward()
    fast.sum().backward()
    expected, ours = (net.layer_blobs() for net in nets)
    for name in ("first", "body", "act", "last"):
        for mine, theirs in zip(ours[name], expected[name]):
            assert theirs.grad.abs().max() > 0
            assert (mine.grad - theirs.grad).abs().max() <= TOLERANCE * theirs.grad.abs().max(), name


def reference_prelu_backward(grad, x, slope):
    """Caffe's PReLULayer::Backward_cpu, in float64."""
    grad, x = grad.double(), x.double()
    broadcast = slope.double().view((1, -1) + (1,) * (x.dim() - 2)) if slope.numel() > 1 else slope.double()
    negative = x <= 0
    grad_x = torch.where(negative, grad * broadcast, grad)
    dims = [0] + list(range(2, x.dim())) if slope.numel() > 1 else list(range(x.dim()))
    return grad_x.float(), (grad * x * negative).sum(dims).float().reshape(slope.shape)


@pytest.mark.parametrize("shape, channels_last, shared", [
    ((4, 64, 31, 31), False, False),   # GLRL's training batch
    ((4, 64, 31, 31), True, False),    # as glrl train --winograd stores it
    ((2, 17, 5, 9), True, False),      # channels off the vector width
    ((3, 24, 7, 6), False, True),      # one shared slope
    ((3, 24, 7, 6), True, True),
    ((5, 3, 11), False, False),        # 3-D and 2-D bottoms
    ((6, 5), False, False),
])
def test_the_kernel_computes_caffes_prelu_backward(kernel, shape, channels_last, shared):
    generator = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=generator)
    x[x.abs() < 0.1] = 0  # at x = 0 Caffe takes the slope side
    grad = torch.randn(shape, generator=generator)
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    slope = torch.rand(() if shared else (shape[1],), generator=generator)
    grad_x, grad_slope = kernel.prelu_backward(grad, x, slope.reshape(-1))
    expected_x, expected_slope = reference_prelu_backward(grad, x, slope)
    assert grad_x.stride() == x.stride()
    assert torch.equal(grad_x, expected_x)  # one rounding, as in Caffe
    magnitude = (grad * x).abs().sum() / (1 if shared else shape[1])
    assert (grad_slope.view(slope.shape) - expected_slope).abs().max() <= 1e-6 * magnitude
    assert torch.equal(kernel.prelu_backward(grad, x, slope.reshape(-1))[1], grad_slope)  # the same every time


def test_prelu_layers_take_gradients_of_any_layout_through_the_kernel(kernel):
    from glrl.backends.torch_layers import prelu

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 24, 6, 5, generator=generator).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 24, 6, 5, generator=generator)  # NCHW: other strides than x
    results = []
    for module in (kernel, None):
        leaves = [x.clone().requires_grad_(), torch.rand(24, generator=torch.Generator().manual_seed(1))]
        leaves[1].requires_grad_()
        (prelu(*leaves, module) * upstream).sum().backward()
        results.append([leaf.grad for leaf in leaves])
    for ours, expected in zip(*results):
        assert (ours - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_a_net_built_under_inference_mode_runs_on_the_kernel_too(kernel, mixed_net):
    prototxt, weights = mixed_net
    image = {"data": np.random.default_rng(3).random((1, 1, 20, 20), dtype=np.float32)}
    with torch.inference_mode():
        net = TorchNet(str(prototxt), "TEST", seed=0).use_channels_last().use_winograd()
        out = net.run(image)["out"]
    direct = open_net(prototxt, weights).use_winograd(False).run(image)["out"]
    assert 0 < np.abs(out - direct).max() <= TOLERANCE * np.abs(direct).max()
