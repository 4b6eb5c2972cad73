"""Real Mosquitto brokers (private, on a free port, restartable) and an MQTT consumer."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def answers_mqtt(port: int, host: str = "127.0.0.1") -> bool:
    """True once the broker's main loop answers a CONNECT with a CONNACK (an open port is not enough)."""
    connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x05\x00\x04ping"  # MQTT 3.1.1, clean session
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(connect)
            return s.recv(4)[:1] == b"\x20"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private Mosquitto on a free port, with persistence, that a test can stop and restart."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 10
        # Until its main loop runs, Mosquitto 2.0 can lose a SIGTERM (CI saw one ignored for 10 s
        # right after start): a test may stop the broker only once it answers.
        while not answers_mqtt(self.port):
            if time.time() > deadline or self.proc.poll() is not None:
                msg = "mosquitto did not start"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # saves the persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                msg = "mosquitto ignored SIGTERM for 10 s (killed: its persistence file was not saved)"
                raise RuntimeError(msg) from None


class Subscriber:
    """A consumer with a persistent session (survives broker restarts with persistence)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.subscribed = threading.Event()  # the broker acknowledged the subscriptions
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        self.subscribed.wait(5)  # messages published from now on reach this consumer

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, message.retain))

    def payloads(self, topic_suffix: str) -> list:
        with self.lock:
            return [p for t, p, _ in self.messages if t.endswith(topic_suffix)]

    def alerts(self) -> list[dict]:
        return [json.loads(p) for p in self.payloads("/alerts")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
