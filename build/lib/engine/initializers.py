"""Parameter initializers, named as in NNC (Glorot, He forward/backward, Normal, Uniform, Constant)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.random import generator


def calc_normal_std_glorot(inmaps: int, outmaps: int, kernel: Sequence[int] = ()) -> float:
    return float(np.sqrt(2.0 / (np.prod(kernel) * inmaps + outmaps)))


def calc_uniform_lim_glorot(inmaps: int, outmaps: int, kernel: Sequence[int] = ()) -> float:
    return float(np.sqrt(6.0 / (np.prod(kernel) * inmaps + outmaps)))


def calc_normal_std_he_forward(inmaps: int, outmaps: int, kernel: Sequence[int] = ()) -> float:
    return float(np.sqrt(2.0 / (np.prod(kernel) * inmaps)))


def calc_normal_std_he_backward(inmaps: int, outmaps: int, kernel: Sequence[int] = ()) -> float:
    return float(np.sqrt(2.0 / (np.prod(kernel) * outmaps)))


class Initializer:
    def __call__(
        self, shape: Sequence[int], rng: np.random.Generator | None = None, dtype: Any = np.float32
    ) -> np.ndarray:
        return self.sample(tuple(shape), generator(rng)).astype(dtype)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class ConstantInitializer(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def sample(self, shape, rng):
        return np.full(shape, self.value)


class NormalInitializer(Initializer):
    def __init__(self, sigma: float = 1.0) -> None:
        if sigma < 0:
            msg = f"Invalid sigma: {sigma}"
            raise ValueError(msg)
        self.sigma = sigma

    def sample(self, shape, rng):
        return rng.normal(0.0, self.sigma, shape)


class UniformInitializer(Initializer):
    def __init__(self, lim: float | tuple[float, float] = (-1.0, 1.0)) -> None:
        lo, hi = (-lim, lim) if isinstance(lim, (int, float)) else lim
        if lo > hi:
            msg = f"Invalid uniform limits: {lo} > {hi}"
            raise ValueError(msg)
        self.lim = (lo, hi)

    def sample(self, shape, rng):
        return rng.uniform(self.lim[0], self.lim[1], shape)


_FAN_RULES = {
    "glorot_normal": ("normal", calc_normal_std_glorot),
    "glorot_uniform": ("uniform", calc_uniform_lim_glorot),
    "he_forward": ("normal", calc_normal_std_he_forward),
    "he_backward": ("normal", calc_normal_std_he_backward),
}


def fan_initializer(name: str, inmaps: int, outmaps: int, kernel: Sequence[int] = ()) -> Initializer:
    """Initializer scaled by fan-in/fan-out: ``glorot_normal``, ``glorot_uniform``,
    ``he_forward``, ``he_backward`` (NNC's NormalAffineGlorot, UniformConvolutionGlorot, …)."""
    if name not in _FAN_RULES:
        msg = f"initializer {name!r} is not one of {sorted(_FAN_RULES)}"
        raise ValueError(msg)
    kind, rule = _FAN_RULES[name]
    scale = rule(inmaps, outmaps, kernel)
    return NormalInitializer(scale) if kind == "normal" else UniformInitializer(scale)
