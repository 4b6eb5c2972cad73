"""A TCP proxy a test owns, to cut a real service off (and restore it) without touching it."""

from __future__ import annotations

import socket
import threading

from tests.helpers.broker import free_port


class Proxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and refuses new
    ones until ``restore()``; ``stall()`` keeps the connections open but lets nothing through (a
    link gone silent: a switch rebooting, a cable pulled) until ``restore()``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.open = threading.Event()
        self.open.set()
        self.flowing = threading.Event()
        self.flowing.set()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.flowing.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.connections:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.connections.clear()

    def stall(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.open.set()
        self.flowing.set()

    def close(self) -> None:
        self.cut()
        self.stopping.set()
        self.thread.join(2)
        self.server.close()
