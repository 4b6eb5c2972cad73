"""Recipes in the database: which model a source is bound to (with its history, for rollback) and
the thresholds set per (source, model version). Each write is one transaction with its audit
entry."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from appliance.errors import Conflict, NotFound
from appliance.storage.models import AuditLog, ShadowBinding, SourceModel, ThresholdSetting, utcnow

ALL_SOURCES = ""  # the source_id of a setting that holds on every source without one of its own


def bind(engine: Engine, *, source_id: str, version: str, actor: str, reason: str) -> str | None:
    """Bind ``source_id`` to a model version ("" unbinds it); returns the version bound before."""
    with Session(engine) as session:
        old = _current(session, source_id)
        session.add(SourceModel(source_id=source_id, model_version=version, bound_by=actor, reason=reason))
        session.add(
            AuditLog(
                actor=actor,
                action="bind_model",
                old=json.dumps({"source_id": source_id, "model_version": old}),
                new=json.dumps({"source_id": source_id, "model_version": version or None}),
                reason=reason,
            )
        )
        session.commit()
    return old


def _current(session: Session, source_id: str) -> str | None:
    row = session.exec(
        select(SourceModel).where(SourceModel.source_id == source_id).order_by(col(SourceModel.id).desc())
    ).first()
    return row.model_version or None if row is not None else None


def bindings(engine: Engine) -> dict[str, str]:
    """Every bound source's model version (the newest row per source; unbound sources left out)."""
    with Session(engine) as session:
        rows = session.exec(select(SourceModel).order_by(col(SourceModel.id))).all()
    newest = {r.source_id: r.model_version for r in rows}
    return {sid: version for sid, version in newest.items() if version}


def previous_binding(engine: Engine, source_id: str) -> str | None:
    """The version the source was bound to before its current one (None: it had none)."""
    with Session(engine) as session:
        rows = session.exec(
            select(SourceModel).where(SourceModel.source_id == source_id).order_by(col(SourceModel.id).desc())
        ).all()
    current = rows[0].model_version if rows else ""
    return next((r.model_version for r in rows[1:] if r.model_version and r.model_version != current), None)


def threshold_settings(engine: Engine) -> dict[tuple[str, str], tuple[float, float]]:
    """(source_id, model version) → (T1, T2) as engineers set them."""
    with Session(engine) as session:
        rows = session.exec(select(ThresholdSetting)).all()
    return {(r.source_id, r.model_version): (r.t1, r.t2) for r in rows}


def set_thresholds(
    engine: Engine,
    *,
    source_id: str,
    version: str,
    t1: float,
    t2: float,
    old: tuple[float, float],
    actor: str,
    reason: str,
) -> None:
    """Keep the thresholds of a model version on a source (they outlive restarts, promotions and
    rollbacks) and audit the change, in one transaction (the runtime announces what the line
    then uses)."""
    new = {"t1": t1, "t2": t2}
    scope = {"source_id": source_id or None, "model_version": version}
    with Session(engine) as session:
        row = session.exec(
            select(ThresholdSetting).where(
                ThresholdSetting.source_id == source_id, ThresholdSetting.model_version == version
            )
        ).first() or ThresholdSetting(source_id=source_id, model_version=version, t1=t1, t2=t2)
        row.t1, row.t2, row.set_at, row.set_by = t1, t2, utcnow(), actor
        session.add(row)
        session.add(
            AuditLog(
                actor=actor,
                action="set_thresholds",
                old=json.dumps({"t1": old[0], "t2": old[1], **scope}),
                new=json.dumps({**new, **scope}),
                reason=reason,
            )
        )
        session.commit()


def shadows(engine: Engine) -> dict[str, tuple[str, int]]:
    """Every source's open shadow: source id → (model version, binding id)."""
    with Session(engine) as session:
        rows = session.exec(select(ShadowBinding).where(col(ShadowBinding.ended_at).is_(None))).all()
    return {r.source_id: (r.model_version, int(r.id)) for r in rows}


def start_shadow(engine: Engine, *, source_id: str, version: str, actor: str, reason: str) -> int:
    """Put ``version`` in shadow on ``source_id`` (audited); refused while another runs there."""
    with Session(engine) as session:
        open_ = session.exec(
            select(ShadowBinding).where(ShadowBinding.source_id == source_id, col(ShadowBinding.ended_at).is_(None))
        ).first()
        if open_ is not None:
            msg = f"source {source_id!r} has {open_.model_version} in shadow already; stop it first"
            raise Conflict(msg)
        binding = ShadowBinding(source_id=source_id, model_version=version, started_by=actor, reason=reason)
        session.add(binding)
        new = {"source_id": source_id, "model_version": version}
        session.add(AuditLog(actor=actor, action="shadow_start", new=json.dumps(new), reason=reason))
        session.commit()
        return int(binding.id)


def end_shadow(
    engine: Engine, *, binding_id: int, actor: str, outcome: str, summary: dict, reason: str = ""
) -> ShadowBinding:
    """End a shadow (``outcome``: promoted | stopped), keeping its comparison; audited."""
    with Session(engine) as session:
        binding = session.get(ShadowBinding, binding_id)
        if binding is None or binding.ended_at is not None:
            msg = f"no shadow {binding_id} running"
            raise NotFound(msg)
        binding.ended_at, binding.ended_by, binding.outcome = utcnow(), actor, outcome
        binding.summary = json.dumps(summary)
        new = {"source_id": binding.source_id, "model_version": binding.model_version, "outcome": outcome}
        session.add(AuditLog(actor=actor, action="shadow_end", new=json.dumps(new), reason=reason or None))
        session.add(binding)
        session.commit()
        session.refresh(binding)
        return binding
