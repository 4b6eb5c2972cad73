"""Sensor sources and the windowing they share.

- ``csv:readings.csv?rate=100&window=64&hop=32``: sensor readings replayed into windows
- ``mqtt://host:port/plant/line/sensors?window=64&hop=32&channels=a,b&share=ingest``: JSON readings
- ``modbus://host:502/100?count=3&unit=1&interval=0.1&window=32``: Modbus TCP registers, polled
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import deque
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


class CsvSensorSource(Source):
    """Replay numeric rows of a CSV (header = channel names) at ``rate`` rows per second into
    windows; rows that are not numbers are counted as errors and skipped."""

    kind = "csv"
    payload = "vector"
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
                values = [float(v) for v in row]
            except ValueError:  # the message would quote the cell: never echo a file's contents
                self._fail(f"line {line}: a cell is not a number")
                continue
            try:
                window = self.windower.push(values)
            except SourceError as exc:
                self._fail(f"line {line}: {exc}")
                continue
            if window is not None:
                return Sample(
                    self.source_id, now(), window, {"channels": self.channels, "line": line, "item": f"line {line}"}
                )
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
        self.broker = (host, port)

    def _start(self) -> None:
        self.client.connect_async(*self.broker, keepalive=30)
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
