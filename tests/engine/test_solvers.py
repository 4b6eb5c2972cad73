"""Solvers against hand-written update formulas; convergence; validation; resume; schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import Parameter
from engine.schedulers import CosineScheduler, ExponentialScheduler, PolynomialScheduler, Scheduler, StepScheduler
from engine.solvers import SGD, SOLVERS, Adam, AdamW, create_solver

G1 = np.array([0.5, -1.0, 2.0])
G2 = np.array([-0.3, 0.2, 1.0])
W0 = np.array([1.0, 2.0, -1.0])


def run(name, grads, **hyper):
    p = Parameter(W0.copy())
    solver = create_solver(name, [p], **hyper)
    for g in grads:
        p.grad = g.copy()
        solver.update()
    return p.data


def reference(name, grads, lr):
    """Independent textbook formulas (nnabla's definitions and defaults)."""
    w = W0.copy()
    m = np.zeros(3)
    v = np.zeros(3)
    u = np.zeros(3)
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            w = w - lr * g
        elif name == "momentum":
            m = 0.9 * m - lr * g
            w = w + m
        elif name == "nesterov":
            prev = m
            m = 0.9 * m - lr * g
            w = w - 0.9 * prev + 1.9 * m
        elif name == "adagrad":
            v = v + g * g
            w = w - lr * g / (np.sqrt(v) + 1e-8)
        elif name == "adadelta":
            v = 0.95 * v + 0.05 * g * g
            d = -np.sqrt(u + 1e-6) / np.sqrt(v + 1e-6) * g
            u = 0.95 * u + 0.05 * d * d
            w = w + lr * d
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            w = w - lr * g / (np.sqrt(v) + 1e-8)
        elif name in ("adam", "adamw"):
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w = w - lr * (m / (1 - 0.9**t)) / (
                np.sqrt(v / (1 - 0.999**t)) + 1e-8 * math.sqrt(1 - 0.999**t) / math.sqrt(1 - 0.999**t)
            )
        elif name == "adamax":
            m = 0.9 * m + 0.1 * g
            u = np.maximum(0.999 * u, np.abs(g))
            w = w - lr / (1 - 0.9**t) * m / (u + 1e-8)
        elif name == "amsgrad":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            u = np.maximum(u, v)
            w = w - lr * m / (np.sqrt(u) + 1e-8)
    return w


@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "amsgrad"]
)
def test_update_matches_reference(name):
    lr = SOLVERS[name].defaults["lr"]
    got = run(name, [G1, G2, G1])
    # Adam's epsilon sits outside the bias-corrected sqrt: compare with a tolerance that covers it.
    np.testing.assert_allclose(got, reference(name, [G1, G2, G1], lr), rtol=1e-6, atol=1e-7)


def test_adam_defaults_are_nnc_defaults():
    solver = Adam([Parameter(W0.copy())])
    assert solver.lr == 0.001 and solver.hyper == {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def test_adabound_steps_stay_within_bounds():
    p = Parameter(W0.copy())
    solver = create_solver("AdaBound", [p], final_lr=0.1, gamma=0.001)
    for t in range(1, 4):
        before = p.data.copy()
        p.grad = G1.copy()
        solver.update()
        step = np.abs(p.data - before) / np.abs(solver.states[0]["m"])
        lower, upper = 0.1 * (1 - 1 / (0.001 * t + 1)), 0.1 * (1 + 1 / (0.001 * t))
        assert np.all(step >= lower - 1e-12) and np.all(step <= upper + 1e-12)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_minimises_a_quadratic(name):
    target = np.array([3.0, -2.0, 0.5])
    p = Parameter(np.zeros(3))
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.5, "adadelta": 1.0}.get(name, 0.05)
    solver = create_solver(name, [p], lr=lr)
    start = float(((p.data - target) ** 2).sum())
    for _ in range(3000 if name == "adadelta" else 300):  # AdaDelta starts with tiny steps
        p.grad = 2 * (p.data - target)
        solver.update()
    assert float(((p.data - target) ** 2).sum()) < 0.05 * start


