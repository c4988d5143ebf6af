"""Caffe 1.0's SGD, Nesterov and Adam solvers over a :class:`~glrl.backends.torch_net.TorchNet`.

One iteration does what ``Solver::Step`` + ``SGDSolver::ApplyUpdate`` do in Caffe, in the same order:

1. clear the parameter diffs; run ``iter_size`` forward/backward passes (the diffs accumulate);
2. (several processes: sum the diffs over processes and divide by their number, as Caffe's NCCL sync does);
3. ``rate`` from the lr policy; **clip**: if ``clip_gradients >= 0`` and the global L2 norm of all diffs
   exceeds it, scale every diff by ``clip_gradients / norm`` (optionally DRRN's adjustable threshold
   ``theta / rate`` instead);
4. per parameter: **normalise** (diff ``*= 1/iter_size``), **regularise** (L2: diff += local_decay·w; L1:
   diff += local_decay·sign(w); local_decay = weight_decay·decay_mult), **update value** with
   local_rate = rate·lr_mult:

   - SGD:      h = momentum·h + local_rate·diff;  diff = h
   - Nesterov: h' = momentum·h + local_rate·diff; diff = (1+momentum)·h' − momentum·h
   - Adam:     m = β1·m + (1−β1)·diff; v = β2·v + (1−β2)·diff²;
               diff = local_rate·√(1−β2^t)/(1−β1^t) · m / (√v + delta), t = iter + 1;
5. w −= diff; ``iter`` += 1.

Scalars are rounded to float32 where Caffe holds them in a ``float``. The solver's state (``iter``,
``current_step``, the history blobs in learnable-parameter order, Adam's m then v) is exactly what Caffe's
``.solverstate`` holds, so states convert both ways (:meth:`CaffeSolver.state_proto`, :meth:`restore_state`).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
from glrl.errors import TrainingError
from glrl.train.lr_policy import to_float32
from glrl.train.settings import SolverSettings

Batch = Mapping[str, Any]
GradientReducer = Callable[[List[torch.Tensor]], None]
LossReducer = Callable[[float], float]


class CaffeSolver:
    """Caffe's solver semantics over ``net.learnable_params()``; drive it with :meth:`step`.

    ``net`` needs ``forward(inputs) -> blobs``, ``loss(blobs) -> scalar tensor`` and
    ``learnable_params()`` (objects with ``param``, ``lr_mult``, ``decay_mult``, ``key``), as TorchNet has.
    ``adjustable_clip`` (theta) replaces ``clip_gradients`` by ``theta / rate`` (DRRN's adjustable clipping).
    ``gradient_reducer``/``loss_reducer`` make several processes act as one
    (see :mod:`glrl.train.distributed`).
    ``autocast`` is a context factory wrapped around each forward pass (mixed precision; off by default).
    """

    def __init__(
        self,
        settings: SolverSettings,
        net: Any,
        *,
        adjustable_clip: Optional[float] = None,
        gradient_reducer: Optional[GradientReducer] = None,
        loss_reducer: Optional[LossReducer] = None,
        autocast: Optional[Callable[[], ContextManager]] = None,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.settings = settings
        self.net = net
        self.params = list(net.learnable_params())
        if not self.params:
            raise TrainingError("the net has no learnable parameters", hint="check the train net prototxt")
        if adjustable_clip is not None and adjustable_clip <= 0:
            raise TrainingError(f"adjustable clipping needs theta > 0 (got {adjustable_clip})",
                                hint="pass a positive --adjustable-clip")
        self.adjustable_clip = adjustable_clip
        self.gradient_reducer = gradient_reducer
        self.loss_reducer = loss_reducer
        self.autocast = autocast or contextlib.nullcontext
        self.log = log or (lambda message: None)
        copies = 2 if settings.type == "Adam" else 1
        self.history = [torch.zeros_like(p.param.detach()) for _ in range(copies) for p in self.params]
        self.iter = 0
        self.current_step = 0
        self.rate = settings.lr.rate(0, 0)[0]
        self.last_gradient_norm = float("nan")

    # -- one iteration ------------------------------------------------------------------------------------
    def step(self, batches: Iterator[Batch], iterations: int = 1) -> List[float]:
        """Run ``iterations`` iterations, each taking ``iter_size`` batches from ``batches``; return the
        loss of each iteration (the mean over its ``iter_size`` passes, as Caffe displays it)."""
        return [self.iteration(batches) for _ in range(iterations)]

    def iteration(self, batches: Iterator[Batch]) -> float:
        """One Caffe iteration (forward/backward ``iter_size`` times, then :meth:`apply_update`)."""
        for p in self.params:
            p.param.grad = None
        total = 0.0
        for _ in range(self.settings.iter_size):
            total += self.forward_backward(self.next_batch(batches))
        loss = total / self.settings.iter_size
        if self.loss_reducer is not None:
            loss = self.loss_reducer(loss)
        if self.gradient_reducer is not None:
            self.gradient_reducer(self._gradients())
        self.apply_update()
        self.iter += 1
        return loss

    @staticmethod
    def next_batch(batches: Iterator[Batch]) -> Batch:
        """The next batch, or a clear error where the source has run dry."""
        try:
            return next(batches)
        except StopIteration:
            raise TrainingError("the batch source ran out during an iteration",
                                hint="give the solver an endless batch iterator") from None

    def forward_backward(self, batch: Batch) -> float:
        """One forward and backward pass on ``batch`` (blob name -> array); the diffs accumulate."""
        inputs = {name: self._to_tensor(value) for name, value in batch.items()}
        with self.autocast():
            blobs = self.net.forward(inputs)
            loss = self.net.loss(blobs)
        loss.backward()
        return float(loss.detach().float())

    def apply_update(self) -> None:
        """Clip, normalise, regularise, compute the update value and apply it (``SGDSolver::ApplyUpdate``)."""
        settings = self.settings
        self.advance_rate()
        gradients = self._gradients()
        with torch.no_grad():
            self._clip(gradients)
            normalisation = to_float32(1.0 / settings.iter_size)
            for index, (p, diff) in enumerate(zip(self.params, gradients)):
                if settings.iter_size != 1:
                    diff.mul_(normalisation)
                self._regularize(p, diff)
                self._compute_update_value(index, p, diff)
            for p, diff in zip(self.params, gradients):
                p.param.sub_(diff)

    # -- the parts of ApplyUpdate ----------------------------------------------------------------------------
    def advance_rate(self) -> None:
        """``rate`` (and ``current_step``) from the lr policy for this iteration."""
        self.rate, self.current_step = self.settings.lr.rate(self.iter, self.current_step)

    def adam_step_size(self, lr_mult: float) -> float:
        """Adam's ``local_rate·√(1−β2^t)/(1−β1^t)`` at this iteration (t = iter + 1), in float32 as Caffe."""
        settings = self.settings
        beta1, beta2 = to_float32(settings.momentum), to_float32(settings.momentum2)
        t = self.iter + 1
        correction = to_float32(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))
        return to_float32(to_float32(self.rate * to_float32(lr_mult)) * correction)

    def clip_threshold(self) -> float:
        """The gradient-norm threshold in force (negative: no clipping)."""
        if self.adjustable_clip is not None:
            return to_float32(self.adjustable_clip / self.rate) if self.rate > 0 else -1.0
        return to_float32(self.settings.clip_gradients)

    def _clip(self, gradients: Sequence[torch.Tensor]) -> None:
        threshold = self.clip_threshold()
        if threshold < 0:
            return
        sumsq = torch.zeros((), dtype=torch.float32, device=gradients[0].device)
        for diff in gradients:
            sumsq += torch.sum(diff * diff)
        norm = float(torch.sqrt(sumsq))
        self.last_gradient_norm = norm
        if norm > threshold:
            scale = to_float32(threshold / norm)
            self.log(f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > {threshold:g}) "
                     f"by scale factor {scale:g}")
            for diff in gradients:
                diff.mul_(scale)

    def _regularize(self, p: Any, diff: torch.Tensor) -> None:
        local_decay = to_float32(to_float32(self.settings.weight_decay) * to_float32(p.decay_mult))
        if not local_decay:
            return
        weights = p.param.detach()
        if self.settings.regularization_type == "L2":
            diff.add_(weights, alpha=local_decay)
        else:
            diff.add_(torch.sign(weights), alpha=local_decay)

    def _compute_update_value(self, index: int, p: Any, diff: torch.Tensor) -> None:
        settings = self.settings
        local_rate = to_float32(self.rate * to_float32(p.lr_mult))
        momentum = to_float32(settings.momentum)
        history = self.history[index]
        if settings.type == "SGD":
            history.mul_(momentum).add_(diff, alpha=local_rate)
            diff.copy_(history)
        elif settings.type == "Nesterov":
            previous = history.clone()
            history.mul_(momentum).add_(diff, alpha=local_rate)
            diff.copy_(previous.mul_(-momentum).add_(history, alpha=to_float32(1.0 + momentum)))
        else:  # Adam; momentum is beta1
            beta2 = to_float32(settings.momentum2)
            first, second = history, self.history[index + len(self.params)]
            first.mul_(momentum).add_(diff, alpha=to_float32(1.0 - momentum))
            second.mul_(beta2).add_(diff * diff, alpha=to_float32(1.0 - beta2))
            denominator = torch.sqrt(second).add_(to_float32(settings.delta))
            torch.div(first, denominator, out=diff)
            diff.mul_(self.adam_step_size(p.lr_mult))

    # -- state ---------------------------------------------------------------------------------------------
    def history_arrays(self) -> List[np.ndarray]:
        """The history blobs as float32 arrays, in Caffe's order (learnable params; Adam: m's then v's)."""
        return [h.detach().cpu().numpy().astype(np.float32, copy=True) for h in self.history]

    def set_history(self, arrays: Sequence[np.ndarray]) -> None:
        """Load history blobs (Caffe's order); each must have its parameter's number of elements."""
        if len(arrays) != len(self.history):
            raise TrainingError(
                f"the solver state has {len(arrays)} history blobs but this {self.settings.type} solver over "
                f"{len(self.params)} learnable parameters needs {len(self.history)}",
                hint="resume with the solver type and net the state was written with",
            )
        for index, (target, array) in enumerate(zip(self.history, arrays)):
            param = self.params[index % len(self.params)]
            if int(np.asarray(array).size) != target.numel():
                raise TrainingError(
                    f"history blob {index} ({param.key}) has {np.asarray(array).size} values, "
                    f"the parameter has {target.numel()}",
                    hint="resume with the net the state was written with",
                )
            values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).reshape(target.shape))
            target.copy_(values.to(target.device))

    def state_proto(self, learned_net: str) -> Any:
        """This solver's state as a ``caffe.SolverState`` naming ``learned_net`` (as Caffe writes it)."""
        from glrl.caffe import pb
        from glrl.caffe.io import array_to_blob

        state = pb.SolverState()
        state.iter = self.iter
        state.learned_net = learned_net
        state.current_step = self.current_step
        for array in self.history_arrays():
            state.history.add().CopyFrom(array_to_blob(array))
        return state

    def restore_state(self, state: Any) -> None:
        """Take ``iter``, ``current_step`` and the history from a ``caffe.SolverState`` (weights are
        loaded separately, from its ``learned_net``)."""
        from glrl.caffe.io import blob_to_array

        self.set_history([blob_to_array(blob) for blob in state.history])
        self.iter = int(state.iter)
        self.current_step = int(state.current_step)
        self.rate = self.settings.lr.rate(self.iter, self.current_step)[0]

    # -- helpers -------------------------------------------------------------------------------------------
    def _gradients(self) -> List[torch.Tensor]:
        gradients = []
        for p in self.params:
            if p.param.grad is None:
                p.param.grad = torch.zeros_like(p.param.detach())
            gradients.append(p.param.grad)
        return gradients

    def _to_tensor(self, value: Any) -> torch.Tensor:
        device = self.params[0].param.device
        if isinstance(value, torch.Tensor):
            return value.to(device)
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(device)

    def weights_finite(self) -> bool:
        """Whether every learnable parameter is free of NaN and Inf."""
        with torch.no_grad():
            return all(bool(torch.isfinite(p.param).all()) for p in self.params)

