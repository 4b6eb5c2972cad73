"""Retention of stored images and heat maps: limits by age and total size.

Order of deletion: OK items past the age limit; then, while over the size limit, the oldest OK
items, then the oldest review / NG items whose alerts are resolved (confirmed or false positive).
An image of an NG or review item whose alert is still open or acknowledged is never deleted.
Files are content-addressed and may be shared: a file goes only when no kept inspection uses it.
Inspection rows stay (with their image references cleared): the history is kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from appliance.images import ImageStore
from appliance.storage.models import Alert, Inspection, as_utc, utcnow

RESOLVED = ("confirmed", "false_positive")


@dataclass
class PruneReport:
    files_deleted: int = 0
    bytes_freed: int = 0
    inspections_cleared: int = 0
    bytes_kept: int = 0


def _refs(row: Inspection) -> list[str]:
    return [r for r in (row.image_ref, row.heatmap_ref) if r]


def prune(engine: Engine, images: ImageStore, *, max_age: dt.timedelta, max_bytes: int) -> PruneReport:
    report = PruneReport()
    with Session(engine) as session:
        rows = session.exec(
            select(Inspection)
            .where(or_(col(Inspection.image_ref).is_not(None), col(Inspection.heatmap_ref).is_not(None)))
            .order_by(Inspection.t_capture)
        ).all()
        alert_state = dict(session.exec(select(Alert.inspection_id, Alert.state)).all())
        sizes = {
            ref: (images.path(ref).stat().st_size if images.path(ref).exists() else 0)
            for row in rows
            for ref in _refs(row)
        }
        total = sum(sizes.values())
        cutoff = utcnow() - max_age

        def deletable(row: Inspection) -> bool:
            return row.decision == "ok" or alert_state.get(row.id) in RESOLVED

        doomed = [r for r in rows if r.decision == "ok" and as_utc(r.t_capture) < cutoff]
        chosen = {r.id for r in doomed}
        freed = sum(sizes[ref] for r in doomed for ref in _refs(r))
        for tier in (lambda r: r.decision == "ok", lambda r: r.decision != "ok" and deletable(r)):
            for row in rows:
                if total - freed <= max_bytes:
                    break
                if row.id not in chosen and tier(row):
                    chosen.add(row.id)
                    doomed.append(row)
                    freed += sum(sizes[ref] for ref in _refs(row))
        still_used = {ref for row in rows if row.id not in chosen for ref in _refs(row)}
        for row in doomed:
            for ref in _refs(row):
                if ref not in still_used and images.path(ref).exists():
                    images.path(ref).unlink()
                    report.files_deleted += 1
                    report.bytes_freed += sizes[ref]
                    still_used.add(ref)  # counted once
            row.image_ref = row.heatmap_ref = None
            session.add(row)
            report.inspections_cleared += 1
        session.commit()
        report.bytes_kept = total - report.bytes_freed
    return report
