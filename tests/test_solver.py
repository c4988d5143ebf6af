"""Caffe 1.0's solver semantics: lr policies against their formulas, one SGD/Nesterov/Adam step against a
hand computation, L1/L2 regularisation, clipping (global norm, before regularisation), iter_size, state."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from glrl.caffe import pb  # noqa: E402
from glrl.errors import TrainingError  # noqa: E402
from glrl.train.lr_policy import LrPolicy, to_float32  # noqa: E402
from glrl.train.settings import SolverSettings  # noqa: E402
from glrl.train.solver import CaffeSolver  # noqa: E402


# -------------------------------------------------------------------------------------------- lr policies
def test_fixed_is_base_lr_at_every_iteration():
    policy = LrPolicy("fixed", 0.1)
    assert policy.schedule(5) == [to_float32(0.1)] * 5


def test_step_uses_integer_division_of_iter_by_stepsize():
    policy = LrPolicy("step", 0.1, gamma=0.5, stepsize=3000)
    for iteration in (0, 2999, 3000, 5999, 6000, 30001):
        expected = to_float32(to_float32(0.1) * 0.5 ** (iteration // 3000))
        assert policy.rate(iteration, 0) == (expected, iteration // 3000)


def test_exp_inv_poly_sigmoid_follow_caffes_formulas():
    base, gamma, power = to_float32(0.01), to_float32(0.999), to_float32(0.75)
    for it in (0, 1, 10, 999):
        assert LrPolicy("exp", 0.01, gamma=0.999).rate(it, 0)[0] == pytest.approx(
            base * gamma ** it, rel=1e-7)
        assert LrPolicy("inv", 0.01, gamma=0.999, power=0.75).rate(it, 0)[0] == pytest.approx(
            base * (1 + gamma * it) ** -power, rel=1e-6)
        # Caffe forms 1 - iter/max_iter in float: 1 - 0.999f is 0.00100005, 5e-5 off 0.001
        assert LrPolicy("poly", 0.01, power=0.75, max_iter=1000).rate(it, 0)[0] == pytest.approx(
            base * (1 - it / 1000) ** power, rel=1e-4)
        assert LrPolicy("sigmoid", 0.01, gamma=0.999, stepsize=500).rate(it, 0)[0] == pytest.approx(
            base / (1 + math.exp(-gamma * (it - 500))), rel=1e-6)


def test_multistep_advances_current_step_once_per_call_at_each_stepvalue():
    policy = LrPolicy("multistep", 1.0, gamma=0.1, stepvalue=[2, 4])
    rates = policy.schedule(6)
    gamma = to_float32(0.1)  # pow(float gamma, int step) in double, the product rounded to float
    once, twice = to_float32(gamma), to_float32(gamma ** 2)
    assert rates == [1.0, 1.0, once, once, twice, twice]
    # resuming at iteration 5 with the stored current_step 2 keeps the rate
    assert policy.rate(5, 2) == (to_float32(gamma ** 2), 2)
    # one step per call even where several are due: a repeated value, or a resume behind the schedule
    assert LrPolicy("multistep", 1.0, gamma=0.1, stepvalue=[2, 2]).schedule(4) == [1.0, 1.0, once, twice]
    assert policy.rate(5, 0) == (once, 1)


@pytest.mark.parametrize("policy,kwargs,message",
                         [("cosine", {}, "unknown lr_policy 'cosine'"),
                          ("step", {"stepsize": 0}, "'step' needs stepsize > 0"),
                          ("sigmoid", {"stepsize": 0}, "'sigmoid' needs stepsize > 0"),
                          ("poly", {"max_iter": 0}, "'poly' needs max_iter > 0"),
                          ("step", {"stepsize": 1, "gamma": -0.5}, "'step' needs gamma >= 0"),
                          ("multistep", {"gamma": -0.5}, "'multistep' needs gamma >= 0")])
def test_bad_policies_are_clear_errors(policy, kwargs, message):
    with pytest.raises(TrainingError, match=message) as info:
        LrPolicy(policy, 0.1, **kwargs)
    assert info.value.hint


def test_gamma_zero_is_a_legal_rate_of_zero_after_the_first_step():
    assert LrPolicy("step", 0.1, gamma=0.0, stepsize=1).schedule(3) == [to_float32(0.1), 0.0, 0.0]


# ------------------------------------------------------------------------------- a net with known grads
@dataclass
class Param:
    key: str
    layer_name: str
    index: int
    param: "torch.nn.Parameter"
    lr_mult: float
    decay_mult: float


class LinearNet:
    """pred = x W^T + b with Caffe's EuclideanLoss (sum of squares / 2N): the solver's whole contract."""

    def __init__(self, weight, bias, lr_mult=(1.0, 0.1), decay_mult=(1.0, 0.0)):
        self.weight = torch.nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float32))
        self.params = [Param("fc/0", "fc", 0, self.weight, lr_mult[0], decay_mult[0]),
                       Param("fc/1", "fc", 1, self.bias, lr_mult[1], decay_mult[1])]

    def learnable_params(self):
        return self.params

    def forward(self, inputs):
        return {"pred": inputs["data"] @ self.weight.T + self.bias, "label": inputs["label"]}

    def loss(self, blobs):
        diff = blobs["pred"] - blobs["label"]
        return (diff * diff).sum() / (2 * diff.shape[0])


def grads(weight, bias, x, y):
    """Hand gradient of sum((xW^T + b - y)^2) / 2N."""
    residual = x @ weight.T + bias - y
    return residual.T @ x / len(x), residual.sum(axis=0) / len(x)


RNG = np.random.default_rng(7)
W0 = RNG.normal(size=(2, 3))
B0 = RNG.normal(size=2)
BATCHES = [{"data": RNG.normal(size=(4, 3)), "label": RNG.normal(size=(4, 2))} for _ in range(4)]


def make_solver(**fields):
    defaults = dict(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.01, max_iter=10)
    defaults.update(fields)
    net = LinearNet(W0, B0)
    return net, CaffeSolver(SolverSettings(**defaults), net)


def test_sgd_two_steps_equal_the_hand_computation():
    net, solver = make_solver(type="SGD")
    solver.step(iter(BATCHES), 2)
    w, b = W0.copy(), B0.copy()
    hw, hb = np.zeros_like(w), np.zeros_like(b)
    for batch in BATCHES[:2]:
        gw, gb = grads(w, b, batch["data"], batch["label"])
        gw = gw + 0.01 * 1.0 * w            # L2 decay, decay_mult 1 (bias: decay_mult 0)
        hw = 0.9 * hw + 0.1 * 1.0 * gw
        hb = 0.9 * hb + 0.1 * 0.1 * gb
        w, b = w - hw, b - hb
    np.testing.assert_allclose(net.weight.detach().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.detach().numpy(), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solver.history[0].numpy(), hw, rtol=1e-5, atol=1e-6)
    assert solver.iter == 2


def test_nesterov_two_steps_equal_the_hand_computation():
    net, solver = make_solver(type="Nesterov")
    solver.step(iter(BATCHES), 2)
    w, b = W0.copy(), B0.copy()
    hw, hb = np.zeros_like(w), np.zeros_like(b)
    for batch in BATCHES[:2]:
        gw, gb = grads(w, b, batch["data"], batch["label"])
        gw = gw + 0.01 * w
        new_hw, new_hb = 0.9 * hw + 0.1 * gw, 0.9 * hb + 0.01 * gb
        w = w - ((1 + 0.9) * new_hw - 0.9 * hw)
        b = b - ((1 + 0.9) * new_hb - 0.9 * hb)
        hw, hb = new_hw, new_hb
    np.testing.assert_allclose(net.weight.detach().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.detach().numpy(), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("delta", [1e-8, 0.1])  # Caffe adds delta to sqrt(v), not to v
def test_adam_two_steps_equal_the_hand_computation_and_keep_m_then_v(delta):
    net, solver = make_solver(type="Adam", momentum=0.9, momentum2=0.999, delta=delta, base_lr=0.01)
    assert len(solver.history) == 4  # m for each param, then v for each param (Caffe's order)
    solver.step(iter(BATCHES), 2)
    w, b = W0.copy(), B0.copy()
    state = {"w": [np.zeros_like(w), np.zeros_like(w)], "b": [np.zeros_like(b), np.zeros_like(b)]}
    for t, batch in enumerate(BATCHES[:2], start=1):
        gw, gb = grads(w, b, batch["data"], batch["label"])
        gw = gw + 0.01 * w
        correction = math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        updates = {}
        for name, g, mult in (("w", gw, 1.0), ("b", gb, 0.1)):
            m, v = state[name]
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g * g
            updates[name] = 0.01 * mult * correction * m / (np.sqrt(v) + delta)
        w, b = w - updates["w"], b - updates["b"]
    np.testing.assert_allclose(net.weight.detach().numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.detach().numpy(), b, rtol=1e-5, atol=1e-6)
    # (1 - beta2) is 0.001 rounded to float32 in Caffe, 5e-5 relative off 0.001
    np.testing.assert_allclose(solver.history[3].numpy(), state["b"][1], rtol=1e-4, atol=1e-9)


def test_l1_regularisation_adds_decay_times_sign_of_the_weights():
    net, solver = make_solver(type="SGD", momentum=0.0, regularization_type="L1", weight_decay=0.5)
    solver.step(iter(BATCHES), 1)
    gw, _ = grads(W0, B0, BATCHES[0]["data"], BATCHES[0]["label"])
    expected = W0 - 0.1 * (gw + 0.5 * np.sign(W0))
    np.testing.assert_allclose(net.weight.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_clipping_scales_all_diffs_by_clip_over_global_norm_before_regularisation():
    clip = 0.05
    net, solver = make_solver(type="SGD", momentum=0.0, clip_gradients=clip)
    solver.step(iter(BATCHES), 1)
    gw, gb = grads(W0, B0, BATCHES[0]["data"], BATCHES[0]["label"])
    norm = math.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > clip
    scale = clip / norm
    assert solver.last_gradient_norm == pytest.approx(norm, rel=1e-5)
    np.testing.assert_allclose(net.weight.detach().numpy(), W0 - 0.1 * (gw * scale + 0.01 * W0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.bias.detach().numpy(), B0 - 0.01 * gb * scale, rtol=1e-5, atol=1e-7)


def test_clipping_leaves_gradients_below_the_threshold_alone():
    clipped_net, _ = make_solver(type="SGD", clip_gradients=1e6)
    _, plain = make_solver(type="SGD")
    clipped = CaffeSolver(SolverSettings(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.01,
                                         clip_gradients=1e6), clipped_net)
    clipped.step(iter(BATCHES), 2)
    plain.step(iter(BATCHES), 2)
    assert torch.equal(clipped_net.weight, plain.net.weight)


def test_clip_gradients_zero_zeroes_every_gradient_as_caffe_does():
    net, solver = make_solver(type="SGD", momentum=0.0, weight_decay=0.0, clip_gradients=0.0)
    solver.step(iter(BATCHES), 1)
    assert np.array_equal(net.weight.detach().numpy(), W0.astype(np.float32))
    assert np.array_equal(net.bias.detach().numpy(), B0.astype(np.float32))


def test_adjustable_clipping_uses_theta_over_the_current_rate():
    net = LinearNet(W0, B0)
    solver = CaffeSolver(SolverSettings(base_lr=0.1, lr_policy="step", gamma=0.5, stepsize=1, max_iter=4),
                         net, adjustable_clip=0.002)
    solver.step(iter(BATCHES), 2)  # the rate of iteration 1 is 0.05
    assert solver.clip_threshold() == pytest.approx(0.002 / 0.05, rel=1e-6)


def test_iter_size_accumulates_and_normalises_to_the_full_batch_update():
    full = {"data": np.concatenate([BATCHES[0]["data"], BATCHES[1]["data"]]),
            "label": np.concatenate([BATCHES[0]["label"], BATCHES[1]["label"]])}
    net_full, solver_full = make_solver(type="SGD", clip_gradients=0.05)
    net_acc, solver_acc = make_solver(type="SGD", clip_gradients=0.1, iter_size=2)
    # Caffe clips the accumulated (un-normalised) diff: a sum of 2 batch means, twice the full-batch mean.
    losses = solver_acc.step(iter(BATCHES[:2]), 1)
    solver_full.step(iter([full]), 1)
    np.testing.assert_allclose(net_acc.weight.detach().numpy(), net_full.weight.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(net_acc.bias.detach().numpy(), net_full.bias.detach().numpy(), rtol=1e-5)
    _, fresh = make_solver(type="SGD")
    pass_losses = [fresh.forward_backward(batch) for batch in BATCHES[:2]]
    assert losses[0] == pytest.approx(sum(pass_losses) / 2, rel=1e-6)  # the displayed loss is their mean


def test_state_round_trips_through_a_caffe_solverstate():
    _, solver = make_solver(type="Adam")
    solver.step(iter(BATCHES), 3)
    state = pb.SolverState.FromString(solver.state_proto("run_iter_3.caffemodel").SerializeToString())
    assert (state.iter, state.learned_net, len(state.history)) == (3, "run_iter_3.caffemodel", 4)
    _, fresh = make_solver(type="Adam")
    fresh.restore_state(state)
    assert fresh.iter == 3
    for a, b in zip(solver.history, fresh.history):
        assert torch.equal(a, b)
    _, sgd = make_solver(type="SGD")
    with pytest.raises(TrainingError, match="history blobs"):
        sgd.restore_state(state)


def test_a_multistep_position_survives_a_solverstate():
    _, solver = make_solver(type="SGD", lr_policy="multistep", gamma=0.5, stepvalue=[1, 2])
    solver.step(iter(BATCHES), 3)
    state = pb.SolverState.FromString(solver.state_proto("run_iter_3.caffemodel").SerializeToString())
    assert state.current_step == 2
    _, fresh = make_solver(type="SGD", lr_policy="multistep", gamma=0.5, stepvalue=[1, 2])
    fresh.restore_state(state)
    assert (fresh.current_step, fresh.rate) == (2, to_float32(0.1 * 0.25))


def test_settings_read_a_solver_prototxt_and_reject_what_is_not_implemented():
    from glrl.caffe.io import parse_solver

    text = ('net: "n.prototxt" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 10 momentum: 0.9 '
            'weight_decay: 0.0001 clip_gradients: 0.01 max_iter: 100 iter_size: 2 type: "Nesterov"')
    settings = SolverSettings.from_proto(parse_solver(text))
    assert (settings.type, settings.stepsize, settings.iter_size) == ("Nesterov", 10, 2)
    assert settings.clip_gradients == pytest.approx(0.01)
    with pytest.raises(TrainingError, match="AdaGrad"):
        SolverSettings.from_proto(parse_solver(text.replace("Nesterov", "AdaGrad")))
    with pytest.raises(TrainingError, match="lr_policy"):
        SolverSettings.from_proto(parse_solver('net: "n.prototxt" base_lr: 0.1'))


def test_solver_set_reads_each_value_as_solver_prototxt_would():
    from glrl.nets.solver import set_solver_fields

    solver = pb.SolverParameter(base_lr=0.1, type="SGD", stepvalue=[1, 2, 3])
    set_solver_fields(solver, ["base_lr=1.25e-5", "type=Adam", "stepvalue=4000, 8000", "snapshot_format = HDF5"])
    assert solver.base_lr == pytest.approx(1.25e-5) and solver.type == "Adam"
    assert list(solver.stepvalue) == [4000, 8000] and solver.snapshot_format == pb.SolverParameter.HDF5
