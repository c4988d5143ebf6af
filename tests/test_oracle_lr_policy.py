"""Every Caffe 1.0 learning-rate policy, rate for rate, against real Caffe (the oracle root).

The net is one 1×1 convolution weight ``w`` under a EuclideanLoss whose gradient with respect to ``w`` is
exactly 1 (input 1, label -1, ``w`` reset to 0 before each iteration). With momentum 0 and no weight decay
an SGD iteration then leaves ``w = 0 - rate``: the float32 rate the solver used, to the last bit. Each
policy runs 12 iterations without a break, and again as 7 iterations, a snapshot, and 5 more iterations
resumed from that ``.solverstate`` (multistep's position, ``current_step``, lives only there). glrl's
:class:`~glrl.train.solver.CaffeSolver` does the same from the same solver.prototxt; the rates must be
equal, not close.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Dict, List

import pytest
from glrl import oracle

pytestmark = pytest.mark.oracle

ITERATIONS = 12
SNAPSHOT_AT = 7

NET = """
name: "rate_probe"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 1 dim: 1 dim: 1 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } } }
layer { name: "w" type: "Convolution" bottom: "data" top: "out"
  convolution_param { num_output: 1 kernel_size: 1 bias_term: false } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }
"""

# Values chosen so that float32 rounding shows: base_lr and gamma are not exact in binary, the multistep
# list repeats a value (Caffe moves one step per iteration, so 2, 2 take two iterations) and is resumed
# between two of its steps, and poly runs up to one iteration before max_iter.
POLICIES: Dict[str, str] = {
    "fixed": 'lr_policy: "fixed" base_lr: 0.01',
    "step": 'lr_policy: "step" base_lr: 0.1 gamma: 0.1 stepsize: 3',
    "exp": 'lr_policy: "exp" base_lr: 0.05 gamma: 0.93',
    "inv": 'lr_policy: "inv" base_lr: 0.01 gamma: 0.37 power: 0.75',
    "multistep": 'lr_policy: "multistep" base_lr: 0.1 gamma: 0.3 stepvalue: 2 stepvalue: 2 stepvalue: 5 '
                 'stepvalue: 9',
    "poly": 'lr_policy: "poly" base_lr: 0.01 power: 0.75',
    "sigmoid": 'lr_policy: "sigmoid" base_lr: 0.01 gamma: 0.7 stepsize: 5',
}


def solver_text(policy: str) -> str:
    return (f'net: "net.prototxt" type: "SGD" momentum: 0 weight_decay: 0 max_iter: {ITERATIONS + 1} '
            f'display: 0 snapshot_prefix: "snap/{policy}" {POLICIES[policy]}\n')


# Runs inside the root: plain pycaffe, no glrl.
ROOT_SCRIPT = f"""
import json, os
import caffe

caffe.set_mode_cpu()
os.makedirs("snap")

def step(solver, count, rates):
    for _ in range(count):
        solver.net.blobs["data"].data[...] = 1
        solver.net.blobs["label"].data[...] = -1
        solver.net.params["w"][0].data[...] = 0
        solver.step(1)
        rates.append(-float(solver.net.params["w"][0].data.flat[0]))

results = {{}}
for policy in {sorted(POLICIES)!r}:
    solver = caffe.get_solver(policy + ".prototxt")
    straight = []
    step(solver, {ITERATIONS}, straight)
    first = caffe.get_solver(policy + ".prototxt")
    resumed = []
    step(first, {SNAPSHOT_AT}, resumed)
    first.snapshot()
    second = caffe.get_solver(policy + ".prototxt")
    second.restore("snap/%s_iter_{SNAPSHOT_AT}.solverstate" % policy)
    step(second, {ITERATIONS - SNAPSHOT_AT}, resumed)
    results[policy] = {{"straight": straight, "resumed": resumed}}
with open("rates.json", "w") as f:
    json.dump(results, f)
"""


def glrl_rates(solver_path: Path, net_path: Path) -> Dict[str, List[float]]:
    """The same two runs on glrl's solver; the resumed one through a written and re-read .solverstate."""
    import torch
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe import io as caffe_io
    from glrl.train.settings import SolverSettings
    from glrl.train.solver import CaffeSolver

    feed = {"data": torch.ones(1, 1, 1, 1), "label": -torch.ones(1, 1, 1, 1)}

    def new_solver() -> "tuple[TorchNet, CaffeSolver]":
        net = TorchNet(net_path, "TRAIN")
        return net, CaffeSolver(SolverSettings.from_proto(caffe_io.read_solver(solver_path)), net)

    def step(net: TorchNet, solver: CaffeSolver, count: int, rates: List[float]) -> None:
        (weight,) = [p.param for p in net.learnable_params()]
        for _ in range(count):
            with torch.no_grad():
                weight.zero_()
            solver.step(itertools.repeat(feed), 1)
            rates.append(-float(weight.detach().reshape(-1)[0]))

    straight: List[float] = []
    step(*new_solver(), ITERATIONS, straight)
    resumed: List[float] = []
    net, first = new_solver()
    step(net, first, SNAPSHOT_AT, resumed)
    state_path = solver_path.with_suffix(".solverstate")
    caffe_io.write_solverstate(first.state_proto("unused.caffemodel"), state_path)
    net, second = new_solver()
    second.restore_state(caffe_io.read_solverstate(state_path))
    step(net, second, ITERATIONS - SNAPSHOT_AT, resumed)
    return {"straight": straight, "resumed": resumed}


@pytest.fixture(scope="module")
def rates(caffe_root, tmp_path_factory) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    work = tmp_path_factory.mktemp("rates")
    (work / "net.prototxt").write_text(NET)
    ours = {}
    for policy in POLICIES:
        (work / f"{policy}.prototxt").write_text(solver_text(policy))
        ours[policy] = glrl_rates(work / f"{policy}.prototxt", work / "net.prototxt")
    with oracle.RootSession() as session:
        for policy in POLICIES:
            (session.path / f"{policy}.prototxt").write_text(solver_text(policy))
        (session.path / "net.prototxt").write_text(NET)
        session.run_python(ROOT_SCRIPT)
        caffe = json.loads((session.path / "rates.json").read_text())
    return {"ours": ours, "caffe": caffe}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_rate_equals_real_caffes_to_the_bit(rates, policy):
    caffe = rates["caffe"][policy]["straight"]
    assert len(set(caffe)) == 1 if policy == "fixed" else len(set(caffe)) > 1  # the probe sees the rate
    assert rates["ours"][policy]["straight"] == caffe


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_run_resumed_from_a_solverstate_goes_on_at_real_caffes_rates(rates, policy):
    assert rates["caffe"][policy]["resumed"] == rates["caffe"][policy]["straight"]
    assert rates["ours"][policy]["resumed"] == rates["caffe"][policy]["resumed"]
