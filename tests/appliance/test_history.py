"""History: raw rows roll up into hourly aggregates that answer the threshold preview and the score
histograms as the raw rows did; retention deletes raw rows in bounded memory and keeps every alert."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest
from sqlmodel import Session, col, func, select

from appliance import thresholds
from appliance.alerts.schema import Topics, alert_message
from appliance.images import ImageStore
from appliance.retention import retain
from appliance.storage import history, store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Alert, Inspection, InspectionHour, utcnow
from models.decision import Thresholds, decide

LINE = Thresholds(0.45, 0.6)  # what the line decided with
EDGE = history.Histogram.edge


def on_edges(t1: float, t2: float) -> Thresholds:
    """Candidate thresholds on bin edges: the aggregates decide them exactly as the raw scores."""
    return Thresholds(float(EDGE(history.Histogram.bins(t1))), float(EDGE(history.Histogram.bins(t2))))


def fill(engine, *, hours: int, per_hour: int, sources=("a", "b"), seed=0, images=None, end=None) -> int:
    """``per_hour`` inspections per source in each of the ``hours`` complete hours before ``end``,
    stored through the pipeline's own call (flagged ones with their alerts and outbox messages)."""
    rng = np.random.default_rng(seed)
    end = history.floor_hour(end or utcnow())
    n = 0
    for h in range(hours, 0, -1):
        start = end - dt.timedelta(hours=h)
        batch = []
        for sid in sources:
            for i in range(per_hour):
                score = float(rng.gamma(2.0, 0.12))
                decision = decide(score, LINE)
                ref = None
                if images is not None and (decision != "ok" or i % 10 == 0):
                    ref = images.put(rng.integers(0, 255, (16, 16), dtype=np.uint8))
                inspection = Inspection(
                    source_id=sid,
                    t_capture=start + dt.timedelta(seconds=3600 * i / per_hour),
                    score=score,
                    norm_score=score / LINE.t2,
                    decision=decision,
                    model_version="m1",
                    latency_ms=float(rng.lognormal(2.0, 0.3)),
                    image_ref=ref,
                )
                batch.append((inspection, LINE.crossed(decision), None))
        store.record_inspections(
            engine, inspections=batch, alert_topic="t", build_message=lambda a, i: alert_message(a, i, Topics())
        )
        n += len(batch)
    return n


def count(engine, table, *where) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table).where(*where)).one()


def test_preview_and_scores_from_aggregates_equal_the_raw_replay(db_url, tmp_path):
    engine, images = make_engine(db_url), ImageStore(tmp_path / "images")
    init_db(engine)
    total = fill(engine, hours=6, per_hour=300, images=images)
    with Session(engine) as session:  # an operator judged some alerts
        alerts = session.exec(select(Alert).order_by(Alert.id).limit(40)).all()
        for i, alert in enumerate(alerts):
            alert.state = "confirmed" if i % 2 else "false_positive"
            session.add(alert)
        session.commit()
    candidate = on_edges(0.5, 0.7)
    scope = {"source_id": "a", "model_version": "m1"}
    raw = thresholds.preview(engine, thresholds=candidate, hours=8)
    raw_a = thresholds.preview(engine, thresholds=candidate, hours=8, scope=scope)
    raw_sets = thresholds.score_sets(engine, hours=8, limit=100_000, scope=scope)
    assert raw["replayed"] and raw["inspections"] == total

    n_ok, n_alerts = count(engine, Inspection, col(Inspection.decision) == "ok"), count(engine, Alert)
    # a day on: PostgreSQL drops a day's OK rows with their partition once the whole day is past the window
    later = utcnow() + dt.timedelta(days=1)
    report = retain(
        engine, images, raw_window=dt.timedelta(0), max_age=dt.timedelta(days=30), max_bytes=10**12, now=later
    )
    assert report.rows_rolled_up == total
    # every raw row without an alert is gone; every alert keeps its inspection
    assert report.rows_deleted == n_ok == total - n_alerts
    assert count(engine, Inspection) == n_alerts

    for before, scope_ in ((raw, {}), (raw_a, scope)):
        after = thresholds.preview(engine, thresholds=candidate, hours=8, scope=scope_)
        assert not after["replayed"]
        for key in ("inspections", "confirmed_defects", "missed_confirmed_defects"):
            assert after[key] == before[key], key
        for key in ("alerts_per_hour", "ng_per_hour", "review_per_hour"):
            assert after[key] == pytest.approx(before[key], rel=1e-3), key
    sets = thresholds.score_sets(engine, hours=8, limit=100_000, scope=scope)
    assert sets["confirmed"] == raw_sets["confirmed"]  # judged alerts: read one by one, always
    # flagged from the aggregates: the review / NG items of the window less the judged ones (whose
    # scores are taken out at the nearest values), as the raw rows' unjudged alerts
    with Session(engine) as session:
        flagged_a = [a.score for a in session.exec(select(Alert).where(Alert.source_id == "a")).all()]
    assert len(flagged_a) > len(raw_sets["flagged"])  # some of them judged
    for ours, raw_ in ((sets["normal"], raw_sets["normal"]), (sets["flagged"], raw_sets["flagged"])):
        assert len(ours) == pytest.approx(len(raw_), abs=50)  # rounding per bin
        for q in (0.5, 0.9, 0.99):  # the histogram's quantiles to the bins' resolution
            assert np.quantile(ours, q) == pytest.approx(np.quantile(raw_, q), rel=0.01)
    # the presets a threshold tuner reads off the scores barely move
    presets, raw_presets = thresholds.presets(sets, LINE, 0.01), thresholds.presets(raw_sets, LINE, 0.01)
    for name in ("false_alarm_rate", "max_f1"):
        assert presets[name]["t2"] == pytest.approx(raw_presets[name]["t2"], rel=0.02), name


