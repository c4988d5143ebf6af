"""The PyTorch backend computes what Caffe 1.0 computes: every layer against a direct reference with
Caffe's definitions, the net-level rules (phases, in-place, sharing, multipliers, loss weights), fillers,
HDF5Data's reading order, and caffemodel weights both ways."""
from __future__ import annotations

import subprocess
import sys
import weakref

import h5py
import numpy as np
import pytest
import torch

from glrl.backends import open_net
from glrl.backends.base import InferenceNet
from glrl.backends.torch_layers import prelu
from glrl.backends.torch_net import TorchNet
from glrl.caffe import io
from glrl.errors import DataError, FormatError, ModelError

torch.set_num_threads(1)
DOUBLE = torch.float64


def build(text: str, phase: str = "TEST", **kwargs) -> TorchNet:
    return TorchNet(io.parse_net(text), phase, **kwargs)


def input_layer(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}\n'


def tensor(*shape: int, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=DOUBLE).requires_grad_(requires_grad)


def set_blobs(net: TorchNet, layer: str, *values) -> None:
    with torch.no_grad():
        for blob, value in zip(net.layer_blobs()[layer], values):
            blob.copy_(torch.as_tensor(value, dtype=blob.dtype))


# ----------------------------------------------------------------------------------------- convolution
def correlate(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride, pad, dilation, group) -> np.ndarray:
    """Caffe's convolution by its definition: a zero-padded cross-correlation per group."""
    n, c, h, wd = x.shape
    out_c, c_per_group, kh, kw = w.shape
    padded = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    padded[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, out_c, oh, ow))
    per_group = out_c // group
    for o in range(out_c):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation[0] * np.arange(kh)
                cols = j * stride[1] + dilation[1] * np.arange(kw)
                patch = padded[:, g * c_per_group:(g + 1) * c_per_group][:, :, rows][:, :, :, cols]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + b[o]
    return out


