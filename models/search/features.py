"""What the search knows about a spec before training it: its key, its costs (multiply-adds,
parameters), where its output head starts, and the features the Gaussian process learns from."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.spec import Network
from models.stats import network_stats, totals

Spec = dict[str, Any]
Layers = list[dict[str, Any]]

ACTIVATIONS = ("ReLU", "LeakyReLU", "ELU", "SELU", "Swish", "GELU", "Tanh", "Sigmoid", "PReLU")
POOLINGS = ("MaxPooling", "AveragePooling")
OUTPUT_TYPES = ("Affine", "Convolution", "Deconvolution")
OBJECTIVES = ("error", "error_and_madds")
METHODS = ("random", "bayes")


class SearchError(ValueError):
    """A search cannot start or continue (bad base network, settings or state)."""


# -- facts about a spec -------------------------------------------------------------------------
def spec_key(spec: Spec) -> str:
    """A short digest of the layers: two trials with the same key are the same network."""
    text = json.dumps({"input": spec["input"], "layers": spec["layers"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Costs:
    multiply_adds: int
    parameters: int


def costs(net: Network) -> Costs:
    t = totals(network_stats(net))
    return Costs(int(t["multiply_adds"]), int(t["parameters"]))


def head_start(layers: Layers) -> int:
    """Index of the output layer: mutations stay before it."""
    for i in range(len(layers) - 1, -1, -1):
        if layers[i].get("type") in OUTPUT_TYPES:
            return i
    msg = "the base network has no output layer (Affine, Convolution or Deconvolution) to keep"
    raise SearchError(msg)


def input_shapes(net: Network) -> list[tuple[int, ...]]:
    """The input shape of every top-level layer, plus the network's output shape."""
    shapes: dict[int, tuple[int, ...]] = {}
    for layer in net.layers:
        index = int(layer.path.split("[", 1)[1].split("]", 1)[0])
        shapes.setdefault(index, layer.in_shape)
    return [shapes[i] for i in range(len(net.spec["layers"]))] + [net.output_shape]


FEATURE_NAMES = (
    "log_madds",
    "log_params",
    "depth",
    "conv",
    "depthwise",
    "affine",
    "batchnorm",
    "max_pool",
    "avg_pool",
    "dropout",
    "dropout_rate",
    "residual",
    "relu_family",
    "saturating",
    "log_width",
    "log_max_width",
    "mean_kernel",
    "log_flat_features",
)


def features(net: Network) -> np.ndarray:
    """A fixed-length description of a network for the error model."""
    c = costs(net)
    count: dict[str, int] = {}
    widths, kernels, rates = [], [], []
    for layer in net.layers:
        count[layer.type] = count.get(layer.type, 0) + 1
        if layer.type in ("Convolution", "DepthwiseConvolution", "Affine"):
            widths.append(layer.out_shape[0])
        kernel = getattr(layer.module, "kernel", None)
        if layer.type in ("Convolution", "DepthwiseConvolution") and kernel is not None:
            kernels.append(float(np.mean(kernel)))
        if layer.type == "Dropout":
            rates.append(float(layer.module.p))
    flat = next((int(np.prod(x.in_shape)) for x in net.layers if x.type == "Affine"), 1)
    values = {
        "log_madds": math.log10(max(c.multiply_adds, 1)),
        "log_params": math.log10(max(c.parameters, 1)),
        "depth": sum(1 for x in net.layers if x.type in ("Convolution", "DepthwiseConvolution", "Affine")),
        "conv": count.get("Convolution", 0),
        "depthwise": count.get("DepthwiseConvolution", 0),
        "affine": count.get("Affine", 0),
        "batchnorm": count.get("BatchNormalization", 0),
        "max_pool": count.get("MaxPooling", 0),
        "avg_pool": count.get("AveragePooling", 0),
        "dropout": count.get("Dropout", 0),
        "dropout_rate": float(np.mean(rates)) if rates else 0.0,
        "residual": count.get("Add", 0),
        "relu_family": sum(count.get(k, 0) for k in ("ReLU", "LeakyReLU", "ELU", "SELU", "Swish", "GELU", "PReLU")),
        "saturating": count.get("Tanh", 0) + count.get("Sigmoid", 0),
        "log_width": math.log2(float(np.mean(widths))) if widths else 0.0,
        "log_max_width": math.log2(float(max(widths))) if widths else 0.0,
        "mean_kernel": float(np.mean(kernels)) if kernels else 0.0,
        "log_flat_features": math.log2(flat),
    }
    return np.array([values[k] for k in FEATURE_NAMES], dtype=np.float64)


# -- mutations ----------------------------------------------------------------------------------
