"""Read-only queries the API, the jobs and the workflows repeat (keyword-only). Nothing here
writes or commits: writes are in :mod:`appliance.storage.store`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import case
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from appliance.errors import NotFound
from appliance.storage.models import (
    Alert,
    ApiToken,
    AuditLog,
    DriftEvent,
    DriftReference,
    Inspection,
    ModelFile,
    ModelVersion,
    ShadowBinding,
    ShadowResult,
    SourceConfig,
    TrainingJob,
    as_utc,
)

ALERT_STATES = ("open", "acknowledged", "confirmed", "false_positive")
COUNT_LIMIT = 10_000  # matches an inspection page counts up to: counting millions costs seconds


def inspections(
    engine: Engine,
    *,
    source_id: str | None = None,
    decision: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    offset: int = 0,
    limit: int = 50,
    before_id: int | None = None,
) -> tuple[list[Any], int]:
    """A page of inspections (rows with the table's columns as attributes), newest first, and how
    many match, up to :data:`COUNT_LIMIT` (times without a zone are UTC). ``before_id`` pages by
    key (rows older than that id): the cost of a page does not grow with how far back it is, as an
    offset's does. Rows, not ORM objects: consoles poll this several times a second."""
    since, until = as_utc(since), as_utc(until)
    query = select(Inspection.__table__)
    if source_id:
        query = query.where(Inspection.source_id == source_id)
    if decision:
        query = query.where(Inspection.decision == decision)
    if since:
        query = query.where(col(Inspection.t_capture) >= since)
    if until:
        query = query.where(col(Inspection.t_capture) < until)
    with Session(engine) as session:
        count = session.exec(select(func.count()).select_from(query.limit(COUNT_LIMIT).subquery())).one()
        if before_id is not None:
            query = query.where(col(Inspection.id) < before_id)
        rows = session.execute(query.order_by(col(Inspection.id).desc()).offset(offset).limit(limit)).all()
        return list(rows), count


def _get(engine: Engine, table: type, row_id: int, what: str) -> Any:
    with Session(engine) as session:
        row = session.get(table, row_id)
    if row is None:
        msg = f"no {what} {row_id}"
        raise NotFound(msg)
    return row


def inspection(engine: Engine, *, inspection_id: int) -> Inspection:
    return _get(engine, Inspection, inspection_id, "inspection")


def alerts(
    engine: Engine,
    *,
    state: str | None = None,
    sources: Sequence[str] = (),
    decisions: Sequence[str] = (),
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Any], dict[str, int]]:
    """A page of alerts (rows), open ones first, then newest first, of the given sources and
    decisions (all when empty), and how many of those there are in each state.

    Read as two ranges of the (state, id) index, the open alerts and the others, each newest
    first, with the counts per state from the same index: no sort of the whole table per page."""
    newest, table = col(Alert.id).desc(), Alert.__table__
    match = _alert_match(sources, decisions)
    with Session(engine) as session:
        counts = dict(session.exec(select(Alert.state, func.count()).where(*match).group_by(Alert.state)).all())
        if state:
            query = select(table).where(Alert.state == state, *match).order_by(newest).offset(offset).limit(limit)
            return list(session.execute(query).all()), counts
        n_open = counts.get("open", 0)
        rows: list[Any] = []
        if offset < n_open:
            query = select(table).where(Alert.state == "open", *match).order_by(newest).offset(offset).limit(limit)
            rows = list(session.execute(query).all())
        if len(rows) < limit:
            rest = select(table).where(Alert.state != "open", *match).order_by(newest)
            rest = rest.offset(max(0, offset - n_open)).limit(limit - len(rows))
            rows += list(session.execute(rest).all())
        return rows, counts


def _alert_match(sources: Sequence[str], decisions: Sequence[str]) -> list[Any]:
    """Only these sources and decisions (all when empty)."""
    match = [col(Alert.source_id).in_(sources)] if sources else []
    return match + ([col(Alert.decision).in_(decisions)] if decisions else [])