def test_convolution_is_caffes_cross_correlation_with_pad_stride_dilation_group_and_hw_forms():
    net = build(input_layer("data", 2, 4, 7, 8) + """
        layer { name: "conv" type: "Convolution" bottom: "data" top: "out"
          convolution_param { num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2
                              stride_h: 2 stride_w: 1 dilation: 2 } }""", dtype=DOUBLE)
    weight, bias = net.layer_blobs()["conv"]
    assert tuple(weight.shape) == (6, 2, 3, 2) and tuple(bias.shape) == (6,)
    set_blobs(net, "conv", tensor(6, 2, 3, 2, seed=1), tensor(6, seed=2))
    x = tensor(2, 4, 7, 8)
    out = net.forward({"data": x})["out"]
    expected = correlate(x.numpy(), weight.detach().numpy(), bias.detach().numpy(), (2, 1), (1, 2), (2, 2), 2)
    assert out.shape == expected.shape == tuple(net.blob_shapes["out"])
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_convolution_without_bias_and_with_repeated_kernel_values():
    net = build(input_layer("data", 1, 1, 5, 5) + """
        layer { name: "conv" type: "Convolution" bottom: "data" top: "out"
          convolution_param { num_output: 1 kernel_size: 3 kernel_size: 1 bias_term: false } }""", dtype=DOUBLE)
    (weight,) = net.layer_blobs()["conv"]
    assert tuple(weight.shape) == (1, 1, 3, 1)
    set_blobs(net, "conv", tensor(1, 1, 3, 1, seed=3))
    x = tensor(1, 1, 5, 5)
    expected = correlate(x.numpy(), weight.detach().numpy(), np.zeros(1), (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(net.forward({"data": x})["out"].detach().numpy(), expected, rtol=1e-12)


def test_deconvolution_scatters_each_input_through_the_kernel_with_caffes_weight_layout():
    net = build(input_layer("data", 1, 2, 3, 3) + """
        layer { name: "up" type: "Deconvolution" bottom: "data" top: "out"
          convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }""", dtype=DOUBLE)
    weight, bias = net.layer_blobs()["up"]
    assert tuple(weight.shape) == (2, 3, 4, 4)  # C x num_output/group x kh x kw
    set_blobs(net, "up", tensor(2, 3, 4, 4, seed=4), tensor(3, seed=5))
    x = tensor(1, 2, 3, 3)
    w, b = weight.detach().numpy(), bias.detach().numpy()
    full = np.zeros((1, 3, 2 * 2 + 4, 2 * 2 + 4))
    for c in range(2):
        for i in range(3):
            for j in range(3):
                full[0, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += x[0, c, i, j].item() * w[c]
    expected = full[:, :, 1:-1, 1:-1] + b[None, :, None, None]  # crop pad, output 2*(3-1)+4-2 = 6
    out = net.forward({"data": x})["out"]
    assert out.shape == (1, 3, 6, 6)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_convolution_settings_errors_name_the_layer():
    with pytest.raises(ModelError, match="layer 'conv'.*num_output"):
        build(input_layer("data", 1, 1, 5, 5) + 'layer { name: "conv" type: "Convolution" bottom: "data" '
              'top: "c" convolution_param { kernel_size: 3 } }')
    with pytest.raises(ModelError, match="group 2 must divide the input channels \\(3\\)"):
        build(input_layer("data", 1, 3, 5, 5) + 'layer { name: "conv" type: "Convolution" bottom: "data" '
              'top: "c" convolution_param { num_output: 4 kernel_size: 3 group: 2 } }')
    with pytest.raises(ModelError, match="too small"):
        build(input_layer("data", 1, 1, 2, 2) + 'layer { name: "conv" type: "Convolution" bottom: "data" '
              'top: "c" convolution_param { num_output: 1 kernel_size: 3 } }')


# ----------------------------------------------------------------------------------------- neurons
def test_relu_negative_slope_and_its_gradient():
    net = build(input_layer("data", 1, 1, 2, 3) + """
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" relu_param { negative_slope: 0.1 } }""",
                dtype=DOUBLE)
    x = torch.tensor([[[[-2.0, 0.0, 3.0], [1.5, -0.5, 0.0]]]], dtype=DOUBLE, requires_grad=True)
    out = net.forward({"data": x})["data"]
    np.testing.assert_allclose(out.detach().numpy(), np.where(x.detach() > 0, x.detach(), 0.1 * x.detach()))
    out.sum().backward()
    # Caffe: slope 1 where x > 0, negative_slope where x <= 0 (including 0).
    np.testing.assert_allclose(x.grad.numpy(), np.where(x.detach() > 0, 1.0, 0.1))


def test_prelu_per_channel_and_shared_slopes_forward_and_gradients():
    net = build(input_layer("data", 2, 3, 2, 2) + """
        layer { name: "act" type: "PReLU" bottom: "data" top: "act" }
        layer { name: "shared" type: "PReLU" bottom: "data" top: "shared" prelu_param { channel_shared: true } }""",
                dtype=DOUBLE)
    slopes, = net.layer_blobs()["act"]
    shared, = net.layer_blobs()["shared"]
    assert tuple(slopes.shape) == (3,) and tuple(shared.shape) == ()  # Caffe's layouts
    np.testing.assert_array_equal(slopes.detach().numpy(), 0.25)  # default filler: constant 0.25
    set_blobs(net, "act", [0.1, 0.2, 0.3])
    x = tensor(2, 3, 2, 2, requires_grad=True)
    blobs = net.forward({"data": x})
    a = torch.tensor([0.1, 0.2, 0.3], dtype=DOUBLE).view(1, 3, 1, 1)
    xd = x.detach()
    np.testing.assert_allclose(blobs["act"].detach().numpy(), torch.where(xd > 0, xd, a * xd).numpy())
    np.testing.assert_allclose(blobs["shared"].detach().numpy(), torch.where(xd > 0, xd, 0.25 * xd).numpy())
    top_grad = tensor(2, 3, 2, 2, seed=9)
    (blobs["act"] * top_grad).sum().backward()
    # Caffe's slope gradient: Σ over x <= 0 of top_diff · x, per channel.
    expected = (top_grad * xd * (xd <= 0)).sum(dim=(0, 2, 3))
    np.testing.assert_allclose(slopes.grad.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), (top_grad * torch.where(xd > 0, 1.0, a)).numpy(), rtol=1e-12)


def test_prelu_gradients_at_zero_take_the_slope_side_and_bf16_slopes_accumulate_in_float():
    net = build(input_layer("data", 1, 2, 1, 3) + """
        layer { name: "act" type: "PReLU" bottom: "data" top: "act" }""", dtype=DOUBLE)
    set_blobs(net, "act", [0.1, 0.3])
    slopes, = net.layer_blobs()["act"]
    x = torch.tensor([[[[0.0, 2.0, -1.0]], [[-3.0, 0.0, 0.5]]]], dtype=DOUBLE, requires_grad=True)
    out = net.forward({"data": x})["act"]
    out.backward(torch.full_like(out, 2.0))
    # Caffe: x <= 0 (0 included) takes the slope for the bottom diff and adds top_diff · x to the slope diff
    np.testing.assert_allclose(x.grad.numpy(), [[[[0.2, 2.0, 0.2]], [[0.6, 0.6, 2.0]]]])
    np.testing.assert_allclose(slopes.grad.numpy(), [-2.0, -6.0])

    xb = torch.randn(4, 2, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    slope = torch.tensor([0.1, 0.3], dtype=torch.float32, requires_grad=True)
    out = prelu(xb, slope)
    out.sum().backward()
    assert out.dtype == xb.grad.dtype == torch.bfloat16 and slope.grad.dtype == torch.float32
    expected = (xb.detach().float() * (xb.detach() <= 0)).sum(dim=(0, 2, 3))
    np.testing.assert_allclose(slope.grad.numpy(), expected.numpy(), rtol=1e-5)


def test_under_bf16_autocast_a_single_channel_convolution_computes_in_fp32():
    net = build(input_layer("data", 1, 1, 6, 6) + """
        layer { name: "features" type: "Convolution" bottom: "data" top: "features"
          convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
        layer { name: "image" type: "Convolution" bottom: "features" top: "image"
          convolution_param { num_output: 1 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }""",
                seed=3)
    x = torch.rand(1, 1, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        blobs = net.forward({"data": x})
    assert blobs["features"].dtype == torch.bfloat16 and blobs["image"].dtype == torch.float32
    weight, bias = net.layer_blobs()["image"]
    expected = torch.nn.functional.conv2d(blobs["features"].float(), weight, bias, padding=1)
    torch.testing.assert_close(blobs["image"], expected, rtol=0, atol=0)
    with pytest.raises(ModelError, match="precision"):
        net.use_precision("fp16")


def test_sigmoid_tanh_and_power():
    net = build(input_layer("data", 1, 4) + """
        layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
        layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
        layer { name: "pow" type: "Power" bottom: "data" top: "pow" power_param { power: 3 scale: 0.5 shift: 2 } }
        layer { name: "const" type: "Power" bottom: "data" top: "const" power_param { power: 0 scale: 3 } }
        layer { name: "silence" type: "Silence" bottom: "sig" bottom: "tanh" }""", dtype=DOUBLE)
    x = torch.tensor([[-1.0, 0.0, 0.5, 2.0]], dtype=DOUBLE, requires_grad=True)
    blobs = net.forward({"data": x})
    xd = x.detach().numpy()
    np.testing.assert_allclose(blobs["sig"].detach().numpy(), 1 / (1 + np.exp(-xd)))
    np.testing.assert_allclose(blobs["tanh"].detach().numpy(), np.tanh(xd))
    np.testing.assert_allclose(blobs["pow"].detach().numpy(), (2 + 0.5 * xd) ** 3)
    np.testing.assert_array_equal(blobs["const"].detach().numpy(), 1.0)
    (blobs["pow"].sum() + blobs["const"].sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * 0.5 * (2 + 0.5 * xd) ** 2)  # the constant adds nothing
    assert net.output_names == ["const", "pow"]  # Silence consumed sig and tanh


# ----------------------------------------------------------------------------------------- plumbing
def test_eltwise_sum_with_coeff_prod_and_max_routing_ties_to_the_first_bottom():
    net = build(input_layer("a", 1, 3) + input_layer("b", 1, 3) + """
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum"
                eltwise_param { coeff: 0.5 coeff: -2 } }
        layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
        layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "max" eltwise_param { operation: MAX } }""",
                dtype=DOUBLE)
    a = torch.tensor([[1.0, 5.0, -1.0]], dtype=DOUBLE, requires_grad=True)
    b = torch.tensor([[1.0, 2.0, 3.0]], dtype=DOUBLE, requires_grad=True)
    blobs = net.forward({"a": a, "b": b})
    np.testing.assert_allclose(blobs["sum"].detach().numpy(), [[-1.5, -1.5, -6.5]])
    np.testing.assert_allclose(blobs["prod"].detach().numpy(), [[1.0, 10.0, -3.0]])
    np.testing.assert_allclose(blobs["max"].detach().numpy(), [[1.0, 5.0, 3.0]])
    blobs["max"].sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [[1.0, 1.0, 0.0]])  # the tie at index 0 goes to a
    np.testing.assert_array_equal(b.grad.numpy(), [[0.0, 0.0, 1.0]])
    with pytest.raises(ModelError, match="coeff is only allowed with operation SUM"):
        build(input_layer("a", 1, 3) + input_layer("b", 1, 3) + 'layer { name: "p" type: "Eltwise" bottom: "a" '
              'bottom: "b" top: "p" eltwise_param { operation: PROD coeff: 1 coeff: 2 } }')


def test_concat_slice_and_split():
    net = build(input_layer("a", 2, 3, 2) + input_layer("b", 2, 1, 2) + """
        layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
        layer { name: "cut" type: "Slice" bottom: "cat" top: "p" top: "q" top: "r"
                slice_param { axis: 1 slice_point: 1 slice_point: 3 } }
        layer { name: "halves" type: "Slice" bottom: "a" top: "h1" top: "h2" slice_param { axis: -1 } }
        layer { name: "split" type: "Split" bottom: "r" top: "r1" top: "r2" }""", dtype=DOUBLE)
    a, b = tensor(2, 3, 2, requires_grad=True), tensor(2, 1, 2, seed=1)
    blobs = net.forward({"a": a, "b": b})
    cat = torch.cat([a, b], 1).detach()
    assert blobs["cat"].shape == (2, 4, 2)
    np.testing.assert_array_equal(blobs["p"].detach(), cat[:, :1])
    np.testing.assert_array_equal(blobs["q"].detach(), cat[:, 1:3])
    np.testing.assert_array_equal(blobs["r"].detach(), cat[:, 3:])
    np.testing.assert_array_equal(blobs["h1"].detach(), a.detach()[:, :, :1])
    (blobs["r1"].sum() + 2 * blobs["r2"].sum() + blobs["q"].sum()).backward()
    expected = torch.zeros(2, 3, 2, dtype=DOUBLE)
    expected[:, 1:3] = 1.0
    np.testing.assert_array_equal(a.grad.numpy(), expected.numpy())  # r (from b) got 1 + 2, a got none of it
    with pytest.raises(ModelError, match="slice points"):
        build(input_layer("a", 2, 3) + 'layer { name: "s" type: "Slice" bottom: "a" top: "x" top: "y" '
              'slice_param { slice_point: 3 } }')


def test_scale_and_bias_broadcast_over_axis_and_num_axes():
    net = build(input_layer("data", 2, 3, 4, 5) + input_layer("factor", 3, 4) + """
        layer { name: "scale" type: "Scale" bottom: "data" top: "scaled"
                scale_param { axis: 1 num_axes: 2 bias_term: true } }
        layer { name: "by_bottom" type: "Scale" bottom: "data" bottom: "factor" top: "by_bottom" }
        layer { name: "bias" type: "Bias" bottom: "data" top: "shifted" bias_param { axis: -1 } }""", dtype=DOUBLE)
    scale, bias = net.layer_blobs()["scale"]
    assert tuple(scale.shape) == (3, 4) and tuple(bias.shape) == (3, 4)
    np.testing.assert_array_equal(scale.detach().numpy(), 1.0)  # Scale's default filler: constant 1
    s, c, shift = tensor(3, 4, seed=1), tensor(3, 4, seed=2), tensor(5, seed=3)
    set_blobs(net, "scale", s, c)
    set_blobs(net, "bias", shift)
    x, factor = tensor(2, 3, 4, 5), tensor(3, 4, seed=4)
    blobs = net.forward({"data": x, "factor": factor})
    np.testing.assert_allclose(blobs["scaled"].detach().numpy(), (x * s[:, :, None] + c[:, :, None]).numpy())
    np.testing.assert_allclose(blobs["by_bottom"].detach().numpy(), (x * factor[:, :, None]).numpy())
    np.testing.assert_allclose(blobs["shifted"].detach().numpy(), (x + shift).numpy())


def test_flatten_and_reshape_with_copied_and_inferred_dimensions():
    net = build(input_layer("data", 2, 3, 4, 5) + """
        layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
        layer { name: "mid" type: "Flatten" bottom: "data" top: "mid" flatten_param { axis: 1 end_axis: 2 } }
        layer { name: "re" type: "Reshape" bottom: "data" top: "re" reshape_param { shape { dim: 0 dim: -1 dim: 10 } } }
        layer { name: "part" type: "Reshape" bottom: "data" top: "part"
                reshape_param { shape { dim: 2 dim: 2 } axis: 2 num_axes: 1 } }""")
    x = torch.arange(120, dtype=torch.float32).reshape(2, 3, 4, 5)
    blobs = net.forward({"data": x})
    assert blobs["flat"].shape == (2, 60) and blobs["mid"].shape == (2, 12, 5)
    assert blobs["re"].shape == (2, 6, 10) and blobs["part"].shape == (2, 3, 2, 2, 5)
    np.testing.assert_array_equal(blobs["re"].numpy().ravel(), x.numpy().ravel())
    assert net.blob_shapes["re"] == (2, 6, 10)


def test_euclidean_loss_is_half_the_sum_of_squares_over_the_batch_and_scaled_by_loss_weight():
    text = input_layer("pred", 4, 1, 3, 3) + input_layer("label", 4, 9) + """
        layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "label" top: "loss" LOSS_WEIGHT }"""
    pred, label = tensor(4, 1, 3, 3, requires_grad=True), tensor(4, 9, seed=1)
    net = build(text.replace("LOSS_WEIGHT", ""), dtype=DOUBLE)
    blobs = net.forward({"pred": pred, "label": label})
    expected = ((pred.detach().reshape(4, 9) - label) ** 2).sum() / (2 * 4)
    np.testing.assert_allclose(blobs["loss"].item(), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(net.loss(blobs).item(), expected.item(), rtol=1e-12)
    weighted = build(text.replace("LOSS_WEIGHT", "loss_weight: 0.25"), dtype=DOUBLE)
    loss = weighted.loss(weighted.forward({"pred": pred, "label": label}))
    np.testing.assert_allclose(loss.item(), 0.25 * expected.item(), rtol=1e-12)
    loss.backward()
    np.testing.assert_allclose(pred.grad.numpy().reshape(4, 9),
                               0.25 * (pred.detach().reshape(4, 9) - label).numpy() / 4, rtol=1e-12)


def test_a_non_loss_top_with_a_loss_weight_adds_its_sum():
    net = build(input_layer("data", 2, 3) + """
        layer { name: "p" type: "Power" bottom: "data" top: "sq" loss_weight: 0.5 power_param { power: 2 } }""",
                dtype=DOUBLE)
    x = tensor(2, 3)
    np.testing.assert_allclose(net.loss(net.forward({"data": x})).item(), 0.5 * (x ** 2).sum().item())


# ----------------------------------------------------------------------------------------- the net
TRAIN_TEST = input_layer("data", 1, 1, 4, 4) + """
    layer { name: "train_only" type: "Power" bottom: "data" top: "t" include { phase: TRAIN } }
    layer { name: "not_test" type: "Power" bottom: "data" top: "n" exclude { phase: TEST } }
    layer { name: "staged" type: "Power" bottom: "data" top: "s" include { stage: "deep" } }
    layer { name: "leveled" type: "Power" bottom: "data" top: "l" include { min_level: 2 } }
    layer { name: "always" type: "Power" bottom: "data" top: "a" }"""


def test_phase_stage_and_level_rules_choose_the_layers():
    assert build(TRAIN_TEST, "TRAIN").output_names == ["a", "n", "t"]
    assert build(TRAIN_TEST, "TEST").output_names == ["a"]
    assert build(TRAIN_TEST, "TEST", stages=["deep"], level=3).output_names == ["a", "l", "s"]
    with pytest.raises(ModelError, match="unknown phase"):
        build(TRAIN_TEST, "VALIDATE")


def test_in_place_layers_rebind_the_name_and_earlier_readers_see_the_old_value():
    net = build(input_layer("data", 1, 3) + """
        layer { name: "copy" type: "Power" bottom: "data" top: "x" }
        layer { name: "before" type: "Power" bottom: "x" top: "before" }
        layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
        layer { name: "after" type: "Power" bottom: "x" top: "after" power_param { scale: 3 } }""", dtype=DOUBLE)
    x = torch.tensor([[-1.0, 2.0, -3.0]], dtype=DOUBLE, requires_grad=True)
    blobs = net.forward({"data": x})
    np.testing.assert_array_equal(blobs["before"].detach(), [[-1.0, 2.0, -3.0]])
    np.testing.assert_array_equal(blobs["x"].detach(), [[0.0, 2.0, 0.0]])
    np.testing.assert_array_equal(blobs["after"].detach(), [[0.0, 6.0, 0.0]])
    assert net.output_names == ["after", "before"]
    (blobs["before"].sum() + blobs["after"].sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 4.0, 1.0]])  # 1 + 3 where x > 0: gradients add up


def test_without_autograd_a_relu_in_place_after_a_convolution_overwrites_its_map_and_computes_the_same():
    net = build(input_layer("data", 1, 1, 6, 6) + """
        layer { name: "clip" type: "ReLU" bottom: "data" top: "data" }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
                convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
        layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
        layer { name: "out" type: "Convolution" bottom: "c" top: "out"
                convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }""", dtype=DOUBLE)
    set_blobs(net, "conv", tensor(2, 1, 3, 3, seed=1), [0.1, -0.2])
    set_blobs(net, "out", tensor(1, 2, 3, 3, seed=2), [0.0])
    conv = next(layer for layer in net.layers if layer.name == "conv")
    made = []
    conv.forward = lambda x, forward=conv.forward: made.append(forward(x)[0]) or [made[-1]]
    x = tensor(1, 1, 6, 6, seed=3)
    given = x.clone()
    with_autograd = net.forward({"data": x})["out"].detach()
    with torch.no_grad():
        without = net.forward({"data": x})["out"]
    torch.testing.assert_close(without, with_autograd, rtol=0, atol=1e-12)
    assert (made[0] < 0).any() and not (made[1] < 0).any()  # the map itself was rectified the second time
    assert torch.equal(x, given)  # a ReLU on the caller's input never writes into it


def test_forward_with_keep_drops_each_blob_after_its_last_reader_and_computes_the_same():
    net = build(input_layer("data", 1, 3) + """
        layer { name: "copy" type: "Power" bottom: "data" top: "x" }
        layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
        layer { name: "twice" type: "Power" bottom: "x" top: "twice" power_param { scale: 2 } }
        layer { name: "sum" type: "Eltwise" bottom: "twice" bottom: "data" top: "out" }""", dtype=DOUBLE)
    relu, total = (next(layer for layer in net.layers if layer.name == name) for name in ("relu", "sum"))
    relu_output, alive_at_sum = [], []

    def remember(x, forward=relu.forward):
        outputs = forward(x)
        relu_output.append(weakref.ref(outputs[0]))
        return outputs

    def check(*bottoms, forward=total.forward):
        alive_at_sum.append(relu_output[-1]() is not None)
        return forward(*bottoms)

    relu.forward, total.forward = remember, check
    data = torch.tensor([[-1.0, 2.0, -3.0]], dtype=DOUBLE)
    lean = net.forward({"data": data}, keep=["out"])
    full = net.forward({"data": data})
    assert alive_at_sum == [False, True]  # with keep, "x" is gone once "twice" has read it
    assert set(lean) == {"out"} and {"x", "twice", "out"} <= set(full)
    np.testing.assert_array_equal(lean["out"], full["out"])
    np.testing.assert_array_equal(lean["out"], [[-1.0, 6.0, -3.0]])


def test_propagate_down_false_stops_the_gradient_to_that_bottom_only():
    net = build(input_layer("a", 1, 2) + input_layer("b", 1, 2) + """
        layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"
                propagate_down: true propagate_down: false }""", dtype=DOUBLE)
    a, b = tensor(1, 2, requires_grad=True), tensor(1, 2, seed=1, requires_grad=True)
    net.loss(net.forward({"a": a, "b": b})).backward()
    np.testing.assert_allclose(a.grad.numpy(), (a - b).detach().numpy())
    assert b.grad is None


SHARED = input_layer("data", 1, 2, 5, 5) + """
    layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
      param { name: "w" } param { name: "b" lr_mult: 2 decay_mult: 0 }
      convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
    layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
      param { name: "w" lr_mult: 0.5 } param { name: "b" }
      convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
    layer { name: "act" type: "PReLU" bottom: "c2" top: "c2" param { lr_mult: 0 } }"""


def test_shared_parameters_are_one_object_whose_gradient_sums_both_uses():
    net = build(SHARED, dtype=DOUBLE, seed=0)
    blobs = net.layer_blobs()
    assert blobs["c1"][0] is blobs["c2"][0] and blobs["c1"][1] is blobs["c2"][1]
    params = net.learnable_params()
    assert [(p.key, p.layer_name, p.index) for p in params] == [("w", "c1", 0), ("b", "c1", 1), ("act/0", "act", 0)]
    # Caffe: a sharer may set the owner's unset lr_mult; the owner's set ones stay.
    assert [(p.lr_mult, p.decay_mult) for p in params] == [(0.5, 1.0), (2.0, 0.0), (0.0, 1.0)]
    assert list(net.parameters()) == [p.param for p in params]
    assert params[2].param.requires_grad is False  # lr_mult 0: Caffe computes no gradient for it

    w = params[0].param
    x = tensor(1, 2, 5, 5, seed=7)
    out = net.forward({"data": x})["c2"]
    out.sum().backward()
    # The same gradient from an unshared twin: two independent weights, summed.
    w1 = w.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    b = params[1].param.detach()
    slope = params[2].param.detach().view(1, 2, 1, 1)
    mid = torch.nn.functional.conv2d(x, w1, b, padding=1)
    y = torch.nn.functional.conv2d(mid, w2, b, padding=1)
    torch.where(y > 0, y, slope * y).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), (w1.grad + w2.grad).numpy(), rtol=1e-10)


