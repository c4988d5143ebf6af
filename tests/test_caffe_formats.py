"""Caffe's file formats: the protobuf subset is wire-compatible with Caffe, prototxt/caffemodel/solverstate
files round-trip, legacy nets upgrade as Caffe upgrades them, and bad files are refused with clear errors."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from glrl.caffe import io, pb
from glrl.caffe.proto import DESCRIPTOR_PATH, PROTO_PATH
from glrl.caffe.upgrade import upgrade_net
from glrl.errors import FormatError

# ------------------------------------------------------------------------------------- the descriptor


def test_committed_descriptor_matches_the_proto_source(tmp_path):
    pytest.importorskip("grpc_tools")
    out = tmp_path / "fresh.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_PATH.parent}",
         f"--descriptor_set_out={out}", str(PROTO_PATH)],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    committed = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_PATH.read_bytes())
    assert list(committed.file) == list(fresh.file), "recompile caffe_subset.desc (see caffe_subset.proto)"


def test_messages_live_in_a_private_pool_not_the_default_one():
    from google.protobuf import descriptor_pool

    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("caffe.NetParameter")
    assert pb.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"


def test_caffe_defaults():
    assert pb.ParamSpec().lr_mult == 1.0 and pb.ParamSpec().decay_mult == 1.0
    assert pb.ConvolutionParameter().bias_term is True and pb.ConvolutionParameter().group == 1
    assert pb.FillerParameter().type == "constant" and pb.FillerParameter().std == 1.0
    assert pb.EltwiseParameter().operation == pb.EltwiseParameter.SUM
    solver = pb.SolverParameter()
    assert (solver.type, solver.clip_gradients, solver.solver_mode) == ("SGD", -1.0, pb.SolverParameter.GPU)
    assert (solver.random_seed, solver.average_loss, solver.iter_size) == (-1, 1, 1)
    assert solver.snapshot_format == pb.SolverParameter.BINARYPROTO
    assert pb.NetState().phase == pb.TEST and (pb.TRAIN, pb.TEST) == (0, 1)
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.SliceParameter().axis == 1 and pb.FlattenParameter().end_axis == -1
    assert pb.ReshapeParameter().num_axes == -1 and pb.ScaleParameter().bias_term is False


# ---------------------------------------------------------------------------------- wire compatibility


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return tag + _varint(len(payload)) + payload
    return tag + payload


def _string(number: int, text: str) -> bytes:
    return _field(number, 2, text.encode())


def test_hand_encoded_caffe_fields_land_in_the_right_fields():
    # A layer as Caffe encodes it, fields in number order: name=1, type=2, bottom=3, top=4, loss_weight=5,
    # param=6 {name=1 lr_mult=3}, blobs=7 {data=5 packed floats, shape=7 {dim=1 packed}},
    # include=8 {phase=1}, convolution_param=106 {num_output=1, pad=3}.
    param = _string(1, "shared_w") + _field(3, 5, struct.pack("<f", 0.1))
    shape = _field(1, 2, b"".join(_varint(d) for d in (2, 3)))
    blob = _field(5, 2, struct.pack("<6f", *range(6))) + _field(7, 2, shape)
    conv = _field(1, 0, _varint(64)) + _field(3, 0, _varint(1))
    layer = (
        _string(1, "conv1") + _string(2, "Convolution") + _string(3, "data") + _string(4, "conv1")
        + _field(5, 5, struct.pack("<f", 2.0)) + _field(6, 2, param) + _field(7, 2, blob)
        + _field(8, 2, _field(1, 0, _varint(1))) + _field(106, 2, conv)
    )
    wire = _string(1, "handmade") + _field(100, 2, layer)
    net = pb.NetParameter.FromString(wire)
    got = net.layer[0]
    assert net.name == "handmade"
    assert (got.name, got.type) == ("conv1", "Convolution")
    assert (list(got.bottom), list(got.top)) == (["data"], ["conv1"])
    assert got.param[0].name == "shared_w" and got.param[0].lr_mult == pytest.approx(0.1)
    assert got.convolution_param.num_output == 64 and list(got.convolution_param.pad) == [1]
    assert got.include[0].phase == pb.TEST and list(got.loss_weight) == [2.0]
    expected_blob = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(io.blob_to_array(got.blobs[0]), expected_blob)
    # ... and we encode the same bytes back (Caffe writes fields in number order, as protobuf does).
    assert net.SerializeToString() == wire


def test_solver_and_solverstate_field_numbers():
    wire = (
        _field(5, 5, struct.pack("<f", 1e-4)) + _string(8, "step") + _field(11, 5, struct.pack("<f", 0.9))
        + _field(13, 0, _varint(1000)) + _field(35, 5, struct.pack("<f", 0.1)) + _string(40, "Adam")
        + _field(20, 0, _varint(-5)) + _string(24, "train.prototxt")
    )
    solver = pb.SolverParameter.FromString(wire)
    assert solver.base_lr == pytest.approx(1e-4) and solver.lr_policy == "step"
    assert solver.momentum == pytest.approx(0.9) and solver.stepsize == 1000
    assert solver.clip_gradients == pytest.approx(0.1) and solver.type == "Adam"
    assert solver.random_seed == -5 and solver.net == "train.prototxt"
    state = pb.SolverState.FromString(
        _field(1, 0, _varint(20)) + _string(2, "x_iter_20.caffemodel") + _field(3, 2, b"")
        + _field(4, 0, _varint(2))
    )
    assert (state.iter, state.learned_net, len(state.history), state.current_step) == (
        20, "x_iter_20.caffemodel", 1, 2)


def test_legacy_blob_dims_and_double_data():
    legacy = pb.BlobProto(num=2, channels=1, height=1, width=3, data=range(6))
    assert io.blob_to_array(legacy).shape == (2, 1, 1, 3)
    legacy.shape.dim.extend([6])  # as in Caffe's Blob::FromProto, the legacy fields win over `shape`
    assert io.blob_to_array(legacy).shape == (2, 1, 1, 3)
    doubles = pb.BlobProto(double_data=[0.5, 1.5])
    doubles.shape.dim.extend([2])
    out = io.blob_to_array(doubles)
    assert out.dtype == np.float32 and out.tolist() == [0.5, 1.5]


def test_blob_conversion_equals_protobufs_own_element_by_element_fields():
    special = np.float32([0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, 1e-45, 3.4e38, np.nan])
    big_endian_transposed = np.arange(24, dtype=">f8").reshape(2, 3, 4).transpose(2, 0, 1)
    for array in [special, big_endian_transposed, np.float32(7.0), np.zeros((3, 0))]:
        blob = io.array_to_blob(array)
        reference = pb.BlobProto()
        reference.shape.dim.extend(np.shape(array))
        reference.data.extend(float(v) for v in np.ravel(array).astype(np.float32))
        assert blob.SerializeToString() == reference.SerializeToString()
        back = io.blob_to_array(pb.BlobProto.FromString(blob.SerializeToString()))
        np.testing.assert_array_equal(back, np.asarray(array, dtype=np.float32))
        assert back.shape == np.shape(array) and back.dtype == np.float32
    doubles = pb.BlobProto(double_data=[0.1, -3.0, 1e-3])
    doubles.shape.dim.append(3)
    doubles.data.extend([9.0, 9.0, 9.0])  # double_data wins when present, as in Caffe
    np.testing.assert_array_equal(io.blob_to_array(doubles), np.float32([0.1, -3.0, 1e-3]))


def test_blob_count_mismatch_is_refused():
    blob = pb.BlobProto(data=[1, 2, 3])
    blob.shape.dim.extend([2, 2])
    with pytest.raises(FormatError, match=r"shape \[2, 2\] needs 4 values but the blob holds 3"):
        io.blob_to_array(blob, "layer 'conv1' blob 0")


def test_fields_outside_the_subset_survive_a_binary_round_trip():
    # softmax_param (125) is Caffe's but not in our subset: it must come back byte for byte.
    softmax = _field(125, 2, _field(2, 0, _varint(1)))
    wire = _string(1, "n") + _field(100, 2, _string(1, "prob") + _string(2, "Softmax") + softmax)
    assert pb.NetParameter.FromString(wire).SerializeToString() == wire


# ------------------------------------------------------------------------------------------ round trips

TRAIN_NET = """\
name: "tiny"
layer {
  name: "data"
  type: "HDF5Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 64 shuffle: true }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { name: "w1" lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 0.1 decay_mult: 0 share_mode: PERMISSIVE }
  propagate_down: false
  convolution_param {
    num_output: 64 kernel_h: 3 kernel_w: 5 pad: 1 stride: 1 dilation: 2 group: 1
    weight_filler { type: "msra" variance_norm: FAN_OUT }
    bias_filler { type: "constant" value: 0 }
  }
}
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" prelu_param { channel_shared: true } }
layer {
  name: "sum" type: "Eltwise" bottom: "conv1" bottom: "data" top: "sum"
  eltwise_param { operation: SUM coeff: 1 coeff: -1 }
}
layer {
  name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "label" top: "loss"
  loss_weight: 0.5
  exclude { phase: TEST stage: "deploy" }
}
"""


def test_prototxt_round_trip(tmp_path):
    net = io.parse_net(TRAIN_NET, "tiny.prototxt")
    conv = net.layer[1]
    assert conv.param[0].name == "w1" and conv.param[1].lr_mult == pytest.approx(0.1)
    assert conv.param[1].share_mode == pb.ParamSpec.PERMISSIVE and list(conv.propagate_down) == [False]
    assert conv.convolution_param.weight_filler.variance_norm == pb.FillerParameter.FAN_OUT
    assert (conv.convolution_param.kernel_h, conv.convolution_param.kernel_w) == (3, 5)
    assert net.layer[0].include[0].phase == pb.TRAIN and net.layer[0].hdf5_data_param.shuffle
    assert net.layer[2].prelu_param.channel_shared and list(net.layer[3].eltwise_param.coeff) == [1, -1]
    assert net.layer[4].exclude[0].stage == ["deploy"] and list(net.layer[4].loss_weight) == [0.5]
    path = tmp_path / "out" / "tiny.prototxt"
    io.write_net(net, path)
    assert io.read_net(path) == net
    assert io.parse_net(io.net_to_text(net)) == net


def test_caffemodel_round_trip_keeps_blobs_exactly(tmp_path):
    net = io.parse_net(TRAIN_NET)
    rng = np.random.RandomState(0)
    weights = rng.standard_normal((64, 1, 3, 5)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    net.layer[1].blobs.extend([io.array_to_blob(weights), io.array_to_blob(bias)])
    net.layer[2].blobs.append(io.array_to_blob(np.float32([0.25])))
    path = tmp_path / "tiny.caffemodel"
    io.write_caffemodel(net, path)
    loaded = io.read_caffemodel(path)
    assert loaded == net
    blobs = io.layer_blobs(loaded)
    assert sorted(blobs) == ["conv1", "prelu1"]
    np.testing.assert_array_equal(blobs["conv1"][0], weights)
    np.testing.assert_array_equal(blobs["conv1"][1], bias)
    assert blobs["conv1"][0].dtype == np.float32 and blobs["prelu1"][0].tolist() == [0.25]


def test_solver_round_trip(tmp_path):
    text = """
    net: "train.prototxt"
    test_iter: 10 test_interval: 500 test_initialization: false
    base_lr: 0.1 lr_policy: "step" gamma: 0.1 stepsize: 20000 momentum: 0.9 weight_decay: 0.0001
    clip_gradients: 0.4 display: 100 max_iter: 80000 iter_size: 2 average_loss: 20
    snapshot: 10000 snapshot_prefix: "runs/glrl_x3" solver_mode: GPU device_id: 1 random_seed: 7
    type: "SGD" stepvalue: 1 stepvalue: 2 snapshot_after_train: true
    """
    solver = io.parse_solver(text, "solver.prototxt")
    assert (solver.base_lr, solver.stepsize, solver.clip_gradients) == pytest.approx((0.1, 20000, 0.4))
    assert solver.test_initialization is False and list(solver.test_iter) == [10]
    assert list(solver.stepvalue) == [1, 2] and solver.iter_size == 2 and solver.random_seed == 7
    path = tmp_path / "solver.prototxt"
    io.write_solver(solver, path)
    assert io.read_solver(path) == solver


def test_solverstate_round_trip(tmp_path):
    state = pb.SolverState(iter=1200, learned_net="runs/x_iter_1200.caffemodel", current_step=1)
    state.history.extend([io.array_to_blob(np.full((2, 3), 0.5)), io.array_to_blob(np.zeros(2))])
    path = tmp_path / "x_iter_1200.solverstate"
    io.write_solverstate(state, path)
    loaded = io.read_solverstate(path)
    assert loaded == state and io.blob_to_array(loaded.history[0]).tolist() == [[0.5] * 3] * 2


# -------------------------------------------------------------------------------------------- upgrades

V1_NET = """\
name: "SRCNN"
layers {
  name: "data" type: HDF5_DATA top: "data" top: "label"
  hdf5_data_param { source: "train.txt" batch_size: 128 }
  include: { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 0.1
  weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 64 kernel_size: 9 stride: 1
    weight_filler { type: "gaussian" std: 0.001 } bias_filler { type: "constant" value: 0 } }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "shared" type: CONVOLUTION bottom: "conv1" top: "out" param: "w" param: "b"
  blob_share_mode: PERMISSIVE convolution_param { num_output: 1 kernel_size: 5 } }
