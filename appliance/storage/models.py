"""Tables (SQLModel): inspections (raw rows and hourly aggregates), alerts, the MQTT outbox, the
audit log, the model registry, jobs, sources, recipes (a source's model) and thresholds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# 64-bit ids: a line at 100 items/s passes 2^31 in under a year. SQLite keeps INTEGER so that the
# primary key stays its auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def big_id() -> Any:
    return Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(t: dt.datetime | None) -> dt.datetime | None:
    """A time without a zone is UTC (SQLite returns them so, and users type them so)."""
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


class InspectionBase(SQLModel):
    source_id: str = Field(index=True, max_length=200)
    t_capture: dt.datetime = Field(index=True)
    score: float
    norm_score: float
    decision: str = Field(index=True, max_length=10)  # ok | review | ng
    label: str | None = Field(default=None, max_length=100)
    model_version: str = Field(max_length=100)
    latency_ms: float
    image_ref: str | None = Field(default=None, max_length=200)
    heatmap_ref: str | None = Field(default=None, max_length=200)
    item: str | None = Field(default=None, max_length=300)  # the source's name for it: file, part, frame, line
    t1: float | None = None  # the thresholds it was decided with
    t2: float | None = None


def _partial(name: str, column: str, where: str) -> Index:
    """An index of the rows where ``where`` holds (SQLite and PostgreSQL both have them)."""
    return Index(name, column, sqlite_where=text(where), postgresql_where=text(where))


class Inspection(InspectionBase, table=True):
    __table_args__ = (
        # a source's newest first (the console's live table) without a sort
        Index("ix_inspection_source_id_id", "source_id", "id"),
        # the rows the next roll-up counts: at most an hour or so, however long the history
        _partial("ix_inspection_fresh", "t_capture", "NOT rolled_up"),
        # is a (content-addressed, shared) image file still used: only the rows that keep one
        _partial("ix_inspection_image_ref", "image_ref", "image_ref IS NOT NULL"),
        _partial("ix_inspection_heatmap_ref", "heatmap_ref", "heatmap_ref IS NOT NULL"),
    )
    id: int | None = big_id()
    t_decided: dt.datetime = Field(default_factory=utcnow)
    rolled_up: bool = False  # counted in its hour's InspectionHour (appliance.storage.history)


class InspectionHour(SQLModel, table=True):
    """One hour of one source under one model version, as the history keeps it once the raw rows
    are gone: counts per decision, the OK and the flagged scores and the latencies as fixed-bin
    histograms (:class:`appliance.storage.history.Histogram`, stored as bytes)."""

    __table_args__ = (UniqueConstraint("source_id", "model_version", "hour"),)
    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(max_length=200)
    model_version: str = Field(max_length=100)
    hour: dt.datetime = Field(index=True)  # its start, UTC
    first_capture: dt.datetime
    n_ok: int = 0
    n_review: int = 0
    n_ng: int = 0
    ok_scores: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    flagged_scores: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    latencies: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AlertBase(SQLModel):
    event_id: str = Field(index=True, unique=True, max_length=36)
    source_id: str = Field(index=True, max_length=200)
    decision: str = Field(max_length=10)
    score: float
    norm_score: float
    threshold: float
    model_version: str = Field(max_length=100)
    item: str | None = Field(default=None, max_length=300)
    label: str | None = Field(default=None, max_length=100)  # the inspection's: a defect type, "unlike the good parts"
    state: str = Field(default="open", index=True, max_length=20)  # open | acknowledged | confirmed | false_positive


class Alert(AlertBase, table=True):
    # the alert list reads open ones newest first, then the rest: two index ranges, no sort
    __table_args__ = (Index("ix_alert_state_id", "state", "id"),)
    id: int | None = big_id()
    # no foreign key: PostgreSQL partitions the inspections (appliance.storage.partitions) and cannot
    # refer to one column of a partitioned table. An alert is stored in its inspection's transaction
    # and retention never deletes an inspection with an alert.
    inspection_id: int = Field(sa_column=Column(BigId, index=True, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    verdict_by: str | None = None
    verdict_at: dt.datetime | None = None


class OutboxMessage(SQLModel, table=True):
    """An MQTT message to send; written in the same transaction as what it reports."""

    id: int | None = big_id()
    event_id: str = Field(index=True, unique=True, max_length=36)
    topic: str = Field(max_length=300)
    payload: str
    qos: int = 1
    retain: bool = False
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)
    sent_at: dt.datetime | None = Field(default=None, index=True)
    attempts: int = 0


class AuditLog(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    ts: dt.datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=100)
    old: str | None = None
    new: str | None = None
    reason: str | None = None


class ApiToken(SQLModel, table=True):
    """A bearer token; only its SHA-256 is stored."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    role: str = Field(max_length=20)  # admin | engineer | operator | viewer
    token_hash: str = Field(index=True, unique=True, max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    revoked: bool = False
    expires_at: dt.datetime | None = None  # None: until revoked


class ModelVersion(SQLModel, table=True):
    """The model registry: every bundle the appliance knows, and which one is active."""

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(index=True, unique=True, max_length=100)
    filename: str = Field(max_length=300)
    digest: str = Field(max_length=64)
    kind: str = Field(max_length=20)
    status: str = Field(default="candidate", index=True, max_length=20)  # candidate | active | retired
    metrics: str = "{}"
    created_at: dt.datetime = Field(default_factory=utcnow)
    activated_at: dt.datetime | None = None


class ModelFile(SQLModel, table=True):
    """A registered bundle's bytes: every node on the database can load every version."""

    version: str = Field(primary_key=True, max_length=100)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class TrainingJob(SQLModel, table=True):
    """A long job (retraining, a project run) executed by a worker process."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20)  # retrain | project
    status: str = Field(default="queued", index=True, max_length=20)  # queued|running|succeeded|failed|cancelled
    cancel_requested: bool = False
    params: str = "{}"
    progress: float = 0.0
    message: str = ""
    log: str = ""
    result: str = "{}"
    created_by: str = Field(default="", max_length=100)
    created_at: dt.datetime = Field(default_factory=utcnow)
    node: str = Field(default="", max_length=100)  # the appliance that claimed it ("" while queued)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class SourceConfig(SQLModel, table=True):
    """Sources added through the API (those in the settings are not stored): restarted on start."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(index=True, unique=True, max_length=200)
    url: str = Field(max_length=500)
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="", max_length=100)


