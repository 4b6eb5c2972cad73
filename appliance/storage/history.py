"""The inspection history: raw rows for a window, hourly aggregates for ever.

Raw rows are rolled up (:func:`rollup`, every minute or so) into one :class:`InspectionHour` per
source, model version and hour: counts per decision and fixed-bin histograms of the OK scores, the
flagged scores and the latencies. A rolled-up row is counted there and nowhere else (readers take
the aggregates plus the rows not rolled up yet), so the raw rows can go (:func:`delete_raw`)
without the counts, the threshold preview or the score histograms losing anything but
resolution. The roll-up and the marking of its rows are one transaction: a row is counted once,
by one node (rows are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import case, exists, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from appliance.storage import partitions, store
from appliance.storage.db import padded
from appliance.storage.models import Alert, Inspection, InspectionHour, as_utc
from appliance.storage.queries import read_rows, scoped

S0 = 1e-6  # the bins are linear within a few S0 of 0 ...
WIDTH = 0.005  # ... and 0.5 % of the value wide beyond
LIMIT = 1e12  # values beyond ±LIMIT share the outermost bins
BATCH = 5_000  # rows per transaction: bounded memory and short locks, whatever the backlog
# the rows not rolled up yet, spelt as the partial index ix_inspection_fresh is (SQLite uses a
# partial index only for a query whose condition contains the index's own)
FRESH = text("NOT inspection.rolled_up")


def floor_hour(t: dt.datetime) -> dt.datetime:
    return as_utc(t).replace(minute=0, second=0, microsecond=0)


@dataclass
class Histogram:
    """Counts in fixed bins of ``asinh(x / S0)``, the same for every hour, source and model, so
    hours add up. A value is resolved to 0.5 % of itself (thresholds too, on aggregated hours)."""

    lo: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @staticmethod
    def bins(values: Any) -> np.ndarray:
        x = np.clip(np.asarray(values, np.float64), -LIMIT, LIMIT)
        return np.floor(np.arcsinh(x / S0) / WIDTH).astype(np.int64)

    @staticmethod
    def edge(b: Any) -> Any:
        """The lower edge of bin ``b`` (a value on an edge falls in the bin above it)."""
        return S0 * np.sinh(np.asarray(b, np.float64) * WIDTH)

    @classmethod
    def of(cls, values: Any) -> Histogram:
        b = cls.bins(values)
        if b.size == 0:
            return cls()
        lo = int(b.min())
        return cls(lo, np.bincount(b - lo).astype(np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: Histogram) -> Histogram:
        if not other.counts.size:
            return self
        if not self.counts.size:
            return other
        lo = min(self.lo, other.lo)
        hi = max(self.lo + self.counts.size, other.lo + other.counts.size)
        counts = np.zeros(hi - lo, np.int64)
        counts[self.lo - lo : self.lo - lo + self.counts.size] += self.counts
        counts[other.lo - lo : other.lo - lo + other.counts.size] += other.counts
        return Histogram(lo, counts)

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin centres, counts) of the bins that hold something."""
        nonzero = np.flatnonzero(self.counts)
        b = self.lo + nonzero
        return (self.edge(b) + self.edge(b + 1)) / 2, self.counts[nonzero]

    def quantile(self, q: float) -> float | None:
        if not self.total:
            return None
        centres, counts = self.values()
        return float(centres[np.searchsorted(np.cumsum(counts), q * counts.sum())])

    def to_bytes(self) -> bytes:
        """The first bin and the counts, deflated: a slow line's hour is mostly empty bins, a fast
        one's mostly small counts; either way a few hundred bytes to read back per hour."""
        return np.int64(self.lo).tobytes() + zlib.compress(self.counts.astype("<i4").tobytes(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Histogram:
        if len(data) <= 8:
            return cls()
        counts = np.frombuffer(zlib.decompress(data[8:]), "<i4").astype(np.int64)
        return cls(int(np.frombuffer(data[:8], "<i8")[0]), counts)


@dataclass
class Hour:
    """Decoded aggregates (one hour, or several added up)."""

    n_ok: int = 0
    n_review: int = 0
    n_ng: int = 0
    ok_scores: Histogram = field(default_factory=Histogram)
    flagged_scores: Histogram = field(default_factory=Histogram)
    latencies: Histogram = field(default_factory=Histogram)
    first_capture: dt.datetime | None = None

    @property
    def count(self) -> int:
        return self.n_ok + self.n_review + self.n_ng

    def __add__(self, other: Hour) -> Hour:
        firsts = [t for t in (self.first_capture, other.first_capture) if t is not None]
        return Hour(
            self.n_ok + other.n_ok,
            self.n_review + other.n_review,
            self.n_ng + other.n_ng,
            self.ok_scores + other.ok_scores,
            self.flagged_scores + other.flagged_scores,
            self.latencies + other.latencies,
            min(firsts) if firsts else None,
        )

    @classmethod
    def of_row(cls, row: Any) -> Hour:
        return cls(
            row.n_ok,
            row.n_review,
            row.n_ng,
            Histogram.from_bytes(row.ok_scores),
            Histogram.from_bytes(row.flagged_scores),
            Histogram.from_bytes(row.latencies),
            as_utc(row.first_capture),
        )

    @classmethod
    def of_raw(cls, decisions: np.ndarray, scores: np.ndarray, latencies: np.ndarray, first: dt.datetime) -> Hour:
        ok = decisions == "ok"
        return cls(
            int(ok.sum()),
            int((decisions == "review").sum()),
            int((decisions == "ng").sum()),
            Histogram.of(scores[ok]),
            Histogram.of(scores[~ok]),
            Histogram.of(latencies),
            first,
        )


# -- writes ----------------------------------------------------------------------------------------
def rollup(engine: Engine, *, before: dt.datetime, batch: int | None = None) -> int:
    """Count the rows captured before ``before`` that are not counted yet into their hours'
    aggregates (an hour's row grows as its rows come); returns how many. Late rows (written back
    from the spool) are added to their hour's aggregates on the next call."""
    total, batch = 0, batch or BATCH
    while True:
        try:
            done = _rollup_batch(engine, before=as_utc(before), batch=batch)
        except IntegrityError:  # another node created the same hour meanwhile: take it again
            continue
        total += done
        if done < batch:
            return total


def _rollup_batch(engine: Engine, *, before: dt.datetime, batch: int) -> int:
    query = (
        select(
            Inspection.id,
            Inspection.source_id,
            Inspection.model_version,
            Inspection.t_capture,
            Inspection.score,
            Inspection.decision,
            Inspection.latency_ms,
        )
        .where(FRESH, col(Inspection.t_capture) < before)
        .order_by(Inspection.t_capture)
        .limit(batch)
        .with_for_update(skip_locked=True)  # PostgreSQL: each row counted by one node
    )
    with Session(engine) as session:
        rows = session.execute(query).all()
        if not rows:
            return 0
        groups: dict[tuple[str, str, dt.datetime], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row.source_id, row.model_version, floor_hour(row.t_capture))].append(row)
        for (source_id, version, hour), members in sorted(groups.items()):  # one lock order for all nodes
            fresh = Hour.of_raw(
                np.array([r.decision for r in members]),
                np.array([r.score for r in members], np.float64),
                np.array([r.latency_ms for r in members], np.float64),
                min(as_utc(r.t_capture) for r in members),
            )
            stored = session.exec(
                select(InspectionHour)
                .where(
                    InspectionHour.source_id == source_id,
                    InspectionHour.model_version == version,
                    InspectionHour.hour == hour,
                )
                .with_for_update()
            ).first()
            merged = fresh + Hour.of_row(stored) if stored is not None else fresh
            target = stored or InspectionHour(source_id=source_id, model_version=version, hour=hour)
            target.first_capture = merged.first_capture
            target.n_ok, target.n_review, target.n_ng = merged.n_ok, merged.n_review, merged.n_ng
            target.ok_scores = merged.ok_scores.to_bytes()
            target.flagged_scores = merged.flagged_scores.to_bytes()
            target.latencies = merged.latencies.to_bytes()
            session.add(target)
        captured = col(Inspection.t_capture).between(rows[0].t_capture, rows[-1].t_capture)  # partitions to look in
        ids = col(Inspection.id).in_(padded([r.id for r in rows]))
        session.execute(update(Inspection).where(ids, captured).values(rolled_up=True))
        session.commit()
        return len(rows)


def delete_raw(engine: Engine, *, before: dt.datetime, batch: int | None = None) -> Iterator[tuple[list[str], int]]:
    """Delete the rolled-up rows captured before ``before`` that no alert refers to, a batch per
    transaction; yields each batch's image references (for the caller to delete the files no
    row uses any more) and its size. Rows with an alert stay, with their images: they are the audit trail.

    PostgreSQL: OK rows go a UTC day at a time with their partition, once the whole day is past
    ``before`` (:func:`appliance.storage.partitions.drop_expired`); the batched deletes then only
    reach the rows before the oldest day partition left, i.e. the default partitions'."""
    batch = batch or BATCH
    before = as_utc(before)
    if partitions.partitioned(engine):
        yield from partitions.drop_expired(engine, before=before)
        oldest = partitions.oldest_start(engine)
        before = min(before, oldest) if oldest else before
    has_alert = exists().where(Alert.inspection_id == Inspection.id)
    older = col(Inspection.t_capture) < before  # on the delete too: PostgreSQL looks in those partitions only
    query = (
        select(Inspection.id, Inspection.image_ref, Inspection.heatmap_ref)
        .where(col(Inspection.rolled_up).is_(True), older, ~has_alert)
        .order_by(Inspection.t_capture)
        .with_for_update(skip_locked=True)
    )
    for rows in store.delete_in_batches(engine, Inspection, query, batch, also=older):
        yield [ref for r in rows for ref in (r.image_ref, r.heatmap_ref) if ref], len(rows)


# -- reads -----------------------------------------------------------------------------------------
def hours(
    engine: Engine, *, since: dt.datetime, source_id: str | None = None, model_version: str | None = None
) -> list[tuple[str, dt.datetime, Hour]]:
    """(source, hour, aggregates) of the hours starting at or after ``since``, oldest first;
    model versions of one source and hour are added up. Rows, not ORM objects: a month is 720 of
    them per source."""
    table = InspectionHour.__table__
    query = scoped(select(table).where(table.c.hour >= since), table.c, source_id, model_version)
    out: dict[tuple[str, dt.datetime], Hour] = {}
    with Session(engine) as session:
        for row in session.execute(query.order_by(table.c.hour)):
            key = (row.source_id, as_utc(row.hour))
            out[key] = out[key] + Hour.of_row(row) if key in out else Hour.of_row(row)
    return [(sid, hour, agg) for (sid, hour), agg in out.items()]


def raw_count(
    engine: Engine,
    *,
    since: dt.datetime,
    limit: int,
    source_id: str | None = None,
    model_version: str | None = None,
) -> int:
    """How many raw rows (rolled up or not) were captured since ``since``, counting to ``limit``."""
    inner = scoped(
        select(Inspection.id).where(col(Inspection.t_capture) >= since), Inspection, source_id, model_version
    ).limit(limit)
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(inner.subquery())).one()


