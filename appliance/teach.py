"""Teach mode: frames of a source that no model judges yet, kept on disk (the newest
``keep`` per source, at most one per ``interval`` seconds) so an engineer can pick the good parts,
reject the rest and train the source's detector on them."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from appliance.errors import NotFound
from appliance.images import FRAME_SUFFIXES, encode
from appliance.registry import safe_name
from connectors.base import Sample


class TeachFrames:
    def __init__(self, root: Path, keep: int = 1000, interval: float = 0.5) -> None:
        self.root, self.keep, self.interval = Path(root), keep, interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def folder(self, source_id: str) -> Path:
        """Where a source's teach frames live (one folder per source; the id made file-safe)."""
        digest = hashlib.sha256(source_id.encode()).hexdigest()[:8]
        return self.root / f"{safe_name(source_id)[:80]}-{digest}"

    def offer(self, sample: Sample) -> Path | None:
        """Keep the frame if it is due; drop the oldest beyond ``keep``. Returns where it went."""
        if self.keep == 0 or sample.payload.ndim < 2:
            return None  # sensor windows are not kept as frames
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(sample.source_id, -1e9) < self.interval:
                return None
            self._last[sample.source_id] = now
        folder = self.folder(sample.source_id)
        folder.mkdir(parents=True, exist_ok=True)
        suffix, data = encode(sample.payload)  # without loss: PNG, or TIFF for measured values
        path = folder / f"{sample.t_capture.strftime('%Y%m%dT%H%M%S.%f')}{suffix}"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        frames = self.frames(sample.source_id)
        for old in frames[: max(0, len(frames) - self.keep)]:
            old.unlink(missing_ok=True)
        return path

    def frames(self, source_id: str) -> list[Path]:
        """The kept frames, oldest first."""
        folder = self.folder(source_id)
        return sorted(p for p in folder.iterdir() if p.suffix in FRAME_SUFFIXES) if folder.is_dir() else []

    def frame(self, source_id: str, name: str) -> Path:
        path = self.folder(source_id) / name
        if "/" in name or "\\" in name or Path(name).suffix not in FRAME_SUFFIXES or not path.is_file():
            msg = f"source {source_id!r} has no teach frame {name!r}"
            raise NotFound(msg)
        return path

    def reject(self, source_id: str, names: list[str]) -> int:
        """Remove frames an operator rejected (not good parts); returns how many."""
        paths = [self.frame(source_id, n) for n in names]  # all named frames exist, or nothing changes
        for p in paths:
            p.unlink(missing_ok=True)
        return len(paths)
