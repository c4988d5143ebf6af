"""``glrl train --cuda-graph``: one Caffe Adam iteration (forward, backward, update) replayed as a CUDA graph.

At the paper's batch of 32 a GLRL step is a few hundred small kernels, each launched from Python: on an
H200 the host needs ~16 ms an iteration for ~1.5 ms of GPU work (docs/gpu-slices.md). Captured once as a
CUDA graph, an iteration is one launch (the benchmark's "CUDA graph (Adam)" mode: 3.9 ms in TF32).

What a graph can hold decides what this step does: the net's forward and backward and Caffe's Adam update
(:class:`~glrl.train.solver.CaffeSolver`'s arithmetic, op for op), with every step-dependent number kept in
device tensors that are set before each replay: the batch (copied into the graph's input tensors) and, per
``lr_mult``, ``local_rate·√(1−β2^t)/(1−β1^t)``, computed on the host exactly as CaffeSolver computes it. The
moments are CaffeSolver's own history tensors, updated in place, so snapshots, ``--resume`` and the lr
policy are the solver's. Clipping (a host decision on the gradient norm), weight decay, ``iter_size`` > 1
and several processes are refused, listing why: ``glrl train`` without ``--cuda-graph`` runs those.

The first three iterations run eagerly on a side stream (CUDA's warm-up for capture), the fourth is
captured and replayed, every later one replayed. If the capture fails the run goes on eagerly with a note.
On the CPU there is nothing to capture and every iteration runs eagerly: the arithmetic the tests compare
with CaffeSolver's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from glrl.errors import TrainingError
from glrl.train.lr_policy import to_float32
from glrl.train.solver import Batch, CaffeSolver

WARMUP_ITERATIONS = 3


def refusals(solver: CaffeSolver) -> List[str]:
    """Why ``solver``'s iteration cannot be one graph (empty: it can)."""
    settings = solver.settings
    reasons = []
    if settings.type != "Adam":
        reasons.append(f"the solver is {settings.type}, not Adam (--optimizer adam)")
    if solver.clip_threshold() >= 0:
        reasons.append("gradient clipping is on (it decides on the host from the gradient norm)")
    if settings.weight_decay and any(p.decay_mult for p in solver.params):
        reasons.append(f"weight_decay is {settings.weight_decay:g} (the graphed step has no regularisation)")
    if settings.iter_size != 1:
        reasons.append(f"iter_size is {settings.iter_size} (one forward/backward pass per iteration only)")
    if solver.gradient_reducer is not None or solver.loss_reducer is not None:
        reasons.append("several processes train together (their gradients are summed between passes)")
    return reasons


class GraphedAdamIteration:
    """Call it as ``CaffeSolver.iteration``: it takes one batch from ``batches``, runs one iteration and
    returns its loss."""

    def __init__(self, solver: CaffeSolver, log: Callable[[str], None] = lambda message: None) -> None:
        reasons = refusals(solver)
        if reasons:
            raise TrainingError("--cuda-graph cannot capture this run's iteration: " + "; ".join(reasons),
                                hint="train without --cuda-graph, or with --optimizer adam and a solver without "
                                     "clip_gradients and weight_decay")
        self.solver = solver
        self.log = log
        self.params = [p.param for p in solver.params]
        count = len(self.params)
        self.first, self.second = solver.history[:count], solver.history[count:]
        device = self.params[0].device
        self.capture = device.type == "cuda"
        # one device scalar per lr_mult: the step size each parameter's update is multiplied by
        self.steps: Dict[float, torch.Tensor] = {}
        for p in solver.params:
            self.steps.setdefault(to_float32(p.lr_mult), torch.zeros((), dtype=torch.float32, device=device))
        self.step_of = [self.steps[to_float32(p.lr_mult)] for p in solver.params]
        self.inputs: Optional[Dict[str, torch.Tensor]] = None
        self.loss: Optional[torch.Tensor] = None
        self.graph: Optional[Any] = None
        self.eager_iterations = 0  # run so far without a graph (the warm-up, or every one off CUDA)

    def describe(self) -> str:
        if self.capture:
            return (f"--cuda-graph: after {WARMUP_ITERATIONS} eager iterations, each iteration is one replay of "
                    "a CUDA graph")
        return "--cuda-graph: no CUDA device, so the graphed step runs eagerly"

    def __call__(self, batches: Iterator[Batch]) -> float:
        solver = self.solver
        self._set_inputs(solver.next_batch(batches))
        self._set_step_sizes()
        if self.graph is not None:
            self.graph.replay()
        elif self.capture and self.eager_iterations >= WARMUP_ITERATIONS:
            self._capture_and_replay()
        else:
            self._eager()
        solver.iter += 1
        return float(self.loss.detach().float())

    # -- the iteration, as CaffeSolver computes it -------------------------------------------------------------
    def _iteration(self) -> None:
        """Forward, backward and Adam's update; nothing here reads back to the host."""
        solver, params = self.solver, self.params
        settings = solver.settings
        for param in params:
            param.grad = None
        with solver.autocast():
            loss = solver.net.loss(solver.net.forward(self.inputs))
        loss.backward()
        self.loss = loss
        gradients = solver._gradients()
        beta1, beta2 = to_float32(settings.momentum), to_float32(settings.momentum2)
        with torch.no_grad():
            torch._foreach_mul_(self.first, beta1)
            torch._foreach_add_(self.first, gradients, alpha=to_float32(1.0 - beta1))
            torch._foreach_mul_(self.second, beta2)
            torch._foreach_add_(self.second, torch._foreach_mul(gradients, gradients), alpha=to_float32(1.0 - beta2))
            denominators = torch._foreach_sqrt(self.second)
            torch._foreach_add_(denominators, to_float32(settings.delta))
            updates = torch._foreach_div(self.first, denominators)
            torch._foreach_mul_(updates, self.step_of)
            torch._foreach_sub_(params, updates)

    def _set_step_sizes(self) -> None:
        """This iteration's rate, and Adam's step size per lr_mult, as CaffeSolver computes them."""
        self.solver.advance_rate()
        for lr_mult, step in self.steps.items():
            step.fill_(self.solver.adam_step_size(lr_mult))

    def _set_inputs(self, batch: Batch) -> None:
        """Copy the batch into the input tensors the graph reads (allocated once, at the first batch)."""
        values = {name: self.solver._to_tensor(value) for name, value in batch.items()}
        if self.inputs is None:
            self.inputs = {name: value.clone() for name, value in values.items()}
            return
        for name, value in values.items():
            if name not in self.inputs or self.inputs[name].shape != value.shape:
                raise TrainingError(f"batch blob {name!r} changed shape to {tuple(value.shape)}: a captured "
                                    "iteration needs every batch alike", hint="train without --cuda-graph")
            self.inputs[name].copy_(value)

    # -- eager, warm-up and capture ----------------------------------------------------------------------------
    def _eager(self) -> None:
        if not self.capture:
            self._iteration()
        else:  # CUDA's warm-up before a capture: on a side stream
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._iteration()
            torch.cuda.current_stream().wait_stream(side)
        self.eager_iterations += 1

    def _capture_and_replay(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                self._iteration()
        except Exception as exc:  # the run goes on, eagerly
            self.capture = False
            self.log(f"--cuda-graph: the capture failed ({type(exc).__name__}: {exc}); going on without a graph")
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            self._iteration()
            return
        self.graph = graph
        self.log(f"--cuda-graph: iteration {self.solver.iter} captured; every later one replays it")
        graph.replay()
