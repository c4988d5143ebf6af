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
    assert (got.name, got.type, list(got.bottom), list(got.top)) == ("conv1", "Convolution", ["data"], ["conv1"])
    assert got.param[0].name == "shared_w" and got.param[0].lr_mult == pytest.approx(0.1)
    assert got.convolution_param.num_output == 64 and list(got.convolution_param.pad) == [1]
    assert got.include[0].phase == pb.TEST and list(got.loss_weight) == [2.0]
    np.testing.assert_array_equal(io.blob_to_array(got.blobs[0]), np.arange(6, dtype=np.float32).reshape(2, 3))
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
        _field(1, 0, _varint(20)) + _string(2, "x_iter_20.caffemodel") + _field(3, 2, b"") + _field(4, 0, _varint(2))
    )
    assert (state.iter, state.learned_net, len(state.history), state.current_step) == (
        20, "x_iter_20.caffemodel", 1, 2)


def test_legacy_blob_dims_and_double_data():
    legacy = pb.BlobProto(num=2, channels=1, height=1, width=3, data=range(6))
    assert io.blob_to_array(legacy).shape == (2, 1, 1, 3)
    doubles = pb.BlobProto(double_data=[0.5, 1.5])
    doubles.shape.dim.extend([2])
    out = io.blob_to_array(doubles)
    assert out.dtype == np.float32 and out.tolist() == [0.5, 1.5]


def test_blob_count_mismatch_is_refused():
    blob = pb.BlobProto(data=[1, 2, 3])
    blob.shape.dim.extend([2, 2])
    with pytest.raises(FormatError, match=r"shape \[2, 2\] needs 4 values but the blob holds 3"):
        io.blob_to_array(blob, "layer 'conv1' blob 0")
