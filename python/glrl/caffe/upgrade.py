"""Upgrade legacy Caffe nets and solvers to the current format, as Caffe's ``upgrade_proto`` does on reading.

Steps, in Caffe's order (each is a no-op on a current file):

1. V1 nets (``layers { type: CONVOLUTION ... }``): legacy data-layer transformation fields move into
   ``transform_param``, then every V1 layer becomes a ``layer`` with a string type; ``blobs_lr`` and
   ``weight_decay`` become ``param { lr_mult decay_mult }``, ``param: "name"`` becomes ``param { name }``.
2. Deploy inputs (``input`` with ``input_dim`` or ``input_shape``) become one ``Input`` layer named
   ``input``, placed first. An ``input`` without any shape (old caffemodels) is simply dropped.
3. BatchNorm layers that declare three ``param`` specs get ``lr_mult: 0 decay_mult: 0`` on each
   (its statistics are not learned).
4. Solvers: the deprecated ``solver_type`` enum becomes the ``type`` string.

Upgrades change the message in place and return the list of what was done (empty when nothing was),
so callers can tell users that a file was in a legacy format.
"""
from __future__ import annotations

from typing import Any, List

from glrl.caffe import pb
from glrl.caffe.proto import has_unknown_fields
from glrl.errors import FormatError

# V1LayerParameter.LayerType name -> LayerParameter.type string (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# Layer-specific parameter messages that a V1 layer and a current layer share by name.
_SHARED_PARAM_FIELDS = [
    "accuracy_param", "concat_param", "convolution_param", "data_param", "dropout_param",
    "dummy_data_param", "eltwise_param", "hdf5_data_param", "hdf5_output_param", "inner_product_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "slice_param", "tanh_param",
    "transform_param", "loss_param",
]

# SolverParameter.SolverType name -> SolverParameter.type string (Caffe's UpgradeSolverType).
SOLVER_TYPE_NAMES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

V1_FIELD_HINT = "a V1 layer here may only use the parameter messages glrl knows (see docs/caffe-formats.md)"


def upgrade_net(net: Any, source: str = "<net>") -> List[str]:
    """Upgrade ``net`` (a NetParameter) in place; return the upgrades applied (empty if none)."""
    done: List[str] = []
    if len(net.layers):
        _upgrade_v1_data_transforms(net)
        _upgrade_v1_layers(net, source)
        done.append("V1 'layers' -> 'layer'")
    if len(net.input):
        if _upgrade_inputs(net, source):
            done.append("'input'/'input_dim'/'input_shape' -> Input layer")
        else:
            done.append("dropped shape-less 'input'")
    if _upgrade_batch_norm(net):
        done.append("BatchNorm params -> lr_mult 0")
    return done


def upgrade_solver(solver: Any, source: str = "<solver>") -> List[str]:
    """Upgrade ``solver`` (a SolverParameter) in place; return the upgrades applied (empty if none)."""
    if not solver.HasField("solver_type"):
        return []
    legacy = SOLVER_TYPE_NAMES[pb.SolverParameter.SolverType.Name(solver.solver_type)]
    if solver.HasField("type") and solver.type != legacy:
        legacy_name = pb.SolverParameter.SolverType.Name(solver.solver_type)
        raise FormatError(
            f"{source}: solver_type: {legacy_name} and type: \"{solver.type}\" disagree",
            hint="delete the deprecated solver_type line and keep type",
        )
    solver.type = legacy
    solver.ClearField("solver_type")
    return ["solver_type -> type"]


def _upgrade_v1_data_transforms(net: Any) -> None:
    """Move a V1 Data layer's scale/mean_file/crop_size/mirror into its transform_param."""
    for v1 in net.layers:
        if v1.type != pb.V1LayerParameter.DATA or not v1.HasField("data_param"):
            continue
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if v1.data_param.HasField(field):
                setattr(v1.transform_param, field, getattr(v1.data_param, field))
                v1.data_param.ClearField(field)


def _upgrade_v1_layers(net: Any, source: str) -> None:
    if len(net.layer):
        raise FormatError(
            f"{source}: the net has both 'layer' and legacy 'layers' entries",
            hint="use only 'layer { ... }' (Caffe refuses this mix too)",
        )
    upgraded = [_upgrade_v1_layer(v1, source) for v1 in net.layers]
    net.ClearField("layers")
    net.layer.extend(upgraded)


def _upgrade_v1_layer(v1: Any, source: str) -> Any:
    label = v1.name or "(unnamed)"
    if has_unknown_fields(v1):
        raise FormatError(f"{source}: V1 layer '{label}' uses parameters glrl does not know",
                          hint=V1_FIELD_HINT)
    layer = pb.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = V1_TYPE_NAMES[pb.V1LayerParameter.LayerType.Name(v1.type)]
    layer.blobs.extend(v1.blobs)

    def param_spec(index: int) -> Any:
        while len(layer.param) <= index:
            layer.param.add()
        return layer.param[index]

    for i, name in enumerate(v1.param):
        param_spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        param_spec(i).share_mode = mode  # STRICT/PERMISSIVE have the same numbers in both enums
    for i, lr_mult in enumerate(v1.blobs_lr):
        param_spec(i).lr_mult = lr_mult
    for i, decay_mult in enumerate(v1.weight_decay):
        param_spec(i).decay_mult = decay_mult
    layer.loss_weight.extend(v1.loss_weight)
    for field in _SHARED_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _upgrade_inputs(net: Any, source: str) -> bool:
    """Turn legacy inputs into a leading Input layer; False when the inputs had no shapes at all."""
    names = list(net.input)
    shapes = [list(shape.dim) for shape in net.input_shape]
    dims = list(net.input_dim)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    if not shapes and not dims:
        return False
    if not shapes:
        if len(dims) != 4 * len(names):
            raise FormatError(
                f"{source}: {len(names)} input(s) need {4 * len(names)} input_dim values, found {len(dims)}",
                hint="give four input_dim lines (num, channels, height, width) per input",
            )
        shapes = [dims[4 * i: 4 * i + 4] for i in range(len(names))]
    elif len(shapes) != len(names):
        raise FormatError(
            f"{source}: {len(names)} input(s) but {len(shapes)} input_shape(s)",
            hint="give one input_shape per input",
        )
    layer = pb.LayerParameter(name="input", type="Input", top=names)
    for shape in shapes:
        layer.input_param.shape.add(dim=shape)
    existing = list(net.layer)
    net.ClearField("layer")
    net.layer.extend([layer] + existing)
    return True


def _upgrade_batch_norm(net: Any) -> bool:
    changed = False
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                if spec.lr_mult != 0 or spec.decay_mult != 0:
                    spec.lr_mult = 0
                    spec.decay_mult = 0
                    changed = True
    return changed