def test_weight_decay_l2_and_decoupled():
    p = Parameter(np.array([1.0]))
    sgd = SGD([p], lr=0.1, weight_decay=0.5)
    p.grad = np.array([0.0])
    sgd.update()
    assert p.data[0] == pytest.approx(1 - 0.1 * 0.5)
    q = Parameter(np.array([1.0]))
    adamw = AdamW([q], lr=0.1, weight_decay=0.5)
    q.grad = np.array([0.0])
    adamw.update()
    assert q.data[0] == pytest.approx(1 - 0.1 * 0.5)  # decay applied to the weight, not the gradient


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda ps: SGD(ps, lr=-1), "Invalid learning rate: -1"),
        (lambda ps: Adam(ps, beta1=1.0), "Invalid beta1: 1.0"),
        (lambda ps: Adam(ps, eps=-1e-8), "Invalid eps: -1e-08"),
        (lambda ps: SGD(ps, weight_decay=-0.1), "Invalid weight_decay: -0.1"),
        (lambda ps: create_solver("momentum", ps, momentum=-0.5), "Invalid momentum: -0.5"),
        (lambda ps: create_solver("RMSprop", ps, decay=1.5), "Invalid decay: 1.5"),
        (lambda ps: SGD(ps, lr=float("nan")), "Invalid learning rate: nan"),
        (lambda ps: create_solver("Lion", ps), "solver 'Lion' is not one of"),
    ],
)
def test_bad_hyper_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make([Parameter(W0.copy())])


def test_unknown_hyper_parameter_is_named():
    with pytest.raises(TypeError, match="Adam has no hyper-parameter 'momentum'"):
        Adam([Parameter(W0.copy())], momentum=0.9)


def test_clip_grad_by_norm():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    solver = SGD([p, q])
    p.grad, q.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert solver.clip_grad_by_norm(1.0) == pytest.approx(5.0)
    assert math.hypot(*p.grad, *q.grad) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_state_save_and_load_resumes_exactly(name):
    grads = [G1, G2, G1, G2, -G1]
    straight = run(name, grads)
    p = Parameter(W0.copy())
    first = create_solver(name, {"w": p})
    for g in grads[:2]:
        p.grad = g.copy()
        first.update()
    state = first.state_dict()
    q = Parameter(p.data.copy())
    second = create_solver(name, {"w": q})
    second.load_state_dict(state)
    for g in grads[2:]:
        q.grad = g.copy()
        second.update()
    np.testing.assert_allclose(q.data, straight, rtol=1e-12)


def test_parameters_without_gradient_are_left_alone():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(2))
    solver = Adam([p, q])
    p.grad = np.ones(2)
    solver.update()
    np.testing.assert_array_equal(q.data, np.ones(2))


# -- schedulers ------------------------------------------------------------------------
def test_schedules():
    assert [StepScheduler(1.0, 0.5, step_size=2)(i) for i in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert [StepScheduler(1.0, 0.1, milestones=[1, 3])(i) for i in range(4)] == pytest.approx([1, 0.1, 0.1, 0.01])
    assert ExponentialScheduler(2.0, 0.5)(3) == pytest.approx(0.25)
    cos = CosineScheduler(1.0, max_iter=10, min_lr=0.1)
    assert (
        cos(0) == pytest.approx(1.0)
        and cos(5) == pytest.approx(0.55)
        and cos(10) == pytest.approx(0.1)
        and cos(20) == pytest.approx(0.1)
    )
    assert PolynomialScheduler(1.0, max_iter=4, power=2)(2) == pytest.approx(0.25)


def test_linear_warmup():
    s = CosineScheduler(1.0, max_iter=100, warmup_iters=4)
    assert [s(i) for i in range(4)] == pytest.approx(
        [0.25 * s.schedule(0), 0.5 * s.schedule(1), 0.75 * s.schedule(2), s.schedule(3)]
    )
    assert Scheduler(0.1, warmup_iters=2)(5) == 0.1


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        Scheduler(-1)
    with pytest.raises(ValueError, match="needs step_size or milestones"):
        StepScheduler(0.1)
    with pytest.raises(ValueError, match="Invalid max_iter: 0"):
        CosineScheduler(0.1, max_iter=0)
