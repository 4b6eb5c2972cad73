"""Tensors with reverse-mode automatic differentiation.

A :class:`Tensor` wraps a numpy array. Every differentiable operation is a :class:`Function`
subclass with ``forward`` (numpy in, numpy out) and ``backward`` (output gradient in, one
gradient per input out) side by side. ``Function.apply`` records the graph when any input
requires a gradient and gradients are enabled; ``Tensor.backward`` walks it in reverse
topological order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.float32

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Run operations without recording a graph (inference, evaluation)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Args:
        data: array-like contents. Floating data keeps its dtype; other data becomes
            float32 unless ``dtype`` says otherwise (integer class labels stay integer
            when passed as ``dtype=np.int64``).
        requires_grad: whether gradients flow to this tensor.
        name: optional name used in error messages.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name")
    __array_priority__ = 100.0

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        name: str | None = None,
    ) -> None:
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data, dtype=dtype)
        if dtype is None and (type(data) is float or not np.issubdtype(array.dtype, np.floating)):
            array = array.astype(DEFAULT_DTYPE)
        self.data: np.ndarray = array
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad
        self._ctx: Function | None = None
        self.name = name

    # -- array-like surface ---------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        msg = "the truth value of a Tensor is ambiguous; compare its .data instead"
        raise TypeError(msg)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def __repr__(self) -> str:
        label = f", name={self.name!r}" if self.name else ""
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag}{label})"

    # -- autograd -------------------------------------------------------------
    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it."""
        if grad is None:
            if self.data.size != 1:
                msg = f"backward() without a gradient needs a scalar, got shape {self.shape}"
                raise RuntimeError(msg)
            grad = np.ones_like(self.data)
        grads: dict[int, np.ndarray] = {id(self): np.asarray(grad, dtype=self.dtype)}
        order = _topological_order(self)
        while order:
            # Popped, not iterated: once its function has run, nothing here holds the node, so
            # its array (an activation) is freed as the walk goes instead of after it.
            node = order.pop()
            g = grads.pop(id(node), None)
            ctx = node._ctx
            if ctx is None:
                if node.requires_grad and g is not None:
                    node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            if not retain_graph:
                node._ctx = None
            if g is None:
                continue
            _propagate(ctx, g, grads)

    # -- operators (bound to functions in engine.functions) ------------------
    def __neg__(self) -> Tensor:
        return _ops().neg(self)

    def __add__(self, other: Any) -> Tensor:
        return _ops().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops().div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops().pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops().pow(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops().matmul(self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops().slice(self, index)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], Sequence):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes: int) -> Tensor:
        return _ops().transpose(self, axes or None)

    @property
    def T(self) -> Tensor:  # noqa: N802 - numpy's name
        return _ops().transpose(self, None)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().min(self, axis=axis, keepdims=keepdims)


def _ops() -> Any:
    from engine import functions

    return functions


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through recorded functions, inputs before outputs."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            stack.extend((p, False) for p in node._ctx.parents if p is not None and p.requires_grad)
    return order


def _propagate(ctx: Function, grad: np.ndarray, grads: dict[int, np.ndarray]) -> None:
    result = ctx.backward(grad)
    if not isinstance(result, tuple):
        result = (result,)
    name = type(ctx).__name__
    if len(result) != len(ctx.parents):
        msg = f"{name}.backward returned {len(result)} gradients for {len(ctx.parents)} inputs"
        raise RuntimeError(msg)
    for i, (parent, g) in enumerate(zip(ctx.parents, result, strict=True)):
        if parent is None or not parent.requires_grad or g is None:
            continue
        if g.shape != parent.shape:
            msg = (
                f"{name}.backward returned a gradient of shape {g.shape} for input {i} "
                f"({parent.name or 'unnamed'}) of shape {parent.shape}"
            )
            raise RuntimeError(msg)
        key = id(parent)
        grads[key] = g if key not in grads else grads[key] + g


class Function:
    """A differentiable operation: subclasses implement ``forward`` and ``backward``.

    ``forward`` receives numpy arrays (``None`` for absent optional inputs) plus keyword
    configuration and returns one array; it may store what ``backward`` needs on ``self``.
    ``backward`` receives the output gradient and returns one gradient per input (or
    ``None`` for inputs that need none). ``self.needs_grad[i]`` tells whether input ``i``
    wants its gradient, so expensive gradients can be skipped.
    """

    parents: tuple[Tensor | None, ...]
    needs_grad: tuple[bool, ...]

    @classmethod
    def apply(cls, *inputs: Any, **config: Any) -> Tensor:
        tensors = tuple(None if x is None else as_tensor(x) for x in inputs)
        ctx = cls()
        ctx.needs_grad = tuple(t is not None and t.requires_grad for t in tensors)
        out = ctx.forward(*(None if t is None else t.data for t in tensors), **config)
        record = _grad_enabled and any(ctx.needs_grad)
        result = Tensor(out, requires_grad=record)
        if record:
            ctx.parents = tensors
            result._ctx = ctx
        return result

    def forward(self, *arrays: Any, **config: Any) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> Any:
        raise NotImplementedError


def as_tensor(value: Any, dtype: Any = None) -> Tensor:
    """Return ``value`` as a Tensor (constants do not require gradients)."""
    if isinstance(value, Tensor):
        return value
    return Tensor(value, dtype=dtype)
