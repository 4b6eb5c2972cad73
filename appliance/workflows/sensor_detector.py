"""The detector verbs for sensor readings: a CSV of readings (header = channel names, one reading
per row) cut into (channels, window) windows every ``hop`` rows, exactly as the ``csv:`` source and
the other sensor sources assemble them in the line; the vector detector (a dense autoencoder on
normal windows) scores them.

- ``fit``: normal readings only; any model kind of :mod:`models.detector.vector` (a kernel density by default),
  calibrated on windows it did not fit (leave-one-out, out-of-fold or held out).
- ``report``: a labelled CSV (a ``label`` or ``anomaly`` column: 0 / ``ok`` / ``normal`` / ``good`` are normal,
  anything else names the anomaly); a window is anomalous when any of its rows is.
- ``predict``: a CSV of readings → one row per window (first and last line and time, score, decision).

Readings CSVs are read as data loggers, PLC exports and spreadsheets write them
(:func:`connectors.sensors.open_readings`: separator, decimal comma, encoding, time and label columns).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets.images import ImageFolderError
from appliance.workflows.detector import item_report, unique_version
from connectors.sensors import LABEL_COLUMNS, ReadingsFileError, open_readings
from models.decision import is_flagged
from models.detector.vector import MIN_SAMPLES, VectorDetector, VectorDetectorConfig
from models.detector.vector import MODELS as METHODS
from models.inference import Inferencer

__all__ = ["DEFAULT_METHOD", "METHODS", "fit", "predict", "read_readings", "report", "windows"]

DEFAULT_METHOD = VectorDetectorConfig.model
Log = Callable[[str], None]
NORMAL_LABELS = {"0", "ok", "normal", "good", "0.0", "false"}


class ReadingsError(ImageFolderError):
    """A readings CSV cannot be used (named with line and column)."""


@dataclass
class Readings:
    """A readings CSV read whole: channel names, values (N, C) of the rows that could be read, each
    row's line in the file, its time as written (when the file has a time column) and label (when
    asked for); ``breaks``: where rows were left out (a window never spans one), ``skipped``: what
    was wrong with them."""

    channels: list[str]
    data: np.ndarray
    lines: np.ndarray
    times: list[str] | None
    labels: list[str] | None
    layout: str  # what was read: separator, decimal mark, the columns that are not channels
    breaks: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def say_skipped(self, log: Log) -> None:
        if self.skipped:
            more = f" … and {len(self.skipped) - 1} more" if len(self.skipped) > 1 else ""
            n = len(self.skipped)
            what = "row cannot be read and is" if n == 1 else "rows cannot be read and are"
            log(f"{n} {what} left out (no window spans them): {self.skipped[0]}{more}")


def read_readings(path: str | Path, labelled: bool = False, channels: Sequence[str] = ()) -> Readings:
    """A readings CSV as data loggers, PLC exports and spreadsheets write it
    (:func:`connectors.sensors.open_readings`). ``channels``: a model's channel names, read as
    channels whatever they look like. Rows that cannot be read (a logger's dropouts) are left out
    and named, unless they are half the file or more (a layout not understood): then the first is
    refused with its line and column, never its contents."""
    try:
        file = open_readings(path, channels)
        data, kept, problems = file.readable()
    except ReadingsFileError as exc:
        raise ReadingsError(str(exc)) from None
    if problems and len(problems) * 2 >= len(file.rows):
        msg = f"{file.path}: {problems[0]}"
        raise ReadingsError(msg)
    if labelled and file.label_col is None:
        msg = f"{path}: a labelled CSV needs a column named one of {', '.join(LABEL_COLUMNS)}"
        raise ReadingsError(msg)
    rows = [file.rows[i] for i in kept]
    breaks = [j for j in range(1, len(kept)) if kept[j] != kept[j - 1] + 1]
    return Readings(
        file.channels,
        data,
        np.array([line for line, _ in rows], dtype=int),
        [file.time(cells) or "" for _, cells in rows] if file.time_col is not None else None,
        [file.label(cells) or "" for _, cells in rows] if file.label_col is not None else None,
        file.describe(),
        breaks,
        problems,
    )


def window_starts(n: int, length: int, hop: int, breaks: Sequence[int] = ()) -> np.ndarray:
    """The first row of every window of ``length`` every ``hop`` rows over ``n`` rows, none
    spanning a break (a row index where the rows before it were left out)."""
    if length < 1 or not 1 <= hop <= length:
        msg = f"window needs length >= 1 and 1 <= hop <= length, got {length}, {hop}"
        raise ReadingsError(msg)
    edges = [0, *sorted(b for b in breaks if 0 < b < n), n]
    runs = [np.arange(a, b - length + 1, hop) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return np.concatenate(runs).astype(int)


def windows(data: np.ndarray, length: int, hop: int, breaks: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(windows (W, C, length), the first row index of each): the line's Windower, on a whole file."""
    starts = window_starts(len(data), length, hop, breaks)
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
    readings = read_readings(normal)
    channels, data = readings.channels, readings.data
    log(f"{normal}: {readings.layout}")
    readings.say_skipped(log)
    made = len(window_starts(len(data), window, hop, readings.breaks))
    if made < MIN_SAMPLES:
        msg = (
            f"{len(data)} readings make {made} windows of {window} (every {hop}); a threshold needs at least "
            f"{MIN_SAMPLES}: a shorter --window or --hop, more readings, or --window 1 where each row is a "
            "sample of its own (tabular data: one part's measurements a row)"
        )
        raise ReadingsError(msg)
    x, _ = windows(data, window, hop, readings.breaks)
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


def _scored(model: Inferencer, path: str | Path, labelled: bool) -> tuple[Readings, np.ndarray, list, int]:
    """The file read as the model's channels, its windows' first rows, their results, the window length."""
    if model.input_spec.kind != "vector":
        msg = f"model {model.version!r} takes images; give it image folders"
        raise ReadingsError(msg)
    channels, length = model.input_spec.shape if len(model.input_spec.shape) == 2 else (model.input_spec.shape[0], 1)
    provenance = model.meta.get("provenance", {})
    readings = read_readings(path, labelled, provenance.get("channels") or ())
    if readings.data.shape[1] != channels:
        read = ", ".join(readings.channels)
        msg = f"{path}: {readings.data.shape[1]} channels ({read}), the model was trained on {channels}"
        raise ReadingsError(msg)
    hop = provenance.get("hop") or length
    x, starts = windows(readings.data, length, hop, readings.breaks)
    results = [r for i in range(0, len(x), 256) for r in model.predict_batch(list(x[i : i + 256]))]
    return readings, starts, results, length


def report(model_path: str | Path, data: str | Path, log: Log) -> dict[str, Any]:
    """The test report on a labelled readings CSV, with the image report's keys (items are windows)."""
    model = Inferencer(model_path)
    readings, starts, results, length = _scored(model, data, labelled=True)
    readings.say_skipped(log)
    kinds = []
    for s in starts:
        bad = [lab for lab in readings.labels[s : s + length] if lab not in NORMAL_LABELS]
        kinds.append(bad[0] if bad else "good")
    unit = "rows" if length == 1 else "windows"
    log(f"scored {len(results)} {unit} of {data} ({readings.layout})")
    return {**item_report(model, str(data), np.array(kinds), results), "items": unit}


def predict(model_path: str | Path, readings: str | Path, out: str | Path, log: Log) -> Path:
    """One row per window: its first and last line in the file (and their times, where the file
    has a time column), score, normalised score and decision."""
    model = Inferencer(model_path)
    read, starts, results, length = _scored(model, readings, labelled=False)
    read.say_skipped(log)
    times = read.times or [""] * len(read.data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        head = ["path", "first_line", "last_line", "score", "norm_score", "decision", "defect_type"]
        writer.writerow([*head, "first_time", "last_time"])
        for s, r in zip(starts, results, strict=True):
            first, last = s, s + length - 1
            writer.writerow(
                [str(readings), read.lines[first], read.lines[last], f"{r.score:.6g}", f"{r.norm_score:.4f}"]
                + [r.decision, "", times[first], times[last]]
            )
    flagged = sum(is_flagged(r.decision) for r in results)
    log(f"{len(results)} windows: {flagged} flagged; wrote {path}")
    return path
