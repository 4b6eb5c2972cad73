"""The detector verbs for sensor readings: a CSV of readings (header = channel names, one reading
per row) cut into (channels, window) windows every ``hop`` rows, exactly as the ``csv:`` source and
the other sensor sources assemble them in the line; the vector detector (a dense autoencoder on
normal windows) scores them.

- ``fit``: normal readings only; any model kind of :mod:`models.detector.vector` (a kernel density by default),
  calibrated on windows it did not fit (leave-one-out, out-of-fold or held out).
- ``report``: a labelled CSV (a ``label`` or ``anomaly`` column: 0 / ``ok`` / ``normal`` / ``good`` are normal,
  anything else names the anomaly); a window is anomalous when any of its rows is.
- ``predict``: a CSV of readings → one row per window (first and last line, score, decision).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets.images import ImageFolderError
from appliance.workflows.detector import item_report, unique_version
from models.decision import is_flagged
from models.detector.vector import MODELS as METHODS
from models.detector.vector import VectorDetector, VectorDetectorConfig
from models.inference import Inferencer

__all__ = ["DEFAULT_METHOD", "METHODS", "fit", "predict", "read_readings", "report", "windows"]

DEFAULT_METHOD = VectorDetectorConfig.model
Log = Callable[[str], None]
LABEL_COLUMNS = ("label", "anomaly")
NORMAL_LABELS = {"0", "ok", "normal", "good", "0.0", "false"}


class ReadingsError(ImageFolderError):
    """A readings CSV cannot be used (named with line and column)."""


def read_readings(path: str | Path, labelled: bool = False) -> tuple[list[str], np.ndarray, list[str] | None]:
    """(channel names, readings (N, C), labels per row or None). A cell that is not a number is
    refused with its line and column, never its contents."""
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such readings file"
        raise ReadingsError(msg)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        msg = f"{path}: needs a header row and readings"
        raise ReadingsError(msg)
    header = [h.strip() for h in rows[0]]
    label_col = next((i for i, h in enumerate(header) if h.lower() in LABEL_COLUMNS), None)
    if labelled and label_col is None:
        msg = f"{path}: a labelled CSV needs a column named one of {', '.join(LABEL_COLUMNS)}"
        raise ReadingsError(msg)
    channels = [h for i, h in enumerate(header) if i != label_col]
    values, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            msg = f"{path}: line {line} has {len(row)} cells, the header {len(header)}"
            raise ReadingsError(msg)
        try:
            values.append([float(v) for i, v in enumerate(row) if i != label_col])
        except ValueError:
            msg = f"{path}: line {line} holds a cell that is not a number"
            raise ReadingsError(msg) from None
        if label_col is not None:
            labels.append(row[label_col].strip().lower())
    data = np.asarray(values, np.float32)
    if not np.isfinite(data).all():
        line = int(np.argwhere(~np.isfinite(data))[0][0]) + 2
        msg = f"{path}: line {line} holds NaN or an infinite value"
        raise ReadingsError(msg)
    return channels, data, labels if label_col is not None else None


def windows(data: np.ndarray, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (W, C, length), the first row index of each): the line's Windower, on a whole file."""
    if length < 1 or not 1 <= hop <= length:
        msg = f"window needs length >= 1 and 1 <= hop <= length, got {length}, {hop}"
        raise ReadingsError(msg)
    starts = np.arange(0, len(data) - length + 1, hop)
    if not len(starts):
        msg = f"{len(data)} readings make no window of {length}"
        raise ReadingsError(msg)
    return np.stack([data[s : s + length].T for s in starts]), starts


def fit(
    normal: str | Path,
    out: str | Path,
    *,
    window: int,
    hop: int,
    epochs: int,
    false_alarm_rate: float,
    log: Log,
    method: str = DEFAULT_METHOD,
    score: str = "mean",
) -> dict[str, Any]:
    channels, data, _ = read_readings(normal)
    x, _ = windows(data, window, hop)
    log(f"{len(data)} readings of {len(channels)} channels → {len(x)} windows of {window} (every {hop})")
    try:
        config = VectorDetectorConfig(
            shape=x.shape[1:], model=method, epochs=epochs, false_alarm_rate=false_alarm_rate, score=score
        )
        detector = VectorDetector(config)
        summary = detector.fit(x, log=log)
    except ValueError as exc:  # an unknown kind, or too few windows to calibrate on
        raise ReadingsError(str(exc)) from exc
    provenance = {
        "dataset": str(normal),
        "channels": channels,
        "window": window,
        "hop": hop,
        "windows": len(x),
        "calibrated_on": summary["calibrated_on"],
    }
    bundle = detector.to_bundle(provenance=provenance, name=Path(normal).stem)
    unique_version(bundle)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    bundle.save(out)
    cal = summary["calibration"]
    if summary["warning"]:
        log(f"warning: {summary['warning']}")
    log(
        f"{method}: calibrated on {summary['calibrated_on']}: T1={cal['t1']:.5g} T2={cal['t2']:.5g}; "
        f"wrote {out} ({bundle.version})"
    )
    return {"path": str(out), "version": bundle.version, **summary}


def _scored(model: Inferencer, path: str | Path, labelled: bool) -> tuple[np.ndarray, np.ndarray, list, Any]:
    if model.input_spec.kind != "vector":
        msg = f"model {model.version!r} takes images; give it image folders"
        raise ReadingsError(msg)
    channels, length = model.input_spec.shape if len(model.input_spec.shape) == 2 else (model.input_spec.shape[0], 1)
    _, data, labels = read_readings(path, labelled)
    if data.shape[1] != channels:
        msg = f"{path}: {data.shape[1]} channels, the model was trained on {channels}"
        raise ReadingsError(msg)
    hop = model.meta.get("provenance", {}).get("hop") or length
    x, starts = windows(data, length, hop)
    results = [r for i in range(0, len(x), 256) for r in model.predict_batch(list(x[i : i + 256]))]
    return x, starts, results, (labels, length)


def report(model_path: str | Path, data: str | Path, log: Log) -> dict[str, Any]:
    """The test report on a labelled readings CSV, with the image report's keys (items are windows)."""
    model = Inferencer(model_path)
    _, starts, results, (labels, length) = _scored(model, data, labelled=True)
    kinds = []
    for s in starts:
        bad = [lab for lab in labels[s : s + length] if lab not in NORMAL_LABELS]
        kinds.append(bad[0] if bad else "good")
    log(f"scored {len(results)} windows of {data}")
    return item_report(model, str(data), np.array(kinds), results)


def predict(model_path: str | Path, readings: str | Path, out: str | Path, log: Log) -> Path:
    model = Inferencer(model_path)
    _, starts, results, (_, length) = _scored(model, readings, labelled=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "first_line", "last_line", "score", "norm_score", "decision", "defect_type"])
        for s, r in zip(starts, results, strict=True):
            writer.writerow(
                [str(readings), s + 2, s + length + 1, f"{r.score:.6g}", f"{r.norm_score:.4f}", r.decision, ""]
            )
    flagged = sum(is_flagged(r.decision) for r in results)
    log(f"{len(results)} windows: {flagged} flagged; wrote {path}")
    return path
