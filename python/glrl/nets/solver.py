"""Solvers: the paper's SGD recipe (and SRCNN's own) combined with a named schedule into ``solver.prototxt``.

A *recipe* is what the optimiser does at every step (learning rate, momentum, weight decay, lr policy,
clipping); a *schedule* is how long it runs and how often it halves the rate, snapshots and tests, in
epochs or iterations. Epochs become iterations only when the patch set is known: ``iters_per_epoch`` is
an argument, and ``glrl train`` writes the run's solver from the real size of the HDF5 set.

The paper (section 4.1): "a mini-batch size of 32, a momentum and weight decay parameter set to 0.9 and
0.0001, respectively. The initial learning rate is set to 0.1. There are 76 epochs ... Then every 10 epochs
learning rates are cut in half." Gradient clipping is mentioned without a value; Caffe 1.0 offers only
``clip_gradients`` (scale all gradients when their global L2 norm exceeds the value). We use 0.01: the
paper's numbers are those of DRRN's released Caffe solver (base_lr 0.1, gamma 0.5, a step every 10
epochs of 6536 iterations), and that solver sets ``clip_gradients: 0.01``, Caffe's fixed-norm stand-in for
DRRN's adjustable clipping with theta = 0.01. ``solver_mode`` is not written: Caffe then runs on the CPU
unless ``--gpu`` is given, and our trainer picks the device at run time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Sequence

from glrl.errors import TrainingError

EPOCH = "epoch"
ITERATION = "iteration"


@dataclass(frozen=True)
class Length:
    """A span of training in epochs (converted with the patch set's size) or in iterations."""

    count: float
    unit: str = EPOCH

    def iterations(self, iters_per_epoch: int) -> int:
        if self.unit == ITERATION:
            return int(self.count)
        return max(1, round(self.count * iters_per_epoch))

    def describe(self) -> str:
        count = f"{self.count:g}"
        return f"{count} {self.unit}{'' if self.count == 1 else 's'}"


@dataclass(frozen=True)
class Schedule:
    """How long a run lasts and how often the rate is stepped, weights are snapshot and the test net runs."""

    name: str
    description: str
    max_iter: Length
    step: Length
    snapshot: Length
    display: int
    # at most this many TEST-phase batches per test (None: the whole validation set); on a CPU a full
    # pass over Set5's validation patches costs more than the training between two tests
    max_test_batches: Optional[int] = None


SCHEDULES: Dict[str, Schedule] = {
    schedule.name: schedule
    for schedule in (
        Schedule("paper", "the paper: 76 epochs, lr halved every 10 epochs, snapshot and test every epoch",
                 Length(76), Length(10), Length(1), display=100),
        Schedule("cpu-short", "3000 iterations, lr halved every 1000, snapshot and test every 500 (a CPU run)",
                 Length(3000, ITERATION), Length(1000, ITERATION), Length(500, ITERATION), display=50),
        Schedule("cpu-release", "800 iterations, lr halved every 300, snapshot and test every 200 on 50 "
                 "validation batches (the CPU-trained released models)",
                 Length(800, ITERATION), Length(300, ITERATION), Length(200, ITERATION), display=20,
                 max_test_batches=50),
        Schedule("cpu-20k", "20000 iterations, lr halved every 7000, snapshot and test every 2500 on 50 "
                 "validation batches (small nets such as SRCNN on a CPU: ~100x cheaper per step than GLRL)",
                 Length(20000, ITERATION), Length(7000, ITERATION), Length(2500, ITERATION), display=500,
                 max_test_batches=50),
        Schedule("gpu-60k", "60000 iterations, lr halved every 20000, snapshot and test every 5000 on 50 "
                 "validation batches (GLRL in minutes of a GPU: scripts/gpu_table1.sh)",
                 Length(60000, ITERATION), Length(20000, ITERATION), Length(5000, ITERATION), display=1000,
                 max_test_batches=50),
        Schedule("cpu-60k", "60000 iterations, lr halved every 20000, snapshot and test every 5000 on 50 "
                 "validation batches (the released SRCNN models, one per scale: 38 min on a 2-core CPU, three at once)",
                 Length(60000, ITERATION), Length(20000, ITERATION), Length(5000, ITERATION), display=1000,
                 max_test_batches=50),
        Schedule("gpu-finetune", "24000 iterations, lr halved every 8000, snapshot and test every 4000 on 50 "
                 "validation batches (a second stage from released weights: --weights, often a larger "
                 "--batch-size)",
                 Length(24000, ITERATION), Length(8000, ITERATION), Length(4000, ITERATION), display=1000,
                 max_test_batches=50),
        Schedule("cpu-finetune", "8000 iterations, lr halved every 4000, snapshot and test every 2000 on 50 "
                 "validation batches (a second stage from released weights on a CPU: --weights, e.g. the "
                 "x2/x3/x4 model on one scale's patches)",
                 Length(8000, ITERATION), Length(4000, ITERATION), Length(2000, ITERATION), display=500,
                 max_test_batches=50),
        Schedule("smoke", "8 iterations, lr halved every 4, snapshot and test every 4 (CI, quick checks)",
                 Length(8, ITERATION), Length(4, ITERATION), Length(4, ITERATION), display=1),
    )
}


@dataclass(frozen=True)
class SolverRecipe:
    """The per-step optimiser settings of one net's training (schedule-independent)."""

    base_lr: float
    lr_policy: str
    momentum: float
    weight_decay: float
    gamma: Optional[float] = None
    clip_gradients: Optional[float] = None
    solver_type: str = "SGD"  # Caffe's `type`: SGD, Nesterov or Adam
    momentum2: Optional[float] = None  # Adam's beta2

    def build(
        self,
        net_path: str,
        iters_per_epoch: int,
        schedule: str = "paper",
        snapshot_prefix: str = "snapshot",
        test_iters: int = 50,
    ) -> Any:
        """The ``pb.SolverParameter`` for ``net_path`` (a train/test prototxt, as Caffe's ``net`` field).

        ``test_iters`` batches of the TEST phase run at every snapshot (50 batches of 2 patches by
        default); the trainer passes the validation set's size in batches.
        """
        from glrl.caffe import pb

        plan = get_schedule(schedule)
        if not isinstance(iters_per_epoch, int) or iters_per_epoch < 1:
            raise TrainingError(f"iterations per epoch must be a positive integer, not {iters_per_epoch!r}",
                                hint="it is the number of training patches divided by the batch size, rounded up")
        if not isinstance(test_iters, int) or test_iters < 1:
            raise TrainingError(f"test_iter must be a positive integer, not {test_iters!r}",
                                hint="pass the validation patches divided by the test batch size, rounded up")
        interval = plan.snapshot.iterations(iters_per_epoch)
        if plan.max_test_batches is not None:
            test_iters = min(test_iters, plan.max_test_batches)
        solver = pb.SolverParameter()
        solver.net = net_path
        solver.test_iter.append(test_iters)
        solver.test_interval = interval
        solver.test_initialization = False
        solver.type = self.solver_type
        solver.base_lr = self.base_lr
        solver.lr_policy = self.lr_policy
        if self.lr_policy == "step":
            solver.gamma = self.gamma
            solver.stepsize = plan.step.iterations(iters_per_epoch)
        solver.momentum = self.momentum
        if self.momentum2 is not None:
            solver.momentum2 = self.momentum2
        solver.weight_decay = self.weight_decay
        if self.clip_gradients is not None:
            solver.clip_gradients = self.clip_gradients
        solver.max_iter = plan.max_iter.iterations(iters_per_epoch)
        solver.display = plan.display
        solver.average_loss = plan.display
        solver.snapshot = interval
        solver.snapshot_prefix = snapshot_prefix
        return solver

    def describe(self) -> str:
        parts = [f"{self.solver_type} base_lr {self.base_lr:g}", f"momentum {self.momentum:g}",
                 f"weight_decay {self.weight_decay:g}", f"lr_policy {self.lr_policy}"]
        if self.gamma is not None:
            parts.append(f"gamma {self.gamma:g}")
        if self.clip_gradients is not None:
            parts.append(f"clip_gradients {self.clip_gradients:g}")
        return ", ".join(parts)


# GLRL (and VDSR, trained the same way for comparison): section 4.1 of the paper, clipping as argued above.
PAPER_SGD = SolverRecipe(base_lr=0.1, lr_policy="step", gamma=0.5, momentum=0.9, weight_decay=1e-4,
                         clip_gradients=0.01)

# SRCNN (Dong et al. 2014): plain SGD at 1e-4 (the last layer at 1e-5 through lr_mult 0.1 in the net),
# momentum 0.9, no weight decay, a fixed rate; run for the same schedule lengths as the others.
SRCNN_SGD = SolverRecipe(base_lr=1e-4, lr_policy="fixed", momentum=0.9, weight_decay=0.0)

# Adam (Caffe's "Adam": momentum = beta1, momentum2 = beta2, delta = epsilon 1e-8), for runs far shorter
# than the paper's: with clip_gradients 0.01 and lr 0.1, SGD moves the weights by at most 1e-3 (1e-2 with
# momentum) in L2 norm per step, which a 76-epoch run can afford and a CPU run of a thousand steps cannot.
# base_lr 1e-4: at 1e-3 (our first choice) GLRL stalled at the noise of its steps, Set5 x3 30.98 dB after
# 2,500 iterations on the x2/x3/x4 set, against 31.28 dB after 400 at 1e-4 (same seed; docs/training.md).
ADAM = SolverRecipe(base_lr=1e-4, lr_policy="step", gamma=0.5, momentum=0.9, weight_decay=0.0,
                    solver_type="Adam", momentum2=0.999)
# The same at base_lr 1e-3, for SRCNN's three layers (docs/training.md): with N(0, 1e-3) weights it killed
# most of SRCNN's ReLU units; with msra weights it learns faster than 1e-4 (the released per-scale models,
# 60,000 iterations: Set5 36.26 / 32.34 / 30.05 dB against 35.70 / 31.84 / 29.66 at 1e-4).
ADAM_1E3 = replace(ADAM, base_lr=1e-3)

# The same at the rate the released gpu-60k runs ended at, for a second stage that goes on from their
# weights (cpu-finetune): 1e-4 would first throw away what the last halvings gained.
ADAM_2_5E5 = replace(ADAM, base_lr=2.5e-5)

# Optimiser recipes by name, for `glrl train --optimizer` (default: the net's own recipe).
OPTIMIZERS: Dict[str, SolverRecipe] = {"paper": PAPER_SGD, "srcnn": SRCNN_SGD, "adam": ADAM,
                                       "adam-1e-3": ADAM_1E3, "adam-2.5e-5": ADAM_2_5E5}

# The committed solver.prototxt files are written for this epoch: DRRN's released solver counts 6536
# iterations of 128 patches per epoch (its 31x31 x2/x3/x4 set), i.e. 26144 iterations of 32 patches.
REFERENCE_ITERS_PER_EPOCH = 6536 * 128 // 32


def get_optimizer(name: str) -> SolverRecipe:
    """The named optimiser recipe, or a clear error listing the known ones."""
    return _named(OPTIMIZERS, name, "optimizer")


def get_schedule(name: str) -> Schedule:
    """The named schedule, or a clear error listing the known ones."""
    return _named(SCHEDULES, name, "schedule")


def _named(table: Dict[str, Any], name: str, kind: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise TrainingError(f"unknown {kind} {name!r}", hint=f"choose one of: {', '.join(table)}") from None


def iters_per_epoch(patches: int, batch_size: int) -> int:
    """Iterations for one pass over ``patches`` training patches in batches of ``batch_size`` (last one partial)."""
    if patches < 1 or batch_size < 1:
        raise TrainingError(f"cannot make epochs of {patches} patches in batches of {batch_size}",
                            hint="build the patch set first (glrl data build) and use a positive batch size")
    return math.ceil(patches / batch_size)


# Fields that tie a solver to its run folder: the net it trains and where its snapshots go.
RUN_BOUND_FIELDS = frozenset({"net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param",
                              "snapshot_prefix"})


def set_solver_fields(solver: Any, assignments: Sequence[str]) -> None:
    """Apply ``FIELD=VALUE`` assignments (``glrl train --solver-set``) to a ``SolverParameter`` in place.

    Each value is read as ``solver.prototxt`` would read it, so types and enum names are checked by protobuf:
    ``base_lr=1.25e-5``, ``type=Adam``, ``stepvalue=4000,8000`` (a repeated field gets exactly the listed
    values). The fields that name the net and the snapshots are the run folder's and are refused, as are
    unknown names (with the nearest known ones) and values their field cannot hold."""
    import difflib

    from google.protobuf import text_format

    fields = {field.name: field for field in solver.DESCRIPTOR.fields}
    for assignment in assignments:
        name, equals, value = (part.strip() for part in assignment.partition("="))
        if not equals or not name or not value:
            raise TrainingError(f"--solver-set {assignment!r} is not FIELD=VALUE",
                                hint="e.g. --solver-set base_lr=1.25e-5 --solver-set stepsize=1500")
        field = fields.get(name)
        if field is None:
            near = difflib.get_close_matches(name, fields, n=3)
            raise TrainingError(f"--solver-set {assignment!r}: the solver has no field {name!r}",
                                hint=f"did you mean {' or '.join(near)}?" if near
                                else "see SolverParameter in glrl/caffe/caffe_subset.proto")
        if name in RUN_BOUND_FIELDS:
            raise TrainingError(f"--solver-set {assignment!r}: {name} belongs to the run folder, not to the "
                                "optimiser", hint="give a whole solver with --solver instead")
        if field.message_type is not None:
            raise TrainingError(f"--solver-set {assignment!r}: {name} is a message, not one value",
                                hint="give a whole solver with --solver instead")
        values = [item.strip() for item in value.split(",")]
        if field.type == field.TYPE_STRING:
            values = ['"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in values]
        scratch = type(solver)()
        try:
            text_format.Merge("\n".join(f"{name}: {item}" for item in values), scratch)
        except text_format.ParseError as exc:
            raise TrainingError(f"--solver-set {assignment!r}: {name} cannot hold {value!r} ({exc})",
                                hint="write the value as solver.prototxt would") from None
        solver.ClearField(name)
        solver.MergeFrom(scratch)
