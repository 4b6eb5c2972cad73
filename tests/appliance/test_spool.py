"""The spool keeps what the database could not take: in order, bounded, through a kill -9."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

from appliance.storage.models import Inspection
from appliance.storage.spool import Spool

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import datetime as dt, sys, time
from appliance.storage.models import Inspection
from appliance.storage.spool import Spool
spool = Spool(sys.argv[1])
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
for n in range(50):
    i = Inspection(source_id="s", t_capture=t0 + dt.timedelta(seconds=n), score=n, norm_score=0.1,
                   decision="ng" if n % 5 == 0 else "ok", model_version="v", latency_ms=1.0)
    spool.put([(i, 0.5, f"event-{n}" if n % 5 == 0 else None)])
print("written", flush=True)
time.sleep(60)
"""


def test_spooled_items_survive_a_kill_and_come_back_in_order(tmp_path):
    path = tmp_path / "spool.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "written"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    spool = Spool(path)
    entries, _ = spool.peek(100)
    assert len(spool) == 50 and [item[0].score for _, item in entries] == list(range(50))
    assert [item[2] for _, item in entries][:6] == ["event-0", None, None, None, None, "event-5"]
    spool.remove([row_id for row_id, _ in entries[:10]])
    assert len(spool) == 40 and spool.peek(1)[0][0][1][0].score == 10


def test_a_full_spool_gives_back_what_did_not_fit(tmp_path):
    spool = Spool(tmp_path / "s.db", max_items=3)
    now = dt.datetime.now(dt.UTC)
    items = [
        (
            Inspection(
                source_id="s", t_capture=now, score=n, norm_score=0, decision="ok", model_version="v", latency_ms=1
            ),
            1.0,
            None,
        )
        for n in range(5)
    ]
    refused = spool.put(items)
    assert len(spool) == 3 and [i.score for i, _, _ in refused] == [3, 4]


def inspections(n: int, alert_every: int = 2) -> list:
    now = dt.datetime.now(dt.UTC)
    return [
        (
            Inspection(
                source_id="s",
                t_capture=now + dt.timedelta(milliseconds=k),
                score=k,
                norm_score=0,
                decision="ng" if k % alert_every == alert_every - 1 else "ok",
                model_version="v",
                latency_ms=1,
            ),
            1.0,
            f"e{k}" if k % alert_every == alert_every - 1 else None,
        )
        for k in range(n)
    ]


def messages(items: list) -> list:
    return [("t/alerts", f'{{"event_id": "{e}"}}') if e else None for _, _, e in items]


def test_spooled_alerts_are_offered_until_acknowledged_and_an_old_spool_file_is_upgraded(tmp_path):
    import json
    import sqlite3

    path = tmp_path / "old.db"
    (old, _, _), *_ = inspections(1)
    with sqlite3.connect(path) as db:  # a spool file as written before alerts were sent from it
        db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL)")
        entry = {"inspection": old.model_dump(mode="json", exclude={"id"}), "threshold": 1.0, "event_id": "e-old"}
        db.execute("INSERT INTO item (data) VALUES (?)", (json.dumps(entry),))
    spool = Spool(path)
    assert spool.holding({"e-old", "e-other"}) == {"e-old"}  # its event ids found for the outbox
    items = inspections(6)
    spool.put(items, messages(items))
    offered = spool.unpublished(10, exclude=set())
    assert [(payload, event) for _, _, payload, event in offered] == [
        ('{"event_id": "e1"}', "e1"),
        ('{"event_id": "e3"}', "e3"),
        ('{"event_id": "e5"}', "e5"),
    ]
    first = offered[0][0]
    assert [row for row, *_ in spool.unpublished(10, exclude={first})] == [r for r, *_ in offered[1:]]
    assert spool.mark_published([first]) == set()  # still here
    assert spool.peek(10)[1] == {first}
    assert len(spool.unpublished(10, exclude=set())) == 2
    spool.close()
    assert Spool(path).peek(10)[1] == {first}  # kept on disk