def test_sharing_rules_shape_and_multiplier_mismatches_are_refused():
    mismatched_shape = SHARED.replace("num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: \"gaussian\" } } }\n"
                                      "    layer { name: \"act\"", "num_output: 3 kernel_size: 3 pad: 1 } }\n"
                                      "    layer { name: \"act\"")
    with pytest.raises(ModelError, match="cannot share param 'w' owned by layer 'c1'.*shapes differ"):
        build(mismatched_shape)
    with pytest.raises(ModelError, match="mismatched lr_mult"):
        build(SHARED.replace('param { name: "b" }', 'param { name: "b" lr_mult: 1 }'))


def test_permissive_sharing_needs_equal_counts_and_views_the_owner():
    net = build(input_layer("data", 1, 6) + """
        layer { name: "s1" type: "Scale" bottom: "data" top: "s1" scale_param { num_axes: -1 } param { name: "k" } }
        layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 1 dim: 2 dim: 3 } } }
        layer { name: "s2" type: "Scale" bottom: "r" top: "s2" scale_param { num_axes: -1 }
                param { name: "k" share_mode: PERMISSIVE } }""")
    set_blobs(net, "s1", torch.arange(6.0))
    x = torch.ones(1, 6)
    blobs = net.forward({"data": x})
    np.testing.assert_array_equal(blobs["s2"].detach().numpy().ravel(), np.arange(6.0))
    assert tuple(net.layer_blobs()["s2"][0].shape) == (2, 3)