class SourceModel(SQLModel, table=True):
    """A source's own model (its recipe), one row per change: the newest row of a source binds it
    (``model_version`` "" unbinds it: the default model, or teach mode). Rollback walks back."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(index=True, max_length=200)
    model_version: str = Field(max_length=100)
    bound_at: dt.datetime = Field(default_factory=utcnow, index=True)
    bound_by: str = Field(default="", max_length=100)
    reason: str = ""


class ThresholdSetting(SQLModel, table=True):
    """T1/T2 an engineer set for a model version on one source (``source_id`` "": on every source
    the version judges without a setting of its own). Without a row, the bundle's calibration."""

    __table_args__ = (UniqueConstraint("source_id", "model_version"),)
    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(max_length=200)
    model_version: str = Field(index=True, max_length=100)
    t1: float
    t2: float
    set_at: dt.datetime = Field(default_factory=utcnow)
    set_by: str = Field(default="", max_length=100)


class DriftReference(SQLModel, table=True):
    """The frames a source's drift watch compares with, per model version (its features as JSON:
    ``{feature: [values]}``), learned when the version started judging the source or after a reset."""

    __table_args__ = (UniqueConstraint("source_id", "model_version"),)
    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(max_length=200)
    model_version: str = Field(max_length=100)
    features: str
    created_at: dt.datetime = Field(default_factory=utcnow)


class DriftEvent(SQLModel, table=True):
    """A source's drift state changed (``drifting`` / ``stable``): the window tests and the
    before / after values they compared (JSON)."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(index=True, max_length=200)
    model_version: str = Field(max_length=100)
    state: str = Field(max_length=20)
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)
    detail: str = "{}"


class ShadowBinding(SQLModel, table=True):
    """A candidate model in shadow on a source: it scores every frame the source's model scores,
    decides nothing. Open while ``ended_at`` is null (one per source); when it ends (promoted or
    stopped) its comparison is kept in ``summary``."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(index=True, max_length=200)
    model_version: str = Field(index=True, max_length=100)
    started_at: dt.datetime = Field(default_factory=utcnow)
    started_by: str = Field(default="", max_length=100)
    reason: str = ""
    ended_at: dt.datetime | None = None
    ended_by: str | None = Field(default=None, max_length=100)
    outcome: str | None = Field(default=None, max_length=20)  # promoted | stopped
    summary: str | None = None  # the comparison when it ended (JSON)


class ShadowResult(SQLModel, table=True):
    """What the shadow model said about one frame, beside what the source's model said."""

    id: int | None = big_id()
    binding_id: int = Field(index=True)
    source_id: str = Field(max_length=200)
    t_capture: dt.datetime = Field(index=True)
    score: float
    norm_score: float
    decision: str = Field(max_length=10)
    label: str | None = Field(default=None, max_length=100)
    latency_ms: float
    heatmap_ref: str | None = Field(default=None, max_length=300)  # kept where the two disagree
    inspection_id: int | None = Field(default=None, sa_column=Column(BigId, nullable=True))  # no FK: raw rows age out
    active_version: str = Field(max_length=100)
    active_decision: str = Field(max_length=10)
    active_score: float
    active_norm_score: float
