"""Evaluation: the benchmark protocol, SR methods by name, the suite that runs them and its reports."""
from __future__ import annotations

from glrl.eval.methods import available_methods, create_method, register_method
from glrl.eval.protocol import SRMethod, bicubic, prepare, run_method, score, to_uint8
from glrl.eval.results import ImageResult, Summary
from glrl.eval.suite import evaluate

__all__ = [
    "SRMethod", "bicubic", "prepare", "run_method", "score", "to_uint8",
    "available_methods", "create_method", "register_method",
    "ImageResult", "Summary", "evaluate",
]