layers { name: "loss" type: EUCLIDEAN_LOSS bottom: "out" bottom: "label" top: "loss" loss_weight: 2 }
"""


def test_v1_net_upgrades_like_caffe():
    net = io.parse_net(V1_NET, "srcnn_v1.prototxt")
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("data", "HDF5Data"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("shared", "Convolution"),
        ("loss", "EuclideanLoss"),
    ]
    data, conv1, relu1, shared, loss = net.layer
    assert data.include[0].phase == pb.TRAIN and data.hdf5_data_param.batch_size == 128
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1, 1), (pytest.approx(0.1), 0)]
    assert conv1.convolution_param.weight_filler.std == pytest.approx(0.001)
    assert list(relu1.bottom) == ["conv1"] and list(relu1.top) == ["conv1"]
    assert [p.name for p in shared.param] == ["w", "b"]
    assert shared.param[0].share_mode == pb.ParamSpec.PERMISSIVE
    assert not shared.param[1].HasField("share_mode")
    assert list(loss.loss_weight) == [2.0]


def test_a_v1_caffemodel_keeps_its_weights_through_the_upgrade(tmp_path):
    """SRCNN's own released weights are a V1 net: each upgraded layer carries the V1 layer's blobs."""
    model = pb.NetParameter(name="srcnn_v1")
    conv = model.layers.add(name="conv1", type=pb.V1LayerParameter.CONVOLUTION)
    conv.blobs.add(num=1, channels=1, height=1, width=2, data=[1.5, -2.0])
    conv.blobs.add(num=1, channels=1, height=1, width=1, data=[0.25])
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(model.SerializeToString())
    upgraded = io.read_caffemodel(path)
    assert [(layer.name, layer.type) for layer in upgraded.layer] == [("conv1", "Convolution")]
    assert [list(blob.data) for blob in upgraded.layer[0].blobs] == [[1.5, -2.0], [0.25]]


def test_v1_upgrade_is_what_the_current_format_says(tmp_path):
    upgraded = io.parse_net(V1_NET)
    again = io.parse_net(io.net_to_text(upgraded))
    assert again == upgraded
    # the written file is in the current format: no 'layers', string types
    text = io.net_to_text(upgraded)
    assert "layers {" not in text and 'type: "Convolution"' in text


def test_v1_data_layer_transform_fields_move_to_transform_param():
    net = io.parse_net(
        'layers { name: "d" type: DATA top: "x" data_param { source: "db" batch_size: 4 scale: 0.5 '
        'mean_file: "mean.binaryproto" crop_size: 21 mirror: true } }'
    )
    layer = net.layer[0]
    assert layer.type == "Data" and layer.data_param.batch_size == 4
    assert (layer.transform_param.scale, layer.transform_param.mean_file, layer.transform_param.crop_size,
            layer.transform_param.mirror) == (0.5, "mean.binaryproto", 21, True)
    assert not any(layer.data_param.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror"))


def test_v1_layer_parameters_and_exclude_rules_come_through():
    net = io.parse_net(
        'layers { name: "pool" type: POOLING bottom: "x" top: "y" exclude { phase: TEST } '
        'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n'
        'layers { name: "sum" type: ELTWISE bottom: "y" bottom: "y" top: "z" '
        'eltwise_param { operation: SUM coeff: 1 coeff: -1 } }'
    )
    pool, total = net.layer
    assert pool.type == "Pooling" and pool.exclude[0].phase == pb.TEST and not len(pool.include)
    assert (pool.pooling_param.pool, pool.pooling_param.kernel_size, pool.pooling_param.stride) == (
        pb.PoolingParameter.AVE, 3, 2)
    assert total.type == "Eltwise" and list(total.eltwise_param.coeff) == [1.0, -1.0]


def test_v1_and_current_layers_together_are_refused():
    with pytest.raises(FormatError, match="both 'layer' and legacy 'layers'"):
        io.parse_net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }', "mixed.prototxt")


def test_v1_layer_with_parameters_glrl_does_not_know_is_refused():
    # a V1 LRN layer carrying lrn_param (field 18), which the subset leaves out: refuse, never drop it
    v1_layer = _string(4, "norm1") + _field(5, 0, _varint(15)) + _field(18, 2, _field(1, 0, _varint(5)))
    with pytest.raises(FormatError, match="V1 layer 'norm1' uses parameters glrl does not know"):
        upgrade_net(pb.NetParameter.FromString(_field(2, 2, v1_layer)), "old.caffemodel")


def test_input_dim_deploy_net_becomes_an_input_layer():
    net = io.parse_net(
        'name: "deploy" input: "data" input_dim: 1 input_dim: 1 input_dim: 33 input_dim: 33\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        "convolution_param { num_output: 4 kernel_size: 3 } }"
    )
    assert not len(net.input) and not len(net.input_dim)
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(shape.dim) for shape in first.input_param.shape] == [[1, 1, 33, 33]]
    assert net.layer[1].name == "conv1"


def test_input_shape_with_two_inputs():
    net = io.parse_net(
        'input: "a" input_shape { dim: 1 dim: 3 } input: "b" input_shape { dim: 2 dim: 1 dim: 5 dim: 5 }'
    )
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3], [2, 1, 5, 5]]


def test_wrong_number_of_input_dims_is_refused():
    with pytest.raises(FormatError, match=r"2 input\(s\) need 8 input_dim values, found 4"):
        io.parse_net('input: "a" input: "b" input_dim: 1 input_dim: 1 input_dim: 3 input_dim: 3', "d.pt")


def test_shapeless_input_of_old_caffemodels_is_dropped():
    net = io.parse_net('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert not len(net.input) and [layer.name for layer in net.layer] == ["r"]


def test_batch_norm_with_three_params_gets_zero_learning_rates():
    net = io.parse_net('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { } param { } }')
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


def test_legacy_solver_type_becomes_type():
    solver = io.parse_solver("base_lr: 0.01 solver_type: ADAM")
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    with pytest.raises(FormatError, match="disagree"):
        io.parse_solver('solver_type: ADAM type: "SGD"', "solver.prototxt")


# ---------------------------------------------------------------------------------------------- errors


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n  num_output: 3\n}\n')
    with pytest.raises(FormatError) as info:
        io.read_net(path)
    message = str(info.value)
    assert f"{path}:5:" in message and "num_output" in message
    assert "line 5 reads: 'num_output: 3'" in message


def test_unbalanced_brace_names_the_line():
    with pytest.raises(FormatError, match=r"deploy\.prototxt:\d+:\d+: syntax error"):
        io.parse_net('layer {\n  name: "a"\n', "deploy.prototxt")


def test_bad_enum_value_names_the_line():
    with pytest.raises(FormatError, match=r"x\.prototxt:1:.*SUMM"):
        io.parse_net('layer { name: "e" type: "Eltwise" eltwise_param { operation: SUMM } }', "x.prototxt")


@pytest.fixture
def caffemodel_bytes(tmp_path):
    net = io.parse_net(TRAIN_NET)
    net.layer[1].blobs.append(io.array_to_blob(np.ones((64, 1, 3, 5))))
    return net.SerializeToString()


def test_truncated_caffemodel_is_refused(tmp_path, caffemodel_bytes):
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(caffemodel_bytes[: len(caffemodel_bytes) * 2 // 3])
    with pytest.raises(FormatError, match=r"cut\.caffemodel: not a readable caffemodel.*truncated"):
        io.read_caffemodel(path)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty.caffemodel: caffemodel file is empty"):
        io.read_caffemodel(empty)
    with pytest.raises(FormatError, match="does not exist"):
        io.read_caffemodel(tmp_path / "missing.caffemodel")
    with pytest.raises(FormatError, match="is a folder"):
        io.read_net(tmp_path)


def test_files_of_other_kinds_are_refused_as_caffemodels(tmp_path):
    h5py = pytest.importorskip("h5py")
    from PIL import Image

    png = tmp_path / "photo.caffemodel"
    Image.new("L", (4, 4)).save(png, format="PNG")
    hdf5 = tmp_path / "weights.caffemodel"
    with h5py.File(hdf5, "w") as handle:
        handle["data"] = np.zeros(3)
    prototxt = tmp_path / "net.caffemodel"
    prototxt.write_text(TRAIN_NET)
    pickle_file = tmp_path / "model.caffemodel"
    pickle_file.write_bytes(b"\x80\x04\x95" + bytes(40))
    kinds = [(png, "PNG image"), (hdf5, "HDF5 file"), (prototxt, "text file"), (pickle_file, "pickle")]
    for path, kind in kinds:
        with pytest.raises(FormatError, match=f"{path.name}: not a .*caffemodel.*{kind}"):
            io.read_caffemodel(path)


def test_random_bytes_are_not_a_caffemodel(tmp_path):
    path = tmp_path / "noise.caffemodel"
    for seed in range(20):
        path.write_bytes(np.random.RandomState(seed).bytes(2000))
        with pytest.raises(FormatError, match="noise.caffemodel: not a"):
            io.read_caffemodel(path)


def test_caffemodel_passed_as_prototxt_is_refused(tmp_path, caffemodel_bytes):
    path = tmp_path / "oops.prototxt"
    path.write_bytes(caffemodel_bytes)
    with pytest.raises(FormatError, match="oops.prototxt: not a text net prototxt"):
        io.read_net(path)


def test_caffemodel_is_not_a_solverstate(tmp_path, caffemodel_bytes):
    path = tmp_path / "x.solverstate"
    path.write_bytes(caffemodel_bytes)
    with pytest.raises(FormatError, match="x.solverstate: not a"):
        io.read_solverstate(path)


def test_duplicate_layer_names_with_weights_are_refused():
    net = pb.NetParameter()
    for _ in range(2):
        net.layer.add(name="conv", type="Convolution").blobs.append(io.array_to_blob(np.zeros(1)))
    with pytest.raises(FormatError, match="two layers named 'conv'"):
        io.layer_blobs(net)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    import errno

    from glrl.errors import GlrlError

    path = tmp_path / "net.prototxt"
    path.write_text("old")

    def disk_full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("glrl.fsutil.os.replace", disk_full)  # the new file is complete; putting it in place fails
    with pytest.raises(GlrlError, match="cannot write"):
        io.write_net(pb.NetParameter(name="new"), path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["net.prototxt"]


def test_no_pickle_anywhere_in_the_caffe_package():
    import ast

    package = Path(io.__file__).parent
    for source in [*package.glob("*.py"), package.parent / "commands" / "caffe.py"]:
        tree = ast.parse(source.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names} | {node.module for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom)}
        assert not {"pickle", "cPickle", "dill", "joblib", "torch"} & imported, source
        keywords = {kw.arg for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords}
        assert "allow_pickle" not in keywords, source


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_info_and_upgrade(tmp_path, capsys):
    from glrl.cli import main

    old = tmp_path / "srcnn_v1.prototxt"
    old.write_text(V1_NET)
    new = tmp_path / "srcnn.prototxt"
    assert main(["caffe", "upgrade", str(old), str(new)]) == 0
    assert io.read_net(new) == io.parse_net(V1_NET) and "layers {" not in new.read_text()
    assert main(["caffe", "upgrade", str(old), str(old)]) == 2  # the legacy file is never replaced
    assert "is the input itself" in capsys.readouterr().err and old.read_text() == V1_NET
    assert main(["caffe", "info", str(new)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "Convolution" in out and "[include TRAIN]" in out

    net = io.read_net(new)
    net.layer[1].blobs.extend([io.array_to_blob(np.zeros((64, 1, 9, 9))), io.array_to_blob(np.zeros(64))])
    model = tmp_path / "srcnn.caffemodel"
    io.write_caffemodel(net, model)
    assert main(["caffe", "info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "caffemodel" in out and "64x1x9x9, 64" in out and "parameters: 5,248" in out

    solver = tmp_path / "solver.prototxt"
    solver.write_text("base_lr: 0.5 solver_type: NESTEROV\n")
    assert main(["caffe", "info", str(solver)]) == 0
    out = capsys.readouterr().out
    assert "solver" in out and 'type: "Nesterov"' in out and "solver_type -> type" in out

    broken = tmp_path / "broken.prototxt"
    broken.write_text("layer {\n  nme: 1\n}\n")
    assert main(["caffe", "info", str(broken)]) == 2
    assert "broken.prototxt:2:" in capsys.readouterr().err


# ------------------------------------------------------------------------------ weights against a net


# ----------------------------------------------------------------------- against Debian's real caffe.proto

def _describe_file(file_proto) -> dict:
    """Per message: each field's number, type, label, default, packing and type name; and enum values.
    (Its source also runs inside the real-Caffe root, so it imports what it needs itself.)"""
    out: dict = {}

    def walk(prefix, messages):
        for message in messages:
            name = prefix + message.name
            out[name] = {
                "fields": {f.name: [f.number, f.type, f.label, f.default_value, f.options.packed, f.type_name]
                           for f in message.field},
                "enums": {e.name: {v.name: v.number for v in e.value} for e in message.enum_type},
            }
            walk(name + ".", message.nested_type)

    walk("", file_proto.message_type)
    out["<enums>"] = {e.name: {v.name: v.number for v in e.value} for e in file_proto.enum_type}
    return out


@pytest.mark.oracle
def test_every_field_of_the_subset_is_exactly_debians_caffe_field(caffe_root):
    """Numbers, types, labels, defaults, packing and enum values agree with the caffe.proto that real Caffe
    (Debian bullseye's python3-caffe) was built from, for every message and field of the subset."""
    import inspect
    import json

    from glrl import oracle

    script = "\n".join([
        "import json",
        "from google.protobuf import descriptor_pb2",
        "from caffe.proto import caffe_pb2",
        inspect.getsource(_describe_file),
        "real = descriptor_pb2.FileDescriptorProto()",
        "caffe_pb2.DESCRIPTOR.CopyToProto(real)",
        "print(json.dumps(_describe_file(real)))",
    ])
    with oracle.RootSession() as session:
        real = json.loads(session.run_python(script))
    committed = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_PATH.read_bytes())
    ours = _describe_file(committed.file[0])
    assert set(ours) <= set(real)
    for message, description in ours.items():
        if message == "<enums>":
            assert all(real[message][name] == values for name, values in description.items()), message
            continue
        for field, facts in description["fields"].items():
            assert real[message]["fields"].get(field) == facts, f"{message}.{field}"
        for enum, values in description["enums"].items():
            assert real[message]["enums"][enum] == values, f"{message}.{enum}"


