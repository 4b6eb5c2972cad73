"""The appliance's sources beyond its settings: those added through the API, kept across restarts.

A source string's credentials (``rtsp://user:secret@cam/…``) never reach the database, MQTT or the
log: the database keeps the string with its password masked, the source's id and status never
hold it, and the full string lives in ``source-secrets.json`` in the data directory, readable by
the appliance's user only (mode 600), from where a restart takes it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from appliance.storage import queries, store
from connectors.base import SourceError, redact
from connectors.factory import file_paths, open_source


class SourceBook:
    """Saved sources: masked strings in the database, their secrets in a private file."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine, self.secrets_path = engine, Path(data_dir) / "source-secrets.json"

    def _secrets(self) -> dict[str, str]:
        if not self.secrets_path.is_file():
            return {}
        return json.loads(self.secrets_path.read_text(encoding="utf-8"))

    def _write_secrets(self, secrets: dict[str, str]) -> None:
        tmp = self.secrets_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(secrets, f)
        tmp.replace(self.secrets_path)

    def save(self, *, source_id: str, url: str, actor: str) -> None:
        if redact(url) != url:
            self._write_secrets({**self._secrets(), source_id: url})
        store.save_source(self.engine, source_id=source_id, url=redact(url), actor=actor)

    def delete(self, *, source_id: str) -> None:
        store.delete_source(self.engine, source_id=source_id)
        secrets = self._secrets()
        if secrets.pop(source_id, None) is not None:
            self._write_secrets(secrets)

    def saved(self) -> list[tuple[str, str]]:
        """(source id, full source string) of every saved source, in the order they were added."""
        secrets = self._secrets()
        return [(sid, secrets.get(sid, url)) for sid, url in queries.saved_sources(self.engine)]


def check_paths(url: str, roots: list[Path]) -> None:
    """A source string from the API may read (and, for a folder's state file, write) only inside
    the data folder and the configured ``allowed_paths``."""
    scheme = url.partition(":")[0]
    resolved = [r.resolve() for r in roots]
    for p in file_paths(url):
        target = Path(p).resolve()
        if not any(target.is_relative_to(r) for r in resolved):
            msg = f"{scheme}: sources may use files only inside the data folder and the folders in 'allowed_paths'"
            raise SourceError(msg)


def try_source(url: str, source_id: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Open a source string, read one sample within ``timeout`` seconds and close it."""
    source = open_source(url, source_id)
    try:
        sample = source.read(timeout)
    finally:
        source.close()
    if sample is None:
        return {
            "ok": False,
            "message": f"no sample from {redact(url)} within {timeout:g} s",
            "state": source.status().get("state"),
        }
    shape = list(np.asarray(sample.payload).shape)
    return {"ok": True, "message": f"read one sample of shape {shape}", "shape": shape}
