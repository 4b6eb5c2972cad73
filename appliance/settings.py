"""One validated Settings object, read at start-up from ``APPLIANCE_*`` environment variables and
an optional YAML file (``--config``). Unknown keys are refused with the key named."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Settings are invalid or unsafe."""


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = None  # none: start an embedded broker on loopback
    port: int = Field(1883, ge=1, le=65535)
    embedded_port: int = Field(1883, ge=0, le=65535)  # 0: any free port
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    protocol: str = Field("auto", pattern=r"^(auto|5|3\.1\.1)$")
    keepalive: int = Field(30, ge=1, le=3600)  # seconds; a link gone silent is noticed after about 1.5 times this
    prefix: str = "appliance"
    site: str = "site"
    line: str = "line-1"
    appliance_id: str = "appliance-1"


class DetectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(128, ge=32)
    crop: int | None = 64
    epochs: int = Field(30, ge=1)
    training_images: int = Field(300, ge=40)
    false_alarm_rate: float = Field(0.01, ge=1e-6, lt=0.5)  # models.calibration.MIN_RATE


class DriftSettings(BaseModel):
    """The drift watch (appliance.drift, models.drift): a window of frames per test against a
    reference of the source's first frames under its model."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    window: int = Field(200, ge=20)  # frames per test
    reference: int = Field(400, ge=20)  # frames the reference holds
    alpha: float = Field(1e-5, gt=0, lt=0.5)  # chance a window of an unchanged line is called drifted
    min_distance: float = Field(0.25, gt=0, le=1)  # KS distance a feature must move by to count
    recover: int = Field(3, ge=1)  # windows without drift before a drifting source is stable again


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class OpcUaSettings(BaseModel):
    """The OPC UA server (appliance.opcua; the ``opcua`` extra): the essentials of OPC 40100-1
    Machine Vision for a PLC. Anonymous access only on loopback; elsewhere a username and password,
    and in production a certificate so that they never travel in clear."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(4840, ge=1, le=65535)
    username: str | None = Field(None, min_length=1, max_length=100)
    password: str | None = Field(None, min_length=1, max_length=200)
    certificate: Path | None = None  # DER or PEM; with private_key: signed and encrypted endpoints
    private_key: Path | None = None
    update_s: float = Field(0.2, ge=0.05, le=10)  # how often the nodes follow the line

    @model_validator(mode="after")
    def _secured(self) -> OpcUaSettings:
        if (self.username is None) != (self.password is None):
            msg = "opcua.username and opcua.password go together"
            raise ValueError(msg)
        if (self.certificate is None) != (self.private_key is None):
            msg = "opcua.certificate and opcua.private_key go together"
            raise ValueError(msg)
        if self.host not in LOOPBACK and self.username is None:
            msg = (
                "opcua: anonymous access is for loopback only; set opcua.username and opcua.password "
                f"to listen on {self.host}"
            )
            raise ValueError(msg)
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPLIANCE_", env_nested_delimiter="__", extra="forbid")

    production: bool = False
    data_dir: Path = Path("var")
    database_url: str | None = None  # default: sqlite:///<data_dir>/appliance.db
    sources: list[str] = Field(default_factory=lambda: ["synth:line?fps=10&defect_rate=0.05"])
    queue_size: int = Field(32, ge=1)
    # onnxruntime threads of each model the line runs (0: as many as the machine's cores, at most 4).
    # One costs less CPU a frame (no hand-offs between threads at every operator) and leaves the
    # other cores to the rest; more answer each frame of a large model sooner
    inference_threads: int = Field(1, ge=0, le=64)
    spool_max_items: int = Field(200_000, ge=0)  # inspections kept on local disk while the database is away
    max_jobs: int = Field(1, ge=1, le=16)  # training jobs at once; each takes every core it gets
    allowed_paths: list[Path] = Field(default_factory=list)  # where API-added file sources may read, beside data_dir
    debounce: tuple[int, int] | None = None  # (N, M): NG only if N of the last M are NG
    keep_ok_images: float = Field(0.02, ge=0, le=1)  # share of OK images kept for review
    teach_keep_frames: int = Field(1000, ge=0)  # newest frames kept per source in teach mode
    teach_interval_s: float = Field(0.5, ge=0)  # at most one teach frame per source per this many seconds
    inspections_per_second: float = Field(0.0, ge=0)  # >0: summaries on …/inspections (QoS 0), at most this often
    retention_days: float = Field(30, gt=0)  # OK images older than this are deleted
    # raw inspection rows older than this are deleted once rolled up into hourly aggregates (rows
    # with an alert stay): the database grows with this window and the alerts, not with the line's age.
    # PostgreSQL drops OK rows a UTC day at a time, once the whole day is past it (up to a day more)
    history_raw_days: float = Field(7, gt=0)
    retention_max_gb: float = Field(10, gt=0)  # then the oldest OK, then resolved NG images, over this size
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    # requests the API works on at once (the rest wait their turn): the line shares the interpreter
    # with the API, and a bounded API leaves it its share however many consoles read
    api_workers: int = Field(2, ge=1, le=64)
    api_page_cache_s: float = Field(0.5, ge=0, le=10)  # /inspections and /alerts pages answered again within
    api_url: str = ""  # public base URL used in alert links; default http://api_host:api_port
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)

    @property
    def source_roots(self) -> list[Path]:
        """Where file, folder and CSV sources added through the API may read."""
        return [self.data_dir, *self.allowed_paths]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'appliance.db'}"

    @property
    def public_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown setting '{key}'")
        else:
            parts.append(f"Config '{key}' has value {e.get('input')!r}. {e['msg']}.")
    return "; ".join(parts)


