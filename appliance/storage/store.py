"""Storage operations: every write (the one module that commits) and the reads the pipeline, the
outbox and authentication repeat. Keyword-only arguments. The API's read queries are in
:mod:`appliance.storage.queries`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, col, func, select

from appliance.errors import Conflict, NotFound
from appliance.storage.db import padded
from appliance.storage.models import (
    Alert,
    ApiToken,
    AuditLog,
    DriftEvent,
    DriftReference,
    Inspection,
    ModelFile,
    ModelVersion,
    OutboxMessage,
    ShadowResult,
    SourceConfig,
    TrainingJob,
    as_utc,
    utcnow,
)
from appliance.storage.queries import token_digest
from models.decision import is_flagged


def record_inspection(
    engine: Engine,
    *,
    inspection: Inspection,
    threshold: float,
    alert_topic: str,
    build_message: Callable[[Alert, Inspection], dict[str, Any]],
) -> tuple[Inspection, Alert | None]:
    """Store an inspection; for review / NG decisions also its alert and the alert's MQTT message,
    all in one transaction (an alert is never stored without its message, nor sent without its row)."""
    return record_inspections(
        engine, inspections=[(inspection, threshold, None)], alert_topic=alert_topic, build_message=build_message
    )[0]


def stored_captures(engine: Engine, *, inspections: list[Inspection]) -> set[tuple[str, dt.datetime]]:
    """Which of these (source, capture time) pairs the database holds already. A batch whose
    commit was cut off mid-answer may be stored although the caller saw an error: written back
    from the spool, it must not be stored twice (a frame's capture time names it within its source)."""
    if not inspections:
        return set()
    times = {as_utc(i.t_capture) for i in inspections}
    query = select(Inspection.source_id, Inspection.t_capture).where(
        col(Inspection.t_capture).in_(padded(times)),
        col(Inspection.source_id).in_(padded({i.source_id for i in inspections})),
    )
    with Session(engine) as session:
        return {(sid, as_utc(t)) for sid, t in session.exec(query).all()}


def encode(payload: dict[str, Any]) -> str:
    """An outbox (and spooled) message's payload as it goes on the wire: compact JSON."""
    return json.dumps(payload, separators=(",", ":"))


def new_alert(inspection: Inspection, threshold: float, event_id: str | None) -> Alert:
    """The alert of a flagged inspection (its ``inspection_id`` once the inspection is stored)."""
    return Alert(
        event_id=event_id or str(uuid.uuid4()),
        inspection_id=inspection.id,
        source_id=inspection.source_id,
        decision=inspection.decision,
        score=inspection.score,
        norm_score=inspection.norm_score,
        threshold=threshold,
        model_version=inspection.model_version,
        item=inspection.item,
        label=inspection.label,
        created_at=utcnow(),
    )


def record_inspections(
    engine: Engine,
    *,
    inspections: list[tuple[Inspection, float, str | None]],
    alert_topic: str,
    build_message: Callable[[Alert, Inspection], dict[str, Any]],
    published: set[str] | None = None,
) -> list[tuple[Inspection, Alert | None]]:
    """A batch of (inspection, the threshold its alert crossed, its alert's event id or None for a
    new one) with their alerts and messages, in one transaction. An event id stored already makes
    the whole batch fail (IntegrityError): that is how a replay is recognised. Alerts whose event
    ids are in ``published`` were sent already (from the spool, while the database was away): their
    outbox rows are stored as sent."""
    published = published or set()
    batch = [inspection for inspection, _, _ in inspections]
    try:
        with engine.begin() as connection:  # Core, not the ORM's unit of work: a third less CPU a frame
            _insert(connection, batch)
            out = [(i, new_alert(i, t, e) if is_flagged(i.decision) else None) for i, t, e in inspections]
            _insert(connection, [alert for _, alert in out if alert is not None])
            messages = [
                OutboxMessage(
                    event_id=alert.event_id,
                    topic=alert_topic,
                    payload=encode(build_message(alert, inspection)),
                    sent_at=utcnow() if alert.event_id in published else None,
                )
                for inspection, alert in out
                if alert is not None
            ]
            _insert(connection, messages, ids=False)
    except BaseException:
        for inspection in batch:  # not stored: nothing may point at a row that is not there (the spool's messages)
            inspection.id = None
        raise
    return out


def _insert(connection: Connection, rows: list[SQLModel], ids: bool = True) -> None:
    """Insert ``rows`` of one table in one statement; with ``ids`` each row's new id is set on it."""
    if not rows:
        return
    table = type(rows[0]).__table__
    names = [c.name for c in table.columns if c.name != "id"]
    values = [{name: getattr(row, name) for name in names} for row in rows]
    if not ids:
        connection.execute(insert(table), values)
        return
    if not connection.dialect.insert_executemany_returning_sort_by_parameter_order:  # SQLite before 3.35
        for row, value in zip(rows, values, strict=True):
            row.id = connection.execute(insert(table), value).inserted_primary_key[0]
        return
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    for row, new_id in zip(rows, connection.execute(statement, values).scalars(), strict=True):
        row.id = new_id


def _unsent(topic_prefix: str) -> Any:
    """Unsent messages of one node: those under its own topics (nodes sharing a database never
    send each other's messages)."""
    return col(OutboxMessage.sent_at).is_(None), col(OutboxMessage.topic).startswith(topic_prefix, autoescape=True)


def pending_messages(
    engine: Engine, *, topic_prefix: str, limit: int = 100, skip: set[str] | None = None
) -> list[OutboxMessage]:
    """Unsent outbox messages under ``topic_prefix`` (the node's base topic), oldest first, but
    those whose event ids are in ``skip``."""
    with Session(engine) as session:
        query = select(OutboxMessage).where(*_unsent(topic_prefix))
        if skip:
            query = query.where(col(OutboxMessage.event_id).not_in(padded(skip)))
        return list(session.exec(query.order_by(OutboxMessage.id).limit(limit)))


def mark_events_sent(engine: Engine, *, event_ids: set[str]) -> None:
    """These alerts reached the broker another way (from the spool): their outbox rows are done."""
    if not event_ids:
        return
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.event_id).in_(padded(event_ids)), col(OutboxMessage.sent_at).is_(None))
            .values(sent_at=utcnow())
        )


