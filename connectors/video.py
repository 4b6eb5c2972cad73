"""``file:video.mp4?loop=1&live=0``, ``camera:0``, ``rtsp://…``, ``http://…``: OpenCV video.

Live cameras keep only their newest frames (a reader thread fills a small buffer, one frame by
default, and counts what it overwrote). Dead cameras and streams reconnect with exponential
back-off. ``file:…?fps=100`` replays a recording at that rate as a camera would deliver it: live,
with a driver-like buffer of 4 frames (``buffer``), frames the line is too slow for dropped and
counted.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from connectors.base import Backoff, Sample, Source, SourceError, now, redact


class VideoSource(Source):
    """OpenCV capture (camera index, stream URL or video file) read by a thread.

    ``live`` (cameras and streams): a one-frame slot keeps only the newest frame; overwritten
    frames count as dropped. Otherwise (files) frames queue in order. On failure the thread
    reconnects with exponential back-off (``backoff`` doubling up to ``max_backoff`` seconds);
    after ``max_retries`` failed attempts in a row (0 = never give up) the state is ``failed``.
    """

    kind = "video"

    def __init__(
        self,
        source_id: str,
        url: str,
        target: str | int,
        live: bool = True,
        loop: bool = False,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retries: int = 0,
        fps: float = 0.0,
        buffer: int = 0,
    ) -> None:
        super().__init__(source_id, url)
        if not 0 <= fps <= 10_000 or not 0 <= buffer <= 1000:
            msg = f"options 'fps' (0 to 10000) and 'buffer' (0 to 1000) got {fps} and {buffer}"
            raise SourceError(msg)
        self.target, self.live, self.loop = target, live, loop
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.shown = redact(target) if isinstance(target, str) else f"camera {target}"  # never the password
        self.backpressure = not live
        self.backoff, self.max_retries = Backoff(backoff, max_backoff), max_retries
        slots = buffer or (4 if fps > 0 else 1)  # a replay at line speed buffers as a camera's driver does
        self.frames: deque[tuple[dt.datetime, np.ndarray]] = deque(maxlen=slots if live else 64)
        self.ready = threading.Condition()
        self.stopping = threading.Event()
        self.delivered = 0  # frames handed to the pipeline: names the item
        self.state = "reconnecting"
        self.thread = threading.Thread(target=self._run, name=f"video-{source_id}", daemon=True)

    def _start(self) -> None:
        self.thread.start()

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.target, str) and not self.target.startswith(("rtsp://", "http://", "https://")):
            if not Path(self.target).is_file():
                return None
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _run(self) -> None:
        failures, first = 0, True
        while not self.stopping.is_set():
            cap = self._open()
            if cap is None:
                failures += 1
                self._fail(f"cannot open {self.shown}")
                if self.max_retries and failures >= self.max_retries:
                    self.state = "failed"
                    return
                self.state = "reconnecting"
                self.stopping.wait(self.backoff.next())
                continue
            if not first:
                self.reconnects += 1
            first, failures = False, 0
            self.backoff.reset()
            self.state = "online"
            self._pump(cap)
            cap.release()
            if not self.stopping.is_set():
                self.state = "reconnecting"

    def _pump(self, cap: cv2.VideoCapture) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            if self.period:  # a camera's pace: late reads catch up, they do not skip frames
                due += self.period
                if (wait := due - time.monotonic()) > 0:
                    self.stopping.wait(wait)
            ok, frame = cap.read()
            stamp = now()
            if not ok:
                if self.loop and cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and cap.read()[0]:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self._fail(f"{self.shown}: stream ended or frame lost")
                return
            with self.ready:
                if not self.live:
                    while len(self.frames) == self.frames.maxlen and not self.stopping.is_set():
                        self.ready.wait(0.1)  # files: wait for the consumer, never drop
                elif len(self.frames) == self.frames.maxlen:
                    self.frames_dropped += 1
                self.frames.append((stamp, frame))
                self.ready.notify_all()

    def _read(self, timeout: float) -> Sample | None:
        with self.ready:
            if not self.frames and not self.ready.wait_for(lambda: bool(self.frames), timeout):
                return None
            stamp, frame = self.frames.popleft()
            self.ready.notify_all()
            self.delivered += 1
        return Sample(self.source_id, stamp, frame, {"item": f"frame {self.delivered}"})

    def close(self) -> None:
        self.stopping.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=5)
        super().close()
