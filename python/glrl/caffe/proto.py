"""Caffe's protobuf messages (``caffe_subset.proto``), built at import time from a committed descriptor.

Why not a generated ``caffe_pb2.py``: generated code is tied to the protobuf version that generated it,
and pycaffe's own ``caffe_pb2`` registers the package ``caffe`` in protobuf's default pool. We load
``caffe_subset.desc`` (a compiled FileDescriptorSet) into a *private* descriptor pool and build the
message classes from it, which works on every protobuf from Debian bullseye's 3.12 to today's and never
clashes with pycaffe when both are imported in one process.

Usage (the package re-exports this module as ``glrl.caffe.pb``)::

    from glrl.caffe import pb
    net = pb.NetParameter(name="glrl")
    layer = net.layer.add(name="conv1", type="Convolution")
    layer.include.add(phase=pb.TRAIN)
    layer.convolution_param.num_output = 64
    pb.EltwiseParameter.SUM, pb.V1LayerParameter.CONVOLUTION, pb.SolverParameter.GPU   # nested enums

Every message of the subset is also reachable as ``pb.message_class("PoolingParameter")``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper

PACKAGE = "caffe"
DESCRIPTOR_PATH = Path(__file__).with_name("caffe_subset.desc")
PROTO_PATH = Path(__file__).with_name("caffe_subset.proto")


def _load_pool() -> descriptor_pool.DescriptorPool:
    file_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_PATH.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        if hasattr(pool, "AddSerializedFile"):
            pool.AddSerializedFile(file_proto.SerializeToString())
        else:  # pragma: no cover - very old pure-Python protobuf
            pool.Add(file_proto)
    return pool


POOL = _load_pool()
_CLASSES: Dict[str, Any] = {}


def message_class(name: str) -> Any:
    """The message class for ``caffe.<name>`` (e.g. ``"LayerParameter"``), built once."""
    if name not in _CLASSES:
        descriptor = POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")
        get_message_class = getattr(message_factory, "GetMessageClass", None)
        if get_message_class is not None:  # protobuf >= 4.21
            _CLASSES[name] = get_message_class(descriptor)
        else:  # protobuf 3.x (Debian bullseye ships 3.12)
            _CLASSES[name] = message_factory.MessageFactory(POOL).GetPrototype(descriptor)
    return _CLASSES[name]


def enum_type(name: str) -> enum_type_wrapper.EnumTypeWrapper:
    """A top-level enum of the package, e.g. ``enum_type("Phase").Name(0) == "TRAIN"``."""
    return enum_type_wrapper.EnumTypeWrapper(POOL.FindEnumTypeByName(f"{PACKAGE}.{name}"))


def has_unknown_fields(message: Any) -> bool:
    """True when ``message`` (recursively) holds fields that ``caffe_subset.proto`` does not define.

    Binary parsing keeps such fields (so nothing a newer Caffe wrote is lost on a round trip), but
    an upgrade or a sanity check must know that it could not see them.
    """
    known = type(message)()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    return known.ByteSize() != message.ByteSize()


BlobShape = message_class("BlobShape")
BlobProto = message_class("BlobProto")
BlobProtoVector = message_class("BlobProtoVector")
FillerParameter = message_class("FillerParameter")
NetParameter = message_class("NetParameter")
NetState = message_class("NetState")
NetStateRule = message_class("NetStateRule")
ParamSpec = message_class("ParamSpec")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
TransformationParameter = message_class("TransformationParameter")
LossParameter = message_class("LossParameter")
AccuracyParameter = message_class("AccuracyParameter")
BatchNormParameter = message_class("BatchNormParameter")
BiasParameter = message_class("BiasParameter")
ConcatParameter = message_class("ConcatParameter")
ConvolutionParameter = message_class("ConvolutionParameter")
DataParameter = message_class("DataParameter")
DropoutParameter = message_class("DropoutParameter")
DummyDataParameter = message_class("DummyDataParameter")
EltwiseParameter = message_class("EltwiseParameter")
FlattenParameter = message_class("FlattenParameter")
HDF5DataParameter = message_class("HDF5DataParameter")
HDF5OutputParameter = message_class("HDF5OutputParameter")
InnerProductParameter = message_class("InnerProductParameter")
InputParameter = message_class("InputParameter")
PoolingParameter = message_class("PoolingParameter")
PowerParameter = message_class("PowerParameter")
PReLUParameter = message_class("PReLUParameter")
ReLUParameter = message_class("ReLUParameter")
ReshapeParameter = message_class("ReshapeParameter")
ScaleParameter = message_class("ScaleParameter")
SigmoidParameter = message_class("SigmoidParameter")
SliceParameter = message_class("SliceParameter")
TanHParameter = message_class("TanHParameter")
SolverParameter = message_class("SolverParameter")
SolverState = message_class("SolverState")

Phase = enum_type("Phase")
TRAIN: int = Phase.Value("TRAIN")
TEST: int = Phase.Value("TEST")