def forget_sent_messages(engine: Engine, *, before: dt.datetime, batch: int = 5_000) -> int:
    """Delete outbox rows sent before ``before`` (the broker has them; the alerts stay), a batch
    per transaction; returns how many."""
    total = 0
    while True:
        with Session(engine) as session:
            ids = session.exec(
                select(OutboxMessage.id)
                .where(col(OutboxMessage.sent_at) < before)
                .order_by(OutboxMessage.id)
                .limit(batch)
            ).all()
            if ids:
                session.execute(delete(OutboxMessage).where(col(OutboxMessage.id).in_(padded(ids))))
                session.commit()
        total += len(ids)
        if len(ids) < batch:
            return total


def count_attempt(engine: Engine, *, message_id: int) -> None:
    with Session(engine) as session:
        message = session.get(OutboxMessage, message_id)
        if message is not None:
            message.attempts += 1
            session.add(message)
            session.commit()


def outbox_backlog(engine: Engine, *, topic_prefix: str) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(OutboxMessage).where(*_unsent(topic_prefix))).one()


ROLES = ("viewer", "operator", "engineer", "admin")  # each role can do what the ones before it can


DEFAULT_TOKEN_DAYS = {"viewer": 30.0, "operator": 30.0}  # line tokens expire; engineer and admin ones on request


