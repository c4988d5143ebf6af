"""Caffe 1.0's learning-rate policies, formula for formula (``SGDSolver::GetLearningRate``).

Pure Python and torch-free, so the schedule can be printed, plotted and tested anywhere. The rate is computed
in double precision and rounded to float32 at the end, as Caffe returns it as a ``float`` ``Dtype``.
``step`` uses integer division (``iter / stepsize`` on ints); ``multistep`` advances ``current_step`` by at
most one per call, exactly as Caffe does, so its state (``current_step``, stored in ``.solverstate``) matters
on resume.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import List, Tuple

from glrl.errors import TrainingError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def to_float32(value: float) -> float:
    """Round a Python float to the nearest float32 (Caffe's ``Dtype``), returned as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclass
class LrPolicy:
    """The lr-policy fields of a ``SolverParameter`` (Caffe's defaults where a field is unset)."""

    lr_policy: str
    base_lr: float
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: List[int] = field(default_factory=list)
    max_iter: int = 0

    def __post_init__(self) -> None:
        if self.lr_policy not in POLICIES:
            raise TrainingError(
                f"unknown lr_policy {self.lr_policy!r} in the solver",
                hint=f"use one of {', '.join(POLICIES)} (Caffe 1.0's policies)",
            )
        if self.lr_policy in ("step", "sigmoid") and self.stepsize <= 0:
            raise TrainingError(
                f"lr_policy {self.lr_policy!r} needs stepsize > 0 (got {self.stepsize})",
                hint="set stepsize in solver.prototxt",
            )
        if self.lr_policy == "poly" and self.max_iter <= 0:
            raise TrainingError("lr_policy 'poly' needs max_iter > 0", hint="set max_iter in solver.prototxt")
        if self.lr_policy in ("step", "exp", "inv", "multistep", "sigmoid") and self.gamma < 0:
            raise TrainingError(f"lr_policy {self.lr_policy!r} needs gamma >= 0 (got {self.gamma})",
                                hint="fix gamma in solver.prototxt")

    def rate(self, iteration: int, current_step: int) -> Tuple[float, int]:
        """The learning rate at ``iteration`` and the new ``current_step`` (Caffe keeps it between calls)."""
        policy = self.lr_policy
        base = to_float32(self.base_lr)
        gamma = to_float32(self.gamma)
        power = to_float32(self.power)
        if policy == "fixed":
            rate = base
        elif policy == "step":
            current_step = iteration // self.stepsize
            rate = base * gamma ** current_step
        elif policy == "exp":
            rate = base * gamma ** iteration
        elif policy == "inv":
            rate = base * to_float32(1.0 + gamma * iteration) ** (-power)
        elif policy == "multistep":
            if current_step < len(self.stepvalue) and iteration >= self.stepvalue[current_step]:
                current_step += 1
            rate = base * gamma ** current_step
        elif policy == "poly":
            fraction = to_float32(to_float32(float(iteration)) / to_float32(float(self.max_iter)))
            rate = base * to_float32(1.0 - fraction) ** power
        else:  # sigmoid
            rate = base * (1.0 / (1.0 + math.exp(-gamma * (float(iteration) - float(self.stepsize)))))
        return to_float32(rate), current_step

    def schedule(self, iterations: int) -> List[float]:
        """The rate at iterations ``0 .. iterations-1`` of a run started from scratch (for plots and docs)."""
        rates: List[float] = []
        step = 0
        for iteration in range(iterations):
            rate, step = self.rate(iteration, step)
            rates.append(rate)
        return rates