# APPLIANCE_* variables that are not settings: the console's and the tests' own
OTHER_VARIABLES = {"APPLIANCE_TOKEN", "APPLIANCE_API_URL", "APPLIANCE_TEST_PG", "APPLIANCE_CONSOLE_IDLE_MINUTES"}


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse an ``APPLIANCE_*`` variable that names no setting (a typo would be ignored silently)."""
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if not name.upper().startswith("APPLIANCE_") or name.upper() in OTHER_VARIABLES:
            continue
        path = name[len("APPLIANCE_") :].lower().split("__")
        fields: dict[str, Any] = Settings.model_fields
        for depth, key in enumerate(path):
            field = fields.get(key)
            if field is None:
                msg = f"unknown setting '{'.'.join(path[: depth + 1])}' (environment variable {name})"
                raise SettingsError(msg)
            nested = field.annotation
            fields = nested.model_fields if isinstance(nested, type) and issubclass(nested, BaseModel) else {}
            if not fields and depth < len(path) - 1:
                msg = f"setting '{key}' has no part '{path[depth + 1]}' (environment variable {name})"
                raise SettingsError(msg)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    check_environment()
    data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            msg = f"settings file {path} does not exist"
            raise SettingsError(msg)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            msg = f"{path}: not valid YAML: {exc}"
            raise SettingsError(msg) from exc
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
    if settings.production:
        check_production(settings)
    return settings


def check_production(settings: Settings) -> None:
    """A production start refuses embedded services and default or missing secrets, naming the key."""
    if settings.database_url is None or settings.database_url.startswith("sqlite"):
        msg = "production needs 'database_url' set to PostgreSQL (APPLIANCE_DATABASE_URL)"
        raise SettingsError(msg)
    if settings.mqtt.host is None:
        msg = "production needs 'mqtt.host' (APPLIANCE_MQTT__HOST); the embedded broker is for laptops"
        raise SettingsError(msg)
    if not settings.mqtt.username or not settings.mqtt.password or _placeholder(settings.mqtt.password):
        msg = "production needs 'mqtt.username' and a non-default 'mqtt.password' (APPLIANCE_MQTT__PASSWORD)"
        raise SettingsError(msg)
    o = settings.opcua
    if o.enabled and o.password is not None and _placeholder(o.password):
        msg = "production needs a non-default 'opcua.password' (APPLIANCE_OPCUA__PASSWORD)"
        raise SettingsError(msg)
    if o.enabled and o.host not in LOOPBACK and o.certificate is None:
        msg = (
            f"production needs 'opcua.certificate' and 'opcua.private_key' to serve OPC UA on {o.host} "
            "(encrypted endpoints)"
        )
        raise SettingsError(msg)
    if _placeholder(settings.database_url):
        msg = "production needs a real password in 'database_url', not the example's placeholder"
        raise SettingsError(msg)


def _placeholder(secret: str) -> bool:
    folded = "".join(c for c in secret.lower() if c.isalnum())
    return any(word in folded for word in ("changeme", "password", "secret")) or folded in ("admin", "")
