"""The lists consoles poll, read from the database as the API serves them (SQLite and PostgreSQL), and
the bound on how many requests the API works on at once."""

from __future__ import annotations

from appliance.storage import queries, store
from appliance.storage.db import init_db, make_engine
from tests.helpers.database import record


def test_alert_pages_list_open_alerts_first_then_the_rest_newest_first(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    ids = [record(engine, "s", "ng")[1].id for _ in range(12)]
    judged = ids[1::3]  # every third alert (by age) judged, the rest open
    for alert_id in judged:
        store.update_alert(engine, alert_id=alert_id, actor="op", verdict="confirmed")
    expected = sorted(set(ids) - set(judged), reverse=True) + sorted(judged, reverse=True)
    counts = {"open": len(ids) - len(judged), "confirmed": len(judged)}
    for limit in (1, 3, 5, 12, 50):
        pages = [queries.alerts(engine, offset=o, limit=limit) for o in range(0, 14, limit)]
        assert [a.id for rows, _ in pages for a in rows] == expected, limit
        assert all(page_counts == counts for _, page_counts in pages)
    rows, _ = queries.alerts(engine, state="confirmed", offset=1, limit=2)
    assert [a.id for a in rows] == sorted(judged, reverse=True)[1:3]
    assert queries.alerts(engine, offset=100) == ([], counts)


def test_alert_pages_of_some_sources_and_decisions_count_those_alone(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    made = [record(engine, s, d)[1] for _ in range(2) for s in ("a", "b", "c") for d in ("ng", "review")]
    store.update_alert(engine, alert_id=made[0].id, actor="op", verdict="confirmed")  # a's first NG
    rows, counts = queries.alerts(engine, sources=["a", "b"], decisions=["ng"], limit=3)
    expected = [a.id for a in made if a.source_id in "ab" and a.decision == "ng" and a.id != made[0].id]
    assert [r.id for r in rows] == sorted(expected, reverse=True)[:3]  # open ones first, newest first
    assert counts == {"open": 3, "confirmed": 1}
    rows, counts = queries.alerts(engine, state="confirmed", sources=["b"])
    assert rows == [] and counts == {"open": 4}


def test_alert_export_reads_every_match_newest_first_in_batches(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    made = [record(engine, s, d)[1] for _ in range(4) for s in ("a", "b") for d in ("ng", "review")]
    store.update_alert(engine, alert_id=made[0].id, actor="op", verdict="false_positive")
    batches = list(queries.alert_batches(engine, batch=3))
    assert [len(b) for b in batches] == [3, 3, 3, 3, 3, 1]
    assert [r.id for b in batches for r in b] == sorted((a.id for a in made), reverse=True)
    a_ng = [
        r.id for b in queries.alert_batches(engine, sources=["a"], decisions=["ng"], state="open", batch=2) for r in b
    ]
    assert a_ng == sorted((a.id for a in made[1:] if a.source_id == "a" and a.decision == "ng"), reverse=True)
    assert list(queries.alert_batches(engine, batch=4, sources=["c"])) == []
    middle = made[5].created_at  # raised at or after, before
    since = [r.id for b in queries.alert_batches(engine, since=middle) for r in b]
    until = [r.id for b in queries.alert_batches(engine, until=middle.replace(tzinfo=None)) for r in b]
    assert sorted(since + until) == sorted(a.id for a in made) and min(since) == made[5].id


def test_inspection_pages_by_key_match_the_newest_first_order(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    for i in range(30):
        record(engine, "a" if i % 3 else "b", "ok", score=i)
    everything, total = queries.inspections(engine, source_id="a", limit=1000)
    assert total == 20 and [r.id for r in everything] == sorted((r.id for r in everything), reverse=True)
    paged, before = [], None
    while True:
        rows, count = queries.inspections(engine, source_id="a", limit=7, before_id=before)
        assert count == 20  # every match, whichever page
        if not rows:
            break
        paged += rows
        before = rows[-1].id
    assert [r.id for r in paged] == [r.id for r in everything]


def test_the_api_works_on_at_most_api_workers_requests_at_once(tmp_path, broker, monkeypatch):
    """Consoles polling the API cannot take the line's share: requests beyond ``api_workers`` wait."""
    import threading
    import time

    import httpx

    from appliance.runtime import Appliance
    from tests.helpers.appliance import appliance_settings

    folder = tmp_path / "parts"
    folder.mkdir()
    settings = appliance_settings(tmp_path, broker.port, f"folder:{folder}", "workers", api_workers=2)
    app = Appliance(settings, log=lambda _: None).start()
    busy, most, lock = [0], [0], threading.Lock()
    slow_query = queries.inspections

    def counted(*args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.3)
        try:
            return slow_query(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(queries, "inspections", counted)
    try:
        token = store.create_token(app.engine, name="viewer", role="viewer")
        url = f"http://127.0.0.1:{app.api_port}/inspections"
        codes = []

        def read() -> None:
            codes.append(httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code)

        readers = [threading.Thread(target=read) for _ in range(8)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        assert codes == [200] * 8 and most[0] == 2
    finally:
        app.stop()


def test_pages_polled_by_many_consoles_are_rendered_once_and_writes_show_at_once(tmp_path, broker, monkeypatch):
    """Identical list requests within ``api_page_cache_s`` are answered from one render; a write
    through the API shows in the next page at once, what the line stores within the cache time."""
    import time

    import httpx

    from appliance.runtime import Appliance
    from tests.helpers.appliance import appliance_settings

    folder = tmp_path / "parts"
    folder.mkdir()
    settings = appliance_settings(tmp_path, broker.port, f"folder:{folder}", "pages", api_page_cache_s=0.5)
    app = Appliance(settings, log=lambda _: None).start()
    renders, original = [], queries.alerts

    def counted(*args, **kwargs):
        renders.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(queries, "alerts", counted)
    try:
        token = store.create_token(app.engine, name="operator", role="operator")
        api = httpx.Client(base_url=f"http://127.0.0.1:{app.api_port}", headers={"Authorization": f"Bearer {token}"})
        first = record(app.engine, "s", "ng")[1]
        time.sleep(0.6)
        pages = [api.get("/alerts").json() for _ in range(10)]
        assert len(renders) == 1 and all(p == pages[0] for p in pages) and pages[0]["count"] == 1
        assert api.post(f"/alerts/{first.id}/acknowledge").status_code == 200
        assert api.get("/alerts").json()["data"][0]["state"] == "acknowledged"  # the API's own write: at once
        record(app.engine, "s", "ng")  # the line's write: within the cache time
        time.sleep(0.6)
        assert api.get("/alerts").json()["count"] == 2
    finally:
        app.stop()


def test_requests_wait_while_the_line_is_late_and_the_line_loses_nothing(tmp_path, broker):
    """While live frames wait for the inspector (the line late), a new API request waits up to
    LINE_FIRST_MAX_WAIT_S and is then served; ``/health`` never waits; /metrics counts the waits."""
    import datetime as dt
    import time

    import httpx

    from appliance.api.main import LINE_FIRST_MAX_WAIT_S
    from appliance.runtime import Appliance
    from connectors.base import Sample
    from connectors.synthetic import SyntheticLine
    from tests.helpers.appliance import appliance_settings
    from tests.helpers.waiting import wait_for

    source = "synth:line?size=64&fps=5&seed=3"
    app = Appliance(appliance_settings(tmp_path, broker.port, source, "linefirst"), log=lambda _: None).start()
    try:
        token = store.create_token(app.engine, name="viewer", role="viewer")
        api = httpx.Client(base_url=f"http://127.0.0.1:{app.api_port}", headers={"Authorization": f"Bearer {token}"})
        assert wait_for(lambda: app.pipeline.status()[source]["scored"] >= 2, timeout=60)

        def deferred() -> float:
            text = api.get("/metrics").text
            return float(
                next(line for line in text.splitlines() if line.startswith("appliance_api_requests_deferred")).split()[
                    -1
                ]
            )

        assert deferred() == 0  # the line keeps up at 5 frames/s: nothing waits
        worker, late = app.pipeline.workers[source], dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        with app.pipeline.wake:  # the inspector cannot take frames meanwhile: three a second late
            for part in SyntheticLine(64, seed=9).take(3):
                worker.queue.append(Sample(source, late, part.image))
            assert app.pipeline.waiting()[0] == 3 and app.pipeline.waiting()[1] >= 1.0
            start = time.monotonic()
            assert api.get("/inspections", params={"limit": 1}).status_code == 200  # served after waiting
            assert time.monotonic() - start >= LINE_FIRST_MAX_WAIT_S
            assert api.get("/health").status_code == 200
        assert wait_for(lambda: app.pipeline.waiting() == (0, 0.0), timeout=30)  # caught up
        assert deferred() == 1  # the list request waited; /health and /metrics, the line on time, did not
        window = {"since": late.isoformat(), "until": (late + dt.timedelta(milliseconds=1)).isoformat()}
        assert wait_for(lambda: api.get("/inspections", params=window).json()["count"] == 3, timeout=30)  # none lost
    finally:
        app.stop()