def token_expiry(role: str, days: float | None = None) -> dt.datetime | None:
    """When a new token of ``role`` expires: after ``days``, else the role's default (or never)."""
    days = days or DEFAULT_TOKEN_DAYS.get(role)
    return utcnow() + dt.timedelta(days=days) if days else None


def create_token(engine: Engine, *, name: str, role: str, expires_at: dt.datetime | None | str = "default") -> str:
    """A new bearer token (returned once; only its hash is stored), expiring at ``expires_at``
    (``"default"``: the role's default, see :func:`token_expiry`; None: never)."""
    import secrets

    if expires_at == "default":
        expires_at = token_expiry(role)
    if role not in ROLES:
        msg = f"role {role!r} is not one of {', '.join(ROLES)}"
        raise ValueError(msg)
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):  # a leading dash reads as an option on a command line (--token -x...)
        token = secrets.token_urlsafe(32)
    with Session(engine) as session:
        session.add(ApiToken(name=name, role=role, token_hash=token_digest(token), expires_at=expires_at))
        session.commit()
    return token


def audit(engine: Engine, *, actor: str, action: str, new: Any = None, old: Any = None, reason: str = "") -> None:
    """One line of the audit log (who did what, when, why)."""

    with Session(engine) as session:
        session.add(
            AuditLog(
                actor=actor,
                action=action,
                old=None if old is None else json.dumps(old),
                new=None if new is None else json.dumps(new),
                reason=reason or None,
            )
        )
        session.commit()


def revoke_token(engine: Engine, *, token_id: int) -> bool:

    with Session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            return False
        row.revoked = True
        session.add(row)
        session.commit()
    return True


def register_model(
    engine: Engine, *, version: str, filename: str, digest: str, kind: str, metrics: dict[str, Any], data: bytes
) -> None:
    """Add a bundle (``data``: its bytes, for every node) to the registry as a candidate
    (idempotent for the same version and digest)."""

    with Session(engine) as session:
        existing = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
        if existing is not None:
            if existing.digest != digest:
                msg = f"model version {version!r} is registered already with different contents"
                raise Conflict(msg)
            return
        session.add(
            ModelVersion(version=version, filename=filename, digest=digest, kind=kind, metrics=json.dumps(metrics))
        )
        session.add(ModelFile(version=version, data=data))
        session.commit()


def activate_model(engine: Engine, *, version: str, actor: str, reason: str) -> tuple[str | None, str]:
    """Make ``version`` the active model (the previous one is retired) and audit it; returns
    (previous version, filename of the new one)."""

    with Session(engine) as session:
        target = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
        if target is None:
            msg = f"no model version {version!r}"
            raise KeyError(msg)
        previous = session.exec(select(ModelVersion).where(ModelVersion.status == "active")).first()
        old = None
        if previous is not None and previous.version != version:
            previous.status, old = "retired", previous.version
            session.add(previous)
        target.status, target.activated_at = "active", utcnow()
        session.add(target)
        session.add(
            AuditLog(actor=actor, action="activate_model", old=json.dumps(old), new=json.dumps(version), reason=reason)
        )
        session.commit()
        return old, target.filename


def active_model(engine: Engine) -> tuple[str, str] | None:
    """(version, filename) of the active model."""

    with Session(engine) as session:
        row = session.exec(select(ModelVersion).where(ModelVersion.status == "active")).first()
        return None if row is None else (row.version, row.filename)


def queue_message(engine: Engine, *, topic: str, payload: dict[str, Any], retain: bool = False, qos: int = 1) -> None:
    """Queue any MQTT message in the durable outbox (e.g. retained state announcements)."""
    with Session(engine) as session:
        session.add(
            OutboxMessage(
                event_id=str(uuid.uuid4()),
                topic=topic,
                retain=retain,
                qos=qos,
                payload=encode(payload),
            )
        )
        session.commit()


def save_source(engine: Engine, *, source_id: str, url: str, actor: str) -> None:

    with Session(engine) as session:
        session.add(SourceConfig(source_id=source_id, url=url, created_by=actor))
        session.commit()