def test_unknown_layer_types_and_blob_wiring_errors():
    with pytest.raises(ModelError, match="no layer type 'Pooling'") as caught:
        build(input_layer("data", 1, 1, 4, 4) + 'layer { name: "pool" type: "Pooling" bottom: "data" top: "p" }')
    assert "Convolution" in caught.value.hint and "EuclideanLoss" in caught.value.hint
    with pytest.raises(ModelError, match="bottom blob 'nothing'"):
        build(input_layer("data", 1, 2) + 'layer { name: "p" type: "Power" bottom: "nothing" top: "p" }')
    with pytest.raises(ModelError, match="produced by more than one layer"):
        build(input_layer("data", 1, 2) + 'layer { name: "p" type: "Power" bottom: "data" top: "q" }'
              'layer { name: "p2" type: "Power" bottom: "data" top: "q" }')


BAD_LAYER_INPUTS = (input_layer("data", 1, 2, 4, 4) + input_layer("other", 1, 2, 3, 4) + input_layer("line", 1, 2, 5)
                    + input_layer("vec", 4) + input_layer("few", 1, 3))


def bad_conv(settings: str, bottoms: str = 'bottom: "data"', tops: str = 'top: "c"') -> str:
    return f'layer {{ name: "bad" type: "Convolution" {bottoms} {tops} convolution_param {{ {settings} }} }}'


