"""The spool: inspections (with their alerts' event ids) that the database could not take, kept
in order in a local SQLite file until it can. Bounded; survives a ``kill -9`` (each put is a
committed, fully synchronous transaction). It commits only to its own file, never to the
appliance's database.

An item with an alert also keeps that alert's message: the publisher sends it while the database
is away (an NG part must not wait for the database) and marks it published here, so that writing
the item back does not send it again. Marking and removing exclude each other (the spool's lock),
so an acknowledgement that comes while its item is written back is seen by exactly one side:
:meth:`mark_published` names the items gone already (the publisher records those alerts as
sent), :meth:`remove` remembers the acknowledged alerts of the items it removes. Remembered here
too: outbox messages the broker acknowledged while the database could not record it. The
publisher marks what is remembered sent in the database before it reads the outbox, and never
sends from the outbox an alert this file holds or remembers."""

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
        for column, kind in (
            ("topic", "TEXT"),
            ("payload", "TEXT"),
            ("published", "INTEGER NOT NULL DEFAULT 0"),
            ("event_id", "TEXT"),
        ):
            if column not in columns:  # a spool file written before alerts were published from it
                self._db.execute(f"ALTER TABLE item ADD COLUMN {column} {kind}")
        if "event_id" not in columns:
            self._db.execute("UPDATE item SET event_id = json_extract(data, '$.event_id')")
        self._db.execute("CREATE INDEX IF NOT EXISTS item_event_id ON item (event_id)")
        # alerts the broker acknowledged from the outbox while the database could not record it
        self._db.execute("CREATE TABLE IF NOT EXISTS sent (event_id TEXT PRIMARY KEY)")
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
                    e,
                )
                for (i, t, e), m in zip(kept, messages, strict=False)
            ]
            with self._db:
                self._db.executemany("INSERT INTO item (data, topic, payload, event_id) VALUES (?, ?, ?, ?)", rows)
            self._count += len(kept)
            return refused

    def unpublished(self, n: int, exclude: set[int]) -> list[tuple[int, str, str, str]]:
        """The oldest ``n`` alert messages not yet acknowledged (spool id, topic, payload, event
        id), but those of the items in ``exclude`` (on their way)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, event_id FROM item WHERE payload IS NOT NULL AND published = 0 "
                "ORDER BY id LIMIT ?",
                (n + len(exclude),),
            ).fetchall()
        return [row for row in rows if row[0] not in exclude][:n]

    def mark_published(self, ids: list[int]) -> set[int]:
        """The broker acknowledged these items' alerts; returns the items written back already
        (their alerts' outbox rows are the caller's to mark sent)."""
        with self._lock, self._db:
            marks, padded_ids = self._in(ids)
            here = {row[0] for row in self._db.execute(f"SELECT id FROM item WHERE id IN ({marks})", padded_ids)}
            self._db.executemany("UPDATE item SET published = 1 WHERE id = ?", [(i,) for i in here])
        return set(ids) - here

    def peek(self, n: int) -> tuple[list[tuple[int, Item]], set[int]]:
        """The oldest ``n`` items with their spool ids, and which of them had their alert
        acknowledged."""
        with self._lock:
            rows = self._db.execute("SELECT id, data, published FROM item ORDER BY id LIMIT ?", (n,)).fetchall()
        return [(row_id, _item(data)) for row_id, data, _ in rows], {row[0] for row in rows if row[2]}

    def holding(self, event_ids: set[str]) -> set[str]:
        """Which of these alerts wait here or are known here to have reached the broker: never
        sent from the outbox."""
        if not event_ids:
            return set()
        with self._lock:
            marks, ids = self._in(list(event_ids))
            rows = self._db.execute(
                f"SELECT event_id FROM item WHERE event_id IN ({marks}) "
                f"UNION SELECT event_id FROM sent WHERE event_id IN ({marks})",
                ids + ids,
            ).fetchall()
        return {row[0] for row in rows}

    def remember_sent(self, event_ids: list[str]) -> None:
        """The broker acknowledged these outbox messages while the database could not record it:
        kept here (through a kill) until the database does."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO sent (event_id) VALUES (?)", [(e,) for e in event_ids])

    def remembered(self, n: int) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT event_id FROM sent LIMIT ?", (n,))]

    def forget_sent(self, event_ids: list[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM sent WHERE event_id = ?", [(e,) for e in event_ids])

    def remove(self, ids: list[int]) -> None:
        """Forget these items (written back); the alerts of theirs the broker acknowledged are
        remembered as sent in the same transaction, so that the outbox never sends them."""
        with self._lock, self._db:
            marks, padded_ids = self._in(ids)
            self._db.execute(
                "INSERT OR IGNORE INTO sent (event_id) SELECT event_id FROM item "
                f"WHERE published = 1 AND event_id IS NOT NULL AND id IN ({marks})",
                padded_ids,
            )
            self._db.executemany("DELETE FROM item WHERE id = ?", [(i,) for i in ids])
            self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]

    @staticmethod
    def _in(ids: list) -> tuple[str, list]:
        """An ``IN (…)`` list's marks and values (of a few lengths: see :func:`padded`)."""
        padded_ids = padded(ids) if ids else [-1]
        return ",".join("?" * len(padded_ids)), padded_ids

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _item(data: str) -> Item:
    entry = json.loads(data)
    return Inspection.model_validate(entry["inspection"]), entry["threshold"], entry["event_id"]
