"""Request and response models of the REST API (``*In`` / ``*Public``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from appliance.recipes import Recipe
from appliance.storage.models import InspectionBase, TrainingJob, as_utc
from models.detector.symmetry import ORIENTATION_CHOICES

RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="row id")]
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="job id")]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="token id")]
EventId = Annotated[int, Path(ge=1, le=2**31 - 1, description="event id")]


Offset = Annotated[int, Query(ge=0, le=10**9)]


def _in_utc(t: dt.datetime) -> dt.datetime:
    """A time without a zone is UTC; one with a zone is converted to UTC, which must exist."""
    try:
        return as_utc(t).astimezone(dt.UTC)
    except OverflowError:
        msg = f"{t.isoformat()} is outside the times that can be stored (years 1 to 9999 in UTC)"
        raise ValueError(msg) from None


# a time filter of a query (ISO 8601, UTC when it has no zone), in UTC: one out of range is a 422
Moment = Annotated[dt.datetime | None, AfterValidator(_in_utc)]


class InspectionPublic(InspectionBase):
    id: int
    t_decided: dt.datetime


class InspectionsPublic(BaseModel):
    data: list[InspectionPublic]
    count: int  # matches, counted up to count_limit
    count_limit: int


class HourPublic(BaseModel):
    source_id: str
    hour: dt.datetime  # its start, UTC
    complete: bool  # false: the current hour
    inspections: int
    ok: int
    review: int
    ng: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    @classmethod
    def of(cls, source_id: str, hour: dt.datetime, agg: Any, *, complete: bool) -> HourPublic:
        return cls(
            source_id=source_id,
            hour=hour,
            complete=complete,
            inspections=agg.count,
            ok=agg.n_ok,
            review=agg.n_review,
            ng=agg.n_ng,
            latency_p50_ms=agg.latencies.quantile(0.5),
            latency_p99_ms=agg.latencies.quantile(0.99),
        )


class AlertPublic(BaseModel):
    id: int
    event_id: str
    inspection_id: int
    source_id: str
    decision: str
    score: float
    norm_score: float
    threshold: float  # the one crossed: T2 for ng, T1 for review
    model_version: str
    item: str | None = None  # the source's name for the part
    label: str | None = None  # what was found: a defect type, "unlike the good parts"
    state: str
    created_at: dt.datetime
    acknowledged_by: str | None = None
    verdict_by: str | None = None


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int  # alerts that match (state, sources, decisions)
    open: int  # of the sources and decisions asked for, whatever the state asked for


class ResultPublic(BaseModel):
    score: float
    norm_score: float
    decision: str
    # the defect type where the model names one; "unlike the good parts" for a frame unlike every
    # good part as a whole (models.scoring.AppearanceCheck)
    label: str | None
    model_version: str
    latency_ms: float


FLOAT32_MAX = 3.4028234663852886e38  # models run in float32: a larger value would become infinite


class VectorIn(BaseModel):
    values: list[Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]] = Field(
        min_length=1, max_length=1_000_000
    )


class ThresholdsIn(BaseModel):
    t1: float = Field(ge=0, allow_inf_nan=False)  # anomaly scores are never negative
    t2: float = Field(ge=0, allow_inf_nan=False)
    reason: str = Field(min_length=3, max_length=500)
    source_id: str | None = Field(None, min_length=1, max_length=200)  # None: the default model, every source


class ThresholdsPublic(BaseModel):
    t1: float
    t2: float
    model_version: str
    source_id: str | None = None  # None: the default model's every-source thresholds
    own_model: bool = False  # the source is bound to a model of its own

    @classmethod
    def of(cls, recipe: Recipe, source_id: str | None) -> ThresholdsPublic:
        t1, t2 = recipe.thresholds.as_tuple()
        return cls(t1=t1, t2=t2, model_version=recipe.version, source_id=source_id, own_model=recipe.own)


class PreviewIn(BaseModel):
    t1: float = Field(ge=0, allow_inf_nan=False)
    t2: float = Field(ge=0, allow_inf_nan=False)
    hours: float = Field(24.0, gt=0, le=24 * 90)
    source_id: str | None = Field(None, min_length=1, max_length=200)


class PreviewPublic(BaseModel):
    hours: float
    inspections: int
    alerts_per_hour: float
    ng_per_hour: float
    review_per_hour: float
    alerts_per_shift: float
    confirmed_defects: int
    missed_confirmed_defects: int
    # true: every stored score replayed one by one (debounce included); false: hours read from the
    # hourly aggregates (scores resolved to 0.5 %, no debounce) and the newest rows counted as stored
    replayed: bool


class SourceIn(BaseModel):
    url: str = Field(min_length=3, max_length=500)
    source_id: str | None = Field(None, max_length=200)


class ModelPublic(BaseModel):
    version: str
    filename: str
    digest: str
    kind: str
    status: str
    metrics: dict[str, Any]
    created_at: dt.datetime
    activated_at: dt.datetime | None


class PromoteIn(BaseModel):
    reason: str = Field(min_length=3, max_length=500)
    source_id: str | None = Field(None, min_length=1, max_length=200)  # bind to this source (its recipe)


class TeachIn(BaseModel):
    """A new detector for one source, from its good parts; tested on held-out ones and known-bad ones."""

    source_id: str = Field(min_length=1, max_length=200)
    source: Literal["live", "dataset", "folder"] = "live"  # its teach frames, an uploaded dataset, a server folder
    dataset: str | None = Field(None, max_length=100)
    folder: str | None = Field(None, max_length=500)
    known_bad: str | None = Field(None, max_length=100)  # an uploaded dataset in the MVTec AD layout
    size: int = Field(128, ge=16, le=512, multiple_of=8)
    channels: Literal[1, 3] = 1
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height in source pixels
    epochs: int | None = Field(None, ge=1, le=1000)  # None: enough for the detector's minimum optimiser steps
    false_alarm_rate: float = Field(0.01, ge=1e-6, lt=0.5)  # models.calibration.MIN_RATE
    method: Literal["draem", "autoencoder"] = "draem"
    full_resolution: bool = False  # draem: its defect map at full resolution (thin defects; ~2.5x training)
    orientations: Literal[ORIENTATION_CHOICES] = "auto"  # turns and mirror images shown in training
    appearance_check: bool = True  # frames unlike the good parts as a whole score NG (blank, a part missing)
    light_tolerance: float = Field(
        0.1, ge=0, lt=0.5
    )  # training shows the good parts under light this much weaker/stronger
    test_share: float = Field(0.2, gt=0, lt=0.6)


class ModelTestIn(BaseModel):
    dataset: str = Field(min_length=1, max_length=100)  # an uploaded dataset in the MVTec AD layout


class TeachRejectIn(BaseModel):
    names: list[str] = Field(min_length=1, max_length=10_000)


class RetrainIn(BaseModel):
    epochs: int = Field(10, ge=1, le=500)
    max_images: int = Field(500, ge=10, le=100_000)
    min_images: int = Field(40, ge=20, le=100_000)
    include_ok: bool = True
    include_false_positives: bool = True
    datasets: list[str] = Field(default_factory=list, max_length=50)


class ProjectJobIn(BaseModel):
    project: str = Field(min_length=1, max_length=200)


class SearchJobIn(BaseModel):
    project: str = Field(min_length=1, max_length=200)
    trials: int = Field(20, ge=2, le=1000)
    method: Literal["random", "bayes"] = "bayes"
    objective: Literal["error", "error_and_madds"] = "error_and_madds"
    epochs: int | None = Field(None, ge=1, le=1000)
    workers: int | None = Field(None, ge=1, le=64)


class JobPublic(BaseModel):
    id: int
    kind: str
    status: str
    progress: float
    message: str
    cancel_requested: bool
    params: dict[str, Any]
    result: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, row: TrainingJob) -> JobPublic:
        data = row.model_dump()
        return cls(**(data | {"params": json.loads(row.params or "{}"), "result": json.loads(row.result or "{}")}))


class DatasetIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    include_ok: bool = True
    include_false_positives: bool = True
    limit: int = Field(1000, ge=1, le=100_000)


class VerdictIn(BaseModel):
    verdict: Literal["confirmed", "false_positive"]


class MePublic(BaseModel):
    role: str


class ScoresPublic(BaseModel):
    hours: float
    normal: list[float]  # OK decisions, and alerts judged false positive
    flagged: list[float]  # review / NG not judged yet
    confirmed: list[float]  # alerts confirmed as defects
    t1: float
    t2: float
    model_version: str
    source_id: str | None = None
    # the false-alarm preset's "n": the scores it rests on (normal and flagged), "unjudged": flagged among them
    presets: dict[str, dict[str, float]]
    calibrated_on: int | None = None  # held-out normal items the model's own T1/T2 rest on


class NetworkStatsIn(BaseModel):
    zoo: str | None = Field(None, max_length=100)
    input: list[int] | None = Field(None, min_length=1, max_length=4)
    options: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None


class SampleIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sample: Literal["digits", "digits_4or9", "digits_4or9_anomaly", "iris"]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator", "engineer", "admin"]
    expires_in_days: float | None = Field(None, gt=0, le=3650, description="default: 30 for viewer and operator")


class VariablesIn(BaseModel):
    """The dataset variables a project reads (NNC's ``x`` and ``y`` unless its project names others)."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field("x", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    target: str | None = Field("y", min_length=1, max_length=64, pattern=r"^[\w.-]+$")


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    dataset: str = Field(min_length=1, max_length=100)
    zoo: str | None = Field(None, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    task: Literal["classification", "regression", "autoencoder"] | None = None
    max_epoch: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    solver: str = Field("Adam", max_length=40)
    lr: float = Field(0.001, gt=0, le=10)
    score: dict[str, Any] | None = None  # an autoencoder's score: {reduce: mean|max, name}
    variables: VariablesIn | None = None


class DriftTestPublic(BaseModel):
    """One feature's test in a window: KS distance against the reference and the distance that
    calls it drifted (models.drift)."""

    feature: str
    p_value: float
    distance: float
    critical: float
    before_median: float
    after_median: float
    n_before: int
    n_after: int
    drifted: bool


class DriftSourcePublic(BaseModel):
    source_id: str
    model_version: str | None
    state: str  # learning | stable | drifting | off (teach mode, or the watch is off)
    event_id: int | None = None
    reference_frames: int = 0
    reference_needed: int = 0
    window_frames: int = 0
    window: int = 0
    windows_tested: int = 0
    last_test: list[DriftTestPublic] = Field(default_factory=list)
    score_below: float | None = None  # the last test compared the scores under this (the lowest T1 either side had)


class DriftEventPublic(BaseModel):
    id: int
    source_id: str
    model_version: str
    state: str
    created_at: dt.datetime
    reason: str
    hints: list[str]
    tests: list[DriftTestPublic]
    before: dict[str, list[float]] | None = None  # the reference's values per feature (one event only)
    after: dict[str, list[float]] | None = None  # the window's
    score_below: float | None = None  # the scores compared (and in before / after) were under this


class DriftResetIn(BaseModel):
    reason: str = Field(min_length=3, max_length=500)


class ShadowIn(BaseModel):
    source_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=3, max_length=500)


class ShadowPublic(BaseModel):
    """A shadow compared with the model it ran beside (appliance.shadow)."""

    binding: dict[str, Any]
    frames: int
    agreement: float | None
    confusion: dict[str, dict[str, int]]
    alert_rate: dict[str, float | None]
    only_active_flagged: int
    only_shadow_flagged: int
    hours: list[dict[str, Any]]
    shifts: list[dict[str, Any]]
    scores: dict[str, list[float]]
    verdicts: dict[str, dict[str, int]]
    disagreements: list[dict[str, Any]]
