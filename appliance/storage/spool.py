"""The spool: inspections (with their alerts' event ids) that the database could not take, kept
in order in a local SQLite file until it can. Bounded; survives a ``kill -9`` (each put is a
committed, fully synchronous transaction). It commits only to its own file, never to the
appliance's database."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from appliance.storage.models import Inspection

Item = tuple[Inspection, float, str | None]  # (inspection, the T2 that decided it, its alert's event id)


class Spool:
    def __init__(self, path: Path, max_items: int = 200_000) -> None:
        self.path, self.max_items = Path(path), max_items
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL)")
        self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def put(self, items: list[Item]) -> list[Item]:
        """Keep what fits, in order; returns the items that did not fit (the spool is full)."""
        with self._lock:
            room = max(0, self.max_items - self._count)
            kept, refused = items[:room], items[room:]
            rows = [
                (json.dumps({"inspection": i.model_dump(mode="json", exclude={"id"}), "threshold": t, "event_id": e}),)
                for i, t, e in kept
            ]
            with self._db:
                self._db.executemany("INSERT INTO item (data) VALUES (?)", rows)
            self._count += len(kept)
            return refused

    def peek(self, n: int) -> list[tuple[int, Item]]:
        """The oldest ``n`` items with their spool ids."""
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM item ORDER BY id LIMIT ?", (n,)).fetchall()
        out = []
        for row_id, data in rows:
            entry = json.loads(data)
            out.append(
                (row_id, (Inspection.model_validate(entry["inspection"]), entry["threshold"], entry["event_id"]))
            )
        return out

    def remove(self, ids: list[int]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM item WHERE id = ?", [(i,) for i in ids])
            self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