def delete_source(engine: Engine, *, source_id: str) -> None:

    with Session(engine) as session:
        for row in session.exec(select(SourceConfig).where(SourceConfig.source_id == source_id)):
            session.delete(row)
        session.commit()


def update_alert(
    engine: Engine, *, alert_id: int, actor: str, acknowledge: bool = False, verdict: str | None = None
) -> Alert:
    """Acknowledge an open alert, and/or record an operator's verdict on it."""
    with Session(engine, expire_on_commit=False) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            msg = f"no alert {alert_id}"
            raise NotFound(msg)
        if acknowledge and alert.state == "open":
            alert.state, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", actor, utcnow()
        if verdict:
            alert.state, alert.verdict_by, alert.verdict_at = verdict, actor, utcnow()
        session.add(alert)
        session.commit()
        return alert


def discard_model(engine: Engine, *, version: str, actor: str, reason: str) -> ModelVersion:
    """Set a candidate aside (kept on disk, not offered for promotion), audited; never the active one."""
    with Session(engine, expire_on_commit=False) as session:
        row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
        if row is None:
            msg = f"no model version {version!r}"
            raise NotFound(msg)
        if row.status == "active":
            msg = "the active model cannot be discarded; promote another first"
            raise Conflict(msg)
        row.status = "discarded"
        session.add(row)
        session.add(AuditLog(actor=actor, action="model.discard", new=json.dumps({"version": version}), reason=reason))
        session.commit()
        return row


# -- jobs ------------------------------------------------------------------------------------------
def create_job(engine: Engine, *, kind: str, params: dict[str, Any], actor: str) -> int:
    with Session(engine) as session:
        job = TrainingJob(kind=kind, params=json.dumps(params), created_by=actor)
        session.add(job)
        session.commit()
        return job.id


