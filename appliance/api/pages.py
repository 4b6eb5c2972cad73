"""Pages many consoles poll at once, rendered once.

Twenty consoles polling ``/inspections`` and ``/alerts`` ask for the same few pages many times a
second; the line shares the interpreter with the API, so each render is time the line waits. A
page rendered within ``ttl`` seconds is answered as it was, unless a write went through the API
meanwhile (any request that is not GET or HEAD). What the line stores shows within ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class PageCache:
    def __init__(self, ttl: float, max_pages: int = 256) -> None:
        self.ttl, self.max_pages = ttl, max_pages
        self.generation = 0
        self._pages: dict[Hashable, tuple[float, int, bytes]] = {}
        self._lock = threading.Lock()

    def bump(self) -> None:
        """A write: pages rendered before it are not answered again."""
        with self._lock:
            self.generation += 1

    def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The page ``key``, rendered by ``render`` unless a fresh one is kept."""
        if self.ttl <= 0:
            return render()
        now = time.monotonic()
        with self._lock:
            generation = self.generation
            hit = self._pages.get(key)
        if hit is not None and hit[0] > now and hit[1] == generation:
            return hit[2]
        body = render()
        with self._lock:
            if len(self._pages) >= self.max_pages:  # bounded: keys come from query strings
                self._pages.clear()
            self._pages[key] = (now + self.ttl, generation, body)
        return body
