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
    entries = spool.peek(100)
    assert len(spool) == 50 and [item[0].score for _, item in entries] == list(range(50))
    assert [item[2] for _, item in entries][:6] == ["event-0", None, None, None, None, "event-5"]
    spool.remove([row_id for row_id, _ in entries[:10]])
    assert len(spool) == 40 and spool.peek(1)[0][1][0].score == 10


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


def test_spooled_alerts_are_offered_once_and_an_old_spool_file_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a spool file as written before alerts were sent from it
        db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL)")
    spool = Spool(path)
    now = dt.datetime.now(dt.UTC)
    items = [
        (
            Inspection(
                source_id="s",
                t_capture=now,
                score=n,
                norm_score=0,
                decision="ng" if n % 2 else "ok",
                model_version="v",
                latency_ms=1,
            ),
            1.0,
            f"e{n}" if n % 2 else None,
        )
        for n in range(6)
    ]
    spool.put(items, [("t/alerts", f'{{"event_id": "e{n}"}}') if n % 2 else None for n in range(6)])
    offered = spool.unpublished(10, exclude=set())
    assert [payload for _, _, payload in offered] == ['{"event_id": "e1"}', '{"event_id": "e3"}', '{"event_id": "e5"}']
    first = offered[0][0]
    assert [row for row, _, _ in spool.unpublished(10, exclude={first})] == [r for r, _, _ in offered[1:]]
    spool.mark_published([first])
    assert spool.published([row for row, _ in spool.peek(10)]) == {first}
    assert len(spool.unpublished(10, exclude=set())) == 2 and spool.published([]) == set()
    spool.close()
    assert Spool(path).published([first]) == {first}  # kept on disk


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
    pipeline.spool.mark_published([row for row, _, _ in pipeline.spool.unpublished(10, exclude=set())])  # sent
    pipeline.spool.put(batch(6, 4))  # then the outage went on
    assert pipeline.drain_spool() == 10 and len(pipeline.spool) == 0
    with Session(engine) as session:
        scores = sorted(i.score for i in session.exec(select(Inspection)).all())
        unsent = {m.event_id for m in session.exec(select(OutboxMessage)) if m.sent_at is None}
    assert scores == list(range(10))  # each frame once
    assert unsent == {"event-8"}  # event-0 and event-4 went out from the spool: not sent again
