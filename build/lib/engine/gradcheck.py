"""Numerical gradient check (central differences in float64), the oracle for every op test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.tensor import Tensor, no_grad


class GradientCheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def numerical_gradient(fn: Callable[[], float], x: np.ndarray, eps: float) -> np.ndarray:
    """d fn / d x by central differences, perturbing ``x`` in place one element at a time."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = fn()
        flat[i] = original - eps
        minus = fn()
        flat[i] = original
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    wrt: Sequence[int] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> None:
    """Compare ``fn``'s backward pass with central differences for the inputs in ``wrt``.

    Inputs are cast to float64. The scalar checked is ``sum(fn(*inputs) · r)`` with a fixed
    random ``r``, so every output element contributes. Raises :class:`GradientCheckError`
    naming the input, the worst element and both values.
    """
    arrays = [
        np.array(x, dtype=np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
        for x in inputs
    ]
    wrt = range(len(arrays)) if wrt is None else wrt
    tensors = [Tensor(a, requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = fn(*tensors)
    r = np.asarray(np.random.default_rng(seed).standard_normal(out.shape), dtype=np.float64)
    (out * Tensor(r)).sum().backward()

    def scalar() -> float:
        with no_grad():
            return float((fn(*[Tensor(a) for a in arrays]).data * r).sum())

    for i in wrt:
        analytic = tensors[i].grad if tensors[i].grad is not None else np.zeros_like(arrays[i])
        _compare(f"input {i}", analytic, numerical_gradient(scalar, arrays[i], eps), atol, rtol)


def gradcheck_module(
    module: Any, x: np.ndarray, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0
) -> None:
    """Check d(output)/d(input) and d(output)/d(parameter) for every parameter of ``module``.

    The module is cast to float64 first (``module.to``). Stateful layers (batch normalization in
    training) are checked with the state they have; running statistics do not affect training
    mode outputs.
    """
    module.to(np.float64)
    x = np.array(x, dtype=np.float64)
    xt = Tensor(x, requires_grad=True)
    module.zero_grad()
    out = module(xt)
    r = np.asarray(np.random.default_rng(seed).standard_normal(out.shape), dtype=np.float64)
    (out * Tensor(r)).sum().backward()

    def scalar() -> float:
        with no_grad():
            return float((module(Tensor(x)).data * r).sum())

    targets = [("input", x, xt.grad)] + [(name, p.data, p.grad) for name, p in module.named_parameters()]
    for name, array, analytic in targets:
        analytic = np.zeros_like(array) if analytic is None else analytic
        _compare(name, analytic, numerical_gradient(scalar, array, eps), atol, rtol)


def _compare(label: str, analytic: np.ndarray, numeric: np.ndarray, atol: float, rtol: float) -> None:
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if np.any(err > 0):
        j = np.unravel_index(int(np.argmax(err)), err.shape)
        msg = (
            f"gradient of {label} (shape {analytic.shape}) differs at {j}: "
            f"analytic {analytic[j]:.8g}, numerical {numeric[j]:.8g}"
        )
        raise GradientCheckError(msg)
