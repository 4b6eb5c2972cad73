"""``appliance evaluate`` and ``appliance forward``: NNC's evaluation tab and ``nnabla_cli forward``.

Both run the trained network of a bundle (a run folder's ``results/best.zip``, else ``last.zip``)
over a dataset CSV and write ``output_result.csv``: the input columns plus the outputs — ``y'`` for
a scalar, ``y'__k`` for a vector, and for images PNG files whose paths go in the cell.
Evaluation adds the metrics: for classification the confusion matrix (rows true, columns
predicted) with per-class precision, recall, F-measure, accuracy and the macro averages, and the
threshold used for binary outputs; MAE / RMSE / R² for regression; for autoencoders ``score'``
and a heat-map image per row, and AUROC where the dataset has anomaly labels. As JSON and PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.datasets import NNCDataset, write_csv
from appliance.workflows.train import anomaly_scores, predict
from models import bundle as bundle_io


class EvaluateError(ValueError):
    """The model or dataset cannot be evaluated."""


@dataclass
class Loaded:
    bundle: bundle_io.Bundle
    net: Any
    task: str
    input_variable: str
    target_variable: str | None

    @property
    def score(self) -> tuple[str, str | None]:
        """An autoencoder's score: how it reduces the squared error, and the name of the side output
        its project gave it (None: forward writes only the reconstruction, as nnabla_cli does)."""
        post = self.bundle.meta.get("postprocess", {})
        return ("max" if post.get("score") == "max" else "mean"), post.get("score_name")


def load_model(path: str | Path) -> Loaded:
    path = Path(path)
    if path.is_dir():
        candidates = [path / "results" / "best.zip", path / "results" / "last.zip"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            msg = f"{path} is not a finished run (no results/best.zip or results/last.zip)"
            raise EvaluateError(msg)
        path = found
    bundle = bundle_io.load(path)
    if "main" not in bundle.meta["networks"]:
        msg = f"{path}: a {bundle.kind} bundle without a single 'main' network; evaluate detectors with the API"
        raise EvaluateError(msg)
    prov = bundle.meta.get("provenance", {})
    task = prov.get("task") or {"classifier": "classification", "regressor": "regression"}.get(
        bundle.kind, "autoencoder"
    )
    return Loaded(bundle, bundle.network("main"), task, prov.get("input_variable", "x"), prov.get("target_variable"))


def _outputs(loaded: Loaded, ds: NNCDataset) -> tuple[np.ndarray, np.ndarray]:
    if loaded.input_variable not in ds.variables:
        msg = f"{ds.path} has no input variable {loaded.input_variable!r}; it has {sorted(ds.variables)}"
        raise EvaluateError(msg)
    x = ds.load(loaded.input_variable)
    expected = tuple(loaded.net.input_shape)
    if x.shape[1:] != expected:
        msg = f"{ds.path}: inputs have shape {x.shape[1:]}, the model expects {expected}"
        raise EvaluateError(msg)
    return x, predict(loaded.net.module, x)


def _output_cells(out: np.ndarray, out_dir: Path, name: str) -> tuple[list[str], list[list[object]]]:
    """nnabla_cli forward's conventions: scalar → y', vector → y'__k, image → PNG path."""
    per = out.reshape(len(out), -1)
    if out.ndim == 4 or (out.ndim == 3 and out.shape[1] in (1, 3) and out.shape[2] > 4):
        folder = out_dir / name.replace("'", "")
        folder.mkdir(parents=True, exist_ok=True)
        cells = []
        for i, img in enumerate(out):
            image = np.clip(img.transpose(1, 2, 0) if img.ndim == 3 else img, 0, 1)
            file = folder / f"{i:06d}.png"
            cv2.imwrite(str(file), (image * 255).round().astype(np.uint8))
            cells.append([file.relative_to(out_dir).as_posix()])
        return [name], cells
    if per.shape[1] == 1:
        return [name], [[float(v)] for v in per[:, 0]]
    return [f"{name}__{k}" for k in range(per.shape[1])], [[float(v) for v in row] for row in per]


def forward(model: str | Path, dataset: str | Path, out_dir: str | Path) -> Path:
    """Run the model over a dataset; write ``out_dir/output_result.csv``."""
    loaded, out_dir = load_model(model), Path(out_dir)
    ds = NNCDataset(dataset)
    x, out = _outputs(loaded, ds)
    headers, cells = _output_cells(out, out_dir, "y'")
    reduce, name = loaded.score
    if loaded.task == "autoencoder" and name:  # the named side output as an extra column, as NNC writes it
        headers.append(f"{name}'")
        cells = [row + [float(s)] for row, s in zip(cells, anomaly_scores(out, x, reduce), strict=True)]
    path = out_dir / "output_result.csv"
    write_csv(path, ds.header + headers, [_input_cells(ds, r) + c for r, c in zip(ds.rows, cells, strict=True)])
    return path