def alert_batches(
    engine: Engine,
    *,
    state: str | None = None,
    sources: Sequence[str] = (),
    decisions: Sequence[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    batch: int = 1000,
) -> Iterator[list[Any]]:
    """Every alert that matches, newest first, ``batch`` rows at a time: each batch one short read
    (by id, below the last one read), so an export of months holds one batch in memory and no
    transaction open while it is written out."""
    since, until = as_utc(since), as_utc(until)
    match = _alert_match(sources, decisions)
    match += [Alert.state == state] if state else []
    match += [col(Alert.created_at) >= since] if since else []
    match += [col(Alert.created_at) < until] if until else []
    query = select(Alert.__table__).where(*match).order_by(col(Alert.id).desc()).limit(batch)
    rows = read_rows(engine, query)
    while rows:
        yield rows
        if len(rows) < batch:
            return
        rows = read_rows(engine, query.where(col(Alert.id) < rows[-1].id))


def scoped(query: Any, table: Any, source_id: str | None, model_version: str | None) -> Any:
    """Only the rows of one source and / or one model version (thresholds are tuned per both)."""
    if source_id is not None:
        query = query.where(table.source_id == source_id)
    if model_version is not None:
        query = query.where(table.model_version == model_version)
    return query


def read_rows(engine: Engine, query: Any) -> list[Any]:
    """The rows of a query of columns, read without the ORM (the score reads return tens of
    thousands of them: the ORM's per-row work was most of their time)."""
    with engine.connect() as connection:
        return connection.execute(query).all()


def scores_in_order(
    engine: Engine, *, since: dt.datetime, source_id: str | None = None, model_version: str | None = None
) -> list[tuple[str, float]]:
    """(source, score) of every inspection captured since ``since``, in capture order (a replay)."""
    query = scoped(
        select(Inspection.source_id, Inspection.score).where(col(Inspection.t_capture) >= since),
        Inspection,
        source_id,
        model_version,
    ).order_by(Inspection.t_capture, Inspection.id)
    return [(sid, float(score)) for sid, score in read_rows(engine, query)]


def recent_scores(
    engine: Engine, *, since: dt.datetime, limit: int, source_id: str | None = None, model_version: str | None = None
) -> list[tuple[float, str]]:
    """(score, decision) of the newest ``limit`` inspections since ``since``."""
    query = (
        scoped(
            select(Inspection.score, Inspection.decision).where(col(Inspection.t_capture) >= since),
            Inspection,
            source_id,
            model_version,
        )
        .order_by(col(Inspection.id).desc())
        .limit(limit)
    )
    return [(float(score), decision) for score, decision in read_rows(engine, query)]


def alert_scores(
    engine: Engine,
    *,
    since: dt.datetime,
    states: tuple[str, ...] = ALERT_STATES,
    source_id: str | None = None,
    model_version: str | None = None,
    limit: int | None = None,
) -> list[tuple[float, str]]:
    """(score, state) of the alerts raised since ``since`` in the given states (the newest
    ``limit`` of them)."""
    query = scoped(
        select(Alert.score, Alert.state).where(col(Alert.state).in_(states), col(Alert.created_at) >= since),
        Alert,
        source_id,
        model_version,
    )
    if limit is not None:
        query = query.order_by(col(Alert.id).desc()).limit(limit)
    return [(float(score), state) for score, state in read_rows(engine, query)]


def image_refs(engine: Engine, **filters: Any) -> list[str]:
    """Stored image references, newest first, filtered as :func:`image_rows` filters."""
    return [ref for ref, _ in image_rows(engine, **filters)]


def image_rows(
    engine: Engine,
    *,
    decision: str | None = None,
    alert_state: str | tuple[str, ...] | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[tuple[str, dt.datetime]]:
    """Stored image references, newest first, each with its inspection's capture time: of
    inspections with ``decision``, and / or of those whose alert is in ``alert_state`` (one or
    several), captured ``since``."""
    query = select(Inspection.image_ref, Inspection.t_capture).where(col(Inspection.image_ref).is_not(None))
    if decision:
        query = query.where(Inspection.decision == decision)
    if alert_state:
        states = (alert_state,) if isinstance(alert_state, str) else alert_state
        query = query.join(Alert, Alert.inspection_id == Inspection.id).where(col(Alert.state).in_(states))
    if since is not None:
        query = query.where(col(Inspection.t_capture) >= since)
    query = query.order_by(col(Inspection.id).desc())
    if limit is not None:
        query = query.limit(limit)
    with Session(engine) as session:
        return [(ref, t) for ref, t in session.exec(query).all()]


def models(engine: Engine) -> list[ModelVersion]:
    """The registry, newest first."""
    with Session(engine) as session:
        return list(session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc())).all())


def model(engine: Engine, *, version: str) -> ModelVersion:
    with Session(engine) as session:
        row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
    if row is None:
        msg = f"no model version {version!r}"
        raise NotFound(msg)
    return row


def model_file(engine: Engine, *, version: str) -> bytes | None:
    """A registered bundle's bytes (None: registered before bundles were kept in the database)."""
    with Session(engine) as session:
        row = session.get(ModelFile, version)
    return None if row is None else row.data