def test_an_acknowledgement_during_a_write_back_is_seen_by_exactly_one_side(tmp_path):
    """The publisher marks alerts acknowledged while the write-back reads, stores and removes
    items: whichever comes second sees to it that the alert's outbox row is marked sent."""
    spool = Spool(tmp_path / "s.db")
    items = inspections(4, alert_every=1)
    spool.put(items, messages(items))
    rows = [row for row, *_ in spool.unpublished(10, exclude=set())]
    entries, published = spool.peek(10)  # the write-back reads: nothing acknowledged yet
    assert published == set() and [row for row, _ in entries] == rows
    assert spool.mark_published(rows[:2]) == set()  # acknowledged while the rows are written back
    spool.remove(rows[:3])  # the write-back removes three: two of them were acknowledged meanwhile
    assert sorted(spool.remembered(10)) == ["e0", "e1"]  # remembered as sent by the removal
    assert spool.mark_published(rows[2:]) == {rows[2]}  # acknowledged after its removal: the publisher's to record
    assert len(spool) == 1 and spool.peek(10)[1] == {rows[3]}
    assert spool.holding({"e0", "e1", "e2", "e3"}) == {"e0", "e1", "e3"}  # the outbox sends none of these


def test_acknowledgements_the_database_could_not_record_survive_a_restart(tmp_path):
    spool = Spool(tmp_path / "s.db")
    spool.remember_sent(["a", "b"])
    spool.remember_sent(["b"])
    spool.close()
    spool = Spool(tmp_path / "s.db")
    assert sorted(spool.remembered(10)) == ["a", "b"]
    spool.forget_sent(["a"])
    assert spool.remembered(10) == ["b"]


def test_a_batch_stored_although_its_commit_answer_was_lost_is_not_stored_twice(db_url, tmp_path):
    """The cut can fall between the database's commit and its answer: the line then spools a batch
    the database holds already. Written back, it must not be stored again (OK items have no event
    id to betray the replay; their capture time within their source does)."""
    from sqlmodel import Session, select

    from appliance.alerts.schema import Topics
    from appliance.images import ImageStore
    from appliance.pipeline import Pipeline
    from appliance.recipes import Recipes
    from appliance.storage.db import init_db, make_engine
    from appliance.storage.models import OutboxMessage

    engine = make_engine(db_url)
    init_db(engine)
    pipeline = Pipeline(engine, Recipes(engine, tmp_path / "models"), Topics(), ImageStore(tmp_path / "img"))
    pipeline.spool = Spool(tmp_path / "spool.db")
    t0 = dt.datetime.now(dt.UTC)

    def batch(first: int, n: int) -> list:
        return [
            (
                Inspection(
                    source_id="s",
                    t_capture=t0 + dt.timedelta(milliseconds=k),
                    score=k,
                    norm_score=0.1,
                    decision="ng" if k % 4 == 0 else "ok",
                    model_version="v",
                    latency_ms=1,
                ),
                0.5,
                f"event-{k}" if k % 4 == 0 else None,
            )
            for k in range(first, first + n)
        ]

    lost_answer = batch(0, 6)
    pipeline._record(lost_answer)  # committed, but the caller saw an error ...
    pipeline.spool.put(batch(0, 6), [("t", "{}") if k % 4 == 0 else None for k in range(6)])  # ... and spooled it
    pipeline.spool.mark_published([row for row, *_ in pipeline.spool.unpublished(10, exclude=set())])  # sent
    pipeline.spool.put(batch(6, 4))  # then the outage went on
    assert pipeline.drain_spool() == 10 and len(pipeline.spool) == 0
    with Session(engine) as session:
        scores = sorted(i.score for i in session.exec(select(Inspection)).all())
        unsent = {m.event_id for m in session.exec(select(OutboxMessage)) if m.sent_at is None}
    assert scores == list(range(10))  # each frame once
    assert unsent == {"event-8"}  # event-0 and event-4 went out from the spool: not sent again
