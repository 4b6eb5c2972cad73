"""Sources of samples, one source string per input.

- ``synth:line?size=128&defect_rate=0.1&seed=0&fps=50``: the synthetic production line
- ``folder:/path?poll=0.5``: new images in a folder, each processed once (restart-safe)
- ``file:video.mp4?loop=1&live=0``, ``camera:0``, ``rtsp://…``, ``http://…``: OpenCV video
- ``csv:readings.csv?rate=100&window=64&hop=32``: sensor readings replayed into windows
- ``mqtt://host:port/plant/line/sensors?window=64&hop=32&channels=a,b&share=ingest``: JSON readings
- ``modbus://host:502/100?count=3&unit=1&interval=0.1&window=32``: Modbus TCP registers, polled

Every sample is stamped when grabbed. Live cameras keep only the newest frame (a reader thread
overwrites a one-frame slot and counts what it overwrote). Dead cameras and streams reconnect
with exponential back-off, and the state says so: ``online``, ``reconnecting``, ``failed``,
``stopped``. Never a silent fallback to other data.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from connectors.synthetic import DEFECT_KINDS, SyntheticLine

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class SourceError(ValueError):
    """A source string or option is invalid."""


@dataclass
class Sample:
    source_id: str
    t_capture: dt.datetime
    payload: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Source:
    """Base: counters and state; subclasses implement ``_read``."""

    kind = "source"
    backpressure = False  # True: the reader waits when the pipeline's queue is full (nothing dropped)

    def __init__(self, source_id: str, url: str) -> None:
        self.source_id, self.url = source_id, url
        self.state = "online"
        self.frames_in = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def read(self, timeout: float = 1.0) -> Sample | None:
        """The next sample, or ``None`` when none arrived within ``timeout`` seconds."""
        sample = self._read(timeout)
        if sample is not None:
            with self._lock:
                self.frames_in += 1
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


def _options(query: str, allowed: dict[str, type]) -> dict[str, Any]:
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


class SyntheticSource(Source):
    """The synthetic line at ``fps`` frames per second (0: as fast as read). ``meta['defect']``
    carries the ground truth (None for a good part)."""

    kind = "synthetic"

    def __init__(
        self,
        source_id: str,
        url: str,
        size: int = 128,
        defect_rate: float = 0.1,
        seed: int = 0,
        fps: float = 0.0,
        kinds: str = ",".join(DEFECT_KINDS),
    ) -> None:
        super().__init__(source_id, url)
        try:
            self.line = SyntheticLine(size, defect_rate, [k for k in kinds.split(",") if k], seed)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next_due = time.monotonic()

    def _read(self, timeout: float) -> Sample | None:
        wait = self.next_due - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        self.next_due = max(self.next_due + self.period, time.monotonic() - self.period)
        stamp = now()
        part = self.line.next()
        return Sample(self.source_id, stamp, part.image, {"defect": part.defect, "index": part.index})


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
                return Sample(self.source_id, stamp, image, {"file": path.name})
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))


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
    ) -> None:
        super().__init__(source_id, url)
        self.target, self.live, self.loop = target, live, loop
        self.backpressure = not live
        self.backoff, self.max_backoff, self.max_retries = backoff, max_backoff, max_retries
        self.frames: deque[tuple[dt.datetime, np.ndarray]] = deque(maxlen=1 if live else 64)
        self.ready = threading.Condition()
        self.stopping = threading.Event()
        self.state = "reconnecting"
        self.thread = threading.Thread(target=self._run, name=f"video-{source_id}", daemon=True)
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
        delay, failures, first = self.backoff, 0, True
        while not self.stopping.is_set():
            cap = self._open()
            if cap is None:
                failures += 1
                self._fail(f"cannot open {self.target}")
                if self.max_retries and failures >= self.max_retries:
                    self.state = "failed"
                    return
                self.state = "reconnecting"
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if not first:
                self.reconnects += 1
            first, failures, delay = False, 0, self.backoff
            self.state = "online"
            self._pump(cap)
            cap.release()
            if not self.stopping.is_set():
                self.state = "reconnecting"

    def _pump(self, cap: cv2.VideoCapture) -> None:
        while not self.stopping.is_set():
            ok, frame = cap.read()
            stamp = now()
            if not ok:
                if self.loop and cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and cap.read()[0]:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self._fail(f"{self.target}: stream ended or frame lost")
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
        return Sample(self.source_id, stamp, frame, {})

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        super().close()


class Windower:
    """Assemble readings (one value per channel) into (channels, length) windows every ``hop``."""

    def __init__(self, channels: int, length: int, hop: int) -> None:
        if channels < 1 or length < 1 or not 1 <= hop <= length:
            msg = f"window needs channels >= 1, length >= 1 and 1 <= hop <= length; got {channels}, {length}, {hop}"
            raise SourceError(msg)
        self.channels, self.length, self.hop = channels, length, hop
        self.buffer: deque[np.ndarray] = deque(maxlen=length)
        self.since = 0

    def push(self, reading: Any) -> np.ndarray | None:
        values = np.asarray(reading, dtype=np.float32).reshape(-1)
        if values.size != self.channels:
            msg = f"reading has {values.size} values, the window expects {self.channels} channels"
            raise SourceError(msg)
        self.buffer.append(values)
        self.since += 1
        if len(self.buffer) == self.length and (self.since >= self.hop or len(self.buffer) == self.since):
            self.since = 0
            return np.stack(self.buffer, axis=1)
        return None


class CsvSensorSource(Source):
    """Replay numeric rows of a CSV (header = channel names) at ``rate`` rows per second into
    windows; rows that are not numbers are counted as errors and skipped."""

    kind = "csv"
    backpressure = True

    def __init__(
        self, source_id: str, url: str, path: str, rate: float = 0.0, window: int = 64, hop: int = 0, loop: bool = False
    ) -> None:
        super().__init__(source_id, url)
        file = Path(path)
        if not file.is_file():
            msg = f"sensor file {file} does not exist"
            raise SourceError(msg)
        with file.open(newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) < 2:
            msg = f"{file}: needs a header row and readings"
            raise SourceError(msg)
        self.channels = rows[0]
        self.rows = rows[1:]
        self.position, self.loop = 0, loop
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.windower = Windower(len(self.channels), window, hop or window)

    def _read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() <= deadline:
            if self.position >= len(self.rows):
                if not self.loop:
                    self.state = "stopped"
                    return None
                self.position = 0
            row, line = self.rows[self.position], self.position + 2
            self.position += 1
            if self.period:
                time.sleep(self.period)
            try:
                window = self.windower.push([float(v) for v in row])
            except (ValueError, SourceError) as exc:
                self._fail(f"line {line}: {exc}")
                continue
            if window is not None:
                return Sample(self.source_id, now(), window, {"channels": self.channels, "line": line})
        return None


class QueuedSource(Source):
    """A source fed by a background thread or callback: windows wait in a bounded queue."""

    def _setup_queue(self, size: int = 1024) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)
        self.ready = threading.Condition()

    def _push(self, sample: Sample) -> None:
        with self.ready:
            if len(self.samples) == self.samples.maxlen:
                self.frames_dropped += 1
            self.samples.append(sample)
            self.ready.notify_all()

    def _read(self, timeout: float) -> Sample | None:
        with self.ready:
            if not self.samples and not self.ready.wait_for(lambda: bool(self.samples), timeout):
                return None
            return self.samples.popleft()


class MqttSensorSource(QueuedSource):
    """Readings published as JSON on an MQTT topic, assembled into windows.

    A reading is ``{"values": [v0, v1, …]}`` or an object of named channels (``channels`` gives
    their order; otherwise the first reading's keys, sorted). The subscription is made in
    ``on_connect``, so a reconnect resubscribes; ``share=group`` uses an MQTT 5 shared
    subscription (``$share/group/topic``) so several nodes split the readings. Malformed readings
    are counted as errors and skipped.
    """

    kind = "mqtt"

    def __init__(
        self,
        source_id: str,
        url: str,
        host: str,
        port: int,
        topic: str,
        window: int = 32,
        hop: int = 0,
        channels: str = "",
        share: str = "",
        username: str = "",
        password: str = "",
    ) -> None:
        super().__init__(source_id, url)
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if not topic:
            msg = "an mqtt:// source needs a topic: mqtt://host:port/topic"
            raise SourceError(msg)
        self.topic = f"$share/{share}/{topic}" if share else topic
        self.names = [c for c in channels.split(",") if c]
        self.window, self.hop = window, hop or window
        self.windower: Windower | None = None
        self._setup_queue()
        self.state = "reconnecting"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if share else mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 10)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._fail(f"broker refused the connection: {reason_code}")
            return
        client.subscribe(self.topic, qos=1)
        self.state = "online"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.state != "stopped":
            self.state = "reconnecting"

    def _reading(self, payload: bytes) -> list[float]:
        data = json.loads(payload.decode("utf-8"))
        if isinstance(data, dict) and "values" in data:
            return [float(v) for v in data["values"]]
        if isinstance(data, dict):
            if not self.names:
                self.names = sorted(data)
            missing = [n for n in self.names if n not in data]
            if missing:
                msg = f"reading lacks channel(s) {missing}"
                raise ValueError(msg)
            return [float(data[n]) for n in self.names]
        if isinstance(data, list):
            return [float(v) for v in data]
        msg = "reading is neither a JSON object nor a list"
        raise ValueError(msg)

    def _on_message(self, client, userdata, message) -> None:
        stamp = now()
        try:
            values = self._reading(message.payload)
            if self.windower is None:
                self.windower = Windower(len(values), self.window, self.hop)
            window = self.windower.push(values)
        except (ValueError, TypeError, UnicodeDecodeError, SourceError) as exc:
            self._fail(f"bad reading on {message.topic}: {exc}")
            return
        if window is not None:
            self._push(Sample(self.source_id, stamp, window, {"channels": list(self.names)}))

    def close(self) -> None:
        super().close()
        self.client.disconnect()
        self.client.loop_stop()


class ModbusSource(QueuedSource):
    """Registers polled over Modbus TCP every ``interval`` seconds, assembled into windows.

    ``modbus://host:port/<first register>?count=3&unit=1&kind=holding&scale=0.1&window=32&hop=16``.
    A failed poll (device unreachable, exception response) is counted; the client reconnects with
    exponential back-off and the state says ``reconnecting`` meanwhile.
    """

    kind = "modbus"

    def __init__(
        self,
        source_id: str,
        url: str,
        host: str,
        port: int,
        address: int,
        count: int = 1,
        unit: int = 1,
        kind: str = "holding",
        scale: float = 1.0,
        interval: float = 0.1,
        window: int = 32,
        hop: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(source_id, url)
        from pymodbus.client import ModbusTcpClient

        if kind not in ("holding", "input"):
            msg = f"kind must be 'holding' or 'input', got {kind!r}"
            raise SourceError(msg)
        self.client = ModbusTcpClient(host, port=port, timeout=2)
        self.address, self.count, self.unit, self.kind, self.scale = address, count, unit, kind, scale
        self.interval, self.backoff, self.max_backoff = interval, backoff, max_backoff
        self.windower = Windower(count, window, hop or window)
        self._setup_queue()
        self.stopping = threading.Event()
        self.state = "reconnecting"
        self.thread = threading.Thread(target=self._run, name=f"modbus-{source_id}", daemon=True)
        self.thread.start()

    def _poll(self) -> list[float]:
        read = self.client.read_holding_registers if self.kind == "holding" else self.client.read_input_registers
        response = read(self.address, count=self.count, device_id=self.unit)
        if response.isError():
            msg = f"device answered {response}"
            raise ConnectionError(msg)
        return [v * self.scale for v in response.registers]

    def _run(self) -> None:
        delay = self.backoff
        while not self.stopping.is_set():
            try:
                if not self.client.connected and not self.client.connect():
                    msg = "cannot connect"
                    raise ConnectionError(msg)
                values = self._poll()
            except Exception as exc:  # pymodbus raises several types; all mean "no reading now"
                self._fail(f"modbus poll failed: {exc}")
                if self.state == "online":
                    self.reconnects += 1
                self.state = "reconnecting"
                self.client.close()
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self.state, delay = "online", self.backoff
            window = self.windower.push(values)
            if window is not None:
                self._push(Sample(self.source_id, now(), window, {"registers": self.address}))
            self.stopping.wait(self.interval)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.client.close()
        super().close()


def open_source(url: str, source_id: str | None = None) -> Source:
    """Open a source from its string (see the module docstring)."""
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    sid = source_id or url
    if scheme == "synth":
        if path != "line":
            msg = f"unknown synthetic source {path!r}; use synth:line"
            raise SourceError(msg)
        opts = _options(query, {"size": int, "defect_rate": float, "seed": int, "fps": float, "kinds": str})
        return SyntheticSource(sid, url, **opts)
    if scheme == "folder":
        return FolderSource(sid, url, path, **_options(query, {"poll": float, "state_file": str}))
    if scheme in ("camera", "file", "rtsp", "http", "https"):
        opts = _options(query, {"live": int, "loop": int, "backoff": float, "max_backoff": float, "max_retries": int})
        if scheme == "camera":
            if not path.isdigit():
                msg = f"camera index must be a number, got {path!r}"
                raise SourceError(msg)
            target: str | int = int(path)
        else:
            target = path if scheme == "file" else url.split("?")[0]
        live = bool(opts.pop("live", scheme != "file"))
        return VideoSource(sid, url, target, live=live, loop=bool(opts.pop("loop", 0)), **opts)
    if scheme == "mqtt":
        parsed = urllib.parse.urlsplit(url)
        opts = _options(parsed.query, {"window": int, "hop": int, "channels": str, "share": str})
        return MqttSensorSource(
            sid,
            url,
            parsed.hostname or "127.0.0.1",
            parsed.port or 1883,
            parsed.path.lstrip("/"),
            username=urllib.parse.unquote(parsed.username or ""),
            password=urllib.parse.unquote(parsed.password or ""),
            **opts,
        )
    if scheme == "modbus":
        parsed = urllib.parse.urlsplit(url)
        register = parsed.path.lstrip("/")
        if not register.isdigit():
            msg = f"modbus source needs the first register as its path: modbus://host:502/100, got {url!r}"
            raise SourceError(msg)
        opts = _options(
            parsed.query,
            {
                "count": int,
                "unit": int,
                "kind": str,
                "scale": float,
                "interval": float,
                "window": int,
                "hop": int,
                "backoff": float,
                "max_backoff": float,
            },
        )
        return ModbusSource(sid, url, parsed.hostname or "127.0.0.1", parsed.port or 502, int(register), **opts)
    if scheme == "csv":
        opts = _options(query, {"rate": float, "window": int, "hop": int, "loop": int})
        opts["loop"] = bool(opts.get("loop", 0))
        return CsvSensorSource(sid, url, path, **opts)
    msg = f"unknown source {url!r}; use synth:line, folder:, file:, camera:, rtsp://, http://, csv:, mqtt://, modbus://"
    raise SourceError(msg)