def bad_layer(kind: str, settings: str = "", bottoms: str = 'bottom: "data"', tops: str = 'top: "t"') -> str:
    return f'layer {{ name: "bad" type: "{kind}" {bottoms} {tops} {settings} }}'


@pytest.mark.parametrize("text, message", [
    (bad_layer("Power", bottoms='bottom: "data" bottom: "data"'), r"takes 1 bottom\(s\), the prototxt gives 2"),
    (bad_layer("Concat", "concat_param { axis: 4 }", 'bottom: "data" bottom: "data"'),
     "axis 4 is out of range for a blob with 4 axes"),
    (bad_conv("num_output: 2 kernel_size: 3 axis: 2"), r"only axis 1 \(channels\) is supported"),
    (bad_conv("num_output: 2 kernel_size: 3", tops='top: "c" top: "d"'),
     "needs one top per bottom, got 1 bottoms and 2"),
    (bad_conv("num_output: 2 kernel_size: 3", 'bottom: "data" bottom: "other"', 'top: "c" top: "d"'),
     r"all bottoms must have the same shape, got \(1, 2, 4, 4\) and \(1, 2, 3, 4\)"),
    (bad_conv("num_output: 2 kernel_size: 1", 'bottom: "few"'), r"needs a blob with 3 to 5 axes .*got shape \(1, 3\)"),
    (bad_conv("num_output: 2 kernel_size: 3 stride: 0"), "kernel, stride and dilation must be positive"),
    (bad_conv("num_output: 2 kernel_h: 3 kernel_w: 3", 'bottom: "line"'), "kernel_h/kernel_w need 2 spatial axes"),
    (bad_conv("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3"),
     "give either kernel or kernel_h/kernel_w, not both"),
    (bad_conv("num_output: 2 kernel_h: 3"), "kernel_h and kernel_w must be given together"),
    (bad_conv("num_output: 2"), "convolution_param.kernel_size must be given"),
    (bad_conv("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3"), "kernel has 3 values; give 1 or 2"),
    (bad_layer("PReLU", bottoms='bottom: "vec"'), r"needs a bottom with at least 2 axes, got shape \(4,\)"),
    (bad_layer("Concat", "concat_param { axis: 1 concat_dim: 1 }", 'bottom: "data" bottom: "data"'),
     "give either axis or concat_dim, not both"),
    (bad_layer("Concat", "", 'bottom: "data" bottom: "other"'),
     r"bottom shapes \(1, 2, 4, 4\) and \(1, 2, 3, 4\) differ outside axis 1"),
    (bad_layer("Slice", "slice_param { axis: 1 slice_dim: 1 }", tops='top: "a" top: "b"'),
     "give either axis or slice_dim, not both"),
    (bad_layer("Slice", "slice_param { slice_point: 1 slice_point: 2 }", tops='top: "a" top: "b"'),
     r"2 slice_point\(s\) for 2 tops; give one fewer than tops"),
    (bad_layer("Slice", "", 'bottom: "few"', 'top: "a" top: "b"'), "axis 1 has size 3, which does not split into 2"),
    (bad_layer("Flatten", "flatten_param { axis: 2 end_axis: 1 }"), "end_axis 1 comes before axis 2"),
    (bad_layer("Reshape", "reshape_param { shape { dim: -1 dim: -1 } }"), "at most one dimension .* may be -1"),
    (bad_layer("Reshape", "reshape_param { shape { dim: -2 } }"),
     r"reshape_param.shape \[-2\] has a dimension below -1"),
    (bad_layer("Reshape", "reshape_param { shape { dim: 1 } num_axes: -2 }"),
     r"reshape_param.num_axes must be -1 \(all\) or at least 0"),
    (bad_layer("Reshape", "reshape_param { shape { dim: 1 } axis: 7 }"), "reshape_param.axis 7 is out of range"),
    (bad_layer("Reshape", "reshape_param { shape { dim: 16 } axis: 3 num_axes: 2 }"),
     "axis 3 with num_axes 2 runs past"),
    (bad_layer("Reshape", "reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 } }"),
     "dimension 4 copies axis 4, which shape .* lacks"),
    (bad_layer("Reshape", "reshape_param { shape { dim: -1 dim: 3 } }"), r"cannot infer the -1 dimension: 32 elements"),
    (bad_layer("Reshape", "reshape_param { shape { dim: 2 dim: 2 } }"),
     r"shape \(2, 2\) does not hold the 32 elements"),
    (bad_layer("Eltwise", "eltwise_param { coeff: 1 }", 'bottom: "data" bottom: "data"'),
     "1 coeff values for 2 bottoms; give one each"),
    (bad_layer("Eltwise", "", 'bottom: "data" bottom: "other"'), "bottoms must have equal shapes"),
    (bad_layer("Scale", "scale_param { num_axes: -2 }"), r"num_axes must be -1 \(all remaining axes\) or at least 0"),
    (bad_layer("Scale", "scale_param { axis: 2 num_axes: 5 }"), "axis 2 with num_axes 5 runs past bottom shape"),
    (bad_layer("Scale", "", 'bottom: "data" bottom: "few"'), r"operand shape \(1, 3\) does not match bottom shape"),
    (bad_layer("EuclideanLoss", "", 'bottom: "data" bottom: "few"'),
     "bottoms must hold the same number of values per item"),
])
def test_bad_layer_settings_are_errors_naming_the_layer_and_the_setting(text, message):
    with pytest.raises(ModelError, match=r"layer 'bad' \([A-Za-z]+\): " + message):
        build(BAD_LAYER_INPUTS + text)


