"""What every source shares: the Sample, the Source base (state, counters, start/close), the
back-off schedule, option parsing, and the rule that keeps credentials out of ids and messages.

States: ``online``, ``reconnecting``, ``failed``, ``stopped``. Never a silent fallback to other data.
"""

from __future__ import annotations

import datetime as dt
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the image files read (OpenCV decodes each): what cameras, vision software and phones save, with
# the netpbm formats of vision libraries (16-bit PGM depth maps too)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".jp2"}
)
IMAGE_KINDS = "png/jpg/bmp/tif/webp/pgm/ppm/jp2"  # how messages name them


class SourceError(ValueError):
    """A source string or option is invalid."""


class SourceFailure(RuntimeError):
    """Reading a source failed unexpectedly; its state says ``failed`` until a read succeeds."""


@dataclass
class Sample:
    source_id: str
    t_capture: dt.datetime
    payload: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def redact(url: str) -> str:
    """The source string with any password replaced by ``***`` (for status, logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


MAX_ID_LENGTH = 200  # what the database keeps of a source id


def check_source_id(source_id: str) -> str:
    if not source_id or len(source_id) > MAX_ID_LENGTH:
        msg = f"a source id has 1 to {MAX_ID_LENGTH} characters, this one {len(source_id)}; give a shorter 'source_id'"
        raise SourceError(msg)
    return source_id


def source_id_for(url: str) -> str:
    """A stable id for a source string that never holds its credentials: the string itself
    without the user-info part (``rtsp://user:pass@cam/1`` → ``rtsp://cam/1``)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Backoff:
    """Exponential back-off: ``first`` seconds, doubling up to ``longest``; ``reset`` after success."""

    def __init__(self, first: float, longest: float) -> None:
        self.first, self.longest, self.delay = first, longest, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.longest)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def parse_options(query: str, allowed: dict[str, type]) -> dict[str, Any]:
    """Options of a source string's query, each converted to its type; unknown keys are named."""
    out = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key not in allowed:
            msg = f"unknown option {key!r}; allowed: {', '.join(sorted(allowed))}"
            raise SourceError(msg)
        try:
            out[key] = allowed[key](values[-1])
        except ValueError as exc:
            msg = f"option {key!r} has value {values[-1]!r}. Not a valid {allowed[key].__name__}."
            raise SourceError(msg) from exc
    return out


class Source:
    """Base: counters and state; subclasses implement ``_read`` and, when they own a thread or a
    connection, ``_start`` and ``close``. Constructors only check options: nothing runs before
    ``start()``."""

    kind = "source"
    payload = "image"  # what its samples hold: "image" (H×W[×C]) or "vector" (a reading or window)
    backpressure = False  # True: the reader waits when the pipeline's queue is full (nothing dropped)

    def __init__(self, source_id: str, url: str) -> None:
        self.source_id, self.url = source_id, redact(url)
        self.state = "online"
        self.frames_in = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self.started = False
        self._read_failed = False
        self._lock = threading.Lock()

    def start(self) -> Source:
        """Start the source's reader thread or connection, if it has one (idempotent)."""
        if not self.started:
            self.started = True
            self._start()
        return self

    def _start(self) -> None:
        """Nothing to start for sources read on demand."""

    def read(self, timeout: float = 1.0) -> Sample | None:
        """The next sample, or ``None`` when none arrived within ``timeout`` seconds. A read that
        fails unexpectedly (e.g. out of memory) sets the state to ``failed``, names the error and
        raises :class:`SourceFailure`; the state recovers with the next sample."""
        try:
            sample = self._read(timeout)
        except Exception as exc:
            self.state, self._read_failed = "failed", True
            self._fail(f"reading failed: {type(exc).__name__}: {exc}"[:300])
            raise SourceFailure(self.last_error) from exc
        if sample is not None:
            with self._lock:
                self.frames_in += 1
            if self._read_failed:
                self.state, self._read_failed = "online", False
        return sample

    def _read(self, timeout: float) -> Sample | None:
        raise NotImplementedError

    def close(self) -> None:
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "url": self.url,
            "kind": self.kind,
            "state": self.state,
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def _fail(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message
