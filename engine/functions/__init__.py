"""Stateless differentiable functions (NNC's ``F``), grouped by family."""

from engine.functions.activation import (
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    prelu,
    relu,
    selu,
    sigmoid,
    softmax,
    swish,
    tanh,
)
from engine.functions.arithmetic import (
    abs,
    add,
    add_scalar,
    clip,
    div,
    exp,
    log,
    matmul,
    mul,
    mul_scalar,
    neg,
    pow,
    pow_scalar,
    r_div_scalar,
    r_pow_scalar,
    r_sub_scalar,
    sqrt,
    sub,
)
from engine.functions.array import broadcast, concatenate, flatten, reshape, split, transpose
from engine.functions.array import slice_ as slice
from engine.functions.convolution import (
    affine,
    convolution,
    deconvolution,
    depthwise_convolution,
)
from engine.functions.normalization import batch_normalization, dropout
from engine.functions.pooling import (
    average_pooling,
    global_average_pooling,
    max_pooling,
    sum_pooling,
    unpooling,
    upsample,
)
from engine.functions.reduction import max, mean, min, sum

__all__ = [
    "abs", "add", "add_scalar", "affine", "average_pooling", "batch_normalization", "broadcast",
    "clip", "concatenate", "convolution", "deconvolution", "depthwise_convolution", "div",
    "dropout", "elu", "exp", "flatten", "gelu", "global_average_pooling", "leaky_relu", "log",
    "log_softmax", "matmul", "max", "max_pooling", "mean", "min", "mul", "mul_scalar", "neg",
    "pow", "pow_scalar", "prelu", "r_div_scalar", "r_pow_scalar", "r_sub_scalar", "relu",
    "reshape", "selu", "sigmoid", "slice", "softmax", "split", "sqrt", "sub", "sum",
    "sum_pooling", "swish", "tanh", "transpose", "unpooling", "upsample",
]
