"""Modules hold parameters; parameters are found by walking attributes (no global registry)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.tensor import Tensor

Shape = tuple[int, ...]


class Parameter(Tensor):
    """A tensor that a solver updates."""

    __slots__ = ()

    def __init__(self, data: Any, name: str | None = None) -> None:
        super().__init__(np.asarray(data), requires_grad=True, name=name)


class Module:
    """Base class: store config in ``__init__`` then call ``reset_parameters()``.

    Subclasses implement ``forward`` and ``output_shape`` (shape without the batch axis,
    computed without data). Buffers (non-trained state such as running statistics) are numpy
    arrays named in the class attribute ``buffers``.
    """

    buffers: tuple[str, ...] = ()
    training: bool = True

    def __call__(self, *args: Any) -> Tensor:
        return self.forward(*args)

    def forward(self, *args: Any) -> Tensor:
        raise NotImplementedError

    def output_shape(self, in_shape: Shape) -> Shape:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Draw new initial values (layers with parameters override this)."""

    # -- walking ----------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self.buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def modules(self) -> Iterator[Module]:
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -- modes ------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, dtype: Any) -> Module:
        """Cast parameters and buffers (float64 for gradient checks)."""
        for m in self.modules():
            for value in vars(m).values():
                if isinstance(value, Parameter):
                    value.data = value.data.astype(dtype)
            for name in m.buffers:
                setattr(m, name, getattr(m, name).astype(dtype))
        return self

    # -- state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: b.copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays in by name; refuse missing/unexpected keys (strict) and shape mismatches."""
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = set(params) | set(buffers)
        if strict:
            missing, unexpected = expected - set(state), set(state) - expected
            if missing or unexpected:
                msg = f"state dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
                raise KeyError(msg)
        for key in expected & set(state):
            target = params[key].data if key in params else buffers[key]
            value = np.asarray(state[key])
            if value.shape != target.shape:
                msg = f"state dict entry {key!r} has shape {value.shape}, the module expects {target.shape}"
                raise ValueError(msg)
            target[...] = value

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.state_dict())

    def load(self, path: str | Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            msg = f"cannot read parameters from {path}: {exc}"
            raise ValueError(msg) from exc
        self.load_state_dict(state)

    # -- display ------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        buf = io.StringIO()
        buf.write(f"{type(self).__name__}(\n")
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            buf.write(f"  ({name}): {body}\n")
        buf.write(")")
        return buf.getvalue()


class Sequential(Module):
    """Apply modules in order."""

    def __init__(self, *layers: Module) -> None:
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def output_shape(self, in_shape: Shape) -> Shape:
        for i, layer in enumerate(self.layers):
            try:
                in_shape = layer.output_shape(in_shape)
            except ValueError as exc:
                msg = f"layer {i} ({type(layer).__name__}): {exc}"
                raise ValueError(msg) from exc
        return in_shape

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]


class Residual(Module):
    """``body(x) + shortcut(x)``; the shortcut is the identity when not given."""

    def __init__(self, body: Module, shortcut: Module | None = None) -> None:
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    def output_shape(self, in_shape: Shape) -> Shape:
        main = self.body.output_shape(in_shape)
        side = in_shape if self.shortcut is None else self.shortcut.output_shape(in_shape)
        if main != side:
            msg = f"residual branch gives {main} but the shortcut gives {side}"
            raise ValueError(msg)
        return main


class Concat(Module):
    """Apply each branch to the same input and concatenate along ``axis`` (1 = channels)."""

    def __init__(self, *branches: Module, axis: int = 1) -> None:
        self.branches = list(branches)
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        from engine.functions import concatenate

        return concatenate(*(b(x) for b in self.branches), axis=self.axis)

    def output_shape(self, in_shape: Shape) -> Shape:
        shapes = [b.output_shape(in_shape) for b in self.branches]
        a = self.axis - 1
        rest = {s[:a] + s[a + 1 :] for s in shapes}
        if len(rest) != 1:
            msg = f"concatenated branches disagree outside axis {self.axis}: {shapes}"
            raise ValueError(msg)
        first = shapes[0]
        return first[:a] + (sum(s[a] for s in shapes),) + first[a + 1 :]


def count_parameters(module: Module) -> int:
    return int(sum(p.size for p in module.parameters()))


def check_shape(in_shape: Sequence[int], ndim: int, layer: str) -> None:
    if len(in_shape) != ndim:
        msg = f"{layer} expects {ndim - 1} spatial axes after the channels, got input shape {tuple(in_shape)}"
        raise ValueError(msg)
