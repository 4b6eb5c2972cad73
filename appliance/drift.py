"""Drift watch: each source's frames and normal-looking scores against a reference of the same
source and model, window by window (the test: :mod:`models.drift`).

- The reference is the first ``reference`` frames a model version judges on a source (stored, so
  a restart under changed conditions does not learn them as normal), learned again after an
  engineer's reset ("the new conditions are normal") or when another version takes the source.
- Every frame's score is kept with the lowest review threshold T1 seen over the frames; a window's
  scores are compared with the reference's below the lower of the two (:func:`models.drift.compare`),
  so an operator's threshold change is not called a drift.
- When a window is called drifted the source turns ``drifting``: a drift event is stored with the
  tests and the before / after values, audited, and its state published (retained) on
  ``…/events/drift/{source}``, through the outbox like the alerts. After ``recover`` windows in a
  row without drift it is ``stable`` again (another event).
- The event suggests what to do: a retrain from recent OK items when the parts look different to
  the model, a look at the lighting or the optics when the images changed.

Runs in the inspector thread (a few microseconds a frame, about a millisecond per window test);
what cannot be stored (the database away) is tried again at the next window.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from appliance.alerts.schema import Topics
from appliance.storage import queries, store
from appliance.storage.models import Inspection
from models.drift import FEATURES, IMAGE_FEATURES, DriftConfig, FeatureTest, compare, image_stats, normal_looking

log = logging.getLogger(__name__)

CUT = "score_cut"  # the stored reference's lowest T1 (references stored before it kept OK scores only)

HINTS = {
    "score": "the model scores normal parts differently: retrain from recent OK items once they are confirmed good",
    "brightness": "the images are brighter or darker: check the lighting and the exposure",
    "contrast": "the images' contrast changed: check the lighting, the exposure and the lens",
    "sharpness": "the images are sharper or blurrier: check the focus, the lens and vibration",
}


def _values(features: dict[str, list[float]]) -> dict[str, list[float]]:
    """Features rounded for storage (5 significant digits)."""
    return {k: [float(f"{v:.5g}") for v in vs] for k, vs in features.items()}


@dataclass
class SourceWatch:
    model_version: str
    reference: dict[str, list[float]] | None  # None: still learning it
    reference_cut: float = math.inf  # the lowest T1 over the reference's frames
    state: str = "stable"  # stable | drifting (while learning: stable)
    event_id: int | None = None  # the event that set the state
    collected: dict[str, list[float]] = field(default_factory=lambda: {f: [] for f in FEATURES})
    frames: int = 0  # frames in ``collected``
    cut: float = math.inf  # the lowest T1 over them
    quiet: int = 0  # windows in a row without drift while drifting
    windows: int = 0  # windows tested
    last: list[FeatureTest] = field(default_factory=list)
    last_below: float | None = None  # the scores' cut in the last test (None: none known)

    def status(self, config: DriftConfig) -> dict[str, Any]:
        learning = self.reference is None
        return {
            "model_version": self.model_version,
            "state": "learning" if learning else self.state,
            "event_id": self.event_id,
            "reference_frames": config.reference if not learning else self.frames,
            "reference_needed": config.reference,
            "window_frames": 0 if learning else self.frames,
            "window": config.window,
            "windows_tested": self.windows,
            "last_test": [t.to_dict() for t in self.last],
            "score_below": self.last_below,
        }


class DriftWatch:
    def __init__(
        self, engine: Engine, topics: Topics, config: DriftConfig | None = None, wake: Callable[[], None] | None = None
    ) -> None:
        self.engine, self.topics, self.config = engine, topics, config or DriftConfig()
        self.wake = wake  # the publisher's doorbell: a drift message goes out now
        self.sources: dict[str, SourceWatch] = {}
        self.lock = threading.Lock()  # the inspector observes, the API reads and resets

    def observe(self, payload: np.ndarray, inspection: Inspection) -> None:
        """One scored frame of a source."""
        with self.lock:
            watch = self._watch(inspection.source_id, inspection.model_version)
            if watch is None:
                return
            watch.collected["score"].append(float(inspection.score))
            if inspection.t1 is not None:
                watch.cut = min(watch.cut, float(inspection.t1))
            if payload.ndim >= 2:
                for name, value in zip(IMAGE_FEATURES, image_stats(payload), strict=True):
                    watch.collected[name].append(value)
            watch.frames += 1
            needed = self.config.reference if watch.reference is None else self.config.window
            if watch.frames >= needed:
                self._complete(inspection.source_id, watch)

    def _watch(self, source_id: str, model_version: str) -> SourceWatch | None:
        watch = self.sources.get(source_id)
        if watch is not None and watch.model_version == model_version:
            return watch
        try:  # a version new to this process: its stored reference and state, if any
            reference = queries.drift_reference(self.engine, source_id=source_id, model_version=model_version)
            last = queries.drift_state(self.engine, source_id=source_id, model_version=model_version)
        except SQLAlchemyError:
            return None  # the database is away: watch again when it is back
        cut = math.inf if reference is None else reference.pop(CUT, [math.inf])[0]
        watch = SourceWatch(model_version, reference, cut)
        if last is not None and reference is not None:
            watch.state, watch.event_id = last.state, last.id
        self.sources[source_id] = watch
        return watch

    def _complete(self, source_id: str, watch: SourceWatch) -> None:
        collected = {k: v for k, v in watch.collected.items() if v}
        if watch.reference is None:
            try:
                features = _values(collected) | ({CUT: [watch.cut]} if math.isfinite(watch.cut) else {})
                store.save_drift_reference(
                    self.engine, source_id=source_id, model_version=watch.model_version, features=features
                )
            except SQLAlchemyError:
                log.warning("the drift reference of %r could not be stored; learning it again", source_id)
            else:
                watch.reference, watch.reference_cut = collected, watch.cut
            self._restart(watch)
            return
        below = min(watch.reference_cut, watch.cut)
        tests = compare(
            {k: np.asarray(v) for k, v in watch.reference.items()},
            {k: np.asarray(v) for k, v in collected.items()},
            self.config,
            below,
        )
        watch.windows += 1
        watch.last, watch.last_below = tests, below if math.isfinite(below) else None
        drifted = [t for t in tests if t.drifted]
        new_state = watch.state
        if drifted:
            watch.quiet = 0
            new_state = "drifting"
        elif watch.state == "drifting":
            watch.quiet += 1
            if watch.quiet >= self.config.recover:
                new_state = "stable"
        if new_state != watch.state:
            try:
                event = self._event(source_id, watch, new_state, tests, collected, below)
            except SQLAlchemyError:
                log.warning("the drift event of %r could not be stored; tested again at the next window", source_id)
            else:
                watch.state, watch.event_id = new_state, event
        self._restart(watch)

    @staticmethod
    def _restart(watch: SourceWatch) -> None:
        watch.collected = {f: [] for f in FEATURES}
        watch.frames, watch.cut = 0, math.inf

    def _event(
        self,
        source_id: str,
        watch: SourceWatch,
        state: str,
        tests: list[FeatureTest],
        current: dict[str, list[float]],
        below: float,
    ) -> int:
        moved = [t.feature for t in tests if t.drifted]
        if state == "drifting":
            reason = "drift in " + ", ".join(moved)
            hints = [HINTS[f] for f in moved]
        else:
            reason = f"no drift in {self.config.recover} windows in a row"
            hints = []
        detail = {
            "reason": reason,
            "hints": hints,
            "tests": [t.to_dict() for t in tests],
            "before": _values(normal_looking(watch.reference, below)),
            "after": _values(normal_looking(current, below)),
            "score_below": watch.last_below,
            "config": self.config.__dict__,
        }
        message = {
            "reason": reason,
            "hints": hints,
            "features": {
                t.feature: {"p_value": t.p_value, "distance": t.distance, "drifted": t.drifted} for t in tests
            },
        }
        event = store.record_drift_event(
            self.engine,
            source_id=source_id,
            model_version=watch.model_version,
            state=state,
            detail=detail,
            topic=self.topics.drift(source_id),
            message=message,
        )
        log.warning("source %r is %s: %s", source_id, state, reason)
        if self.wake is not None:
            self.wake()
        return int(event.id)

    def reset(self, source_id: str, actor: str, reason: str = "") -> None:
        """The source's current conditions are normal: forget its references and learn anew."""
        with self.lock:  # the inspector must not store a reference learned before the reset after it
            store.forget_drift_references(self.engine, source_id=source_id, actor=actor, reason=reason)
            watch = self.sources.pop(source_id, None)
            if watch is not None and watch.state == "drifting":
                message = {"reason": f"reset by {actor}: learning the line anew", "hints": [], "features": {}}
                store.record_drift_event(
                    self.engine,
                    source_id=source_id,
                    model_version=watch.model_version,
                    state="stable",
                    detail={"reason": message["reason"], "hints": [], "tests": []},
                    topic=self.topics.drift(source_id),
                    message=message,
                )
                if self.wake is not None:
                    self.wake()

    def forget(self, source_id: str) -> None:
        """A removed source."""
        with self.lock:
            self.sources.pop(source_id, None)

    def source_status(self, source_id: str, model_version: str) -> dict[str, Any] | None:
        """The watch of a source under the version that judges it (its stored state read if this
        process has not seen a frame of it yet); None while the database is away."""
        with self.lock:
            watch = self._watch(source_id, model_version)
            return None if watch is None else watch.status(self.config)
