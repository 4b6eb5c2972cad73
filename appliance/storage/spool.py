"""The spool: inspections (with their alerts' event ids) that the database could not take, kept
in order in a local SQLite file until it can. Bounded; survives a ``kill -9`` (each put is a
committed, fully synchronous transaction). It commits only to its own file, never to the
appliance's database.

An item with an alert also keeps that alert's message: the publisher sends it while the database
is away (an NG part must not wait for the database) and marks it published here, so that writing
the item back does not send it again. So that no alert goes out twice, an item is never written
back while its alert is on its way to the broker, nor sent while it is being written back, and
the outbox never sends an alert an item here holds. Outbox messages the broker acknowledged while
the database could not record it are remembered here too, and marked sent when it can."""

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
        # claims, so that no alert goes out twice from one process: items whose alert the
        # publisher has sent and the broker not yet acknowledged, and items being written back
        self._sending: set[int] = set()
        self._writing: set[int] = set()

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

    def peek(self, n: int) -> list[tuple[int, Item]]:
        """The oldest ``n`` items with their spool ids."""
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM item ORDER BY id LIMIT ?", (n,)).fetchall()
        return [(row_id, _item(data)) for row_id, data in rows]

    def claim_unpublished(self, n: int) -> list[tuple[int, str, str]]:
        """The oldest ``n`` alert messages to send (spool id, topic, payload): not acknowledged,
        not on their way already, not being written back. They stay claimed until
        ``mark_published`` or ``release``."""
        with self._lock:
            busy = self._sending | self._writing
            rows = self._db.execute(
                "SELECT id, topic, payload FROM item WHERE payload IS NOT NULL AND published = 0 ORDER BY id LIMIT ?",
                (n + len(busy),),
            ).fetchall()
            rows = [row for row in rows if row[0] not in busy][:n]
            self._sending.update(row[0] for row in rows)
            return rows

    def mark_published(self, ids: list[int]) -> None:
        """The broker acknowledged these items' alerts."""
        with self._lock, self._db:
            self._db.executemany("UPDATE item SET published = 1 WHERE id = ?", [(i,) for i in ids])
            self._sending.difference_update(ids)

    def claim_settled(self, n: int) -> tuple[list[tuple[int, Item]], set[int]]:
        """The oldest items, up to ``n``, to write back, and which of them had their alert
        acknowledged. It stops before an item whose alert is on its way to the broker (written
        back now, it would be sent again from the outbox); they stay claimed until ``remove``
        or ``release``."""
        with self._lock:
            rows = self._db.execute("SELECT id, data, published FROM item ORDER BY id LIMIT ?", (n,)).fetchall()
            settled = []
            for row in rows:
                if row[0] in self._sending:
                    break
                settled.append(row)
            self._writing.update(row[0] for row in settled)
        return [(row_id, _item(data)) for row_id, data, _ in settled], {row[0] for row in settled if row[2]}

    def release(self, ids: list[int]) -> None:
        """Give up claims: alerts that did not reach the broker, items not written back."""
        with self._lock:
            self._sending.difference_update(ids)
            self._writing.difference_update(ids)

    def holding(self, event_ids: set[str]) -> set[str]:
        """Which of these alerts wait here (sent from the spool, never from the outbox)."""
        if not event_ids:
            return set()
        with self._lock:
            ids = padded(list(event_ids))
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(f"SELECT event_id FROM item WHERE event_id IN ({marks})", ids).fetchall()
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
        with self._lock, self._db:
            self._db.executemany("DELETE FROM item WHERE id = ?", [(i,) for i in ids])
            self._count = self._db.execute("SELECT count(*) FROM item").fetchone()[0]
            self._writing.difference_update(ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _item(data: str) -> Item:
    entry = json.loads(data)
    return Inspection.model_validate(entry["inspection"]), entry["threshold"], entry["event_id"]
