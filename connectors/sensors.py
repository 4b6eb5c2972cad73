"""Sensor sources and the windowing they share.

- ``csv:readings.csv?rate=100&window=64&hop=32``: sensor readings replayed into windows
- ``mqtt://host:port/plant/line/sensors?window=64&hop=32&channels=a,b&share=ingest``: JSON readings
- ``modbus://host:502/100?count=3&unit=1&interval=0.1&window=32``: Modbus TCP registers, polled

Readings CSVs (the ``csv:`` source, and ``appliance detector fit --normal`` / ``test`` / ``predict``)
are read as data loggers, PLC and SCADA exports and spreadsheets write them (:func:`open_readings`).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from connectors.base import Backoff, Sample, Source, SourceError, now


class Windower:
    """Assemble readings (one value per channel) into (channels, length) windows every ``hop``."""

    def __init__(self, channels: int, length: int, hop: int) -> None:
        if channels < 1 or length < 1 or not 1 <= hop <= length:
            msg = f"window needs channels >= 1, length >= 1 and 1 <= hop <= length; got {channels}, {length}, {hop}"
            raise SourceError(msg)
        self.channels, self.length, self.hop = channels, length, hop
        self.buffer: deque[np.ndarray] = deque(maxlen=length)
        self.since = 0
        self.pushed = 0  # readings so far: the newest reading's number names the window

    def push(self, reading: Any) -> np.ndarray | None:
        values = np.asarray(reading, dtype=np.float32).reshape(-1)
        if values.size != self.channels:
            msg = f"reading has {values.size} values, the window expects {self.channels} channels"
            raise SourceError(msg)
        self.buffer.append(values)
        self.since += 1
        self.pushed += 1
        if len(self.buffer) == self.length and (self.since >= self.hop or len(self.buffer) == self.since):
            self.since = 0
            return np.stack(self.buffer, axis=1)
        return None


# -- readings CSVs as plants write them: data loggers, PLC and SCADA exports, spreadsheets --------
SEPARATORS = (",", ";", "\t", "|")
LABEL_COLUMNS = ("label", "anomaly")
TIME_COLUMNS = {
    "time",
    "timestamp",
    "time stamp",
    "date",
    "datetime",
    "date time",
    "zeit",
    "zeitstempel",
    "datum",
    "uhrzeit",
    "時刻",
    "日時",
    "時間",
}
# a row's number or name, never a measurement: a new part's serial lies outside every fitted one
INDEX_COLUMNS = {"", "#", "id", "index", "row", "unnamed: 0"}
# a date (2026-12-01, 01.12.2026, 12/01/2026) with an optional time, or a time alone (08:00:01.5)
_DATE_TIME = re.compile(
    r"^\s*(\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]+\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?)?|\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?)"
)
_SNIFF_ROWS = 20


class ReadingsFileError(SourceError):
    """A readings CSV cannot be read (named with its line and column, never a cell's contents)."""


def decode(data: bytes) -> str:
    """The file's text: UTF-16 or UTF-8 by their byte-order marks, UTF-8, else Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _base_name(header: str) -> str:
    """``Time [s]`` → ``time``: a header's name without its unit, lower case."""
    return re.sub(r"\s*[\[(].*$", "", header).strip().lower().replace("_", " ")


def _separator(lines: Sequence[str]) -> str:
    """The separator that splits the header into several cells and the first rows into as many,
    the most cells where several do; for one column, a comma in its rows is a decimal mark."""
    header, rows = lines[0], lines[1 : _SNIFF_ROWS + 1]
    best, best_key = None, (0.0, 0)
    for sep in SEPARATORS:
        width = len(next(csv.reader([header], delimiter=sep)))
        agree = sum(len(row) == width for row in csv.reader(rows, delimiter=sep)) / max(len(rows), 1)
        if width > 1 and (agree, width) > best_key:
            best, best_key = sep, (agree, width)
    if best is None:  # one column
        return ";" if any("," in row for row in rows) else ","
    return best


def _number(cell: str, decimal_comma: bool) -> float:
    if decimal_comma:  # points and spaces group thousands: 1.234,5 and 1 234,5
        cell = cell.replace(".", "").replace(" ", "").replace("\xa0", "").replace("\u202f", "").replace(",", ".")
    return float(cell)


@dataclass
class ReadingsFile:
    """A readings CSV's layout and its rows (line number, cells), not yet read as numbers."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]
    separator: str = ","
    decimal_comma: bool = False
    time_col: int | None = None
    label_col: int | None = None
    index_cols: list[int] = field(default_factory=list)
    channel_cols: list[int] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return [self.header[i] for i in self.channel_cols]

    @property
    def time_column(self) -> str | None:
        return None if self.time_col is None else self.header[self.time_col]

    def describe(self) -> str:
        """What was read, for a log: the separator, the decimal mark, the columns that are not channels."""
        names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}
        parts = [f"{names[self.separator]}-separated"] + (["decimal comma"] if self.decimal_comma else [])
        if self.time_col is not None:
            parts.append(f"time column {self.time_column!r}")
        if self.label_col is not None:
            parts.append(f"label column {self.header[self.label_col]!r}")
        parts += [f"index column {self.header[i]!r}" for i in self.index_cols]
        return ", ".join(parts)

    def values(self, line: int, cells: Sequence[str]) -> list[float]:
        """One row's channel values; a row of the wrong width or a cell that is not a finite number
        is refused naming its line and column."""
        if len(cells) != len(self.header):
            msg = f"{self.path}: line {line} has {len(cells)} cells, the header {len(self.header)}"
            raise ReadingsFileError(msg)
        out = []
        for i in self.channel_cols:
            if not cells[i].strip():
                msg = f"{self.path}: line {line}, column {self.header[i]!r} is empty"
                raise ReadingsFileError(msg)
            try:
                value = _number(cells[i], self.decimal_comma)
            except ValueError:  # the message would quote the cell: never echo a file's contents
                msg = f"{self.path}: line {line}, column {self.header[i]!r} is not a number"
                raise ReadingsFileError(msg) from None
            if not math.isfinite(value):
                msg = f"{self.path}: line {line}, column {self.header[i]!r} holds NaN or an infinite value"
                raise ReadingsFileError(msg)
            out.append(value)
        return out

    def time(self, cells: Sequence[str]) -> str | None:
        return cells[self.time_col].strip() if self.time_col is not None and self.time_col < len(cells) else None

    def label(self, cells: Sequence[str]) -> str | None:
        return cells[self.label_col].strip().lower() if self.label_col is not None else None

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row read (N, channels) float32, and each row's line in the file; the first row
        that cannot be read is refused."""
        data, kept, problems = self.readable()
        if problems:
            msg = f"{self.path}: {problems[0]}"
            raise ReadingsFileError(msg)
        return data, np.array([self.rows[i][0] for i in kept])

    def readable(self) -> tuple[np.ndarray, list[int], list[str]]:
        """The rows that can be read (N, channels) float32, their indices in :attr:`rows`, and
        what is wrong with each row left out, in file order (a logger's dropouts: empty cells,
        ``#N/A``, ``ERR``)."""
        values, kept, problems = [], [], []
        for i, (line, cells) in enumerate(self.rows):
            try:
                values.append(self.values(line, cells))
            except ReadingsFileError as exc:
                problems.append(str(exc).removeprefix(f"{self.path}: "))
                continue
            kept.append(i)
        return np.asarray(values, np.float32).reshape(len(kept), len(self.channel_cols)), kept, problems


def open_readings(path: str | Path, channels: Iterable[str] = ()) -> ReadingsFile:
    """Read a readings CSV's layout. ``channels``: names that are channels whatever they look like
    (a model fitted on a file whose clock was read as a channel keeps it).

    One reading per row under a header that names the columns. What differs between the tools that
    write them is read here rather than refused:

    - the separator: comma, semicolon (spreadsheets where the comma is the decimal mark), tab or ``|``,
      found as the one that splits the header into several cells and the first rows into as many;
    - the decimal mark: a comma, where the separator is not one and a reading holds one (``20,013``);
      in such a file points and spaces group thousands (``1.234,5``, ``1.481``);
    - the encoding: UTF-8 with or without a byte-order mark (spreadsheets write one), UTF-16 with one
      (a spreadsheet's "Unicode text"), else Windows-1252 (``°C`` and ``µm`` in older loggers' headers);
    - a **time column**: one named ``time``, ``timestamp``, ``date``, ``datetime`` (with or without a
      unit, ``Time [s]``; ``Zeit``, ``Zeitstempel``, ``時刻``, ``日時`` too), or a first column of dates
      and times. Its cells are kept as written, to name the readings, and never read as a channel:
      a clock as a channel would make every new window unlike the ones a model was fitted on;
    - a **label column** (``label`` or ``anomaly``): what a test file says of each row, not a channel;
    - **index columns** (``id``, ``index``, ``#``, ``row``, or no name: a spreadsheet's or pandas'
      row numbers): a row's number or name, not a channel;
    - blank lines are skipped (line numbers stay the file's).

    A cell that is not a finite number is refused with its line and column, never its contents.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such readings file"
        raise ReadingsFileError(msg)
    numbered = [(i, line) for i, line in enumerate(decode(path.read_bytes()).splitlines(), start=1) if line.strip()]
    if len(numbered) < 2:
        msg = f"{path}: needs a header row and readings"
        raise ReadingsFileError(msg)
    sep = _separator([line for _, line in numbered])
    rows = [(n, next(csv.reader([line], delimiter=sep))) for n, line in numbered]  # a line is a row
    header = [h.strip() for h in rows[0][1]]
    rows = rows[1:]
    keep = set(channels)
    label_col = next((i for i, h in enumerate(header) if h.lower() in LABEL_COLUMNS and h not in keep), None)
    time_col = next((i for i, h in enumerate(header) if _base_name(h) in TIME_COLUMNS and h not in keep), None)
    first = rows[0][1]
    if time_col is None and header[0] not in keep and first and _DATE_TIME.match(first[0]) and not _is_number(first[0]):
        time_col = 0
    index_cols = [i for i, h in enumerate(header) if _base_name(h) in INDEX_COLUMNS and h not in keep]
    channel_cols = [i for i in range(len(header)) if i not in (time_col, label_col, *index_cols)]
    if not channel_cols:
        msg = f"{path}: no column of readings (the header names {len(header)} columns, none a channel)"
        raise ReadingsFileError(msg)
    cells = (cells[i] for _, cells in rows for i in channel_cols if i < len(cells))
    decimal_comma = sep != "," and any("," in cell for cell in cells)
    return ReadingsFile(path, header, rows, sep, decimal_comma, time_col, label_col, index_cols, channel_cols)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


class CsvSensorSource(Source):
    """Replay the rows of a readings CSV (:func:`open_readings`: header = channel names; a
    time or label column is not a channel) at ``rate`` rows per second into windows; a window is
    named by its last row's line and time. Rows that cannot be read are counted as errors and
    skipped."""

    kind = "csv"
    payload = "vector"
    backpressure = True

    def __init__(
        self, source_id: str, url: str, path: str, rate: float = 0.0, window: int = 64, hop: int = 0, loop: bool = False
    ) -> None:
        super().__init__(source_id, url)
        self.file = open_readings(path)  # a SourceError names what cannot be read
        self.channels = self.file.channels
        self.rows = self.file.rows
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
            line, cells = self.rows[self.position]
            self.position += 1
            if self.period:
                time.sleep(self.period)
            try:
                window = self.windower.push(self.file.values(line, cells))
            except SourceError as exc:  # names the line and column, never the cell
                self._fail(str(exc).removeprefix(f"{self.file.path}: "))
                continue
            if window is not None:
                stamp = self.file.time(cells)
                item = f"line {line}" + (f" ({stamp})" if stamp else "")
                meta = {"channels": self.channels, "line": line, "item": item}
                return Sample(self.source_id, now(), window, meta | ({"time": stamp} if stamp else {}))
        return None


class QueuedSource(Source):
    """A source fed by a background thread or callback: windows wait in a bounded queue."""

    payload = "vector"

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
        self.names = [c for c in channels.split(",") if c]  # the channels' order (else the first reading's keys)
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
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(0.2, 10)
        self.broker = (host, port)

    @property
    def channels(self) -> list[str]:
        """The channel names, as given or as the first reading named them (empty before it)."""
        return list(self.names)

    def _start(self) -> None:
        self.client.connect_async(*self.broker, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._fail(f"broker refused the connection: {reason_code}")
            return
        client.subscribe(self.topic, qos=1)  # online when the broker has acknowledged it (_on_subscribe)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """Online only once the subscription holds: a reading published before the broker took it
        would be lost while the source already said it was listening."""
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self._fail(f"broker refused the subscription to {self.topic}: {failed[0]}")
            return
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
            self._push(
                Sample(
                    self.source_id,
                    stamp,
                    window,
                    {"channels": list(self.names), "item": f"reading {self.windower.pushed}"},
                )
            )

    def close(self) -> None:
        super().close()
        if self.started:
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
        self.interval, self.backoff = interval, Backoff(backoff, max_backoff)
        self.windower = Windower(count, window, hop or window)
        self._setup_queue()
        self.stopping = threading.Event()
        self.state = "reconnecting"
        self.thread = threading.Thread(target=self._run, name=f"modbus-{source_id}", daemon=True)

    @property
    def channels(self) -> list[str]:
        """A channel per register, named by its address."""
        return [f"register {self.address + i}" for i in range(self.count)]

    def _start(self) -> None:
        self.thread.start()

    def _poll(self) -> list[float]:
        read = self.client.read_holding_registers if self.kind == "holding" else self.client.read_input_registers
        response = read(self.address, count=self.count, device_id=self.unit)
        if response.isError():
            msg = f"device answered {response}"
            raise ConnectionError(msg)
        return [v * self.scale for v in response.registers]

    def _run(self) -> None:
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
                self.stopping.wait(self.backoff.next())
                continue
            self.state = "online"
            self.backoff.reset()
            window = self.windower.push(values)
            if window is not None:
                self._push(
                    Sample(
                        self.source_id,
                        now(),
                        window,
                        {"registers": self.address, "item": f"poll {self.windower.pushed}"},
                    )
                )
            self.stopping.wait(self.interval)

    def close(self) -> None:
        self.stopping.set()
        if self.thread.ident is not None:
            self.thread.join(5)
        self.client.close()
        super().close()