def test_the_false_alarm_preset_counts_the_good_parts_above_t1(db_url):
    """The line's OK items are the good parts below T1 only: a 1 % preset read off them alone put
    T2 below T1 (11 % of good parts NG here). Every item not confirmed as a defect counts."""
    engine = make_engine(db_url)
    init_db(engine)
    total = fill(engine, hours=2, per_hour=1500, sources=("a",))  # all good parts: gamma scores
    scores = np.array(thresholds.score_sets(engine, hours=3, limit=100_000)["normal"])
    assert len(scores) < total * 0.92  # T1 (0.45) flags about 11 % of these good parts
    ok_only = thresholds.presets({"normal": scores.tolist(), "flagged": [], "confirmed": []}, LINE, 0.01)
    fresh = np.random.default_rng(1).gamma(2.0, 0.12, 200_000)  # new good parts from the same line
    assert np.mean(fresh >= ok_only["false_alarm_rate"]["t2"]) > 0.08  # what the preset used to do

    sets = thresholds.score_sets(engine, hours=3, limit=100_000)
    preset = thresholds.presets(sets, LINE, 0.01)["false_alarm_rate"]
    assert preset["n"] == total and preset["unjudged"] == count(engine, Alert) == total - len(scores)
    assert 0.005 <= np.mean(fresh >= preset["t2"]) <= 0.01  # a 90 % upper bound of the 1 % quantile
    assert preset["t1"] < preset["t2"] and 0.05 <= np.mean(fresh >= preset["t1"]) <= 0.1  # the model's own rule
    with Session(engine) as session:  # judged false positive: the same good parts, now known
        for alert in session.exec(select(Alert)).all():
            alert.state = "false_positive"
            session.add(alert)
        session.commit()
    judged = thresholds.presets(thresholds.score_sets(engine, hours=3, limit=100_000), LINE, 0.01)
    assert judged["false_alarm_rate"]["unjudged"] == 0
    assert judged["false_alarm_rate"]["t2"] == pytest.approx(preset["t2"])


