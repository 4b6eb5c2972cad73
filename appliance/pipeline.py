"""The inspection pipeline: sources → bounded queues → detector (onnxruntime) → decision →
storage → alerts (through the outbox).

- One reader thread per source fills a bounded queue; when full, the oldest sample is dropped and
  counted.
- One inspector thread takes what is waiting across sources and scores it, grouped by recipe
  (appliance.recipes: each source's model and thresholds). A source without one is in teach
  mode: its frames are kept for teaching (appliance.teach), nothing is decided or alerted.
- Model hot swap: each batch reads the recipe map once, so a swap lands between samples and no
  sample sees a half-loaded model; every result records its model version and thresholds.
- Optional debounce (N of M): an NG stays NG only when N of the source's last M items were NG;
  otherwise it is stored as review.
- Metrics per source: frames in, scored, dropped; latency p50/p95/p99 capture → decision and
  capture → alert published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from appliance.alerts.schema import Topics, alert_message
from appliance.errors import InvalidInput, NotFound, Unavailable
from appliance.images import ImageStore, plot_window
from appliance.metrics import prometheus_text
from appliance.recipes import Recipe, Recipes
from appliance.storage import store
from appliance.storage.models import Alert, Inspection, ShadowResult, as_utc
from appliance.storage.spool import Spool
from appliance.teach import TeachFrames
from connectors.base import Backoff, Sample, Source, SourceError, SourceFailure
from models.decision import Debounce, Thresholds, is_flagged
from models.inference import Result
from models.preprocess import PreprocessError, preprocess

if TYPE_CHECKING:
    from appliance.alerts.publisher import Doorbell
    from appliance.drift import DriftWatch

log = logging.getLogger(__name__)


def _item(sample: Sample) -> str | None:
    item = sample.meta.get("item")
    return None if item is None else str(item)[:300]


def percentiles(values: deque[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    arr = np.fromiter(values, float)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}


@dataclass
class SourceMetrics:
    scored: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"ok": 0, "review": 0, "ng": 0})
    decision_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    published_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    store_failed: int = 0  # inspections that could not be stored (counted, logged once per kind)
    rejected: int = 0  # frames the model cannot read (ROI outside, no readings...): counted, not judged
    last_rejected: str | None = None  # which frame, and why
    teach_frames: int = 0  # frames seen in teach mode
    shadow_lost: int = 0  # shadow results that could not be stored (the database away)


class SourceWorker:
    def __init__(self, source: Source, queue_size: int, wake: threading.Condition) -> None:
        self.source, self.queue = source, deque(maxlen=queue_size)
        self.wake, self.stopping, self.dropped = wake, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, name=f"source-{source.source_id}", daemon=True)

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self.stopping.is_set():
            try:
                sample = self.source.read(0.2)
            except SourceFailure:  # the source says so in its state; try again later, never die
                self.stopping.wait(backoff.next())
                continue
            backoff.reset()
            if sample is None:
                continue
            with self.wake:
                # files (folders, CSV, recorded video) wait for room: each item is read once and must
                # not be lost; live sources drop the oldest instead, so the newest stays fresh
                while self.source.backpressure and len(self.queue) == self.queue.maxlen:
                    if self.stopping.is_set():
                        return
                    self.wake.wait(0.2)
                if len(self.queue) == self.queue.maxlen:
                    self.dropped += 1  # drop-oldest
                self.queue.append(sample)
                self.wake.notify()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.source.close()


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        recipes: Recipes,
        topics: Topics,
        images: ImageStore,
        api_url: str = "",
        queue_size: int = 32,
        batch_size: int = 8,
        debounce: tuple[int, int] | None = None,
        keep_ok_images: float = 0.02,
        spool: Spool | None = None,
        teach: TeachFrames | None = None,
    ) -> None:
        self.engine, self.recipes, self.topics, self.images, self.api_url = engine, recipes, topics, images, api_url
        self.teach = teach
        self.queue_size, self.batch_size, self.debounce, self.keep_ok = queue_size, batch_size, debounce, keep_ok_images
        self.wake = threading.Condition()
        self.workers: dict[str, SourceWorker] = {}
        self.metrics: dict[str, SourceMetrics] = {}
        # the inspector's CPU seconds per stage (preprocess, inference, scoring, image writes, storage; shadow
        # from the shadow model's own thread)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.debouncers: dict[str, Debounce] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="inspector", daemon=True)
        self._random = random.Random(0)
        self._shadow_failed: set[int] = set()  # shadow bindings whose model failed (said once)
        self._shadow_pool: ThreadPoolExecutor | None = None  # the shadow model's thread, from the first shadow
        # the newest frame of each source with its anomaly map and decision (None: teach mode), for the live view
        self.latest: dict[str, tuple[np.ndarray, np.ndarray | None, Inspection | None]] = {}
        self.last_result: dict[str, Inspection] = {}  # each source's newest result, images or not (OPC UA)
        self.alerts_waiting: Doorbell | None = None  # set by the runtime: the publisher's wake-up
        self.on_inspected: Callable[[Inspection], None] | None = None  # e.g. the inspections topic
        self.spool: Spool | None = spool  # where batches wait while the database is away
        self.drift: DriftWatch | None = None  # set by the runtime: each source's drift watch

    # -- sources ------------------------------------------------------------------------
    def add_source(self, source: Source) -> None:
        if source.source_id in self.workers:
            msg = f"source {source.source_id!r} exists already"
            raise SourceError(msg)
        source.start()  # idempotent: open_source() may have started it
        worker = SourceWorker(source, self.queue_size, self.wake)
        self.workers[source.source_id] = worker
        self.metrics.setdefault(source.source_id, SourceMetrics())
        worker.thread.start()

    def remove_source(self, source_id: str) -> None:
        if source_id not in self.workers:
            msg = f"no source {source_id!r}"
            raise NotFound(msg)
        worker = self.workers.pop(source_id)
        worker.stop()
        if self.drift is not None:
            self.drift.forget(source_id)
        for per_source in (self.latest, self.last_result, self.metrics, self.debouncers):
            per_source.pop(source_id, None)

    def start(self) -> Pipeline:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.wake:
            self.wake.notify_all()
        if self.thread.ident is not None:
            self.thread.join(10)
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        for worker in list(self.workers.values()):
            worker.stop()

    # -- inspection -------------------------------------------------------------------------
    def _take(self) -> list[Sample]:
        with self.wake:
            self.wake.wait_for(lambda: self.stopping.is_set() or any(w.queue for w in self.workers.values()), 0.5)
            batch: list[Sample] = []
            while len(batch) < self.batch_size and any(w.queue for w in self.workers.values()):
                for worker in self.workers.values():  # round robin across sources
                    if worker.queue and len(batch) < self.batch_size:
                        batch.append(worker.queue.popleft())
            return batch

    def _run(self) -> None:
        while not self.stopping.is_set():
            batch = self._take()
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:
                log.exception("inspection of a batch failed")

    def process(self, batch: list[Sample]) -> list[Inspection]:
        """Inspect a batch, one group per recipe (read once: swaps land between batches); frames
        of sources in teach mode are kept for teaching."""
        groups: dict[tuple[int, Thresholds, int | None], tuple[Recipe, list[Sample]]] = {}
        for sample in batch:
            recipe = self.recipes.get(sample.source_id)
            if recipe is None:
                self._teach(sample)
            else:
                shadow = recipe.shadow.binding_id if recipe.shadow is not None else None
                groups.setdefault((id(recipe.model), recipe.thresholds, shadow), (recipe, []))[1].append(sample)
        return [i for recipe, samples in groups.values() for i in self.inspect(samples, recipe)]

    def _teach(self, sample: Sample) -> None:
        m = self.metrics.get(sample.source_id)
        if m is not None:
            m.teach_frames += 1
        if sample.payload.ndim >= 2:
            self.latest[sample.source_id] = (sample.payload, None, None)
        if self.teach is not None:
            self.teach.offer(sample)

    def _shadow_start(self, payloads: list[np.ndarray], recipe: Recipe) -> Future[list[Result]] | None:
        """The shadow model scores the batch on a thread of its own while the line's model does:
        the line's decision waits for the slower of the two, not their sum."""
        shadow = recipe.shadow
        if shadow is None:
            return None
        if self._shadow_pool is None:  # "inspector-…": its CPU is the inspector's in pipeline_bench
            self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="inspector-shadow")

        def score() -> list[Result]:
            started = time.thread_time()
            try:
                return shadow.model.predict_batch(payloads, None, shadow.thresholds)
            finally:
                self.cpu["shadow"] += time.thread_time() - started

        return self._shadow_pool.submit(score)

    def _shadow_results(self, pending: Future[list[Result]] | None, recipe: Recipe) -> list[Result] | None:
        """The shadow's results once the line's model has scored the batch; None when it failed
        (said once per binding)."""
        if pending is None:
            return None
        try:
            return pending.result()
        except Exception:
            shadow = recipe.shadow
            if shadow is not None and shadow.binding_id not in self._shadow_failed:
                log.exception("shadow model %s failed; the line goes on without it", shadow.version)
                self._shadow_failed.add(shadow.binding_id)
            return None

    def inspect(self, batch: list[Sample], recipe: Recipe) -> list[Inspection]:
        """Judge, store and announce a batch. A frame the model cannot read (a region of interest
        outside it, a frame with no readings...) is left out alone, counted and named in its
        source's status (``rejected``, ``last_rejected``); the rest of the batch is judged."""
        try:
            return self._inspect(batch, recipe)
        except PreprocessError:
            readable = [s for s in batch if self._readable(s, recipe)]
            return self._inspect(readable, recipe) if readable else []

    def _keep(self, sample: Sample, recipe: Recipe) -> str:
        """Store a sample's frame: a sensor window with its plot to show (a few readings wide, it
        would show as a smear)."""
        if recipe.model.input_spec.kind == "vector":
            return self.images.put(sample.payload, plot_window(sample.payload, sample.meta.get("channels")))
        return self.images.put(sample.payload)

    def _readable(self, sample: Sample, recipe: Recipe) -> bool:
        try:
            preprocess(sample.payload, recipe.model.input_spec)
        except PreprocessError as exc:
            m = self.metrics.get(sample.source_id)
            if m is not None:
                reason = f"{_item(sample) or 'a frame'}: {exc}"
                if m.last_rejected is None or not m.last_rejected.endswith(str(exc)):  # once per kind
                    log.warning("source %r: model %s cannot read %s", sample.source_id, recipe.version, reason)
                m.rejected += 1
                m.last_rejected = reason
            return False
        return True

    def _inspect(self, batch: list[Sample], recipe: Recipe) -> list[Inspection]:
        debounce = [self._debouncer(s.source_id) for s in batch]
        cpu = self.cpu  # this thread's CPU seconds per stage, for /metrics and pipeline_bench
        payloads = [s.payload for s in batch]
        pending = self._shadow_start(payloads, recipe)
        results = recipe.model.predict_batch(payloads, debounce, recipe.thresholds, cpu)
        shadows = self._shadow_results(pending, recipe)
        inspections = []
        for i, (sample, result) in enumerate(zip(batch, results, strict=True)):
            decision = result.decision
            disagree = shadows is not None and shadows[i].decision != decision  # both heat maps kept
            keep_image = is_flagged(decision) or disagree or self._random.random() < self.keep_ok
            started = time.thread_time()
            image_ref = self._keep(sample, recipe) if keep_image and sample.payload.ndim >= 2 else None
            heat_ref = (
                self.images.heatmap(result.anomaly_map) if keep_image and result.anomaly_map is not None else None
            )
            cpu["image_writes"] += time.thread_time() - started
            inspections.append(
                Inspection(
                    source_id=sample.source_id,
                    t_capture=sample.t_capture,
                    score=result.score,
                    norm_score=result.norm_score,
                    decision=decision,
                    label=result.label,
                    model_version=result.model_version,
                    latency_ms=result.latency_ms,
                    image_ref=image_ref,
                    heatmap_ref=heat_ref,
                    item=_item(sample),
                    t1=result.thresholds.t1,
                    t2=result.thresholds.t2,
                )
            )
        event_ids = [str(uuid.uuid4()) if is_flagged(i.decision) else None for i in inspections]  # kept if spooled
        crossed = [r.thresholds.crossed(i.decision) for i, r in zip(inspections, results, strict=True)]
        started = time.thread_time()
        stored = self._store(list(zip(inspections, crossed, event_ids, strict=True)))
        cpu["storage"] += time.thread_time() - started
        if shadows is not None:
            self._store_shadow(recipe, inspections, shadows)
        decided = dt.datetime.now(dt.UTC)
        if any(alert is not None for _, alert in stored) and self.alerts_waiting is not None:
            self.alerts_waiting.set()  # wake the publisher now rather than at its next poll
        started = time.thread_time()
        for sample, inspection in zip(batch, inspections, strict=True):
            if self.drift is not None and sample.source_id in self.workers:
                self.drift.observe(sample.payload, inspection)
        cpu["drift"] += time.thread_time() - started
        for sample, result, inspection in zip(batch, results, inspections, strict=True):
            if sample.payload.ndim >= 2:
                self.latest[sample.source_id] = (sample.payload, result.anomaly_map, inspection)
            self.last_result[sample.source_id] = inspection
            if self.on_inspected is not None:
                self.on_inspected(inspection)
            m = self.metrics.get(inspection.source_id)
            if m is None:  # removed while its last batch was scored
                continue
            m.scored += 1
            m.decisions[inspection.decision] += 1
            m.decision_ms.append((decided - inspection.t_capture).total_seconds() * 1000)
        return inspections

    def _store_shadow(self, recipe: Recipe, inspections: list[Inspection], shadows: list[Result]) -> None:
        """What the shadow said, beside each inspection (its heat map where the two disagree).
        Not spooled: while the database is away the shadow's results are counted as lost."""
        started = time.thread_time()
        rows = []
        for inspection, result in zip(inspections, shadows, strict=True):
            disagree = result.decision != inspection.decision
            heat = self.images.heatmap(result.anomaly_map) if disagree and result.anomaly_map is not None else None
            rows.append(
                ShadowResult(
                    binding_id=recipe.shadow.binding_id,
                    source_id=inspection.source_id,
                    t_capture=inspection.t_capture,
                    score=result.score,
                    norm_score=result.norm_score,
                    decision=result.decision,
                    label=result.label,
                    latency_ms=result.latency_ms,
                    heatmap_ref=heat,
                    inspection_id=inspection.id,
                    active_version=inspection.model_version,
                    active_decision=inspection.decision,
                    active_score=inspection.score,
                    active_norm_score=inspection.norm_score,
                )
            )
        try:
            store.record_shadow_results(self.engine, results=rows)
        except SQLAlchemyError:
            m = self.metrics.get(inspections[0].source_id)
            if m is not None:
                m.shadow_lost += len(rows)
        self.cpu["shadow"] += time.thread_time() - started

    def _store(self, decided: list[tuple[Inspection, float, str | None]]) -> list[tuple[Inspection, Alert | None]]:
        """The batch in one transaction. While the database is unreachable (or items wait in the
        spool, whose order must hold) the batch goes to the spool, to be written back later; when
        the database refuses an item, each is stored on its own, so one item that cannot be
        stored never loses the others. What is lost is counted per source and logged once."""
        if self.spool is not None and len(self.spool):
            return self._spool(decided)
        try:
            return self._record(decided)
        except OperationalError:  # unreachable, or locked: nothing of the batch is stored
            if self.spool is not None:
                return self._spool(decided)
            for item in decided:
                self._count_store_failure(item[0])
            return []
        except SQLAlchemyError:
            if len(decided) == 1:
                self._count_store_failure(decided[0][0])
                return []
        stored = []
        for item in decided:
            try:
                stored += self._record([item])
            except SQLAlchemyError:
                self._count_store_failure(item[0])
        return stored

    def _record(
        self, items: list[tuple[Inspection, float, str | None]], published: set[str] | None = None
    ) -> list[tuple[Inspection, Alert | None]]:
        return store.record_inspections(
            self.engine,
            inspections=items,
            alert_topic=self.topics.alerts,
            build_message=self._alert_message,
            published=published,
        )

    def _spool(self, decided: list[tuple[Inspection, float, str | None]]) -> list[tuple[Inspection, Alert | None]]:
        """Keep the batch on local disk, each alert with its message: the publisher sends those
        at once, the database gets the rows when it is back."""
        messages = [
            (self.topics.alerts, store.encode(self._alert_message(store.new_alert(i, t, e), i))) if e else None
            for i, t, e in decided
        ]
        for inspection, _, _ in self.spool.put(decided, messages):  # what did not fit: the spool is full
            self._count_store_failure(inspection)
        if any(messages) and self.alerts_waiting is not None:
            self.alerts_waiting.set()
        return []

    def _alert_message(self, alert: Alert, inspection: Inspection) -> dict:
        return alert_message(alert, inspection, self.topics, self.api_url)

    def drain_spool(self, batch: int = 200) -> int:
        """Write spooled items back in order while the database takes them; returns how many.
        An item stored already (its batch's commit answer was lost at the cut, or a replay after
        a crash) is skipped: its capture time within its source, or its alert's event id, names it."""
        done = 0
        while self.spool is not None and len(self.spool):
            # alerts the broker acknowledged from the spool are stored as sent: never sent twice
            entries, sent = self.spool.peek(batch)
            published = {item[2] for row_id, item in entries if row_id in sent}
            try:
                stored = store.stored_captures(self.engine, inspections=[item[0] for _, item in entries])
                fresh = [(r, i) for r, i in entries if (i[0].source_id, as_utc(i[0].t_capture)) not in stored]
                # stored already, and sent from the spool: the stored copy's outbox row must not send it again
                store.mark_events_sent(
                    self.engine, event_ids={i[2] for _, i in entries if i[2] in published} - {i[2] for _, i in fresh}
                )
                self._record([item for _, item in fresh], published)
            except OperationalError:  # still away: try again at the next call
                return done
            except IntegrityError:
                for _, item in fresh:
                    try:
                        self._record([item], published)
                    except IntegrityError:
                        pass  # stored before the spool could forget it
            # those acknowledged while they were written back (stored as unsent) are remembered as
            # sent with the removal: the publisher records them before it reads the outbox again
            self.spool.remove([row_id for row_id, _ in entries])
            done += len(entries)
            if self.alerts_waiting is not None:
                self.alerts_waiting.set()
        return done

    def _count_store_failure(self, inspection: Inspection) -> None:
        m = self.metrics.get(inspection.source_id)
        if m is not None:
            if not m.store_failed:
                log.exception("an inspection of source %r could not be stored", inspection.source_id)
            m.store_failed += 1

    def capture_and_inspect(self, source_id: str, timeout: float = 5.0) -> dict[str, object]:
        """Take the next frame of one source and inspect it now (external trigger)."""
        worker = self.workers.get(source_id)
        if worker is None:
            msg = f"no source {source_id!r}; sources: {sorted(self.workers)}"
            raise NotFound(msg)
        with self.wake:
            worker.queue.clear()  # a trigger wants a fresh frame, not a queued one
            if not self.wake.wait_for(lambda: bool(worker.queue), timeout):
                msg = f"source {source_id!r} delivered no frame within {timeout} s"
                raise Unavailable(msg)
            sample = worker.queue.popleft()
        recipe = self.recipes.get(source_id)
        if recipe is None:
            self._teach(sample)
            msg = f"source {source_id!r} is in teach mode: no model judges it yet (the frame was kept for teaching)"
            raise Unavailable(msg)
        inspected = self.inspect([sample], recipe)
        if not inspected:
            m = self.metrics.get(source_id)
            why = m.last_rejected if m is not None else "it cannot be read"
            msg = f"the frame from source {source_id!r} cannot be judged by {recipe.version}: {why}"
            raise InvalidInput(msg)
        inspection = inspected[0]
        return {
            "decision": inspection.decision,
            "score": inspection.score,
            "norm_score": inspection.norm_score,
            "inspection_id": inspection.id,
            "model_version": inspection.model_version,
            "item": inspection.item,
        }

    def _debouncer(self, source_id: str) -> Debounce | None:
        """The source's N-of-M state (None without debounce)."""
        if self.debounce is None:
            return None
        return self.debouncers.setdefault(source_id, Debounce(*self.debounce))

    def _debounced(self, source_id: str, decision: str) -> str:
        debouncer = self._debouncer(source_id)
        return decision if debouncer is None else debouncer.apply(decision)

    def on_published(self, payload: str) -> None:
        """Called by the alert publisher once the broker acknowledged an alert."""
        message = json.loads(payload)
        if "t_capture" not in message or "event_id" not in message:
            return  # not an alert (a retained state or threshold announcement)
        captured = dt.datetime.fromisoformat(message["t_capture"])
        m = self.metrics.setdefault(message["source_id"], SourceMetrics())  # status() lists running sources only
        m.published_ms.append((dt.datetime.now(dt.UTC) - captured).total_seconds() * 1000)

    # -- reporting --------------------------------------------------------------------------------
    def waiting(self) -> tuple[int, float]:
        """Frames of live sources waiting for the inspector, and how many seconds the oldest of
        them has waited (live sources drop the oldest frame when their queue is full; files and
        folders wait for room and are never late)."""
        frames, oldest = 0, None
        for worker in list(self.workers.values()):
            if not worker.source.backpressure:
                frames += len(worker.queue)
                with contextlib.suppress(IndexError):  # emptied by the inspector meanwhile
                    t = worker.queue[0].t_capture
                    oldest = t if oldest is None or t < oldest else oldest
        return frames, 0.0 if oldest is None else (dt.datetime.now(dt.UTC) - oldest).total_seconds()

    def status(self) -> dict[str, dict]:
        """Every running source's state and counters (a removed source is gone from here)."""
        out = {}
        for source_id, worker in list(self.workers.items()):
            m = self.metrics.get(source_id) or SourceMetrics()
            recipe = self.recipes.get(source_id)
            out[source_id] = {
                **worker.source.status(),
                "mode": "teach" if recipe is None else "inspecting",
                "model_version": None if recipe is None else recipe.version,
                "own_model": recipe is not None and recipe.own,
                "shadow_version": None if recipe is None or recipe.shadow is None else recipe.shadow.version,
                "shadow_lost": m.shadow_lost,
                "t1": None if recipe is None else recipe.thresholds.t1,
                "t2": None if recipe is None else recipe.thresholds.t2,
                "teach_frames": m.teach_frames,
                "queued": len(worker.queue),
                "queue_dropped": worker.dropped,
                "store_failed": m.store_failed,
                "rejected": m.rejected,
                "last_rejected": m.last_rejected,
                "scored": m.scored,
                "decisions": dict(m.decisions),
                "capture_to_decision_ms": percentiles(m.decision_ms),
                "capture_to_alert_published_ms": percentiles(m.published_ms),
            }
        return out

    def prometheus(self) -> str:
        """The Prometheus text of every running source, the outbox and the spool."""
        try:
            backlog: float = store.outbox_backlog(self.engine, topic_prefix=self.topics.own)
        except SQLAlchemyError:  # the database is away: say so rather than fail the scrape
            backlog = float("nan")
        return prometheus_text(self.status(), backlog, len(self.spool) if self.spool is not None else 0, dict(self.cpu))