def fresh_counts(
    engine: Engine,
    *,
    since: dt.datetime,
    t1: float,
    t2: float,
    source_id: str | None = None,
    model_version: str | None = None,
) -> tuple[dict[str, int], int, dt.datetime | None]:
    """What T1/T2 decide on the rows captured since ``since`` that no aggregate counts yet
    (counted in the database: an hour of a fast line is too many rows to fetch), how many of
    them the line decided OK, and the first capture time among them."""
    score = col(Inspection.score)
    query = scoped(
        select(
            func.count(),
            func.sum(case((score >= t2, 1), else_=0)),
            func.sum(case((score >= t2, 0), (score >= t1, 1), else_=0)),
            func.sum(case((Inspection.decision == "ok", 1), else_=0)),
            func.min(Inspection.t_capture),
        ).where(FRESH, col(Inspection.t_capture) >= since),
        Inspection,
        source_id,
        model_version,
    )
    with Session(engine) as session:
        n, ng, review, ok, first = session.execute(query).one()
    n, ng, review = int(n or 0), int(ng or 0), int(review or 0)
    return {"ok": n - ng - review, "review": review, "ng": ng}, int(ok or 0), as_utc(first)


def fresh_scores(
    engine: Engine,
    *,
    since: dt.datetime,
    limit: int,
    decisions: tuple[str, ...] | None = None,
    source_id: str | None = None,
    model_version: str | None = None,
) -> list[float]:
    """Scores of the newest ``limit`` rows since ``since`` that no aggregate counts yet (with
    one of ``decisions``)."""
    query = scoped(
        select(Inspection.score).where(FRESH, col(Inspection.t_capture) >= since),
        Inspection,
        source_id,
        model_version,
    )
    if decisions is not None:
        query = query.where(col(Inspection.decision).in_(decisions))
    return [float(s) for (s,) in read_rows(engine, query.order_by(col(Inspection.t_capture).desc()).limit(limit))]


