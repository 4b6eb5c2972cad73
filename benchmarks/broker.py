"""A private Mosquitto for a benchmark run (the embedded broker when Mosquitto is not installed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def private_mosquitto() -> Iterator[dict]:
    """The ``mqtt`` settings of a Mosquitto of its own on a free loopback port, stopped on exit;
    ``{}`` (the appliance's embedded broker) without Mosquitto."""
    if not shutil.which("mosquitto"):
        yield {}
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            yield {"host": "127.0.0.1", "port": port}
        finally:
            broker.terminate()
            broker.wait(timeout=10)