def test_an_unwritable_target_is_a_clear_error(tmp_path):
    from glrl.errors import GlrlError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GlrlError, match="cannot write"):
        io.write_net(pb.NetParameter(name="x"), blocker / "net.prototxt")  # a file where a folder should be


SHARED_NET = """name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" } param { name: "b" }
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
layer { name: "again" type: "Convolution" bottom: "a" top: "again" param { name: "w" } param { name: "b" }
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
layer { name: "half" type: "Convolution" bottom: "again" top: "half" param { name: "w" }
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
"""


def test_weights_cover_a_layer_through_the_blobs_it_shares_and_no_further():
    """Caffe copies into a shared blob through any layer that uses it: a model holding 'a' sets 'again'
    (both blobs shared), not 'half' (its bias is its own)."""
    from glrl.caffe.weights import layers_left_unset, require_complete_weights

    net = io.parse_net(SHARED_NET)
    counts = {"a": 2, "again": 2, "half": 2}
    model = pb.NetParameter()
    stored = model.layer.add(name="a")
    stored.blobs.extend([io.array_to_blob(np.zeros((1, 1, 3, 3), np.float32)),
                         io.array_to_blob(np.zeros(1, np.float32))])
    assert layers_left_unset(net, counts, model) == ["half"]
    with pytest.raises(FormatError) as info:
        require_complete_weights(net, counts, model, "m.caffemodel", "net.prototxt")
    assert "1 of the 3 layers with parameters" in info.value.message and "'half'" in info.value.message
    assert layers_left_unset(net, {"a": 2, "again": 2, "half": 1}, model) == []
    assert layers_left_unset(net, counts, pb.NetParameter()) == ["a", "again", "half"]
    named_but_empty = pb.NetParameter()
    for name in counts:
        named_but_empty.layer.add(name=name, type="Convolution")
    assert layers_left_unset(net, counts, named_but_empty) == ["a", "again", "half"]