def test_inputs_are_checked_by_name_and_run_reshapes_to_any_size():
    net = build(input_layer("data", 1, 1, 8, 8) + """
        layer { name: "conv" type: "Convolution" bottom: "data" top: "out"
                convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }""",
                seed=3)
    assert isinstance(net, InferenceNet)
    out = net.run({"data": np.ones((2, 1, 5, 7), np.float32)})
    assert out["out"].shape == (2, 2, 5, 7) and out["out"].dtype == np.float32
    with pytest.raises(ModelError, match="needs the input\\(s\\) data"):
        net.run({})
    with pytest.raises(ModelError, match="'image' is not an input"):
        net.run({"data": np.ones((1, 1, 4, 4), np.float32), "image": np.ones(1)})
    with pytest.raises(ModelError, match="layer 'conv' \\(Convolution\\) failed"):
        net.run({"data": np.ones((1, 3, 4, 4), np.float32)})


# ----------------------------------------------------------------------------------------- fillers
def filled(filler: str, shape=(64, 32, 3, 3), seed=0) -> torch.Tensor:
    net = build(input_layer("data", 1, shape[1], 5, 5) + f"""
        layer {{ name: "conv" type: "Convolution" bottom: "data" top: "c"
          convolution_param {{ num_output: {shape[0]} kernel_h: {shape[2]} kernel_w: {shape[3]} pad: 1
                               weight_filler {{ {filler} }} }} }}""", seed=seed)
    return net.layer_blobs()["conv"][0].detach()


@pytest.mark.parametrize("filler,variance", [
    ('type: "xavier"', 1.0 / (32 * 9)),  # U(-a, a), a = sqrt(3 / fan_in): variance 1 / fan_in
    ('type: "xavier" variance_norm: FAN_OUT', 1.0 / (64 * 9)),
    ('type: "xavier" variance_norm: AVERAGE', 1.0 / ((32 * 9 + 64 * 9) / 2)),
    ('type: "msra"', 2.0 / (32 * 9)),
    ('type: "msra" variance_norm: FAN_OUT', 2.0 / (64 * 9)),
    ('type: "gaussian" std: 0.05 mean: 0.3', 0.05 ** 2),
])
def test_filler_variances_follow_caffes_fan_definitions(filler, variance):
    values = filled(filler)
    assert values.var().item() == pytest.approx(variance, rel=0.08)


def test_fillers_ranges_sparsity_constants_and_seeds():
    xavier = filled('type: "xavier"')
    assert xavier.abs().max().item() <= np.sqrt(3.0 / (32 * 9))
    uniform = filled('type: "uniform" min: -0.5 max: 2')
    assert uniform.min().item() >= -0.5 and uniform.max().item() <= 2
    assert uniform.mean().item() == pytest.approx(0.75, abs=0.05)
    sparse = filled('type: "gaussian" sparse: 16')  # keep probability 16 / num_output = 1/4
    assert (sparse != 0).double().mean().item() == pytest.approx(0.25, abs=0.03)
    np.testing.assert_array_equal(filled('type: "constant" value: 0.7').numpy(), np.float32(0.7))
    assert torch.equal(filled('type: "msra"', seed=5), filled('type: "msra"', seed=5))
    assert not torch.equal(filled('type: "msra"', seed=5), filled('type: "msra"', seed=6))
    with pytest.raises(ModelError, match="unknown filler type 'orthogonal'"):
        filled('type: "orthogonal"')


