"""The model registry on disk and in the database: bundles in ``<data>/models``, registered as
candidates (with their bytes in the database, so every node sharing it can load every version:
a node without the file writes it from there), one of them active. Promotion loads and checks a
bundle before anything changes, then swaps it into the running line between two samples."""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path

from sqlalchemy.engine import Engine

from appliance.errors import Conflict, NotFound
from appliance.storage import queries, store
from models import bundle as bundle_io
from models.bundle import BundleError
from models.inference import Inferencer

LINE_KINDS = ("detector", "autoencoder")  # the models that can judge a line


def safe_name(text: str) -> str:
    """A file-name-safe form of a version string (uploads cannot escape the models folder)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "model"


def register(engine: Engine, path: Path) -> str:
    """Add a bundle file in the models folder to the registry; returns its version."""
    with bundle_io.open_zip(path) as zf:
        meta = bundle_io.read_meta(zf, str(path))
    metrics = {
        "calibration": meta.get("postprocess", {}).get("calibration"),
        "provenance_metrics": meta.get("provenance", {}).get("metrics"),
    }
    store.register_model(
        engine,
        version=str(meta["version"]),
        filename=path.name,
        digest=bundle_io.file_digest(path),
        kind=meta["kind"],
        metrics=metrics,
        data=path.read_bytes(),
    )
    return str(meta["version"])


def model_path(engine: Engine, models_dir: Path, version: str) -> Path:
    """The version's bundle file in this node's models folder (written from the database when
    another node registered it)."""
    path = models_dir / queries.model(engine, version=version).filename
    if not path.is_file():
        data = queries.model_file(engine, version=version)
        if data is None:
            msg = f"no model version {version!r} on this node"
            raise NotFound(msg)
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = models_dir / f"fetch-{uuid.uuid4().hex}.zip"
        staging.write_bytes(data)
        staging.replace(path)
    return path


def upload(engine: Engine, models_dir: Path, data: bytes) -> str:
    """Store an uploaded bundle (checked by loading it once) and register it as a candidate."""
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f"upload-{uuid.uuid4().hex}.zip"
    staging.write_bytes(data)
    try:
        inferencer = Inferencer(staging)  # a corrupt, truncated or newer bundle fails here
        version = check_version(inferencer.version)
        final = models_dir / f"model-{safe_name(version)}.zip"
        if final.exists():
            if final.read_bytes() != data:
                msg = f"model version {version!r} exists with other contents"
                raise Conflict(msg)
            return register(engine, final)
        staging.replace(final)
        try:
            return register(engine, final)
        except Exception:
            final.unlink(missing_ok=True)  # nothing unregistered stays behind
            raise
    finally:
        staging.unlink(missing_ok=True)


def check_version(version: str) -> str:
    """A version the registry can store and a file name can carry."""
    if not version or len(version) > 100 or not version.isprintable():
        msg = f"a bundle's version must be 1 to 100 printable characters, got {version[:120]!r}"
        raise BundleError(msg)
    return version


def load_for_line(engine: Engine, models_dir: Path, version: str, threads: int = 0) -> Inferencer:
    """Load a registered version (``threads``: onnxruntime's, as ``Inferencer`` takes them),
    refusing one that cannot judge a line (the thresholds it runs with are the recipe's: see
    appliance.recipes)."""
    inferencer = Inferencer(model_path(engine, models_dir, version), threads)
    if inferencer.kind not in LINE_KINDS:
        msg = f"model {version!r} is a {inferencer.kind}; the line runs anomaly models (detector or autoencoder)"
        raise BundleError(msg)
    if not all(math.isfinite(t) for t in inferencer.calibrated.as_tuple()):
        msg = (
            f"model {version!r} has no calibrated thresholds, so it would pass every part: train detectors with "
            "`appliance detector fit` (or a teach job), which calibrate T1/T2 on held-out good parts"
        )
        raise BundleError(msg)
    return inferencer


def previous_version(engine: Engine) -> str:
    previous = queries.previous_model(engine)
    if previous is None:
        msg = "no earlier model to roll back to"
        raise Conflict(msg)
    return previous