def last_change(engine: Engine) -> int:
    """The newest audit line's id: every model, recipe and threshold change writes one, so a node
    that sees it move re-reads its recipes."""
    with Session(engine) as session:
        return session.exec(select(func.max(AuditLog.id))).one() or 0


def last_decision(engine: Engine) -> dt.datetime | None:
    """When the newest stored inspection was decided (by the primary key: one index lookup)."""
    with Session(engine) as session:
        return session.exec(select(Inspection.t_decided).order_by(col(Inspection.id).desc()).limit(1)).first()


def running_jobs(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).where(TrainingJob.status == "running")).one()


def jobs(engine: Engine, *, limit: int = 50) -> list[TrainingJob]:
    with Session(engine) as session:
        return list(session.exec(select(TrainingJob).order_by(col(TrainingJob.id).desc()).limit(limit)).all())


def job(engine: Engine, *, job_id: int) -> TrainingJob:
    return _get(engine, TrainingJob, job_id, "job")


def audit_log(engine: Engine, *, limit: int = 100) -> list[dict[str, Any]]:
    """Threshold and model changes, newest first: who, when, old, new, why."""
    with Session(engine) as session:
        rows = session.exec(select(AuditLog).order_by(col(AuditLog.id).desc()).limit(limit)).all()
    return [
        {
            "ts": r.ts.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "old": json.loads(r.old or "null"),
            "new": json.loads(r.new or "null"),
            "reason": r.reason,
        }
        for r in rows
    ]


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    """Every token's id, name, role, creation time and state (never the token itself)."""

    with Session(engine) as session:
        rows = session.exec(select(ApiToken).order_by(ApiToken.id)).all()
    return [
        {
            "id": r.id,
            "name": r.name,
            "role": r.role,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "revoked": r.revoked,
        }
        for r in rows
    ]


def has_tokens(engine: Engine) -> bool:

    with Session(engine) as session:
        return session.exec(select(ApiToken.id)).first() is not None


def previous_model(engine: Engine) -> str | None:
    """The most recently active model before the current one (for roll back)."""

    with Session(engine) as session:
        row = session.exec(
            select(ModelVersion)
            .where(ModelVersion.status == "retired", col(ModelVersion.activated_at).is_not(None))
            .order_by(col(ModelVersion.activated_at).desc())
        ).first()
        return None if row is None else row.version


def saved_sources(engine: Engine) -> list[tuple[str, str]]:

    with Session(engine) as session:
        return [(r.source_id, r.url) for r in session.exec(select(SourceConfig).order_by(SourceConfig.id))]


def queued_jobs(engine: Engine) -> list[TrainingJob]:
    """Jobs waiting for a worker, oldest first."""
    with Session(engine) as session:
        query = select(TrainingJob).where(TrainingJob.status == "queued").order_by(TrainingJob.id)
        return list(session.exec(query).all())


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def token(engine: Engine, *, token: str) -> ApiToken | None:
    """The stored token a bearer token is (revoked and expired ones included: the caller says why)."""
    with Session(engine) as session:
        return session.exec(select(ApiToken).where(ApiToken.token_hash == token_digest(token))).first()


def database_problem(engine: Engine) -> str | None:
    """None when the database answers a trivial query, else what went wrong (no connection details)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"database not reachable ({type(getattr(exc, 'orig', None) or exc).__name__})"
    return None


def drift_reference(engine: Engine, *, source_id: str, model_version: str) -> dict[str, list[float]] | None:
    """A source's drift reference for a model version ({feature: values}), if learned."""
    query = select(DriftReference.features).where(
        DriftReference.source_id == source_id, DriftReference.model_version == model_version
    )
    with Session(engine) as session:
        row = session.exec(query).first()
    return None if row is None else json.loads(row)


def drift_state(engine: Engine, *, source_id: str, model_version: str) -> DriftEvent | None:
    """The newest drift event of a source under a model version (its state holds until the next)."""
    query = (
        select(DriftEvent)
        .where(DriftEvent.source_id == source_id, DriftEvent.model_version == model_version)
        .order_by(col(DriftEvent.id).desc())
        .limit(1)
    )
    with Session(engine) as session:
        return session.exec(query).first()


def drift_events(engine: Engine, *, source_id: str | None = None, limit: int = 50) -> list[DriftEvent]:
    """Drift events, newest first (of one source, with ``source_id``)."""
    query = select(DriftEvent).order_by(col(DriftEvent.id).desc()).limit(limit)
    if source_id is not None:
        query = query.where(DriftEvent.source_id == source_id)
    with Session(engine) as session:
        return list(session.exec(query).all())


def drift_event(engine: Engine, *, event_id: int) -> DriftEvent:
    return _get(engine, DriftEvent, event_id, "drift event")


