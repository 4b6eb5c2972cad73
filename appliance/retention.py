"""Retention: the history stays bounded however long the line runs, and nothing is ever loaded whole.

A pass (:func:`retain`) does three things, each in batches of a few thousand rows per transaction:

1. rolls the raw inspections not counted yet up into their hours' aggregates
   (:mod:`appliance.storage.history`): counts per decision, OK / flagged score and latency
   histograms, which the threshold preview, the score histograms and the hourly charts read;
2. deletes raw inspection rows older than the raw window once they are rolled up, except those
   with an alert (every alert keeps its inspection: open, confirmed, false positive alike), shadow
   models' results older than the window (an ended shadow keeps its comparison), and the outbox
   rows sent before the window (and, on PostgreSQL, vacuums what they leave);
3. prunes stored images and heat maps (:func:`prune`): OK items past the age limit; then, while
   over the size limit, the oldest OK items, then the oldest review / NG items whose alerts are
   resolved (confirmed or false positive). An image of an item whose alert is still open or
   acknowledged is never deleted. Files are content-addressed and may be shared: a file goes only
   when no row uses it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import exists, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from appliance.images import ImageStore
from appliance.storage import history, partitions, store
from appliance.storage.db import padded
from appliance.storage.models import Alert, Inspection, ShadowResult, utcnow

RESOLVED = ("confirmed", "false_positive")
BATCH = 500  # image-bearing rows per transaction when pruning by size (a batch may overshoot by its files)


@dataclass
class PruneReport:
    rows_rolled_up: int = 0
    rows_deleted: int = 0
    messages_deleted: int = 0  # outbox rows sent longer ago than the raw window
    files_deleted: int = 0
    bytes_freed: int = 0
    inspections_cleared: int = 0
    bytes_kept: int = 0


def stored_bytes(images: ImageStore) -> int:
    """What the image store holds on disk, walked file by file (no list of them in memory)."""
    total = 0
    for folder in os.scandir(images.root):
        if folder.is_dir():
            total += sum(f.stat().st_size for f in os.scandir(folder.path) if f.is_file())
    return total


def _unlink_unused(engine: Engine, images: ImageStore, refs: Iterable[str], report: PruneReport) -> None:
    """Delete the files of ``refs`` that no inspection or shadow result refers to any more."""
    with Session(engine) as session:
        for ref in set(refs):
            used = (
                session.execute(
                    select(exists().where(or_(col(Inspection.image_ref) == ref, col(Inspection.heatmap_ref) == ref)))
                ).scalar()
                or session.execute(select(exists().where(col(ShadowResult.heatmap_ref) == ref))).scalar()
            )
            if not used and images.path(ref).exists():
                report.bytes_freed += images.delete(ref)
                report.files_deleted += 1


def _clear(engine: Engine, images: ImageStore, query, report: PruneReport, budget: int | None) -> None:
    """Clear the image references of the rows ``query`` selects (oldest first, a batch at a time)
    and delete their files when unused: all of them, or (``budget``) until about that many bytes
    are freed in all."""
    while True:
        with Session(engine) as session:
            rows = session.execute(query.limit(BATCH)).all()
            if budget is not None:
                chosen, planned = [], 0
                for row in rows:
                    if report.bytes_freed + planned >= budget:
                        break
                    chosen.append(row)
                    planned += sum(images.size(r) for r in (row[1], row[2]) if r)
                rows = chosen
            if not rows:
                return
            ids = [row[0] for row in rows]
            session.execute(
                update(Inspection).where(col(Inspection.id).in_(padded(ids))).values(image_ref=None, heatmap_ref=None)
            )
            session.commit()
        report.inspections_cleared += len(rows)
        _unlink_unused(engine, images, [r for row in rows for r in (row[1], row[2]) if r], report)


def prune(engine: Engine, images: ImageStore, *, max_age: dt.timedelta, max_bytes: int) -> PruneReport:
    """Delete stored images past the age limit, then over the size limit (see the module)."""
    report = PruneReport()
    total = stored_bytes(images)
    with_images = or_(col(Inspection.image_ref).is_not(None), col(Inspection.heatmap_ref).is_not(None))
    base = select(Inspection.id, Inspection.image_ref, Inspection.heatmap_ref).where(with_images)
    ok = base.where(Inspection.decision == "ok").order_by(Inspection.t_capture)
    resolved = (
        base.join(Alert, Alert.inspection_id == Inspection.id)
        .where(Inspection.decision != "ok", col(Alert.state).in_(RESOLVED))
        .order_by(Inspection.t_capture)
    )
    _clear(engine, images, ok.where(col(Inspection.t_capture) < utcnow() - max_age), report, None)
    for tier in (ok, resolved):
        if total - report.bytes_freed <= max_bytes:
            break
        _clear(engine, images, tier, report, total - max_bytes)
    report.bytes_kept = total - report.bytes_freed
    return report


def retain(
    engine: Engine,
    images: ImageStore,
    *,
    raw_window: dt.timedelta,
    max_age: dt.timedelta,
    max_bytes: int,
    now: dt.datetime | None = None,
    compact: bool = False,
) -> PruneReport:
    """One retention pass: roll up what is not counted yet, delete raw rows past ``raw_window``
    (kept: those with an alert), prune images (see the module); ``compact`` (once a day): also
    rebuild the inspection indexes on PostgreSQL (:func:`appliance.storage.history.reclaim`)."""
    now = now or utcnow()
    partitions.ensure(engine, first=now.astimezone(dt.UTC).date())  # PostgreSQL: today's and the next days' partitions
    rolled = history.rollup(engine, before=now)
    deleted = PruneReport()
    rows = 0
    for refs, n in history.delete_raw(engine, before=now - raw_window):
        rows += n
        _unlink_unused(engine, images, refs, deleted)
    for refs in store.delete_shadow_results(engine, before=now - raw_window):
        _unlink_unused(engine, images, refs, deleted)
    report = prune(engine, images, max_age=max_age, max_bytes=max_bytes)
    report.rows_rolled_up, report.rows_deleted = rolled, rows
    report.messages_deleted = store.forget_sent_messages(engine, before=now - raw_window)
    if rolled or rows or report.messages_deleted or compact:
        history.reclaim(engine, compact=compact)
    report.files_deleted += deleted.files_deleted
    report.bytes_freed += deleted.bytes_freed
    return report
