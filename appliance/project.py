"""The project file (YAML): what NNC's project holds — network, datasets, training config.

```yaml
network: {zoo: binary_cnn, options: {}}      # or {spec: net.yaml}, or {spec: {...inline...}}
task: classification                           # classification | regression | autoencoder
dataset:
  training: training.csv                       # relative to this file
  validation: validation.csv
  input: x                                     # dataset variable fed to the network
  target: y                                    # classification/regression target; anomaly label for autoencoders
config:
  max_epoch: 20
  batch_size: 64
  solver: {type: Adam, lr: 0.001}
  scheduler: {type: cosine}                    # optional: step | exponential | cosine | polynomial
  weight_decay: 0.0
  monitor_interval: 1
  save_best: true
  seed: 0
score: {reduce: max, name: max_se}             # optional, autoencoders: mean (default) or max squared error
search:                                        # optional: `appliance search` (structure search)
  method: random                               # random (NNC's) | bayes (Gaussian process over network features)
  objective: error_and_madds                   # error | error_and_madds
  max_trials: 20
```

Unknown keys and bad values are refused with the key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.solvers import SOLVERS


class ProjectError(ValueError):
    """A project file is malformed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkConfig(Strict):
    zoo: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    spec: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def one_source(self) -> NetworkConfig:
        if (self.zoo is None) == (self.spec is None):
            msg = "give exactly one of 'zoo' (a zoo network name) or 'spec' (a spec file or mapping)"
            raise ValueError(msg)
        return self


class DatasetConfig(Strict):
    training: str
    validation: str | None = None
    input: str = "x"
    target: str | None = "y"
    normalize: bool = True


class SolverConfig(Strict):
    model_config = ConfigDict(extra="allow")  # solver hyper-parameters, checked by the solver itself
    type: str = "Adam"

    @field_validator("type")
    @classmethod
    def known(cls, value: str) -> str:
        if value.lower() not in SOLVERS:
            msg = f"unknown solver {value!r}; known: {', '.join(sorted(c.__name__ for c in SOLVERS.values()))}"
            raise ValueError(msg)
        return value

    def hyper(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SchedulerConfig(Strict):
    type: Literal["step", "exponential", "cosine", "polynomial"]
    gamma: float = 0.1
    step_epochs: int | None = None
    milestones: list[int] = Field(default_factory=list)
    min_lr: float = 0.0
    power: float = 1.0
    warmup_epochs: int = 0


class TrainConfig(Strict):
    max_epoch: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    scheduler: SchedulerConfig | None = None
    weight_decay: float = Field(0.0, ge=0)
    monitor_interval: int = Field(1, ge=1)
    save_best: bool = True
    seed: int = 0
    clip_grad_norm: float | None = Field(None, gt=0)


class SearchConfig(Strict):
    """NNC's structure search settings (``appliance search``); every key can be overridden on the CLI."""

    method: Literal["random", "bayes"] = "random"
    objective: Literal["error", "error_and_madds"] = "error_and_madds"
    max_trials: int = Field(20, ge=1)
    time_limit_minutes: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=1)  # per trial; default config.max_epoch
    workers: int | None = Field(None, ge=1)  # default: one per core
    error_min: float | None = None
    error_max: float | None = None
    multiply_adds_min: int | None = Field(None, ge=0)
    multiply_adds_max: int | None = Field(None, ge=1)
    early_stop_factor: float | None = Field(2.0, gt=1)  # stop a trial whose error is this many times the best's
    seed: int = 0


class ScoreConfig(Strict):
    """An autoencoder's anomaly score per sample: the mean (NNC's default) or the largest squared
    reconstruction error over its elements (NNC's sine-wave tutorial outputs ``max_se``), written
    by ``appliance evaluate`` / ``forward`` as the column ``<name>'``."""

    reduce: Literal["mean", "max"] = "mean"
    name: str = Field("score", pattern=r"^[A-Za-z_][\w.-]{0,63}$")


class Project(Strict):
    network: NetworkConfig
    task: Literal["classification", "regression", "autoencoder"] | None = None
    score: ScoreConfig | None = None  # set: forward also writes the score, as NNC's side output
    dataset: DatasetConfig
    config: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        key = ".".join(str(part) for part in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            value = e.get("input")
            shown = f" has value {value!r}." if not isinstance(value, dict) else ":"
            lines.append(f"'{key}'{shown} {e['msg']}")
    return "; ".join(lines)


def load_project(path: str | Path) -> Project:
    path = Path(path)
    if not path.is_file():
        msg = f"project file {path} does not exist"
        raise ProjectError(msg)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        msg = f"{path}: not valid YAML: {exc}"
        raise ProjectError(msg) from exc
    return parse_project(data, str(path), path.resolve().parent)


def parse_project(data: Any, where: str, base_dir: Path) -> Project:
    """A project from its parsed mapping; errors start with ``where`` (a file name, or "project")."""
    if not isinstance(data, dict):
        msg = f"{where}: a project file is a mapping with network, dataset and config"
        raise ProjectError(msg)
    try:
        project = Project.model_validate(data)
    except ValidationError as exc:
        msg = f"{where}: {_describe(exc)}"
        raise ProjectError(msg) from exc
    project.base_dir = base_dir
    return project


def list_projects(root: Path) -> list[dict[str, Any]]:
    """Project files in a folder: name, file name and text."""
    files = sorted(root.glob("*.yaml")) if root.is_dir() else []
    return [{"name": p.stem, "file": p.name, "text": p.read_text(encoding="utf-8")} for p in files]


def write_project(
    root: Path,
    name: str,
    data_folder: Path,
    *,
    zoo: str | None = None,
    options: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    task: str | None = None,
    max_epoch: int = 10,
    batch_size: int = 64,
    solver: str = "Adam",
    lr: float = 0.001,
    score: dict[str, Any] | None = None,
    variables: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``root/<name>.yaml`` for a zoo network or a spec trained on a dataset folder (its
    training.csv, and validation.csv when there is one); checked before it is stored."""
    from appliance.datasets.library import checked_name

    name = checked_name(name, "name")
    if (zoo is None) == (spec is None):
        msg = "give exactly one of 'zoo' or 'spec'"
        raise ProjectError(msg)
    dataset = {"training": str(data_folder / "training.csv")}
    dataset.update({k: v for k, v in (variables or {}).items() if k in ("input", "target")})
    if (data_folder / "validation.csv").is_file():
        dataset["validation"] = str(data_folder / "validation.csv")
    project: dict[str, Any] = {
        "network": {"zoo": zoo, "options": options or {}} if zoo else {"spec": spec},
        "dataset": dataset,
        "config": {"max_epoch": max_epoch, "batch_size": batch_size, "solver": {"type": solver, "lr": lr}},
    }
    if task:
        project["task"] = task
    if score:
        project["score"] = score
    parse_project(project, "project", root)  # refuses a bad network option, solver or value, by key
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}.yaml"
    staging = root / f".{name}.tmp"
    staging.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    staging.replace(target)
    return {"name": name, "file": target.name, "text": target.read_text(encoding="utf-8")}
