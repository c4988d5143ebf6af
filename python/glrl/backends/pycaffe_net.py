"""The pycaffe backend: nets and solvers executed by real Caffe (BVLC Caffe 1.0, e.g. Debian's python3-caffe).

The project never requires Caffe: ``caffe`` is imported only when a :class:`PycaffeNet` or
:class:`PycaffeSolver` is made, and a missing Caffe is a clear :class:`ModelError`. Caffe aborts the whole
process on a bad net or on weights that do not fit (a failed CHECK, no Python exception), so everything that
can be checked beforehand is: files exist, the prototxt parses, layer types are ones this Caffe has, and
caffemodel blob shapes fit the net (read with :mod:`glrl.caffe.io`, which names the layer and both shapes).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from glrl.caffe import io as caffe_io
from glrl.errors import FormatError, ModelError
from glrl.fsutil import atomic_path

PathLike = Union[str, "os.PathLike[str]"]
PHASES = ("TRAIN", "TEST")


def import_caffe() -> Any:
    """Import pycaffe in CPU mode with its logging limited to errors; a clear error when it is missing."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as exc:
        raise ModelError(
            f"the pycaffe backend needs Caffe's Python module, which cannot be imported ({exc})",
            hint="use the default PyTorch backend, run inside the glrl-caffe image (make docker), or install "
                 "Caffe (Debian bullseye: apt-get install python3-caffe)",
        ) from None
    caffe.set_mode_cpu()
    return caffe


def _existing_file(path: PathLike, what: str) -> str:
    target = Path(path)
    if not target.is_file():
        problem = "is a folder" if target.is_dir() else "does not exist"
        raise FormatError(f"{path}: {what} {problem}", hint="check the path")
    return str(target)


def _check_layer_types(caffe: Any, net_path: str) -> None:
    """Refuse a net with a layer type this Caffe lacks (Caffe itself would abort the process)."""
    net = caffe_io.read_net(net_path)
    known = set(caffe.layer_type_list())
    unknown = sorted({layer.type for layer in net.layer} - known)
    if unknown:
        raise ModelError(
            f"{net_path}: real Caffe has no layer type {', '.join(repr(t) for t in unknown)}",
            hint=f"this Caffe has: {', '.join(sorted(known))}",
        )