def test_bilinear_filler_makes_deconvolution_upsample_bilinearly():
    net = build(input_layer("data", 1, 1, 4, 4) + """
        layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
          convolution_param { num_output: 1 kernel_size: 4 stride: 2 pad: 1 bias_term: false
                              weight_filler { type: "bilinear" } } }""")
    kernel = net.layer_blobs()["up"][0].detach().numpy()[0, 0]
    np.testing.assert_allclose(kernel[0], [0.0625, 0.1875, 0.1875, 0.0625])
    out = net.run({"data": np.ones((1, 1, 4, 4), np.float32)})["up"]
    np.testing.assert_allclose(out[0, 0, 1:-1, 1:-1], 1.0)  # a constant stays constant inside


# ----------------------------------------------------------------------------------------- HDF5Data
def write_h5(path, data, label) -> None:
    with h5py.File(path, "w") as handle:
        handle["data"] = np.asarray(data, np.float32)
        handle["label"] = np.asarray(label, np.float32)


def hdf5_net(source, batch_size: int, shuffle: bool = False) -> str:
    return f"""
        layer {{ name: "patches" type: "HDF5Data" top: "data" top: "label"
                hdf5_data_param {{ source: "{source}" batch_size: {batch_size} shuffle: {str(shuffle).lower()} }} }}
        layer {{ name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "label" top: "loss" }}"""


@pytest.fixture
def two_files(tmp_path):
    ids_a, ids_b = np.arange(3), np.arange(100, 102)
    write_h5(tmp_path / "a.h5", ids_a[:, None, None] * np.ones((3, 1, 2)), -ids_a[:, None] * np.ones((3, 2)))
    write_h5(tmp_path / "b.h5", ids_b[:, None, None] * np.ones((2, 1, 2)), -ids_b[:, None] * np.ones((2, 2)))
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")  # relative entries: found beside the list
    return tmp_path / "list.txt"


def test_hdf5_data_yields_files_in_order_and_rows_in_order_wrapping_around(two_files):
    net = build(hdf5_net(two_files, 4), "TRAIN")
    assert net.blob_shapes["data"] == (4, 1, 2) and net.blob_shapes["label"] == (4, 2)
    batches = [net.forward() for _ in range(3)]
    ids = [b["data"][:, 0, 0].tolist() for b in batches]
    assert ids == [[0, 1, 2, 100], [101, 0, 1, 2], [100, 101, 0, 1]]
    assert batches[0]["label"][:, 0].tolist() == [0, -1, -2, -100]
    # (id - (-id))² over 2 values per row, halved and averaged over the batch of 4: Σ id².
    assert batches[0]["loss"].item() == pytest.approx(0 + 1 + 4 + 100 ** 2)
    given = net.forward({"data": torch.zeros(4, 1, 2), "label": torch.ones(4, 2)})
    assert given["loss"].item() == pytest.approx(8 / (2 * 4))
    assert net.forward()["data"][:, 0, 0].tolist() == [2, 100, 101, 0]  # given tops read nothing


def test_hdf5_data_shuffle_is_seeded_and_each_pass_covers_every_row_once(two_files):
    def first_epochs(seed):
        net = build(hdf5_net(two_files, 5, shuffle=True), "TRAIN", seed=seed)
        return [net.forward()["data"][:, 0, 0].tolist() for _ in range(4)]

    epochs = first_epochs(1)
    assert epochs == first_epochs(1)
    assert epochs != first_epochs(2)
    for batch in epochs:
        assert sorted(batch) == [0, 1, 2, 100, 101]  # 5 rows per pass, batch 5: one pass each
    assert len({tuple(batch) for batch in epochs}) > 1  # files and rows are reshuffled at every wrap


def test_hdf5_data_unseeded_shuffle_is_caffes_rand_stream(two_files):
    from glrl.data_prep.reader import CaffeHDF5Reader  # checked against real Caffe in test_data_prep

    net = build(hdf5_net(two_files, 3, shuffle=True), "TRAIN")  # seed None: rand() unseeded, as in Caffe
    caffe_order = CaffeHDF5Reader(two_files, 3, shuffle=True)
    for _ in range(7):  # four passes over the 5 rows: files and rows reshuffled at every wrap
        batch, (data, label) = net.forward(), next(caffe_order)
        assert torch.equal(batch["data"], torch.from_numpy(data))
        assert torch.equal(batch["label"], torch.from_numpy(label))


def test_hdf5_data_shards_rows_between_processes_like_caffes_skip(two_files):
    def rows(rank):
        net = build(hdf5_net(two_files, 3), "TRAIN", shard=(rank, 2))
        return [net.forward()["data"][:, 0, 0].tolist() for _ in range(2)]

    # Row offsets 0,1,2,3,4 | 5,6,... over the stream 0,1,2,100,101,0,1,2,100,101,...
    assert rows(0) == [[0, 2, 101], [1, 100, 0]]
    assert rows(1) == [[1, 100, 0], [2, 101, 1]]


def test_hdf5_data_errors_name_the_file_and_the_problem(tmp_path, two_files):
    with pytest.raises(DataError, match="cannot read the HDF5 list file"):
        build(hdf5_net(tmp_path / "missing.txt", 2), "TRAIN")
    write_h5(tmp_path / "c.h5", np.zeros((2, 1, 3)), np.zeros((2, 2)))
    (tmp_path / "mixed.txt").write_text("a.h5\nc.h5\n")
    net = build(hdf5_net(tmp_path / "mixed.txt", 3), "TRAIN")
    with pytest.raises(DataError, match="c.h5 have shapes"):
        net.forward()
        net.forward()
    with h5py.File(tmp_path / "nolabel.h5", "w") as handle:
        handle["data"] = np.zeros((2, 1, 2), np.float32)
    (tmp_path / "nolabel.txt").write_text(str(tmp_path / "nolabel.h5"))
    with pytest.raises(DataError, match="has no dataset 'label'"):
        build(hdf5_net(tmp_path / "nolabel.txt", 2), "TRAIN")


