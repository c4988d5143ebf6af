"""Caffe 1.0's learning-rate policies, formula for formula (``SGDSolver::GetLearningRate``).

Pure Python and torch-free, so the schedule can be printed, plotted and tested anywhere. The arithmetic is
Caffe's, type for type (``Dtype`` is float32): ``step``, ``exp`` and ``multistep`` raise a float to an int
power, which C++ does in double, and round the product to float32; ``inv``, ``poly`` and ``sigmoid`` work in
float32 throughout, with the C library's ``powf`` and ``expf`` (the float overloads of ``std::pow`` and
``std::exp``). Real Caffe gives the same rates to the bit (tests/test_oracle_lr_policy.py); double
arithmetic rounded once at the end, as this module first did, was a last bit off in those three.
``step`` uses integer division (``iter / stepsize`` on ints); ``multistep`` advances ``current_step`` by at
most one per call, exactly as Caffe does, so its state (``current_step``, stored in ``.solverstate``) matters
on resume.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import struct
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from glrl.errors import TrainingError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def to_float32(value: float) -> float:
    """Round a Python float to the nearest float32 (Caffe's ``Dtype``), returned as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


@functools.lru_cache(maxsize=None)
def _c_float_function(name: str) -> Optional[Callable[..., float]]:
    """The C math library's float function ``name`` (``powf``, ``expf``), or None where it cannot be loaded."""
    path = ctypes.util.find_library("m")
    try:
        function = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float] * (2 if name == "powf" else 1)
    return function


def powf(base: float, exponent: float) -> float:
    """C's ``powf`` on float32 values (else the double power rounded to float32)."""
    function = _c_float_function("powf")
    return function(base, exponent) if function else to_float32(base ** exponent)


def expf(value: float) -> float:
    """C's ``expf`` on a float32 value (else the double exponential rounded to float32)."""
    function = _c_float_function("expf")
    return function(value) if function else to_float32(math.exp(value))


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
            rate = base * powf(to_float32(to_float32(gamma * iteration) + 1.0), -power)
        elif policy == "multistep":
            if current_step < len(self.stepvalue) and iteration >= self.stepvalue[current_step]:
                current_step += 1
            rate = base * gamma ** current_step
        elif policy == "poly":
            fraction = to_float32(to_float32(float(iteration)) / to_float32(float(self.max_iter)))
            rate = base * powf(to_float32(1.0 - fraction), power)
        else:  # sigmoid
            exponent = to_float32(-gamma * to_float32(to_float32(float(iteration)) - to_float32(float(self.stepsize))))
            rate = base * to_float32(1.0 / to_float32(1.0 + expf(exponent)))
        return to_float32(rate), current_step

    def schedule(self, iterations: int) -> List[float]:
        """The rate at iterations ``0 .. iterations-1`` of a run started from scratch (for plots and docs)."""
        rates: List[float] = []
        step = 0
        for iteration in range(iterations):
            rate, step = self.rate(iteration, step)
            rates.append(rate)
        return rates
