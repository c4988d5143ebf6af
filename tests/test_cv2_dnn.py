"""Our PyTorch backend agrees with an independent Caffe importer, OpenCV's ``cv2.dnn.readNetFromCaffe``:
the same deploy prototxt and the same ``.caffemodel`` (written by us, random weights from the fillers)
give the same outputs to 1e-5, relative to the output's largest magnitude (float32 through deep random
nets: both sides round, neither is exact). OpenCV's Winograd 3x3 convolution is switched off: it rounds
about ten times more than a direct convolution and would hide real differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glrl import settings
from glrl.backends.torch_net import TorchNet

cv2 = pytest.importorskip("cv2")
cv2.setNumThreads(1)
torch.set_num_threads(1)

MIXED_DEPLOY = """
name: "mixed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "msra" }
                      bias_filler { type: "uniform" min: -0.2 max: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 group: 2
                      weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" prelu_param { filler { type: "uniform" } } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum"
  eltwise_param { coeff: 0.5 coeff: -1.5 } }
layer { name: "prod" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "max" bottom: "data" top: "cat" }
layer { name: "scale" type: "Scale" bottom: "cat" top: "scaled"
  scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "uniform" } } }
layer { name: "conv3" type: "Convolution" bottom: "scaled" top: "out"
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 dilation: 1 weight_filler { type: "msra" } } }
"""


def opencv_outputs(prototxt: Path, caffemodel: Path, inputs: dict, outputs: list) -> dict:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if hasattr(net, "enableWinograd"):  # OpenCV >= 4.7; older versions have no Winograd path
        net.enableWinograd(False)
    for name, value in inputs.items():
        net.setInput(value, name)
    return dict(zip(outputs, net.forward(outputs)))


def assert_same_as_opencv(prototxt: Path, tmp_path: Path, spatial=(17, 13), seed: int = 0) -> None:
    net = TorchNet(str(prototxt), "TEST", seed=seed)
    caffemodel = tmp_path / f"{prototxt.parent.name or 'net'}.caffemodel"
    net.save_caffemodel(caffemodel)
    rng = np.random.default_rng(seed)
    inputs = {name: rng.random((1, net.blob_shapes[name][1]) + spatial, dtype=np.float32)
              for name in net.input_names}
    ours = net.run(inputs)
    theirs = opencv_outputs(prototxt, caffemodel, inputs, net.output_names)
    for name in net.output_names:
        assert ours[name].shape == theirs[name].shape, name
        scale = max(1.0, float(np.abs(theirs[name]).max()))
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=f"{prototxt}: output {name}")


def test_a_mixed_deploy_net_matches_opencv(tmp_path):
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(MIXED_DEPLOY)
    assert_same_as_opencv(prototxt, tmp_path)


def generated_deploy_nets():
    return sorted(settings.PROTOTXT_DIR.glob("*/deploy.prototxt"))


def test_there_are_generated_deploy_nets_to_check():
    assert generated_deploy_nets(), f"no */deploy.prototxt under {settings.PROTOTXT_DIR}; run `make prototxt`"


@pytest.mark.parametrize("prototxt", generated_deploy_nets(), ids=lambda p: p.parent.name)
def test_every_generated_deploy_net_matches_opencv(prototxt, tmp_path):
    assert_same_as_opencv(prototxt, tmp_path, spatial=(23, 19))