def test_rollup_counts_each_row_once_and_late_rows_join_their_hour(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    init_db(engine)
    total = fill(engine, hours=3, per_hour=50, sources=("a",))
    now = utcnow()
    assert history.rollup(engine, before=history.floor_hour(now)) == total
    assert history.rollup(engine, before=history.floor_hour(now)) == 0
    assert count(engine, InspectionHour) == 3
    late = fill(engine, hours=3, per_hour=7, sources=("a",), seed=1)  # written back from a spool, say
    assert history.rollup(engine, before=history.floor_hour(now)) == late
    assert count(engine, InspectionHour) == 3
    hours = history.hours(engine, since=now - dt.timedelta(hours=4))
    assert [agg.count for _, _, agg in hours] == [57, 57, 57]
    latency = sum((agg.latencies for _, _, agg in hours), history.Histogram())
    assert latency.quantile(0.5) == pytest.approx(np.exp(2.0), rel=0.1)  # the lognormal's median


def test_two_nodes_rolling_up_at_once_count_every_row_once(tmp_path):
    from tests.helpers.database import postgres_database

    with postgres_database() as url:
        engine = make_engine(url)
        init_db(engine)
        total = fill(engine, hours=4, per_hour=600, sources=("a", "b", "c"))
        before = history.floor_hour(utcnow())
        done, errors = [], []

        def node() -> None:
            try:  # each node has its own engine (connection pool), as two processes would
                done.append(history.rollup(make_engine(url), before=before, batch=300))
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

        workers = [threading.Thread(target=node) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors and sum(done) == total
        hours = history.hours(engine, since=before - dt.timedelta(hours=5))
        assert sum(agg.count for _, _, agg in hours) == total and len(hours) == 12
        engine.dispose()


RETAIN_MEASURED = """
import datetime as dt, sys, tracemalloc
from pathlib import Path
from appliance import retention
from appliance.images import ImageStore
from appliance.retention import retain
from appliance.storage import history
from appliance.storage.db import make_engine
history.BATCH, retention.BATCH = 1000, 200
engine, images = make_engine(sys.argv[1]), ImageStore(Path(sys.argv[2]))
tracemalloc.start()
report = retain(engine, images, raw_window=dt.timedelta(0), max_age=dt.timedelta(0), max_bytes=0)
print(tracemalloc.get_traced_memory()[1], report.rows_deleted, report.files_deleted)
"""


def test_retention_streams_in_bounded_memory(tmp_path):
    """The peak of a pass is set by the batch, not by the table: 6× the rows, about the same peak
    (well under 2×: a pass holding its rows would peak about 6× higher). Measured in a process of
    its own: tracemalloc counts every thread's allocations, and a test process may hold others'."""
    import subprocess
    import sys
    from pathlib import Path

    peaks = []
    for hours in (1, 6):
        url = f"sqlite:///{tmp_path / f'm{hours}.db'}"
        engine = make_engine(url)
        init_db(engine)
        images = ImageStore(tmp_path / f"images{hours}")
        fill(engine, hours=hours, per_hour=2500, sources=("a",), images=images)
        engine.dispose()
        out = subprocess.run(
            [sys.executable, "-c", RETAIN_MEASURED, url, str(tmp_path / f"images{hours}")],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
        )
        peak, rows_deleted, files_deleted = map(int, out.stdout.split())
        peaks.append(peak)
        assert rows_deleted > 0 and files_deleted > 0
        assert count(engine, Inspection, col(Inspection.image_ref).is_not(None)) == count(
            engine, Alert, col(Alert.state).in_(("open", "acknowledged"))
        )  # only the images of unresolved alerts stay
        engine.dispose()
    assert peaks[1] < 2 * peaks[0], peaks


def test_a_day_past_the_window_goes_with_its_partition(tmp_path, caplog):
    """PostgreSQL: OK rows go a day at a time, their partition dropped whole once the day is past the
    raw window and rolled up; their files go too; flagged rows and the day still in the window stay;
    rows in the default partition go by batched deletes; a partition detached by a pass that died
    is finished by the next."""
    from sqlalchemy import text

    from appliance.storage import partitions
    from tests.helpers.database import postgres_database

    def tables(engine) -> set[str]:
        with engine.connect() as c:
            return set(c.execute(text("SELECT relname FROM pg_class WHERE relname LIKE 'inspection_ok_p%'")).scalars())

    with postgres_database() as url:
        engine, images = make_engine(url), ImageStore(tmp_path / "images")
        init_db(engine)
        now = utcnow()
        today = now.date()
        day = [today - dt.timedelta(days=k) for k in range(4)]  # day[k]: k days ago
        start = [dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) for d in day]
        assert partitions.ensure(engine, first=day[3], last=day[1]) == [partitions.day_name(d) for d in day[3:0:-1]]
        fill(engine, hours=48, per_hour=200, sources=("a",), images=images, end=start[0])  # day[2] and day[1]
        fill(engine, hours=2, per_hour=50, sources=("a",), images=images, end=start[0] - dt.timedelta(days=10), seed=1)
        spans = {
            "day2": (col(Inspection.t_capture) >= start[2], col(Inspection.t_capture) < start[1]),
            "day1": (col(Inspection.t_capture) >= start[1],),
            "old": (col(Inspection.t_capture) < start[3],),
        }
        ok = {k: count(engine, Inspection, col(Inspection.decision) == "ok", *span) for k, span in spans.items()}
        with_image = col(Inspection.image_ref).is_not(None)
        ok_files = sum(
            count(engine, Inspection, col(Inspection.decision) == "ok", with_image, *spans[k]) for k in ("day2", "old")
        )
        n_alerts, files = count(engine, Alert), len(list((tmp_path / "images").rglob("*.*")))
        assert sum(n for _, n in history.delete_raw(engine, before=now)) == 0  # nothing rolled up yet: nothing goes
        assert partitions.day_name(day[2]) in tables(engine)  # (the empty day[3] went)
        history.rollup(engine, before=now)
        with make_engine(url).connect() as other:  # another node is maintaining the partitions: this one skips
            other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": partitions.LOCK_KEY})
            assert list(partitions.drop_expired(engine, before=now)) == []
            assert partitions.ensure(engine, first=today + dt.timedelta(days=5)) == []
            assert partitions.day_name(day[2]) in tables(engine)
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": partitions.LOCK_KEY})

        report = retain(
            engine, images, raw_window=dt.timedelta(days=1), max_age=dt.timedelta(days=30), max_bytes=10**12
        )
        assert report.rows_deleted == ok["day2"] + ok["old"]
        assert partitions.day_name(day[2]) not in tables(engine)
        assert count(engine, Inspection, col(Inspection.decision) == "ok") == ok["day1"]
        assert count(engine, Inspection, col(Inspection.decision) != "ok") == n_alerts  # every alert keeps its row
        assert ok_files > 0 and files - len(list((tmp_path / "images").rglob("*.*"))) == ok_files

        # a pass that died between detaching a day and dropping it: the next one finishes it
        with engine.begin() as c:
            c.execute(text(f"ALTER TABLE inspection_ok DETACH PARTITION {partitions.day_name(day[1])}"))
        report = retain(
            engine, images, raw_window=dt.timedelta(days=1), max_age=dt.timedelta(days=30), max_bytes=10**12
        )
        assert report.rows_deleted == ok["day1"] and partitions.day_name(day[1]) not in tables(engine)
        retain(
            engine,
            images,
            raw_window=dt.timedelta(days=1),
            max_age=dt.timedelta(days=30),
            max_bytes=10**12,
            compact=True,
        )

        # a day whose rows sit in the default partition already keeps them there (logged, not lost)
        ahead = today + dt.timedelta(days=9)
        fill(
            engine,
            hours=1,
            per_hour=5,
            sources=("a",),
            end=dt.datetime(ahead.year, ahead.month, ahead.day, 2, tzinfo=dt.UTC),
        )
        before = count(engine, Inspection)
        assert partitions.ensure(engine, first=ahead, last=ahead) == []
        assert "partition maintenance postponed" in caplog.text and count(engine, Inspection) == before
        engine.dispose()


def test_backlogs_of_every_size_make_a_handful_of_statements(db_url):
    """An IN list's length is part of its statement's text, and the drivers keep what they
    prepared (SQLite 128 statements a connection, psycopg 100 on the server): a rollup of each
    minute's backlog made a new statement nearly every time and the appliance's memory crept
    (benchmarks/soak_bench.py). Lists padded to powers of two: backlogs of 1 to 40 rows, 7 texts."""
    from sqlalchemy import event

    engine = make_engine(db_url)
    init_db(engine)
    texts: set[str] = set()
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: texts.add(statement))
    end = history.floor_hour(utcnow())
    total = 0
    for n in range(1, 41):
        total += fill(engine, hours=1, per_hour=n, sources=("a",), seed=n, end=end)
        assert history.rollup(engine, before=end) == n
    updates = {t for t in texts if t.lstrip().upper().startswith("UPDATE INSPECTION SET ROLLED_UP")}
    assert len(updates) == 7, sorted(len(t) for t in updates)  # 1, 2, 4, … 64 ids
    assert sum(agg.count for _, _, agg in history.hours(engine, since=end - dt.timedelta(hours=1))) == total
    engine.dispose()
