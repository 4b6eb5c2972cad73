"""A run's learning curve: ``learning_curve.csv`` (rewritten every epoch) and its plot."""

from __future__ import annotations

import csv
from pathlib import Path

CURVE_KEYS = (
    "epoch",
    "cost",
    "train_error",
    "valid_error",
    "valid_accuracy",
    "valid_error_rate",
    "valid_rmse",
    "valid_auroc",
    "time",
)


def write_curve(path: Path, history: list[dict[str, float]]) -> None:
    keys = [k for k in CURVE_KEYS if any(k in r for r in history)]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        writer.writerows([[r.get(k, "") for k in keys] for r in history])
    tmp.replace(path)


def plot_curve(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in history]
    for key in ("cost", "train_error", "valid_error"):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            left.plot(*zip(*pts, strict=True), marker=".", label=key)
    left.set_xlabel("epoch")
    left.set_title("loss (NNC's cost / error)")
    left.set_yscale("log")
    left.legend()
    for key in ("valid_accuracy", "valid_auroc", "valid_rmse"):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            right.plot(*zip(*pts, strict=True), marker=".", label=key)
    right.set_xlabel("epoch")
    right.set_title("validation metrics")
    if right.lines:
        right.legend()
    right.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
