"""The solver settings a training run reads from ``solver.prototxt``, with Caffe 1.0's defaults.

A ``SolverParameter`` message is read once into :class:`SolverSettings` so the rest of the trainer works with
plain, typed Python values and so that unsupported or contradictory settings fail early with a clear message
instead of deep inside a run. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from glrl.errors import TrainingError
from glrl.fsutil import find_file
from glrl.train.lr_policy import LrPolicy

# Caffe 1.0's SolverParameter.type values that this trainer implements.
SUPPORTED_TYPES = ("SGD", "Nesterov", "Adam")


@dataclass
class SolverSettings:
    """Everything the trainer uses from a ``SolverParameter`` (field names as in caffe.proto)."""

    net: str = ""
    type: str = "SGD"
    base_lr: float = 0.01
    lr_policy: str = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: List[int] = field(default_factory=list)
    max_iter: int = 0
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    iter_size: int = 1
    display: int = 0
    average_loss: int = 1
    test_iter: List[int] = field(default_factory=list)
    test_interval: int = 0
    test_initialization: bool = True
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    random_seed: int = -1

    def __post_init__(self) -> None:
        if self.type not in SUPPORTED_TYPES:
            raise TrainingError(
                f"solver type {self.type!r} is not implemented by the PyTorch backend",
                hint=f"use type: one of {', '.join(SUPPORTED_TYPES)}, or --backend caffe",
            )
        if self.regularization_type not in ("L1", "L2"):
            raise TrainingError(f"unknown regularization_type {self.regularization_type!r}",
                                hint="use \"L2\" (weight decay) or \"L1\"")
        if self.iter_size < 1:
            raise TrainingError(f"iter_size must be >= 1 (got {self.iter_size})", hint="fix solver.prototxt")
        if self.max_iter < 0:
            raise TrainingError(f"max_iter must be >= 0 (got {self.max_iter})", hint="fix solver.prototxt")
        if self.average_loss < 1:
            raise TrainingError(f"average_loss must be >= 1 (got {self.average_loss})",
                                hint="fix solver.prototxt")
        self.lr = LrPolicy(self.lr_policy, self.base_lr, self.gamma, self.power, self.stepsize,
                           list(self.stepvalue), self.max_iter)

    @classmethod
    def from_proto(cls, param) -> "SolverSettings":
        """Read a ``caffe.SolverParameter`` message (``glrl.caffe.pb.SolverParameter``) as
        :func:`glrl.caffe.io.read_solver` gives it: a legacy ``solver_type`` already upgraded to ``type``."""
        if not param.HasField("lr_policy"):
            raise TrainingError("the solver has no lr_policy",
                                hint="add e.g. lr_policy: \"step\" to solver.prototxt")
        if any(param.HasField(name) for name in ("train_net", "train_net_param", "net_param")):
            raise TrainingError(
                "the solver names its net in a way glrl does not read (train_net/net_param)",
                hint="name the train/test net file in the `net:` field, as glrl's generators do")
        return cls(
            net=param.net,
            type=param.type,
            base_lr=param.base_lr,
            lr_policy=param.lr_policy,
            gamma=param.gamma,
            power=param.power,
            stepsize=param.stepsize,
            stepvalue=list(param.stepvalue),
            max_iter=param.max_iter,
            momentum=param.momentum,
            momentum2=param.momentum2,
            delta=param.delta,
            weight_decay=param.weight_decay,
            regularization_type=param.regularization_type,
            clip_gradients=param.clip_gradients,
            iter_size=param.iter_size,
            display=param.display,
            average_loss=param.average_loss,
            test_iter=list(param.test_iter),
            test_interval=param.test_interval,
            test_initialization=param.test_initialization,
            snapshot=param.snapshot,
            snapshot_prefix=param.snapshot_prefix,
            snapshot_after_train=param.snapshot_after_train,
            random_seed=param.random_seed,
        )


def resolve_net(name: str, solver_path: Path) -> Path:
    """The train/test net that a solver's ``net:`` names: as given, else in the working directory, else
    beside the solver (the first that exists)."""
    if not name:
        raise TrainingError(f"{solver_path} names no net", hint="set `net:` to the train/test prototxt")
    found = find_file(name, [solver_path.parent])
    if found is not None:
        return found.resolve()
    raise TrainingError(f"the net {name!r} named by {solver_path} was not found",
                        hint="write the net first (glrl train does) or fix `net:` in the solver")
