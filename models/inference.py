"""Serving with onnxruntime: bundle → preprocess → run → post-process into :class:`Result`.

Needs no training code: it reads ``model.json`` and ``model.onnx`` from the bundle and never
imports the engine. Thresholds come from the bundle's calibration and can be changed at run time
(they are not in the graph).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models import bundle as bundle_io
from models.calibration import normalize
from models.decision import Debounce, ThresholdError, Thresholds, decide
from models.preprocess import InputSpec, preprocess_batch
from models.scoring import UNLIKE, AppearanceCheck, image_scores, reconstruction_error_maps


@dataclass
class Result:
    """One inspected item (DESIGN.md's Result)."""

    score: float
    norm_score: float
    decision: str  # ok | review | ng
    anomaly_map: np.ndarray | None
    label: str | None
    model_version: str
    latency_ms: float
    output: list[float] | None = None
    thresholds: Thresholds | None = None  # the T1/T2 that made ``decision``


class Inferencer:
    """Load a bundle once, then score single samples or batches (thread-safe)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        where = str(path)
        with bundle_io.open_zip(path) as zf:
            self.meta = bundle_io.read_meta(zf, where)
            onnx_bytes = bundle_io.read_member(zf, "model.onnx", where)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's pool threads spin between runs by default: on a paced line that burnt ~0.75 of a
        # core doing nothing (measured at 25 frames/s). Parked threads wake in microseconds instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            msg = f"{where}: model.onnx cannot be loaded by onnxruntime ({exc})"
            raise bundle_io.BundleError(msg) from exc
        self.kind = self.meta["kind"]
        self.version = str(self.meta.get("version", ""))
        self.input_spec = InputSpec.from_dict(self.meta["input"])
        self.labels = list(self.meta.get("labels", []))
        post = self.meta.get("postprocess", {})
        self.top_k = float(post.get("top_k", 0.01))
        self.sigma = float(post.get("sigma", 2.0))
        self.score_rule = post.get("score", "topk")  # topk of the smoothed map, or the mean (NNC's) or max error
        try:  # image detectors since December 2026: frames unlike the good parts as a whole score NG
            self.appearance = AppearanceCheck.from_dict(post["appearance"]) if "appearance" in post else None
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{where}: the appearance check in model.json cannot be read ({exc})"
            raise bundle_io.BundleError(msg) from exc
        cal = post.get("calibration") or {}
        self.median = float(cal.get("median", 0.0))
        self.score_upper: float | None = cal.get("upper")  # the score's attainable maximum, if any
        self.calibrated_on: int | None = cal.get("n")  # how many held-out normal items T1/T2 rest on
        self._lock = threading.Lock()
        try:
            self.calibrated = Thresholds(float(cal.get("t1", np.inf)), float(cal.get("t2", np.inf)))
        except (ThresholdError, TypeError, ValueError) as exc:  # NaN or unordered: it would never alert
            msg = f"{where}: the calibrated thresholds cannot decide ({exc})"
            raise bundle_io.BundleError(msg) from exc
        self._thresholds = self.calibrated  # the bundle's own; set_thresholds changes them
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def thresholds(self) -> tuple[float, float]:
        return self._thresholds.as_tuple()

    def set_thresholds(self, t1: float, t2: float) -> None:
        """Change T1/T2 at run time (the graph does not hold them)."""
        checked = Thresholds.checked(t1, t2)
        with self._lock:
            self._thresholds = checked

    def predict(self, sample: np.ndarray) -> Result:
        return self.predict_batch([sample])[0]

    def predict_batch(
        self,
        samples: Sequence[np.ndarray],
        debounce: Sequence[Debounce | None] | None = None,
        thresholds: Thresholds | None = None,
        cpu: dict[str, float] | None = None,
    ) -> list[Result]:
        """Score and decide a batch; ``debounce`` gives each sample its source's N-of-M state,
        ``thresholds`` the T1/T2 to decide with (default: this inferencer's). ``cpu`` adds this
        thread's CPU seconds per stage (preprocess, inference, scoring) to its counts."""
        start, clock = time.perf_counter(), time.thread_time()
        x = preprocess_batch(samples, self.input_spec)
        preprocessed = time.thread_time()
        outputs = dict(zip(self.output_names, self.session.run(None, {"input": x}), strict=True))
        inferred = time.thread_time()
        scores, maps, labels, raw = self._postprocess(x, outputs)
        unlike = None
        if self.appearance is not None:
            scores, unlike = self.appearance.apply(scores, x)
        if cpu is not None:
            for stage, seconds in (("preprocess", preprocessed - clock), ("inference", inferred - preprocessed)):
                cpu[stage] = cpu.get(stage, 0.0) + seconds
            cpu["scoring"] = cpu.get("scoring", 0.0) + time.thread_time() - inferred
        latency = (time.perf_counter() - start) * 1000
        thresholds = thresholds or self._thresholds  # one read: the whole batch is decided with the same pair
        t2 = thresholds.t2
        norm = normalize(scores, self.median, t2) if np.isfinite(t2) else np.clip(scores, 0, 1)
        states = debounce if debounce is not None else [None] * len(scores)
        decisions = [decide(float(s), thresholds, d) for s, d in zip(scores, states, strict=True)]
        if self.kind == "detector" and labels is not None:  # a defect type only for flagged items
            labels = [lab if d != "ok" else None for lab, d in zip(labels, decisions, strict=True)]
        if unlike is not None and unlike.any():  # what a defect type would not say
            labels = labels or [None] * len(scores)
            labels = [UNLIKE if u and d != "ok" else lab for lab, u, d in zip(labels, unlike, decisions, strict=True)]
        return [
            Result(
                score=float(s),
                norm_score=float(n),
                decision=decisions[i],
                anomaly_map=None if maps is None else maps[i],
                label=None if labels is None else labels[i],
                model_version=self.version,
                latency_ms=latency,
                output=None if raw is None else raw[i].reshape(-1).tolist(),
                thresholds=thresholds,
            )
            for i, (s, n) in enumerate(zip(scores, norm, strict=True))
        ]

    def _postprocess(self, x: np.ndarray, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, Any, Any, Any]:
        if "score" in outputs:  # the graph computes the anomaly score itself (vector detectors)
            return outputs["score"].reshape(len(x), -1)[:, 0].astype(np.float64), None, None, None
        if self.kind == "detector":
            maps = outputs["anomaly_map"][:, 0]
            return image_scores(maps, self.top_k, self.sigma), maps, self._defect_types(outputs), None
        out = outputs[self.output_names[0]]
        if self.kind == "autoencoder":
            if self.input_spec.kind == "image":
                maps = reconstruction_error_maps(x, out)
                flat = maps.reshape(len(x), -1)
                rules = {"mean": lambda: flat.mean(axis=1), "max": lambda: flat.max(axis=1)}
                scores = rules.get(self.score_rule, lambda: image_scores(maps, self.top_k, self.sigma))()
                return scores, maps, None, None
            errors = ((x - out) ** 2).reshape(len(x), -1)
            return (errors.max(axis=1) if self.score_rule == "max" else errors.mean(axis=1)), None, None, None
        if self.kind == "classifier":
            probs = _probabilities(out)
            if probs.shape[1] == 1:
                idx = (probs[:, 0] >= 0.5).astype(int)
                return probs[:, 0], None, [self._label(i) for i in idx], probs
            idx = probs.argmax(axis=1)
            return probs.max(axis=1), None, [self._label(i) for i in idx], probs
        return out.reshape(len(x), -1)[:, 0], None, None, out  # regressor: first output as the score

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)

    def _defect_types(self, outputs: dict[str, np.ndarray]) -> list[str] | None:
        logits = outputs.get("defect_type")
        if logits is None or not self.labels:
            return None
        return [self._label(int(i)) for i in logits.argmax(axis=1)]


def _probabilities(out: np.ndarray) -> np.ndarray:
    """Sigmoid heads already give probabilities; multi-class logits get a softmax."""
    out = out.reshape(len(out), -1)
    if out.shape[1] == 1 or (out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=1), 1, atol=1e-4)):
        return out
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
