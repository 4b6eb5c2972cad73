"""The spool: inspections (with their alerts' event ids) that the database could not take, kept
in order in a local SQLite file until it can. Bounded; survives a ``kill -9`` (each put is a
committed, fully synchronous transaction). It commits only to its own file, never to the
appliance's database.

An item with an alert also keeps that alert's message: the publisher sends it while the database
is away (an NG part must not wait for the database) and marks it published here, so that writing
the item back does not send it again."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from appliance.storage.db import padded
from appliance.storage.models import Inspection

Item = tuple[Inspection, float, str | None]  # (inspection, the T2 that decided it, its alert's event id)
Message = tuple[str, str]  # (topic, payload) of an item's alert


class Spool:
    def __init__(self, path: Path, max_items: int = 200_000) -> None:
        self.path, self.max_items = Path(path), max_items
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(item)")}
        for column, kind in (("topic", "TEXT"), ("payload", "TEXT"), ("published", "INTEGER NOT NULL DEFAULT 0")):
            if column not in columns:  # a spool file written before alerts were published from it
                self._db.execute(f"ALTER TABLE item ADD COLUMN {column} {kind}")
        self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def put(self, items: list[Item], messages: list[Message | None] | None = None) -> list[Item]:
        """Keep what fits, in order, each with its alert's message if it has one; returns the
        items that did not fit (the spool is full)."""
        messages = messages or [None] * len(items)
        with self._lock:
            room = max(0, self.max_items - self._count)
            kept, refused = items[:room], items[room:]
            rows = [
                (
                    json.dumps(
                        {"inspection": i.model_dump(mode="json", exclude={"id"}), "threshold": t, "event_id": e}
                    ),
                    *(m or (None, None)),
                )
                for (i, t, e), m in zip(kept, messages, strict=False)
            ]
            with self._db:
                self._db.executemany("INSERT INTO item (data, topic, payload) VALUES (?, ?, ?)", rows)
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

    def unpublished(self, n: int, exclude: set[int]) -> list[tuple[int, str, str]]:
        """The oldest ``n`` alert messages not yet published (spool id, topic, payload)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM item WHERE payload IS NOT NULL AND published = 0 ORDER BY id LIMIT ?",
                (n + len(exclude),),
            ).fetchall()
        return [row for row in rows if row[0] not in exclude][:n]

    def mark_published(self, ids: list[int]) -> None:
        """The broker acknowledged these items' alerts (items written back already are gone: no-op)."""
        with self._lock, self._db:
            self._db.executemany("UPDATE item SET published = 1 WHERE id = ?", [(i,) for i in ids])

    def published(self, ids: list[int]) -> set[int]:
        """Which of these items' alerts the broker has acknowledged."""
        if not ids:
            return set()
        with self._lock:
            ids = padded(ids)
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(f"SELECT id FROM item WHERE published = 1 AND id IN ({marks})", ids).fetchall()
        return {row[0] for row in rows}

    def remove(self, ids: list[int]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM item WHERE id = ?", [(i,) for i in ids])
            self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
