"""Our numpy deep-learning engine: tensors with autograd, functions, layers, losses, solvers.

Imports numpy and scipy only; nothing else of ours.
"""

from engine import (
    functions,
    initializers,
    layers,
    losses,
    memory,  # noqa: F401  (tunes the allocator once, see engine/memory.py)
    schedulers,
    solvers,
)
from engine.gradcheck import gradcheck, gradcheck_module
from engine.module import Concat, Module, Parameter, Residual, Sequential
from engine.random import seed
from engine.tensor import Function, Tensor, as_tensor, no_grad

__all__ = [
    "Concat",
    "Function",
    "Module",
    "Parameter",
    "Residual",
    "Sequential",
    "Tensor",
    "as_tensor",
    "functions",
    "gradcheck",
    "gradcheck_module",
    "initializers",
    "layers",
    "losses",
    "no_grad",
    "schedulers",
    "seed",
    "solvers",
]