# -- shadow models ---------------------------------------------------------------------------------
FLAGGED = ("review", "ng")


def shadow_bindings(engine: Engine, *, version: str | None = None, source_id: str | None = None) -> list[ShadowBinding]:
    """Shadows (running and ended), newest first, of a model version and / or a source."""
    query = select(ShadowBinding).order_by(col(ShadowBinding.id).desc())
    if version is not None:
        query = query.where(ShadowBinding.model_version == version)
    if source_id is not None:
        query = query.where(ShadowBinding.source_id == source_id)
    with Session(engine) as session:
        return list(session.exec(query).all())


def _flagged(column: Any) -> Any:
    return func.sum(case((col(column).in_(FLAGGED), 1), else_=0))


def _hour(engine: Engine, column: Any) -> Any:
    if engine.dialect.name == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%dT%H:00:00+00:00", column)


def shadow_confusion(engine: Engine, *, binding_id: int, upto: int) -> list[tuple[str, str, int]]:
    """(the source's model's decision, the shadow's decision, frames) of a shadow."""
    query = (
        select(ShadowResult.active_decision, ShadowResult.decision, func.count())
        .where(ShadowResult.binding_id == binding_id, col(ShadowResult.id) <= upto)
        .group_by(ShadowResult.active_decision, ShadowResult.decision)
    )
    with Session(engine) as session:
        return [(a, d, int(n)) for a, d, n in session.execute(query)]


def shadow_hourly(engine: Engine, *, binding_id: int, upto: int) -> list[tuple[dt.datetime, int, int, int]]:
    """Per hour of a shadow: (hour, frames, flagged by the source's model, flagged by the shadow)."""
    hour = _hour(engine, ShadowResult.t_capture).label("hour")
    query = (
        select(hour, func.count(), _flagged(ShadowResult.active_decision), _flagged(ShadowResult.decision))
        .where(ShadowResult.binding_id == binding_id, col(ShadowResult.id) <= upto)
        .group_by(hour)
        .order_by(hour)
    )
    with Session(engine) as session:
        rows = session.execute(query).all()
    out = []
    for h, n, a, s in rows:
        start = h if isinstance(h, dt.datetime) else dt.datetime.fromisoformat(h)
        out.append((as_utc(start), int(n), int(a or 0), int(s or 0)))
    return out


def shadow_scores(engine: Engine, *, binding_id: int, upto: int, limit: int) -> list[tuple[float, float]]:
    """(the source's model's, the shadow's) normalised scores (T2 at 0.5 for both) of the newest frames."""
    query = (
        select(ShadowResult.active_norm_score, ShadowResult.norm_score)
        .where(ShadowResult.binding_id == binding_id, col(ShadowResult.id) <= upto)
        .order_by(col(ShadowResult.id).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        return [(float(a), float(s)) for a, s in session.execute(query)]


def shadow_disagreements(engine: Engine, *, binding_id: int, upto: int, limit: int) -> list[ShadowResult]:
    """The newest frames where the shadow decided otherwise than the source's model."""
    query = (
        select(ShadowResult)
        .where(
            ShadowResult.binding_id == binding_id,
            col(ShadowResult.id) <= upto,
            ShadowResult.decision != ShadowResult.active_decision,
        )
        .order_by(col(ShadowResult.id).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.exec(query).all())


def shadow_verdicts(engine: Engine, *, binding_id: int, upto: int) -> list[tuple[str, str, int]]:
    """(the alert's verdict state, the shadow's decision, frames) for the source's alerts that
    operators judged (confirmed / false positive)."""
    query = (
        select(Alert.state, ShadowResult.decision, func.count())
        .join(Alert, Alert.inspection_id == ShadowResult.inspection_id)
        .where(
            ShadowResult.binding_id == binding_id,
            col(ShadowResult.id) <= upto,
            col(Alert.state).in_(("confirmed", "false_positive")),
        )
        .group_by(Alert.state, ShadowResult.decision)
    )
    with Session(engine) as session:
        return [(a, d, int(n)) for a, d, n in session.execute(query)]


def shadow_last(engine: Engine, *, binding_id: int) -> int:
    """The newest result id of a shadow (0: none yet): the comparison's reads stop there, so its
    figures agree with each other while the line adds more."""
    query = select(func.max(ShadowResult.id)).where(ShadowResult.binding_id == binding_id)
    with Session(engine) as session:
        return int(session.execute(query).scalar() or 0)


def shadow_result(engine: Engine, *, result_id: int) -> ShadowResult:
    return _get(engine, ShadowResult, result_id, "shadow result")