# ----------------------------------------------------------------------------------------- weights
DEPLOY = input_layer("data", 1, 1, 6, 6) + """
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
      convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "msra" }
                          bias_filler { type: "uniform" } } }
    layer { name: "act1" type: "PReLU" bottom: "conv1" top: "conv1" prelu_param { filler { type: "uniform" } } }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "out"
      convolution_param { num_output: 1 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }"""


def test_weights_round_trip_through_a_caffemodel(tmp_path):
    net = build(DEPLOY, seed=1)
    path = tmp_path / "w.caffemodel"
    net.save_caffemodel(path)
    stored = io.read_caffemodel(path)
    assert [layer.name for layer in stored.layer] == ["data", "conv1", "act1", "conv2"]
    assert list(stored.layer[1].blobs[0].shape.dim) == [3, 1, 3, 3]
    other = build(DEPLOY, seed=2)
    before = {k: [t.detach().clone() for t in v] for k, v in other.layer_blobs().items()}
    assert not torch.equal(before["conv1"][0], net.layer_blobs()["conv1"][0])
    other.load_weights(str(path))
    for name, blobs in net.layer_blobs().items():
        for mine, theirs in zip(blobs, other.layer_blobs()[name]):
            assert torch.equal(mine, theirs)
    x = np.random.default_rng(0).random((1, 1, 9, 7), dtype=np.float32)
    np.testing.assert_array_equal(net.run({"data": x})["out"], other.run({"data": x})["out"])
    via_open = open_net(build_prototxt(tmp_path, DEPLOY), path)
    # open_net runs channels-last (NHWC convolutions): the same weights, equal to float rounding
    np.testing.assert_allclose(via_open.run({"data": x})["out"], net.run({"data": x})["out"], rtol=1e-5, atol=1e-6)


def build_prototxt(tmp_path, text: str):
    path = tmp_path / "deploy.prototxt"
    path.write_text(text)
    return path


def test_loading_keeps_layers_the_file_lacks_and_ignores_layers_the_net_lacks():
    net = build(DEPLOY, seed=1)
    model = net.to_net_parameter()
    del model.layer[3]  # no conv2 in the file
    extra = model.layer.add(name="unused", type="Convolution")
    extra.blobs.add().CopyFrom(io.array_to_blob(np.zeros((1, 1, 1, 1), np.float32)))
    target = build(DEPLOY, seed=2)
    conv2 = target.layer_blobs()["conv2"][0].detach().clone()
    target.load_weights(model)
    assert torch.equal(target.layer_blobs()["conv2"][0], conv2)
    assert torch.equal(target.layer_blobs()["conv1"][0], net.layer_blobs()["conv1"][0])


def test_legacy_4d_blobs_load_and_mismatched_blobs_are_refused_with_both_shapes(tmp_path):
    net = build(DEPLOY, seed=1)
    model = net.to_net_parameter()
    bias = model.layer[1].blobs[1]
    values = list(bias.data)
    bias.Clear()
    bias.num, bias.channels, bias.height, bias.width = 1, 1, 1, 3  # Caffe's pre-2015 layout
    bias.data.extend(values)
    target = build(DEPLOY, seed=2)
    target.load_weights(model)
    np.testing.assert_allclose(target.layer_blobs()["conv1"][1].detach().numpy(), values)

    wider = build(DEPLOY.replace("num_output: 3", "num_output: 4"), seed=1)
    path = tmp_path / "wide.caffemodel"
    wider.save_caffemodel(path)
    with pytest.raises(FormatError) as caught:
        build(DEPLOY).load_weights(str(path))
    message = str(caught.value)
    assert "layer 'conv1' blob 0" in message and "(4, 1, 3, 3)" in message and "(3, 1, 3, 3)" in message
    model = net.to_net_parameter()
    del model.layer[1].blobs[1]
    with pytest.raises(FormatError, match="layer 'conv1' has 1 blobs, but the net's layer 'conv1'"):
        build(DEPLOY).load_weights(model)
    del model.layer[1].blobs[:]  # a layer of the same name with no blobs: Caffe's CHECK fails too
    with pytest.raises(FormatError, match="layer 'conv1' has 0 blobs, but the net's layer 'conv1'"):
        build(DEPLOY).load_weights(model)


def test_a_bias_stored_in_the_current_format_must_have_the_nets_shape_exactly():
    """Only a legacy (num, channels, height, width) blob may carry leading 1s (Caffe's Blob::ShapeEquals)."""
    model = build(DEPLOY, seed=1).to_net_parameter()
    bias = model.layer[1].blobs[1]
    bias.shape.ClearField("dim")
    bias.shape.dim.extend([1, 1, 1, 3])
    with pytest.raises(FormatError, match=r"layer 'conv1' blob 1 has shape \(1, 1, 1, 3\), but the net expects \(3,\)"):
        build(DEPLOY).load_weights(model)


def test_open_net_rejects_unknown_backends_and_the_package_imports_without_torch(tmp_path):
    with pytest.raises(ModelError, match="unknown backend 'tensorflow'"):
        open_net(build_prototxt(tmp_path, DEPLOY), backend="tensorflow")
    code = "import sys, glrl.backends; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_caffe_backend_refuses_a_gpu_before_it_looks_for_caffe(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", None)  # the device is checked first, Caffe or not
    with pytest.raises(ModelError, match="the caffe backend runs on the CPU only, not on 'cuda:1'") as caught:
        open_net(build_prototxt(tmp_path, DEPLOY), backend="caffe", device="cuda:1")
    assert "--device cpu" in caught.value.hint


def test_caffe_counts_as_installed_only_when_it_imports(monkeypatch):
    import types

    from glrl import backends

    monkeypatch.setitem(sys.modules, "caffe", None)  # `import caffe` raises ImportError
    assert backends._caffe_importable() is False
    monkeypatch.setitem(sys.modules, "caffe", types.ModuleType("caffe"))
    assert backends._caffe_importable() is True


def test_a_train_net_learns_through_hdf5_batches(two_files):
    net = build(hdf5_net(two_files, 5).replace('bottom: "data" bottom: "label"', 'bottom: "scaled" bottom: "label"')
                .replace('layer { name: "loss"', 'layer { name: "scale" type: "Scale" bottom: "data" top: "scaled" }'
                                                 ' layer { name: "loss"'), "TRAIN", dtype=DOUBLE)
    (scale,) = net.layer_blobs()["scale"]
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = net.loss(net.forward())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-6 * losses[0]
    assert scale.item() == pytest.approx(-1.0, abs=1e-3)  # label = -data