# --------------------------------------------------------------------- more of glrl caffe info / upgrade


def test_a_solverstate_given_as_weights_is_refused_as_binary_not_taken_for_a_prototxt(tmp_path):
    """A snapshot's small integers decode as UTF-8, but its control bytes make it binary, not a text file."""
    state = tmp_path / "x_iter_20.solverstate"
    io.write_solverstate(pb.SolverState(iter=20, learned_net="x_iter_20.caffemodel", current_step=1), state)
    with pytest.raises(FormatError) as info:
        io.read_caffemodel(state)
    assert "x_iter_20.solverstate: not a caffemodel (it has no named layers)" in info.value.message
    assert "text file" not in info.value.message and "binary .caffemodel" in info.value.hint


def test_caffe_info_counts_a_shared_blob_once_and_says_how_much_is_stored(tmp_path, capsys):
    """GLRL's units share their convolutions (``param { name }``); Caffe stores a shared blob in each layer
    that uses it, so the file holds more values than the net learns."""
    from glrl.cli import main

    net = pb.NetParameter(name="shared")
    for name in ("unit1", "unit2", "own"):
        layer = net.layer.add(name=name, type="Convolution")
        layer.convolution_param.num_output = 8
        layer.convolution_param.kernel_size.append(3)
        if name != "own":
            layer.param.add(name="w")
            layer.param.add(name="b")
        layer.blobs.extend([io.array_to_blob(np.zeros((8, 8, 3, 3))), io.array_to_blob(np.zeros(8))])
    io.write_caffemodel(net, tmp_path / "shared.caffemodel")
    assert main(["caffe", "info", str(tmp_path / "shared.caffemodel")]) == 0
    assert "parameters: 1,168 (1,752 stored" in capsys.readouterr().out  # 2 x (576 + 8), not 3 x


