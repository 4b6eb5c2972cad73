"""The embedded MQTT broker (amqtt) for laptops: started on loopback when no broker is configured,
so a subscriber can connect right away. Plants point ``mqtt.host`` at Mosquitto or EMQX instead."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

log = logging.getLogger(__name__)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    if preferred and port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """amqtt in its own thread and event loop, anonymous on 127.0.0.1 only."""

    def __init__(self, port: int = 1883) -> None:
        self.port = pick_port(port)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def _run(self) -> None:
        from amqtt.broker import Broker

        asyncio.set_event_loop(self.loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self.broker = Broker(config, loop=self.loop)
        try:
            self.loop.run_until_complete(self.broker.start())
        except BaseException as exc:  # report to the starting thread, whatever it was
            self.error = exc
            self.started.set()
            return
        self.started.set()
        self.loop.run_forever()

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        for name in ("amqtt", "transitions", "passlib"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.thread.start()
        if not self.started.wait(timeout) or self.error is not None:
            msg = f"the embedded MQTT broker did not start on 127.0.0.1:{self.port}: {self.error}"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        if not self.started.is_set() or self.error is not None:
            return
        future = asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop)
        try:
            future.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