class PycaffeNet:
    """A Caffe net run by real Caffe, numpy arrays in and out (a :class:`glrl.backends.base.InferenceNet`).

    ``run`` takes one array per input blob (its shape may differ from the prototxt's: the net is reshaped,
    as Caffe does for a new input size) and returns the output blobs. ``blobs``, ``params`` and ``gradients``
    expose what a forward/backward pass left in the net, for comparisons with other backends.
    """

    def __init__(self, prototxt: PathLike, weights: Optional[PathLike] = None, phase: str = "TEST", *,
                 device: str = "cpu") -> None:
        if phase not in PHASES:
            raise ModelError(f"unknown phase {phase!r}", hint=f"use one of {', '.join(PHASES)}")
        if device != "cpu":
            raise ModelError(f"the caffe backend runs on the CPU only, not on {device!r}",
                             hint="pass --device cpu, or use the torch backend for GPUs")
        self.prototxt = _existing_file(prototxt, "net prototxt")
        self.phase = phase
        caffe = import_caffe()
        _check_layer_types(caffe, self.prototxt)
        self._net = caffe.Net(self.prototxt, getattr(caffe, phase))
        if weights is not None:
            self.load_weights(weights)

    @classmethod
    def _wrapping(cls, caffe_net: Any, prototxt: str, phase: str) -> "PycaffeNet":
        """A PycaffeNet over a ``caffe.Net`` made elsewhere (a solver's net)."""
        net = cls.__new__(cls)
        net.prototxt, net.phase, net._net = prototxt, phase, caffe_net
        return net

    @property
    def input_names(self) -> List[str]:
        return list(self._net.inputs)

    @property
    def output_names(self) -> List[str]:
        return sorted(self._net.outputs)

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Forward ``inputs`` (one float array per input blob); return copies of the output blobs."""
        self.set_inputs(inputs)
        self._net.forward()
        return {name: self._net.blobs[name].data.copy() for name in self.output_names}

    def set_inputs(self, inputs: Dict[str, np.ndarray]) -> None:
        """Put arrays into the input blobs, reshaping the net when their shapes changed."""
        missing = sorted(set(self.input_names) - set(inputs))
        extra = sorted(set(inputs) - set(self.input_names))
        if missing or extra:
            raise ModelError(
                f"{self.prototxt}: inputs {sorted(inputs)} do not match the net's input blobs "
                f"{self.input_names}",
                hint="pass exactly one array per input blob" + (f"; missing {missing}" if missing else ""),
            )
        arrays = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
        reshaped = False
        for name, array in arrays.items():
            blob = self._net.blobs[name]
            if tuple(blob.data.shape) != array.shape:
                blob.reshape(*array.shape)
                reshaped = True
        if reshaped:
            self._net.reshape()
        for name, array in arrays.items():
            self._net.blobs[name].data[...] = array

    def backward(self) -> None:
        """Back-propagate the loss of the last forward pass into the parameter gradients."""
        self._net.backward()

    @property
    def blobs(self) -> Dict[str, np.ndarray]:
        """Every blob's data after the last pass, by blob name (copies)."""
        return {name: blob.data.copy() for name, blob in self._net.blobs.items()}

    @property
    def params(self) -> Dict[str, List[np.ndarray]]:
        """Each layer's parameter blobs, by layer name (copies)."""
        return {name: [b.data.copy() for b in blobs] for name, blobs in self._net.params.items()}

    @property
    def gradients(self) -> Dict[str, List[np.ndarray]]:
        """Each layer's parameter gradients after ``backward``, by layer name (copies)."""
        return {name: [b.diff.copy() for b in blobs] for name, blobs in self._net.params.items()}

    def set_params(self, params: Dict[str, List[np.ndarray]], source: str = "weights") -> None:
        """Set parameter blobs by layer name; layers not named keep their values (as Caffe's copy_from)."""
        self._check_fits(params, source)
        for layer, arrays in params.items():
            if layer in self._net.params:
                for array, target in zip(arrays, self._net.params[layer]):
                    target.data[...] = array

    def _check_fits(self, params: Dict[str, List[np.ndarray]], source: str) -> None:
        """A wrong blob count or shape for a layer of this net is an error naming the layer and shapes."""
        for layer, arrays in params.items():
            if layer not in self._net.params:
                continue
            targets = self._net.params[layer]
            if len(arrays) != len(targets):
                raise FormatError(
                    f"{source}: layer '{layer}' has {len(arrays)} blobs but the net's layer has "
                    f"{len(targets)}",
                    hint="the weights were written for another net (check bias_term and the layer types)",
                )
            for index, (array, target) in enumerate(zip(arrays, targets)):
                if tuple(np.shape(array)) != tuple(target.data.shape):
                    raise FormatError(
                        f"{source}: layer '{layer}' blob {index} has shape {list(np.shape(array))} but the "
                        f"net needs {list(target.data.shape)}",
                        hint="the weights were written for another net (or another scale/configuration)",
                    )

    def load_weights(self, path: PathLike) -> None:
        """Load a ``.caffemodel`` with Caffe's own reader (``copy_from``), matched to layers by name, after
        checking here every blob shape (Caffe would abort the process on a misfit)."""
        model = caffe_io.read_caffemodel(path)
        self._check_fits(caffe_io.layer_blobs(model), source=str(path))
        self._net.copy_from(str(path))

    def save_weights(self, path: PathLike) -> None:
        """Write the net and its weights as a ``.caffemodel`` with Caffe's own writer (atomically)."""
        with atomic_path(path) as temporary:
            self._net.save(str(temporary))


class PycaffeSolver:
    """Caffe's own solver (``caffe.get_solver``) over a ``solver.prototxt``: step, snapshot, restore.

    As in Caffe, the solver's ``net`` and ``snapshot_prefix`` are relative to the working directory.
    """

    def __init__(self, solver_prototxt: PathLike, weights: Optional[PathLike] = None) -> None:
        path = _existing_file(solver_prototxt, "solver prototxt")
        settings = caffe_io.read_solver(path)
        caffe = import_caffe()
        net_file = settings.net or settings.train_net
        if not net_file:
            raise FormatError(f"{path}: the solver names no net", hint="set net: \"train.prototxt\"")
        _check_layer_types(caffe, _existing_file(net_file, "the solver's net"))
        self.settings = settings
        self._solver = caffe.get_solver(path)
        self.net = PycaffeNet._wrapping(self._solver.net, net_file, "TRAIN")
        if weights is not None:
            self.net.load_weights(weights)

    @property
    def iteration(self) -> int:
        return int(self._solver.iter)

    def step(self, iterations: int) -> None:
        """Run ``iterations`` solver iterations (forward, backward, update) on what the net's data gives."""
        if iterations < 0:
            raise ModelError(f"cannot step {iterations} iterations", hint="pass a count >= 0")
        self._solver.step(iterations)

    def solve(self) -> None:
        """Run to ``max_iter`` as ``caffe train`` does: its tests, displays and snapshots by the solver's
        settings, and a snapshot at the end (``snapshot_after_train``)."""
        self._solver.solve()

    def snapshot(self) -> Path:
        """Write ``<snapshot_prefix>_iter_<n>.caffemodel`` and its ``.solverstate``; return the caffemodel."""
        if not self.settings.snapshot_prefix:
            raise ModelError("the solver has no snapshot_prefix", hint="set snapshot_prefix in the solver")
        self._solver.snapshot()
        return Path(f"{self.settings.snapshot_prefix}_iter_{self.iteration}.caffemodel")

    def restore(self, solverstate: PathLike) -> None:
        """Resume from a ``.solverstate`` (its weights and momentum history)."""
        caffe_io.read_solverstate(solverstate)
        self._solver.restore(_existing_file(solverstate, "solverstate"))