def fresh_by_source(engine: Engine, *, since: dt.datetime, source_id: str | None = None) -> dict[str, Hour]:
    """Per source, the counts per decision of the rows not rolled up yet (no histograms)."""
    query = scoped(
        select(Inspection.source_id, Inspection.decision, func.count(), func.min(Inspection.t_capture))
        .where(FRESH, col(Inspection.t_capture) >= since)
        .group_by(Inspection.source_id, Inspection.decision),
        Inspection,
        source_id,
        None,
    )
    out: dict[str, Hour] = {}
    with Session(engine) as session:
        for sid, decision, n, first in session.execute(query).all():
            hour = out.setdefault(sid, Hour(first_capture=as_utc(first)))
            setattr(hour, f"n_{decision}", getattr(hour, f"n_{decision}") + n)
            hour.first_capture = min(hour.first_capture, as_utc(first))
    return out


def reclaim(engine: Engine, *, compact: bool = False) -> None:
    """PostgreSQL: make the space of deleted and rolled-up rows reusable now (``VACUUM``, which
    never blocks writers), not when autovacuum's share of a large table is reached; with
    ``compact`` (a daily job) also rebuild the indexes of the rows kept for good
    (``REINDEX … CONCURRENTLY``, which does not block writers either): their roll-up updates leave
    index pages on increasing keys half empty, and nothing else writes there. The OK rows' day
    partitions need neither: they go whole. SQLite reuses freed pages and merges sparse ones by itself."""
    if not partitions.partitioned(engine):
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("inspection", "inspectionhour", "outboxmessage"):
            connection.execute(text(f"VACUUM (ANALYZE) {table}"))
        if compact:
            for table in ("inspection_flagged", "inspection_ok_default", "inspection_other"):
                connection.execute(text(f"REINDEX TABLE CONCURRENTLY {table}"))
