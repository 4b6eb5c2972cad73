"""Solvers: a solver holds hyper-parameters; ``rule`` updates one parameter from its gradient
and its own state (chainer's split). Defaults follow NNC/nnabla."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.module import Module, Parameter


def _check(name: str, value: float, low: float = 0.0, high: float | None = None, open_high: bool = True) -> None:
    bad = not math.isfinite(value) or value < low
    if high is not None:
        bad = bad or (value >= high if open_high else value > high)
    if bad:
        msg = f"Invalid {name}: {value}"
        raise ValueError(msg)


class Solver:
    """Base solver.

    Args:
        params: a Module, a dict name → Parameter, or an iterable of Parameters.
        lr: learning rate (``alpha`` for the Adam family).
        weight_decay: L2 penalty added to the gradient (decoupled in AdamW).
    """

    defaults: dict[str, float] = {}

    def __init__(
        self,
        params: Module | dict[str, Parameter] | Iterable[Parameter],
        lr: float | None = None,
        weight_decay: float = 0.0,
        **hyper: float,
    ) -> None:
        if isinstance(params, Module):
            named = list(params.named_parameters())
        elif isinstance(params, dict):
            named = list(params.items())
        else:
            named = [(str(i), p) for i, p in enumerate(params)]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        unknown = set(hyper) - set(self.defaults) - {"lr"}
        if unknown:
            msg = f"{type(self).__name__} has no hyper-parameter {sorted(unknown)[0]!r}"
            raise TypeError(msg)
        self.hyper = {**self.defaults, **hyper}
        self.lr = self.hyper.pop("lr") if lr is None else lr
        _check("learning rate", self.lr)
        _check("weight_decay", weight_decay)
        self.weight_decay = weight_decay
        self.validate()
        self.t = 0
        self.states: list[dict[str, np.ndarray]] = [{} for _ in self.params]

    def validate(self) -> None:
        """Reject bad hyper-parameters with ``ValueError`` naming the value."""

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def set_learning_rate(self, lr: float) -> None:
        _check("learning rate", lr)
        self.lr = lr

    def clip_grad_by_norm(self, max_norm: float) -> float:
        """Scale all gradients so their global L2 norm is at most ``max_norm``; return the norm."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        if norm > max_norm > 0:
            for g in grads:
                g *= max_norm / (norm + 1e-12)
        return norm

    def update(self) -> None:
        """One step for every parameter that has a gradient."""
        self.t += 1
        for p, state in zip(self.params, self.states, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay and not self.decoupled:
                g = g + self.weight_decay * p.data
            self.rule(p.data, g.astype(p.data.dtype, copy=False), state)

    decoupled = False

    def rule(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _slot(self, state: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
        if key not in state:
            state[key] = np.zeros_like(like)
        return state[key]

    # -- resume ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"__t__": np.array(self.t), "__lr__": np.array(self.lr)}
        for name, state in zip(self.names, self.states, strict=True):
            for key, value in state.items():
                out[f"{name}/{key}"] = value.copy()
        return out

    def load_state_dict(self, data: dict[str, np.ndarray]) -> None:
        self.t = int(data["__t__"])
        self.lr = float(data["__lr__"])
        index = {n: i for i, n in enumerate(self.names)}
        self.states = [{} for _ in self.params]
        for key, value in data.items():
            if key.startswith("__"):
                continue
            name, slot = key.rsplit("/", 1)
            if name not in index:
                msg = f"solver state names parameter {name!r}, which this solver does not have"
                raise KeyError(msg)
            self.states[index[name]][slot] = np.array(value)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}(lr={self.lr}, {hyper}, weight_decay={self.weight_decay})"


class SGD(Solver):
    defaults = {"lr": 0.001}

    def rule(self, w, g, state):
        w -= self.lr * g


class Momentum(Solver):
    defaults = {"lr": 0.001, "momentum": 0.9}

    def validate(self):
        _check("momentum", self.hyper["momentum"])

    def rule(self, w, g, state):
        v = self._slot(state, "v", w)
        v *= self.hyper["momentum"]
        v -= self.lr * g
        w += v


class Nesterov(Momentum):
    def rule(self, w, g, state):
        m = self.hyper["momentum"]
        v = self._slot(state, "v", w)
        previous = v.copy()
        v *= m
        v -= self.lr * g
        w += -m * previous + (1 + m) * v


class AdaGrad(Solver):
    defaults = {"lr": 0.01, "eps": 1e-8}

    def validate(self):
        _check("eps", self.hyper["eps"])

    def rule(self, w, g, state):
        acc = self._slot(state, "acc", w)
        acc += g * g
        w -= self.lr * g / (np.sqrt(acc) + self.hyper["eps"])


class AdaDelta(Solver):
    defaults = {"lr": 1.0, "decay": 0.95, "eps": 1e-6}

    def validate(self):
        _check("decay", self.hyper["decay"], 0.0, 1.0, open_high=False)
        _check("eps", self.hyper["eps"])

    def rule(self, w, g, state):
        rho, eps = self.hyper["decay"], self.hyper["eps"]
        eg, ed = self._slot(state, "e_grad", w), self._slot(state, "e_delta", w)
        eg *= rho
        eg += (1 - rho) * g * g
        delta = -np.sqrt(ed + eps) / np.sqrt(eg + eps) * g
        ed *= rho
        ed += (1 - rho) * delta * delta
        w += self.lr * delta


class RMSprop(Solver):
    defaults = {"lr": 0.001, "decay": 0.9, "eps": 1e-8}

    def validate(self):
        _check("decay", self.hyper["decay"], 0.0, 1.0, open_high=False)
        _check("eps", self.hyper["eps"])

    def rule(self, w, g, state):
        rho = self.hyper["decay"]
        v = self._slot(state, "v", w)
        v *= rho
        v += (1 - rho) * g * g
        w -= self.lr * g / (np.sqrt(v) + self.hyper["eps"])


class Adam(Solver):
    """Adam (α 0.001, β 0.9 / 0.999, ε 1e-8 as in NNC)."""

    defaults = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

    def validate(self):
        _check("beta1", self.hyper["beta1"], 0.0, 1.0)
        _check("beta2", self.hyper["beta2"], 0.0, 1.0)
        _check("eps", self.hyper["eps"])

    def moments(self, g, state, like):
        b1, b2 = self.hyper["beta1"], self.hyper["beta2"]
        m, v = self._slot(state, "m", like), self._slot(state, "v", like)
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        return m, v

    def step_size(self) -> float:
        b1, b2 = self.hyper["beta1"], self.hyper["beta2"]
        return self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)

    def rule(self, w, g, state):
        m, v = self.moments(g, state, w)
        w -= self.step_size() * m / (np.sqrt(v) + self.hyper["eps"])


class AdamW(Adam):
    """Adam with decoupled weight decay: ``w ← w - lr·wd·w`` before the Adam step."""

    decoupled = True

    def rule(self, w, g, state):
        if self.weight_decay:
            w *= 1 - self.lr * self.weight_decay
        super().rule(w, g, state)


class Adamax(Adam):
    defaults = {"lr": 0.002, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

    def rule(self, w, g, state):
        b1, b2 = self.hyper["beta1"], self.hyper["beta2"]
        m, u = self._slot(state, "m", w), self._slot(state, "u", w)
        m *= b1
        m += (1 - b1) * g
        np.maximum(u * b2, np.abs(g), out=u)
        w -= self.lr / (1 - b1**self.t) * m / (u + self.hyper["eps"])


class AMSGrad(Adam):
    """Adam with the running maximum of the second moment (no bias correction, as in nnabla)."""

    def rule(self, w, g, state):
        m, v = self.moments(g, state, w)
        v_max = self._slot(state, "v_max", w)
        np.maximum(v_max, v, out=v_max)
        w -= self.lr * m / (np.sqrt(v_max) + self.hyper["eps"])


class AdaBound(Adam):
    """Adam whose per-element step is clipped into bounds that converge to ``final_lr``."""

    defaults = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "final_lr": 0.1, "gamma": 0.001}

    def validate(self):
        super().validate()
        _check("final_lr", self.hyper["final_lr"])
        _check("gamma", self.hyper["gamma"], 0.0, 1.0)
        self.base_lr = self.lr

    def rule(self, w, g, state):
        m, v = self.moments(g, state, w)
        final = self.hyper["final_lr"] * self.lr / self.base_lr
        gamma_t = self.hyper["gamma"] * self.t
        lower, upper = final * (1 - 1 / (gamma_t + 1)), final * (1 + 1 / gamma_t)
        step = np.clip(self.step_size() / (np.sqrt(v) + self.hyper["eps"]), lower, upper)
        w -= step * m


SOLVERS: dict[str, type[Solver]] = {
    cls.__name__.lower(): cls
    for cls in (SGD, Momentum, Nesterov, AdaGrad, AdaDelta, RMSprop, Adam, AdamW, Adamax, AMSGrad, AdaBound)
}


def create_solver(name: str, params: Any, **hyper: Any) -> Solver:
    """Build a solver by NNC's name (case-insensitive): ``Adam``, ``Momentum``, …"""
    key = name.lower()
    if key not in SOLVERS:
        msg = f"solver {name!r} is not one of {sorted(c.__name__ for c in SOLVERS.values())}"
        raise ValueError(msg)
    return SOLVERS[key](params, **hyper)
