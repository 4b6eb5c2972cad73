"""Per-layer network statistics as NNC shows them, plus activation memory.

For every leaf layer: output shape and neurons, parameters, multiply-adds, and the other
operations NNC counts (adds, multiplies, divisions, exps, comparisons), per sample; and the
memory of its output for a given batch size. Counts are for inference (batch normalization with
running statistics, dropout off).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from models.spec import BuiltLayer, Network

COST_KEYS = ("multiply_adds", "adds", "multiplies", "divisions", "exps", "comparisons")


@dataclass
class LayerStats:
    path: str
    type: str
    output_shape: tuple[int, ...]
    neurons: int
    parameters: int
    multiply_adds: int = 0
    adds: int = 0
    multiplies: int = 0
    divisions: int = 0
    exps: int = 0
    comparisons: int = 0
    activation_bytes: int = 0
    name: str = ""  # the layer's name in the spec (NNC's), when it has one


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _costs(layer: BuiltLayer) -> dict[str, int]:
    """Operation counts per sample for one layer."""
    m, n_in, n = layer.module, _prod(layer.in_shape), _prod(layer.out_shape)
    bias = n if getattr(m, "with_bias", False) else 0
    kind = layer.type
    if kind == "Affine":
        return {"multiply_adds": n_in * n, "adds": bias}
    if kind in ("Convolution", "DepthwiseConvolution"):
        per_output = (m.in_channels // m.group) * _prod(m.kernel)
        return {"multiply_adds": n * per_output, "adds": bias}
    if kind == "Deconvolution":
        per_input = (m.out_channels // m.group) * _prod(m.kernel)
        return {"multiply_adds": n_in * per_input, "adds": bias}
    if kind == "BatchNormalization":  # (x - mean) / sqrt(var + eps) * gamma + beta
        return {"adds": 2 * n, "divisions": n, "multiplies": n}
    window = _prod(getattr(m, "kernel", (1,)))
    table = {
        "ReLU": {"comparisons": n},
        "LeakyReLU": {"comparisons": n, "multiplies": n},
        "PReLU": {"comparisons": n, "multiplies": n},
        "ELU": {"comparisons": n, "exps": n, "multiplies": n, "adds": n},
        "SELU": {"comparisons": n, "exps": n, "multiplies": 2 * n, "adds": n},
        "Sigmoid": {"exps": n, "adds": n, "divisions": n},
        "Swish": {"exps": n, "adds": n, "divisions": n, "multiplies": n},
        "GELU": {"exps": n, "adds": n, "multiplies": 2 * n},
        "Tanh": {"exps": n},
        "Softmax": {"exps": n, "adds": n, "divisions": n},
        "LogSoftmax": {"exps": n, "adds": n},
        "MaxPooling": {"comparisons": n * (window - 1)},
        "SumPooling": {"adds": n * (window - 1)},
        "AveragePooling": {"adds": n * (window - 1), "divisions": n},
        "GlobalAveragePooling": {"adds": n_in - n, "divisions": n},
        "Upsample": {"multiply_adds": 4 * n} if getattr(m, "mode", "") == "bilinear" else {},
        "Add": {"adds": n},
        "AddScalar": {"adds": n},
        "MulScalar": {"multiplies": n},
    }
    return table.get(kind, {})


def network_stats(net: Network, batch_size: int = 1, bytes_per_value: int = 4) -> list[LayerStats]:
    rows = []
    for layer in net.layers:
        leaf_params = 0 if layer.type in ("Add", "Concat") else sum(p.size for _, p in layer.module.named_parameters())
        neurons = _prod(layer.out_shape)
        rows.append(
            LayerStats(
                path=layer.path,
                type=layer.type,
                output_shape=layer.out_shape,
                neurons=neurons,
                parameters=int(leaf_params),
                activation_bytes=neurons * batch_size * bytes_per_value,
                name=layer.name,
                **_costs(layer),
            )
        )
    return rows


def totals(rows: list[LayerStats]) -> dict[str, int]:
    keys = ("neurons", "parameters", *COST_KEYS, "activation_bytes")
    return {k: int(sum(getattr(r, k) for r in rows)) for k in keys}


def stats_json(net: Network, batch_size: int = 1) -> dict[str, Any]:
    rows = network_stats(net, batch_size)
    return {
        "network": net.name,
        "input_shape": list(net.input_shape),
        "batch_size": batch_size,
        "layers": [{**asdict(r), "output_shape": list(r.output_shape)} for r in rows],
        "total": totals(rows),
    }


def stats_table(net: Network, batch_size: int = 1) -> str:
    """A plain-text table, one row per layer and a total row."""
    rows = network_stats(net, batch_size)
    head = ("layer", "type", "output", "params", "mult-adds", "adds", "mults", "divs", "exps", "cmps", "act. memory")
    body = [
        (
            r.name or r.path,  # NNC shows its layer names
            r.type,
            "x".join(map(str, r.output_shape)),
            r.parameters,
            r.multiply_adds,
            r.adds,
            r.multiplies,
            r.divisions,
            r.exps,
            r.comparisons,
            _bytes(r.activation_bytes),
        )
        for r in rows
    ]
    t = totals(rows)
    body.append(
        (
            "total",
            "",
            str(t["neurons"]),
            t["parameters"],
            t["multiply_adds"],
            t["adds"],
            t["multiplies"],
            t["divisions"],
            t["exps"],
            t["comparisons"],
            _bytes(t["activation_bytes"]),
        )
    )
    cells = [tuple(f"{v:,}" if isinstance(v, int) else str(v) for v in row) for row in [head, *body]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines) + f"\n(operation counts per sample; activation memory at batch {batch_size}, float32)"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def stats_chart(net: Network, path: str, batch_size: int = 1) -> None:
    """Bar chart PNG of multiply-adds and parameters per layer (NNC's statistics view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = network_stats(net, batch_size)
    labels = [f"{r.path} {r.type}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.28 * len(rows) + 1)), sharey=True)
    for ax, key, title in ((axes[0], "multiply_adds", "multiply-adds"), (axes[1], "parameters", "parameters")):
        ax.barh(range(len(rows)), [getattr(r, key) for r in rows], color="#3b7dd8")
        ax.set_title(f"{title} (total {sum(getattr(r, key) for r in rows):,})")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"{net.name}: input {'x'.join(map(str, net.input_shape))}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