def _input_cells(ds: NNCDataset, row: list[str]) -> list[str]:
    """Input cells with paths made relative to the output folder's CSV: absolute, to stay valid."""
    out = []
    for cell in row:
        p = ds.base / cell
        out.append(str(p.resolve()) if cell and not _is_number(cell) and p.exists() else cell)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def evaluate(model: str | Path, dataset: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a trained model on a dataset, written with ``output_result.csv`` to ``out_dir``."""
    loaded = load_model(model)
    ds = NNCDataset(dataset)
    out_dir = Path(out_dir) if out_dir else (Path(model) if Path(model).is_dir() else Path(model).parent) / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    x, out = _outputs(loaded, ds)
    y = ds.load(loaded.target_variable) if loaded.target_variable in ds.variables else None
    report: dict[str, Any] = {"model": str(model), "dataset": str(dataset), "task": loaded.task, "samples": len(x)}
    if loaded.task == "autoencoder":
        reduce, name = loaded.score
        scores = anomaly_scores(out, x, reduce)
        extra_headers, extra = [f"{name or 'score'}'"], [[float(s)] for s in scores]
        if x.ndim == 4:
            heat_headers, heat = _heatmaps(out, x, out_dir)
            extra_headers += heat_headers
            extra = [a + b for a, b in zip(extra, heat, strict=True)]
        if y is not None and len(np.unique(y)) == 2:
            report.update(_anomaly_metrics(scores, y.reshape(-1) > 0))
        headers, cells = extra_headers, extra
    else:
        headers, cells = _output_cells(out, out_dir, "y'")
        if y is None:
            msg = f"{dataset} has no target variable {loaded.target_variable!r} to evaluate against"
            raise EvaluateError(msg)
        report.update(_classification(out, y) if loaded.task == "classification" else _regression(out, y))
    write_csv(
        out_dir / "output_result.csv",
        ds.header + headers,
        [_input_cells(ds, r) + c for r, c in zip(ds.rows, cells, strict=True)],
    )
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    if "confusion_matrix" in report:
        _plot_confusion(report, out_dir / "confusion_matrix.png")
    report["output_dir"] = str(out_dir)
    return report


def _heatmaps(recon: np.ndarray, x: np.ndarray, out_dir: Path) -> tuple[list[str], list[list[object]]]:
    folder = out_dir / "heatmaps"
    folder.mkdir(parents=True, exist_ok=True)
    maps = ((recon - x) ** 2).mean(axis=1)
    top = max(float(np.percentile(maps, 99.9)), 1e-12)
    cells = []
    for i, m in enumerate(maps):
        image = cv2.applyColorMap((np.clip(m / top, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
        file = folder / f"{i:06d}.png"
        cv2.imwrite(str(file), image)
        cells.append([file.relative_to(out_dir).as_posix()])
    return ["heatmap'"], cells


def _classification(out: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    truth = y.reshape(-1).astype(int)
    binary = out.reshape(len(out), -1).shape[1] == 1
    predicted = (out.reshape(-1) >= 0.5).astype(int) if binary else out.argmax(axis=1)
    classes = list(range(max(2 if binary else out.shape[1], int(truth.max()) + 1)))
    cm = confusion_matrix(truth, predicted, labels=classes)
    p, r, f, support = precision_recall_fscore_support(truth, predicted, labels=classes, zero_division=0)
    report = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "confusion_matrix": cm.tolist(),
        "classes": [str(c) for c in classes],
        "per_class": {
            str(c): {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f_measure": float(f[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "macro_avg": {"precision": float(p.mean()), "recall": float(r.mean()), "f_measure": float(f.mean())},
    }
    if binary:
        report["threshold"] = 0.5
    return report


def _regression(out: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    pred, truth = out.reshape(len(out), -1), y.reshape(len(y), -1)
    return {
        "mae": float(mean_absolute_error(truth, pred)),
        "rmse": float(np.sqrt(mean_squared_error(truth, pred))),
        "r2": float(r2_score(truth, pred)),
    }


def _anomaly_metrics(scores: np.ndarray, is_anomaly: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, roc_auc_score

    from models.calibration import max_f1_threshold

    threshold, f1 = max_f1_threshold(scores[~is_anomaly], scores[is_anomaly])
    predicted = scores >= threshold
    return {
        "auroc": float(roc_auc_score(is_anomaly, scores)),
        "threshold": threshold,
        "threshold_rule": "max-F1",
        "f_measure": f1,
        "confusion_matrix": confusion_matrix(is_anomaly, predicted, labels=[False, True]).tolist(),
        "classes": ["normal", "anomaly"],
    }


def _plot_confusion(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(report["confusion_matrix"])
    classes = report["classes"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    summary = f"accuracy {report['accuracy']:.3f}" if "accuracy" in report else f"AUROC {report.get('auroc', 0):.3f}"
    ax.set_title(summary)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
