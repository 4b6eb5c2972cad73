"""Which model judges each source, with which thresholds: the source's recipe.

- A source bound to a model of its own (``storage.recipes.bind``) is judged by it.
- Otherwise the active model (the default) judges it when the default fits the source: same kind
  of input (images or vectors), and a model made from the synthetic line judges only synthetic
  sources.
- Otherwise the source is in **teach mode**: it streams and its frames are kept for teaching, it
  raises no alerts.

A source may also have a candidate **in shadow** (``storage.recipes.start_shadow``): it scores
every frame the source's model scores and decides nothing (appliance.shadow).

Thresholds: what an engineer set for (source, version), else for (every source, version), else
the bundle's calibration. One :class:`Inferencer` per version serves every source it judges; the
thresholds travel in the recipe, so each source keeps its own.

The resolved map is rebuilt from the database by :meth:`Recipes.refresh` (at start, after every
promotion, rollback, threshold change and source change) and swapped whole, so the inspector
thread reads one consistent map per batch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from appliance import registry
from appliance.storage import recipes as stored
from appliance.storage import store
from models.decision import Thresholds
from models.inference import Inferencer

log = logging.getLogger(__name__)
SYNTHETIC_SCOPE = "synthetic"  # provenance "scope" of the first-start model: synthetic sources only


@dataclass(frozen=True)
class Shadow:
    """A candidate in shadow on a source: scores what the recipe's model scores, decides nothing."""

    model: Inferencer
    thresholds: Thresholds
    binding_id: int

    @property
    def version(self) -> str:
        return self.model.version


@dataclass(frozen=True)
class Recipe:
    model: Inferencer
    thresholds: Thresholds
    own: bool  # the source's own model (False: the default judges it)
    shadow: Shadow | None = None

    @property
    def version(self) -> str:
        return self.model.version


def fits(model: Inferencer, source: Any) -> bool:
    """Whether the default model may judge ``source`` (anything with ``kind`` and ``payload``)."""
    if model.input_spec.kind != getattr(source, "payload", "image"):
        return False
    scope = model.meta.get("provenance", {}).get("scope")
    return scope != SYNTHETIC_SCOPE or getattr(source, "kind", "") == "synthetic"


class Recipes:
    def __init__(self, engine: Engine, models_dir: Path, threads: int = 0) -> None:
        self.engine, self.models_dir, self.threads = engine, models_dir, threads  # onnxruntime's, per model (0: auto)
        self._models: dict[str, Inferencer] = {}  # loaded versions
        self._map: dict[str, Recipe] = {}
        self._default: Recipe | None = None
        self._lock = threading.Lock()  # one refresh at a time

    def get(self, source_id: str) -> Recipe | None:
        """The source's recipe; None: the source is in teach mode."""
        return self._map.get(source_id)

    @property
    def default(self) -> Recipe | None:
        """The active model with its every-source thresholds (None: no active model)."""
        return self._default

    def model(self, version: str) -> Inferencer:
        """A registered version, loaded once (refusing one that cannot judge a line)."""
        if version not in self._models:
            self._models[version] = registry.load_for_line(self.engine, self.models_dir, version, self.threads)
        return self._models[version]

    def refresh(self, sources: dict[str, Any]) -> dict[str, Recipe]:
        """Resolve every source's recipe from the database and swap the map in whole."""
        with self._lock:
            active = store.active_model(self.engine)
            bound = stored.bindings(self.engine)
            settings = stored.threshold_settings(self.engine)
            default = self.model(active[0]) if active else None

            def recipe(model: Inferencer, source_id: str, own: bool) -> Recipe:
                pair = settings.get((source_id, model.version)) or settings.get((stored.ALL_SOURCES, model.version))
                return Recipe(model, Thresholds(*pair) if pair else model.calibrated, own)

            resolved = {}
            for source_id, source in sources.items():
                if source_id in bound:
                    try:
                        resolved[source_id] = recipe(self.model(bound[source_id]), source_id, True)
                    except (LookupError, ValueError):  # a bundle gone or broken: teach, say why
                        log.exception("source %r: its model %r cannot be loaded", source_id, bound[source_id])
                elif default is not None and fits(default, source):
                    resolved[source_id] = recipe(default, source_id, False)
            for source_id, (version, binding_id) in stored.shadows(self.engine).items():
                judged = resolved.get(source_id)
                if judged is None or version == judged.version:
                    continue  # in teach mode, or promoted meanwhile: nothing to compare with
                try:
                    model = self.model(version)
                except (LookupError, ValueError):
                    log.exception("source %r: its shadow model %r cannot be loaded", source_id, version)
                    continue
                thresholds = recipe(model, source_id, False).thresholds
                resolved[source_id] = replace(judged, shadow=Shadow(model, thresholds, binding_id))
            self._default = recipe(default, stored.ALL_SOURCES, False) if default is not None else None
            self._map = resolved
            in_use = {r.version for r in resolved.values()} | ({default.version} if default else set())
            in_use |= {r.shadow.version for r in resolved.values() if r.shadow is not None}
            self._models = {v: m for v, m in self._models.items() if v in in_use}  # free what nothing uses
            return resolved
