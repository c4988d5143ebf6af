"""The SR methods ``glrl eval`` can measure, by name.

A method is a callable ``sr(y_up, scale) -> y_sr``: ``y_up`` is the protocol's bicubic-upsampled Y
(float64 H×W in [0, 1]); it returns its estimate of the HR Y, float64 H×W, nominally in [0, 1] (the runner
rounds and clips). A *factory* builds the method (loading weights and the like) from keyword options.

Adding a method:

* in code: ``register_method("mynet", make_mynet)`` before evaluating; or
* for the ``glrl eval`` command: add ``"mynet": "glrl.some.module:make_mynet"`` to ``LAZY_METHODS``;
  the module is imported only when that method is asked for, so torch stays out of the core.

The method name is also the one looked up in the published table (case-insensitive: ``glrl`` -> ``GLRL``).
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

from glrl.errors import ModelError
from glrl.eval.protocol import SRMethod, bicubic

MethodFactory = Callable[..., SRMethod]

_FACTORIES: Dict[str, MethodFactory] = {"bicubic": lambda **options: bicubic}
# name -> "module:factory", imported on first use
LAZY_METHODS: Dict[str, str] = {
    "glrl": "glrl.eval.models:glrl_method",  # the released models of a net, per scale (glrl.model_zoo)
    "glrl-2lrb": "glrl.eval.models:glrl_2lrb_method",
    "srcnn": "glrl.eval.models:srcnn_method",
}


def register_method(name: str, factory: MethodFactory) -> None:
    """Make ``factory`` available under ``name`` (a later registration replaces an earlier one)."""
    _FACTORIES[name.lower()] = factory


def available_methods() -> List[str]:
    return sorted(set(_FACTORIES) | set(LAZY_METHODS))


def create_method(name: str, **options) -> SRMethod:
    """Build the method called ``name`` with ``options`` (passed to its factory)."""
    key = name.lower()
    if key not in _FACTORIES and key in LAZY_METHODS:
        module_name, _, attribute = LAZY_METHODS[key].partition(":")
        _FACTORIES[key] = getattr(importlib.import_module(module_name), attribute)
    if key not in _FACTORIES:
        raise ModelError(f"unknown method {name!r}", hint=f"available methods: {', '.join(available_methods())}")
    return _FACTORIES[key](**options)
