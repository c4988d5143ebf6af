"""SR methods backed by Caffe nets: a released model, every released model of a net, or any external model.

A deploy net maps the protocol's bicubic-upsampled Y (blob of shape 1×1×H×W, float in [0, 1]) to the SR Y;
:class:`NetMethod` loads it once and runs each whole image through it on the torch backend (test images are
small, and whole images give exactly the figures of the training-time Set5 probe). A net that shrinks the
image (SRCNN's 'valid' convolutions) gets its input's border replicated first (:func:`glrl.tiling.run_deploy_net`,
as SRCNN's test code). Real Caffe keeps an
im2col buffer per convolution (GLRL on one 512×512 Set5 image: 18 GB), so on the caffe backend images run
in overlapping tiles with the net's receptive radius as margin (:func:`glrl.tiling.caffe_tile`: at most
1.25 GiB for the forward pass), which gives the whole-image result. Two options adapt models trained
elsewhere:

* ``residual_outside``: the net predicts only the residual; the input is added to its output here;
* ``transposed``: the net was trained on HDF5 patches written by MATLAB, which stores arrays column-major,
  so every patch the net saw was transposed; such a net is run on the transposed image and its output is
  transposed back.

Torch is imported only when a net is opened, so this module is safe to import from the core. On CUDA the
net runs in true fp32 (TF32 off), as the released models' recorded Set5 PSNR was measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from glrl import model_zoo, tiling
from glrl.caffe.io import read_net
from glrl.errors import ModelError
from glrl.machine import resolve_device

# Caffe layers that read their own input (files, databases, memory): a train/test net's, never a deploy net's
DATA_LAYER_TYPES = frozenset({"Data", "HDF5Data", "ImageData", "MemoryData", "WindowData", "DummyData"})

# The row names of the published tables for the nets the paper reports (other nets use the model's name).
NET_METHOD_NAMES: Dict[str, str] = {"srcnn": "SRCNN", "glrl-2lrb": "GLRL-2LRB", "glrl": "GLRL"}


@dataclass(frozen=True)
class NetSpec:
    """Where a net's files are and how its input and output relate to the protocol's Y."""

    deploy: Path
    weights: Path
    residual_outside: bool = False
    transposed: bool = False


class NetMethod:
    """An SR method (``sr(y_up, scale) -> y_sr``) that runs one Caffe deploy net on whole images (in
    tiles of bounded memory on the caffe backend). ``backend`` None or ``auto``: see
    :func:`glrl.backends.resolve_backend`."""

    def __init__(self, spec: NetSpec, *, backend: Optional[str] = None, device: str = "auto") -> None:
        from glrl.backends import open_net, resolve_backend

        for path, what in ((spec.deploy, "deploy prototxt"), (spec.weights, "weights")):
            if not Path(path).is_file():
                raise ModelError(f"{what} {path} not found", hint="check the path")
        self.spec = spec
        self.backend = backend = resolve_backend(backend)
        self.tile, self.margin = 0, 0
        net_param = read_net(spec.deploy)
        data_layers = [f"{layer.name} ({layer.type})" for layer in net_param.layer if layer.type in DATA_LAYER_TYPES]
        if data_layers:
            raise ModelError(f"{spec.deploy} reads its own data ({', '.join(data_layers)}): a train/test net, "
                             "not a deploy net", hint="give the deploy prototxt, whose input is an Input layer "
                                                      "(e.g. prototxt/<net>/deploy.prototxt)")
        if backend == "caffe":
            self.tile, self.margin = tiling.caffe_tile(net_param), tiling.receptive_radius(net_param)
        self.border = tiling.border_loss(net_param)  # a 'valid' net (SRCNN) gets its input edge-padded
        self.device = resolve_device(device, backend)
        if backend == "torch" and self.device.startswith("cuda"):
            import torch

            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.net = open_net(str(spec.deploy), str(spec.weights), backend=backend, device=self.device)
        if len(self.net.input_names) != 1 or not self.net.output_names:
            raise ModelError(f"{spec.deploy} has inputs {list(self.net.input_names)} and outputs "
                             f"{list(self.net.output_names)}; an SR deploy net has one input and an output",
                             hint="give the deploy (Input layer) prototxt, not the train/test net")

    def __call__(self, y_up: np.ndarray, scale: int) -> np.ndarray:
        image = y_up.T if self.spec.transposed else y_up
        result = tiling.run_tiled(self._run_net, image, self.tile, self.margin).astype(np.float64)
        if self.spec.residual_outside:
            result = result + image
        return result.T if self.spec.transposed else result

    def _run_net(self, window: np.ndarray) -> np.ndarray:
        try:
            return tiling.run_deploy_net(self.net, window, self.border)
        except ModelError as exc:
            raise ModelError(f"{self.spec.deploy}: {exc.message}", hint=exc.hint) from None


def model_method(model: model_zoo.ReleasedModel, *, backend: Optional[str] = None,
                 device: str = "auto") -> NetMethod:
    """The method of one released model, after checking its checksum."""
    model.verify()
    return NetMethod(NetSpec(model.deploy, model.weights), backend=backend, device=device)


@dataclass
class MethodPlan:
    """One row group of the results: a display name and, per scale, the released model to run (or why not)."""

    name: str
    models: Dict[int, model_zoo.ReleasedModel]
    missing: Dict[int, str]  # scale -> note for the table


def plan_for_net(net: str, scales: List[int], models_dir: Optional[Path] = None) -> MethodPlan:
    """Per scale, the released model of ``net`` (``model_zoo.model_for_scale``); a missing one is a note."""
    plan = MethodPlan(NET_METHOD_NAMES.get(net, net), {}, {})
    for scale in scales:
        try:
            plan.models[scale] = model_zoo.model_for_scale(scale, net=net, models_dir=models_dir)
        except ModelError:
            plan.missing[scale] = f"no released {net} model for x{scale}"
    return plan


def plan_for_model(name: str, scales: List[int], models_dir: Optional[Path] = None) -> MethodPlan:
    """The released model ``name`` at those of ``scales`` it was trained for."""
    model = model_zoo.get_model(name, models_dir)
    plan = MethodPlan(model.name, {}, {})
    for scale in scales:
        if scale in model.scales:
            plan.models[scale] = model
        else:
            plan.missing[scale] = f"{model.name} is for x{','.join(map(str, model.scales))} only"
    return plan


def plans_for_all(scales: List[int], models_dir: Optional[Path] = None) -> List[MethodPlan]:
    """What ``glrl eval --all`` runs besides Bicubic: SRCNN, GLRL-2LRB and GLRL (the released model per
    scale, as the paper's rows), then every other released model under its own name (e.g. a multi-scale
    GLRL beside the single-scale ones, or nets the paper does not report)."""
    plans = [plan_for_net(net, scales, models_dir) for net in NET_METHOD_NAMES]
    used = {model.name for plan in plans for model in plan.models.values()}
    for model in model_zoo.released_models(models_dir):
        if model.name not in used and any(scale in model.scales for scale in scales):
            plans.append(plan_for_model(model.name, scales, models_dir))
    return plans


class ReleasedNetMethod:
    """The released models of one net as a single method (``create_method("glrl")``): each scale runs the
    model ``model_zoo.model_for_scale`` picks, loaded on first use and shared by the scales it serves."""

    def __init__(self, net: str, *, backend: Optional[str] = None, device: str = "auto",
                 models_dir: Optional[Path] = None) -> None:
        self.net, self.backend, self.device, self.models_dir = net, backend, device, models_dir
        self._loaded: Dict[str, NetMethod] = {}

    def __call__(self, y_up: np.ndarray, scale: int) -> np.ndarray:
        model = model_zoo.model_for_scale(scale, net=self.net, models_dir=self.models_dir)
        if model.name not in self._loaded:
            self._loaded[model.name] = model_method(model, backend=self.backend, device=self.device)
        return self._loaded[model.name](y_up, scale)


def glrl_method(**options) -> ReleasedNetMethod:
    return ReleasedNetMethod("glrl", **options)


def glrl_2lrb_method(**options) -> ReleasedNetMethod:
    return ReleasedNetMethod("glrl-2lrb", **options)


def srcnn_method(**options) -> ReleasedNetMethod:
    return ReleasedNetMethod("srcnn", **options)
