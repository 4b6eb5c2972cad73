"""``folder:/path?poll=0.5&settle=2``: images appearing in a folder, each processed once."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import cv2

from connectors.base import IMAGE_SUFFIXES, Sample, Source, SourceError, now


class FolderSource(Source):
    """Images appearing in a folder, each processed once, in order of arrival. What was processed
    is remembered in ``.appliance-seen.json`` inside the folder (each name appended to its
    ``.log`` as it is read, the two merged now and then), so a restart does not repeat it; names
    of files that left the folder are forgotten, so memory follows the folder, not its history.
    An image that cannot be read yet while it changed less than ``settle`` seconds ago is still
    being written (a camera or PLC saving into the folder): it is tried again on later scans, and
    only counted and skipped as unreadable once it has stopped changing for that long."""

    kind = "folder"
    backpressure = True

    def __init__(
        self, source_id: str, url: str, path: str, poll: float = 0.5, settle: float = 2.0, state_file: str = ""
    ) -> None:
        super().__init__(source_id, url)
        self.folder = Path(path)
        if not self.folder.is_dir():
            msg = f"folder {self.folder} does not exist"
            raise SourceError(msg)
        if not (poll > 0 and settle >= 0):
            msg = f"folder source: poll must be > 0 and settle >= 0 seconds, got poll={poll}, settle={settle}"
            raise SourceError(msg)
        self.poll, self.settle = poll, settle
        self.state_path = Path(state_file) if state_file else self.folder / ".appliance-seen.json"
        self.log_path = self.state_path.with_name(self.state_path.name + ".log")
        self.seen: set[str] = set()
        self.logged = 0  # names appended since the state file was last written whole
        if self.state_path.is_file():
            try:
                self.seen = set(json.loads(self.state_path.read_text()))
            except (ValueError, OSError) as exc:
                self._fail(f"state file {self.state_path} unreadable, starting afresh: {exc}")
        if self.log_path.is_file():
            names = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            self.seen.update(n for n in names if n)
            self.logged = len(names)
        self.pending: deque[Path] = deque()

    def _scan(self) -> None:
        present = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        self.seen &= {p.name for p in present}  # files moved away or rotated out are forgotten
        queued = {p.name for p in self.pending}
        fresh = [p for p in present if p.name not in self.seen and p.name not in queued and p.is_file()]
        self.pending.extend(sorted(fresh, key=lambda p: (p.stat().st_mtime_ns, p.name)))

    def _mark(self, path: Path) -> None:
        """Remember a name: one appended line (not the whole set rewritten per image); the state
        file is written whole when the log has grown past what it holds."""
        self.seen.add(path.name)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(path.name + "\n")
        self.logged += 1
        if self.logged > max(1000, len(self.seen)):
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self.seen)))
            tmp.replace(self.state_path)
            self.log_path.unlink(missing_ok=True)
            self.logged = 0

    def _being_written(self, path: Path) -> bool:
        """Changed less than ``settle`` seconds ago (a half-written image reads as unreadable)."""
        try:
            return time.time() - path.stat().st_mtime < self.settle
        except OSError:  # gone already
            return False

    def _read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.pending:
                self._scan()
            while self.pending:
                path = self.pending.popleft()
                stamp = now()
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if image is None and self._being_written(path):
                    continue  # not marked: a later scan finds it again
                self._mark(path)
                if image is None:
                    self._fail(f"{path.name}: not a readable image, skipped")
                    continue
                return Sample(self.source_id, stamp, image, {"file": path.name, "item": path.name})
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
