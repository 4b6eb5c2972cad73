"""``folder:/path?poll=0.5``: images appearing in a folder, each processed once."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import cv2

from connectors.base import IMAGE_SUFFIXES, Sample, Source, SourceError, now


class FolderSource(Source):
    """Images appearing in a folder, each processed once, in order of arrival. What was processed
    is remembered in ``.appliance-seen.json`` inside the folder, so a restart does not repeat it.
    Unreadable images are counted and skipped."""

    kind = "folder"
    backpressure = True

    def __init__(self, source_id: str, url: str, path: str, poll: float = 0.5, state_file: str = "") -> None:
        super().__init__(source_id, url)
        self.folder = Path(path)
        if not self.folder.is_dir():
            msg = f"folder {self.folder} does not exist"
            raise SourceError(msg)
        self.poll = poll
        self.state_path = Path(state_file) if state_file else self.folder / ".appliance-seen.json"
        self.seen: set[str] = set()
        if self.state_path.is_file():
            try:
                self.seen = set(json.loads(self.state_path.read_text()))
            except (ValueError, OSError) as exc:
                self._fail(f"state file {self.state_path} unreadable, starting afresh: {exc}")
        self.pending: deque[Path] = deque()

    def _scan(self) -> None:
        files = sorted(
            (p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        queued = {p.name for p in self.pending}
        self.pending.extend(p for p in files if p.name not in self.seen and p.name not in queued)

    def _mark(self, path: Path) -> None:
        self.seen.add(path.name)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.seen)))
        tmp.replace(self.state_path)

    def _read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.pending:
                self._scan()
            while self.pending:
                path = self.pending.popleft()
                stamp = now()
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                self._mark(path)
                if image is None:
                    self._fail(f"{path.name}: not a readable image, skipped")
                    continue
                return Sample(self.source_id, stamp, image, {"file": path.name, "item": path.name})
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