def update_job(
    engine: Engine,
    *,
    job_id: int,
    progress: float | None = None,
    message: str | None = None,
    status: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """A job's progress (clipped to [0, 1]), a log line, its status (stamping start and end) or result."""
    with Session(engine) as session:
        job = session.get(TrainingJob, job_id)
        if progress is not None:
            job.progress = float(min(max(progress, 0.0), 1.0))
        if message is not None:
            job.message = message
            job.log += f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {message}\n"
        if status is not None:
            job.status = status
            if status == "running":
                job.started_at = utcnow()
            elif status in ("succeeded", "failed", "cancelled"):
                job.finished_at = utcnow()
        if result is not None:
            job.result = json.dumps(result)
        session.add(job)
        session.commit()


def request_cancel(engine: Engine, *, job_id: int) -> None:
    """Ask a queued or running job to stop."""
    with Session(engine) as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            msg = f"no job {job_id}"
            raise NotFound(msg)
        if job.status in ("queued", "running"):
            job.cancel_requested = True
            session.add(job)
            session.commit()


def claim_job(engine: Engine, *, job_id: int, node: str) -> bool:
    """Take a queued job for ``node``: one conditional update, so of several nodes polling the
    same queue exactly one gets it."""
    with Session(engine) as session:
        claimed = session.execute(
            update(TrainingJob)
            .where(col(TrainingJob.id) == job_id, TrainingJob.status == "queued", TrainingJob.node == "")
            .values(node=node, status="running", started_at=utcnow())
        ).rowcount
        session.commit()
    return claimed == 1


def fail_unfinished_jobs(engine: Engine, *, message: str, node: str, job_id: int | None = None) -> int:
    """Mark failed, with ``message``, the running jobs of ``node`` that will never finish: one
    whose worker ended without finishing it (``job_id``), or all that the node's previous process
    left (and those claimed before jobs had nodes). Queued jobs wait for any node."""
    with Session(engine) as session:
        query = select(TrainingJob).where(TrainingJob.status == "running", col(TrainingJob.node).in_((node, "")))
        stale = session.exec(query if job_id is None else query.where(TrainingJob.id == job_id)).all()
        for job in stale:
            job.status, job.finished_at, job.message = "failed", utcnow(), message
            job.log += f"{message}\n"
            session.add(job)
        session.commit()
        return len(stale)


def save_drift_reference(
    engine: Engine, *, source_id: str, model_version: str, features: dict[str, list[float]]
) -> None:
    """Keep a source's drift reference for a model version (replacing one learned before)."""
    with Session(engine) as session:
        session.exec(
            delete(DriftReference).where(
                DriftReference.source_id == source_id, DriftReference.model_version == model_version
            )
        )
        session.add(DriftReference(source_id=source_id, model_version=model_version, features=json.dumps(features)))
        session.commit()


def forget_drift_references(engine: Engine, *, source_id: str, actor: str, reason: str = "") -> int:
    """Drop a source's drift references (every version): the watch learns the line anew. Audited."""
    with Session(engine) as session:
        gone = session.exec(delete(DriftReference).where(DriftReference.source_id == source_id)).rowcount
        session.add(
            AuditLog(actor=actor, action="drift_reset", new=json.dumps({"source_id": source_id}), reason=reason or None)
        )
        session.commit()
        return gone


def record_drift_event(
    engine: Engine,
    *,
    source_id: str,
    model_version: str,
    state: str,
    detail: dict[str, Any],
    topic: str,
    message: dict[str, Any],
) -> DriftEvent:
    """A drift state change: the event, its audit line and its retained MQTT message (with the
    event's id) in one transaction."""
    with Session(engine) as session:
        event = DriftEvent(source_id=source_id, model_version=model_version, state=state, detail=json.dumps(detail))
        session.add(event)
        session.flush()
        summary = {"source_id": source_id, "model_version": model_version, "state": state, "event": event.id}
        session.add(
            AuditLog(actor="drift-watch", action="drift", new=json.dumps(summary), reason=message.get("reason"))
        )
        payload = message | summary | {"ts": as_utc(event.created_at).isoformat()}
        session.add(OutboxMessage(event_id=str(uuid.uuid4()), topic=topic, retain=True, qos=1, payload=encode(payload)))
        session.commit()
        session.refresh(event)
        return event


def record_shadow_results(engine: Engine, *, results: list[ShadowResult]) -> None:
    """What shadow models said about a batch (one transaction)."""
    if not results:
        return
    with Session(engine) as session:
        session.add_all(results)
        session.commit()


def delete_in_batches(engine: Engine, table: Any, query: Any, batch: int, also: Any = None) -> Iterator[list[Any]]:
    """Delete the rows ``query`` selects (``id`` first, at most ``batch`` of them a time), a
    batch per transaction, until none is left; yields each batch's selected rows. ``also``: a
    condition the deleted rows meet besides their ids (on a partitioned table, where to look)."""
    while True:
        with Session(engine) as session:
            rows = session.execute(query.limit(batch)).all()
            if not rows:
                return
            chosen = col(table.id).in_(padded([r.id for r in rows]))
            session.execute(delete(table).where(chosen if also is None else chosen & also))
            session.commit()
        yield rows
        if len(rows) < batch:
            return


def delete_shadow_results(engine: Engine, *, before: dt.datetime, batch: int = 5000) -> Iterator[list[str]]:
    """Delete shadow results captured before ``before``, a batch per transaction; yields each
    batch's heat map references (for the caller to delete the files no row uses any more)."""
    query = (
        select(ShadowResult.id, ShadowResult.heatmap_ref)
        .where(col(ShadowResult.t_capture) < as_utc(before))
        .order_by(ShadowResult.t_capture)
    )
    for rows in delete_in_batches(engine, ShadowResult, query, batch):
        yield [r.heatmap_ref for r in rows if r.heatmap_ref]
