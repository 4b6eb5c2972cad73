"""Element-wise arithmetic: binary ops with broadcasting, scalar ops, unary maths."""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np

from engine.tensor import Function, Tensor, unbroadcast


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = np.power(a, b)
        return self.y

    def backward(self, g):
        ga = unbroadcast(g * self.b * np.power(self.a, self.b - 1), self.a.shape) if self.needs_grad[0] else None
        gb = None
        if self.needs_grad[1]:
            log_a = np.log(np.where(self.a > 0, self.a, 1))
            gb = unbroadcast(g * self.y * log_a, self.b.shape)
        return ga, gb


class AddScalar(Function):
    def forward(self, x, *, value):
        return x + x.dtype.type(value)

    def backward(self, g):
        return g


class MulScalar(Function):
    def forward(self, x, *, value):
        self.value = value
        return x * x.dtype.type(value)

    def backward(self, g):
        return g * g.dtype.type(self.value)


class RSubScalar(Function):
    """``value - x``."""

    def forward(self, x, *, value):
        return x.dtype.type(value) - x

    def backward(self, g):
        return -g


class RDivScalar(Function):
    """``value / x``."""

    def forward(self, x, *, value):
        self.x, self.value = x, value
        return x.dtype.type(value) / x

    def backward(self, g):
        return -g * self.value / (self.x * self.x)


class PowScalar(Function):
    """``x ** value``."""

    def forward(self, x, *, value):
        self.x, self.value = x, value
        return np.power(x, x.dtype.type(value))

    def backward(self, g):
        return g * self.value * np.power(self.x, self.x.dtype.type(self.value - 1))


class RPowScalar(Function):
    """``value ** x``."""

    def forward(self, x, *, value):
        self.y, self.value = np.power(x.dtype.type(value), x), value
        return self.y

    def backward(self, g):
        return g * self.y * np.log(self.value)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Exp(Function):
    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, g):
        return g / self.x


class Abs(Function):
    def forward(self, x):
        self.x = x
        return np.abs(x)

    def backward(self, g):
        return g * np.sign(self.x)


class Sqrt(Function):
    def forward(self, x):
        self.y = np.sqrt(x)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Clip(Function):
    """Clamp to ``[min, max]``; the gradient passes where the input was inside."""

    def forward(self, x, *, min=None, max=None):  # noqa: A002 - numpy's names
        self.inside = np.ones(x.shape, dtype=bool)
        if min is not None:
            self.inside &= x >= min
        if max is not None:
            self.inside &= x <= max
        return np.clip(x, min, max)

    def backward(self, g):
        return g * self.inside


class MatMul(Function):
    """Matrix product with numpy's batching rules (2-D or stacked)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            msg = f"matmul needs 2-D or stacked operands, got shapes {a.shape} and {b.shape}"
            raise ValueError(msg)
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        ga = unbroadcast(g @ np.swapaxes(self.b, -1, -2), self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(np.swapaxes(self.a, -1, -2) @ g, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def _is_scalar(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def add(a: Any, b: Any) -> Tensor:
    if _is_scalar(b):
        return AddScalar.apply(a, value=b)
    if _is_scalar(a):
        return AddScalar.apply(b, value=a)
    return Add.apply(a, b)


def sub(a: Any, b: Any) -> Tensor:
    if _is_scalar(b):
        return AddScalar.apply(a, value=-b)
    if _is_scalar(a):
        return RSubScalar.apply(b, value=a)
    return Sub.apply(a, b)


def mul(a: Any, b: Any) -> Tensor:
    if _is_scalar(b):
        return MulScalar.apply(a, value=b)
    if _is_scalar(a):
        return MulScalar.apply(b, value=a)
    return Mul.apply(a, b)


def div(a: Any, b: Any) -> Tensor:
    if _is_scalar(b):
        return MulScalar.apply(a, value=1.0 / b)
    if _is_scalar(a):
        return RDivScalar.apply(b, value=a)
    return Div.apply(a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - the operator's name
    if _is_scalar(b):
        return PowScalar.apply(a, value=b)
    if _is_scalar(a):
        return RPowScalar.apply(b, value=a)
    return Pow.apply(a, b)


def add_scalar(x: Any, value: float) -> Tensor:
    return AddScalar.apply(x, value=value)


def mul_scalar(x: Any, value: float) -> Tensor:
    return MulScalar.apply(x, value=value)


def r_sub_scalar(x: Any, value: float) -> Tensor:
    return RSubScalar.apply(x, value=value)


def r_div_scalar(x: Any, value: float) -> Tensor:
    return RDivScalar.apply(x, value=value)


def pow_scalar(x: Any, value: float) -> Tensor:
    return PowScalar.apply(x, value=value)


def r_pow_scalar(x: Any, value: float) -> Tensor:
    return RPowScalar.apply(x, value=value)


def neg(x: Any) -> Tensor:
    return Neg.apply(x)


def exp(x: Any) -> Tensor:
    return Exp.apply(x)


def log(x: Any) -> Tensor:
    return Log.apply(x)


def abs(x: Any) -> Tensor:  # noqa: A001 - numpy's name
    return Abs.apply(x)


def sqrt(x: Any) -> Tensor:
    return Sqrt.apply(x)


def clip(x: Any, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    if min is None and max is None:
        msg = "clip needs min, max or both"
        raise ValueError(msg)
    return Clip.apply(x, min=min, max=max)


def matmul(a: Any, b: Any) -> Tensor:
    return MatMul.apply(a, b)