def test_caffe_info_tells_a_snapshot_by_its_content_and_upgrade_leaves_it_alone(tmp_path, capsys):
    from glrl.cli import main

    state = pb.SolverState(iter=20, learned_net="x_iter_20.caffemodel", current_step=1)
    state.history.extend([io.array_to_blob(np.zeros((2, 3))), io.array_to_blob(np.zeros(2))])
    snapshot = tmp_path / "x_iter_20.solverstate"
    io.write_solverstate(state, snapshot)
    renamed = tmp_path / "snapshot.bin"  # no .solverstate suffix: told apart from a caffemodel by content
    renamed.write_bytes(snapshot.read_bytes())
    for path in (snapshot, renamed):
        assert main(["caffe", "info", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"{path}: solverstate" in out and "iter: 20" in out and "learned_net: x_iter_20.caffemodel" in out
        assert "history: 2 blobs (2x3, 2)" in out
    assert main(["caffe", "upgrade", str(snapshot), str(tmp_path / "new.solverstate")]) == 0
    assert "(solverstate: already current, written unchanged)" in capsys.readouterr().out  # as a current net is
    assert (tmp_path / "new.solverstate").read_bytes() == snapshot.read_bytes()
    assert main(["caffe", "upgrade", str(snapshot), str(tmp_path / "new.prototxt")]) == 2
    assert "the input is a solverstate, written as binary protobuf, but the output is named new.prototxt" in (
        capsys.readouterr().err)


def test_caffe_info_of_an_image_says_what_the_file_is(tmp_path, capsys):
    from PIL import Image

    from glrl.cli import main

    Image.new("L", (4, 4)).save(tmp_path / "photo.png")
    assert main(["caffe", "info", str(tmp_path / "photo.png")]) == 2
    err = capsys.readouterr().err
    assert "photo.png: not a caffemodel: this is a PNG image" in err and "hint: pass the binary" in err


def test_caffe_info_of_a_net_without_layers_shows_a_net_not_a_solver_syntax_error(tmp_path, capsys):
    from glrl.cli import main

    inputs_only = tmp_path / "inputs.prototxt"
    inputs_only.write_text('name: "skeleton"\ninput: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8\n')
    assert main(["caffe", "info", str(inputs_only)]) == 0
    out = capsys.readouterr().out
    assert f"{inputs_only}: net" in out and "name: skeleton, 1 layers" in out and "shape 1x1x8x8" in out
    solver = tmp_path / "solver.prototxt"  # a solver whose fields NetParameter also has is still a solver
    solver.write_text("debug_info: true\n")
    assert main(["caffe", "info", str(solver)]) == 0
    assert f"{solver}: solver" in capsys.readouterr().out


def test_caffe_info_shows_each_layers_settings_that_matter(tmp_path, capsys):
    from glrl.cli import main

    path = tmp_path / "net.prototxt"
    path.write_text("""name: "settings"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 9 dim: 9 } } }
layer { name: "wide" type: "Convolution" bottom: "data" top: "wide"
  convolution_param { num_output: 8 kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2 bias_term: false } }
layer { name: "hw" type: "Convolution" bottom: "data" top: "hw"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 } }
layer { name: "diff" type: "Eltwise" bottom: "hw" bottom: "data" top: "diff"
  eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } include { min_level: 1 max_level: 3 stage: "a" } }
layer { name: "most" type: "Eltwise" bottom: "hw" bottom: "data" top: "most" eltwise_param { operation: MAX }
  exclude { not_stage: "b" } }
""")
    assert main(["caffe", "info", str(path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines["data"].endswith("shape 1x4x9x9")
    assert lines["wide"].endswith("8 out, kernel 3; pad 2; stride 2; dilation 2; group 2; no bias")
    assert lines["hw"].endswith("4 out, kernel 3x1; pad 1x0")
    assert lines["diff"].endswith("[include stage=a+level>=1+level<=3]  SUM coeff 1, -0.5")
    assert lines["most"].endswith("[exclude not_stage=b]  MAX")


def test_a_file_that_cannot_be_read_is_an_error_naming_it(tmp_path, monkeypatch):
    """(chmod cannot make a file unreadable for root, so the refusal comes from the file system stand-in.)"""
    from glrl.errors import GlrlError

    path = tmp_path / "locked.caffemodel"
    path.write_bytes(b"\x0a\x01x")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(GlrlError) as info:
        io.read_caffemodel(path)
    assert info.value.message == f"{path}: cannot read the caffemodel file (Permission denied)"
    assert info.value.hint == "check its permissions"


# ------------------------------------------------------------------- measuring a net (glrl.nets.stats)

STATS_INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }\n'


def _conv(name: str, settings: str, bottom: str = "data", extra: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" {extra}'
            f"convolution_param {{ num_output: 2 {settings} }} }}\n")


@pytest.mark.parametrize("layers, message", [
    (_conv("c", "kernel_size: 3 stride_h: 2 stride_w: 1"), r"per-axis strides \(2, 1\) are not supported"),
    (_conv("c", "pad: 1"), "layer 'c': convolution without a kernel size"),
    (_conv("c", "kernel_size: 3", extra="include { phase: TEST } "), "layer 'c' has phase rules; measure a deploy net"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" }', "layer 'p': type 'Pooling' is not one"),
    (_conv("c", "kernel_size: 3", bottom="nowhere"), "layer 'c' reads blob 'nowhere' that no earlier layer produces"),
    (_conv("c", "kernel_size: 9"), "layer 'c': a 8×8 input is smaller than its kernel"),
    (_conv("c", "kernel_size: 3") + 'layer { name: "s" type: "Eltwise" bottom: "c" bottom: "data" top: "s" }',
     r"layer 's' adds blobs of different shapes: \[\(1, 2, 6, 6\), \(1, 2, 8, 8\)\]"),
    (_conv("a", "kernel_size: 3", extra='param { name: "w" } ')
     + _conv("b", "kernel_size: 1", bottom="a", extra='param { name: "w" } '), "layer 'b' shares 'w' with a blob of"),
    (_conv("a", "kernel_size: 1") + _conv("b", "kernel_size: 1"), r"net 'x' has 2 outputs \(a, b\); expected one"),
], ids=["per-axis stride", "no kernel", "phase rule", "unknown type", "unknown bottom", "kernel too big",
        "eltwise shapes", "shared size", "two outputs"])
def test_a_net_that_stats_cannot_measure_is_refused_naming_the_layer(layers, message):
    from glrl.nets.stats import measure

    with pytest.raises(FormatError, match=message):
        measure(io.parse_net(f'name: "x"\n{STATS_INPUT}{layers}'))


def test_stats_measure_a_kernel_and_pad_given_per_axis():
    from glrl.nets.stats import measure

    stats = measure(io.parse_net(f'name: "x"\n{STATS_INPUT}' + _conv("c", "kernel_h: 3 kernel_w: 1 pad_h: 1")))
    assert stats.params == 2 * 2 * 3 * 1 + 2 and stats.macs_per_pixel == 2 * 2 * 3



def test_the_layers_a_phase_runs_follow_caffes_include_and_exclude_rules():
    from glrl.caffe.phase import layers_in_phase
    from glrl.errors import ModelError

    net = io.parse_net('''
        layer { name: "train_only" type: "Input" top: "t" include { phase: TRAIN } }
        layer { name: "not_test" type: "Input" top: "n" exclude { phase: TEST } }
        layer { name: "not_train" type: "Input" top: "m" exclude { phase: TRAIN } }
        layer { name: "staged" type: "Input" top: "s" include { stage: "deep" } }
        layer { name: "always" type: "Input" top: "a" }''')
    assert [layer.name for layer in layers_in_phase(net, "TRAIN")] == ["train_only", "not_test", "always"]
    assert [layer.name for layer in layers_in_phase(net, "TEST")] == ["not_train", "always"]
    net.layer[0].exclude.add(phase=pb.TEST)
    with pytest.raises(ModelError, match="both include and exclude"):
        layers_in_phase(net, "TRAIN")


def test_a_convolutions_geometry_is_read_as_caffe_reads_it():
    from glrl.caffe.geometry import ConvGeometry, conv_geometry
    from glrl.errors import FormatError

    def geometry(fields: str) -> ConvGeometry:
        return conv_geometry(io.parse_net(f'layer {{ name: "c" type: "Convolution" convolution_param {{ {fields} }} }}')
                             .layer[0])

    assert geometry("kernel_size: 3") == ConvGeometry((3, 3), (0, 0), (1, 1), (1, 1))
    assert geometry("kernel_size: 3 kernel_size: 5 pad: 2 stride: 2 dilation: 3") == ConvGeometry(
        (3, 5), (2, 2), (2, 2), (3, 3))
    hw = geometry("kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1")
    assert hw == ConvGeometry((3, 1), (1, 0), (2, 1), (1, 1))
    assert hw.radius == 1 and geometry("kernel_size: 3 dilation: 2").radius == 2
    assert geometry("kernel_size: 9").output_size(33, 20) == (25, 12)
    for fields, message in (("num_output: 1", "without a kernel size"),
                            ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "give kernel_size or kernel_h/kernel_w"),
                            ("kernel_size: 3 pad: 1 pad: 1 pad: 1", "pad has 3 values")):
        with pytest.raises(FormatError, match=message):
            geometry(fields)


def test_upgrade_refuses_an_output_named_for_the_other_format_and_a_file_of_comments_only(tmp_path, capsys):
    from glrl.cli import main

    net = tmp_path / "net.prototxt"
    net.write_text('name: "n" input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n')
    assert main(["caffe", "upgrade", str(net), str(tmp_path / "net.caffemodel")]) == 2
    err = capsys.readouterr().err
    assert "the input is a net, written as protobuf text, but the output is named net.caffemodel" in err
    assert "hint: name the output <something>.prototxt" in err and not (tmp_path / "net.caffemodel").exists()
    (tmp_path / "notes.prototxt").write_text("# to do: the solver\n\n")
    assert main(["caffe", "info", str(tmp_path / "notes.prototxt")]) == 2
    assert "holds no Caffe net or solver (only comments or blank lines)" in capsys.readouterr().err


def test_a_net_given_as_a_solver_or_a_solver_as_a_net_is_named_for_what_it_is(tmp_path):
    net, solver = tmp_path / "deploy.prototxt", tmp_path / "solver.prototxt"
    net.write_text('name: "n"\nlayer { name: "data" type: "Input" top: "data" }\n')
    solver.write_text('net: "train_test.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n')
    with pytest.raises(FormatError, match=f"{net} is a Caffe net, not a Caffe solver"):
        io.read_solver(net)
    with pytest.raises(FormatError, match=f"{solver} is a Caffe solver, not a Caffe net"):
        io.read_net(solver)
    solver.write_text('net: "train_test.prototxt"\nbase_lr: 0.01\nlr_polcy: "fixed"\n')  # a typo stays a typo
    with pytest.raises(FormatError, match="lr_polcy"):
        io.read_solver(solver)
