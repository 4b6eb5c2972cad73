"""Months of history: does the database stay bounded and the API fast? (issue 17)

    python benchmarks/history_bench.py [--backend sqlite|postgresql|both] [--days 30]
        [--history-rate 0.2] [--rate 100] [--raw-hours 24] [--calls 30]

Fills a fresh database, for each backend, with ``--days`` simulated days of one line, stored
through the pipeline's own call (``store.record_inspections``: inspections, their alerts and
outbox messages; 1.5 % flagged), running the appliance's retention pass (roll-up, deletion of
raw rows older than ``--raw-hours``, kept: rows with an alert, and the daily index rebuild) after
every simulated day, as the running appliance would (on PostgreSQL a day's OK rows go with their
day partition once the whole day is past the window, so up to a day more raw rows are kept).
The days are filled at ``--history-rate`` frames/s and hours at ``--rate`` (the line's real
pace): the aggregates a long window reads are one row per source and hour whatever the pace, and
the rows a reader counts raw are the last minute or so (rolled up every minute). Printed: rows
inserted and kept, database size, the time of rolling up an hour at ``--rate`` and of the
retention pass that deletes it, the p50 / p99 of the storage calls behind
``GET /inspections`` (a page, newest first, with its count), ``GET /alerts``,
``POST /thresholds/preview`` over 24 h and 30 days, ``GET /thresholds/scores`` and
``GET /inspections/hourly``, and how many frames/s a writer at ``--rate`` keeps while a retention
pass runs. Goal: every call's p99 ≤ 200 ms at 30 days; the size grows with the raw window and the
alerts, not with the total; the writer keeps its pace during retention.

The calls are timed on the storage functions the routes call (plus the page's JSON), not
through HTTP: what grows with the history is the database's work, not the framework's. Alerts
are stamped with the time they are stored, so every alert of the fill falls in the last 24 h.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import thresholds  # noqa: E402
from appliance.alerts.schema import Topics, alert_message  # noqa: E402
from appliance.api.schemas import InspectionsPublic  # noqa: E402
from appliance.images import ImageStore  # noqa: E402
from appliance.retention import retain  # noqa: E402
from appliance.storage import history, partitions, queries, store  # noqa: E402
from appliance.storage.db import init_db, make_engine  # noqa: E402
from appliance.storage.models import Inspection, utcnow  # noqa: E402
from models.decision import Thresholds, decide  # noqa: E402

LINE = Thresholds(0.62, 0.75)  # about 1.5 % of the gamma(2, 0.1) scores below are flagged
SOURCE, VERSION = "line-1", "m1"
TOPICS = Topics()


def insert(engine, start: dt.datetime, seconds: float, rate: float, rng: np.random.Generator, batch: int = 2000) -> int:
    """``rate`` inspections a second for ``seconds`` from ``start``, through the pipeline's call."""
    n = int(seconds * rate)
    offsets = np.sort(rng.uniform(0, seconds, n))
    scores = rng.gamma(2.0, 0.1, n)
    latencies = rng.lognormal(2.0, 0.3, n)
    for lo in range(0, n, batch):
        rows = []
        for t, s, lat in zip(
            offsets[lo : lo + batch], scores[lo : lo + batch], latencies[lo : lo + batch], strict=True
        ):
            decision = decide(float(s), LINE)
            inspection = Inspection(
                source_id=SOURCE,
                t_capture=start + dt.timedelta(seconds=float(t)),
                score=float(s),
                norm_score=float(s) / LINE.t2,
                decision=decision,
                model_version=VERSION,
                latency_ms=float(lat),
                t1=LINE.t1,
                t2=LINE.t2,
            )
            rows.append((inspection, LINE.crossed(decision), None))
        store.record_inspections(
            engine, inspections=rows, alert_topic="t", build_message=lambda a, i: alert_message(a, i, TOPICS)
        )
    return n


def past_day(engine, raw: dt.timedelta, back: int) -> dt.datetime:
    """10:00 on the day ``back`` days before the raw window's start, with its day partition on
    PostgreSQL (the appliance makes each day's a few days ahead; the fill has dropped this one)."""
    day = (utcnow() - raw).date() - dt.timedelta(days=back)
    partitions.ensure(engine, first=day, last=day)
    return dt.datetime(day.year, day.month, day.day, 10, tzinfo=dt.UTC)


def size_mb(engine, url: str, folder: Path) -> float:
    if url.startswith("sqlite"):
        return sum(p.stat().st_size for p in folder.glob("history.db*")) / 1e6
    from sqlalchemy import text

    with engine.connect() as c:
        return c.execute(text("SELECT pg_database_size(current_database())")).scalar() / 1e6


def timed(fn, calls: int) -> str:
    fn()  # warm
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return f"p50 {np.percentile(times, 50):7.1f} ms  p99 {np.percentile(times, 99):7.1f} ms"


def writer(engine, rate: float, stop: threading.Event, done: list[int], waits: list[float]) -> None:
    """The line: every tenth of a second, what arrived since the last write (a pipeline's queue
    batches what waited, so a slow write is caught up, not lost)."""
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    while not stop.is_set():
        due = int(rate * (time.perf_counter() - t0)) - sum(done)
        t = time.perf_counter()
        if due > 0:
            done.append(insert(engine, utcnow(), due / rate, rate, rng, batch=10_000))
        waits.append(time.perf_counter() - t)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))


def throughput(engine, rate: float, during) -> str:
    stop, done, waits = threading.Event(), [], []
    thread = threading.Thread(target=writer, args=(engine, rate, stop, done, waits))
    t0 = time.perf_counter()
    thread.start()
    during()
    stop.set()
    thread.join()
    return f"{sum(done) / (time.perf_counter() - t0):.0f}/s (longest write {max(waits) * 1000:.0f} ms)"


def run(backend: str, args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="history-bench-"))
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'history.db'}"
        context = None
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.helpers.database import postgres_database

        context = postgres_database()
        url = context.__enter__()
    try:
        engine = make_engine(url)
        init_db(engine)
        images = ImageStore(folder / "images")
        rng = np.random.default_rng(0)
        raw = dt.timedelta(hours=args.raw_hours)
        now = history.floor_hour(utcnow())
        start = now - dt.timedelta(days=args.days)
        inserted, t0 = 0, time.perf_counter()
        sizes = []
        for day in range(args.days):
            day_start = start + dt.timedelta(days=day)
            inserted += insert(engine, day_start, 86400, args.history_rate, rng)
            retain(
                engine,
                images,
                raw_window=raw,
                max_age=dt.timedelta(days=30),
                max_bytes=10**12,
                now=day_start + dt.timedelta(days=1),
                compact=True,  # the appliance's daily index rebuild
            )
            sizes.append(size_mb(engine, url, folder))
        print(
            f"[{backend}] filled {args.days} days at {args.history_rate}/s: {inserted:,} rows in "
            f"{time.perf_counter() - t0:.0f} s; size after day 1 / {args.days // 2} / {args.days}: "
            f"{sizes[0]:.1f} / {sizes[args.days // 2 - 1]:.1f} / {sizes[-1]:.1f} MB"
        )
        # an hour at the line's pace in a day past the raw window, rolled up and deleted by one pass:
        # on PostgreSQL its day partition (made ahead of the day, as the appliance does) is dropped
        pace_rows = insert(engine, past_day(engine, raw, 1), 3600, args.rate, rng)
        t = time.perf_counter()
        rolled = history.rollup(engine, before=utcnow())  # what the minutely roll-up would have done
        t_rollup, t = time.perf_counter() - t, time.perf_counter()
        report = retain(engine, images, raw_window=raw, max_age=dt.timedelta(days=30), max_bytes=10**12)
        print(
            f"[{backend}] an hour at {args.rate}/s ({pace_rows:,} rows): rolled up in {t_rollup:.1f} s "
            f"({rolled:,} rows), then a retention pass {time.perf_counter() - t:.1f} s "
            f"({report.rows_deleted:,} deleted)"
        )
        # the raw window at the line's pace would be rows that readers never count one by one (rolled
        # up every minute): what they count raw is the last minute, plus a roll-up's lag
        fresh = insert(engine, utcnow() - dt.timedelta(minutes=2), 120, args.rate, rng)
        from sqlalchemy import func, select, text

        with engine.connect() as c:
            kept = c.execute(select(func.count()).select_from(Inspection)).scalar()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("ANALYZE"))  # what autovacuum (PostgreSQL) or PRAGMA optimize would have done
        print(
            f"[{backend}] newest rows at {args.rate}/s not rolled up: {fresh:,}; rows kept in all: {kept:,}; "
            f"database {size_mb(engine, url, folder):.1f} MB"
        )
        scope = {"source_id": SOURCE, "model_version": VERSION}
        candidate = Thresholds(0.6, 0.8)

        def page() -> None:
            rows, count = queries.inspections(engine, source_id=SOURCE, limit=50)
            InspectionsPublic.model_validate(
                {"data": [r._mapping for r in rows], "count": count, "count_limit": queries.COUNT_LIMIT}
            ).model_dump_json()

        calls = {
            "GET /inspections (page of 50)": page,
            "GET /alerts (page of 50)": lambda: queries.alerts(engine, limit=50),
            "POST /thresholds/preview 24 h": lambda: thresholds.preview(
                engine, thresholds=candidate, hours=24, scope=scope
            ),
            f"POST /thresholds/preview {args.days} d": lambda: thresholds.preview(
                engine, thresholds=candidate, hours=24 * args.days, scope=scope
            ),
            "GET /thresholds/scores 24 h": lambda: thresholds.score_sets(engine, hours=24, limit=20_000, scope=scope),
            f"GET /inspections/hourly {args.days} d": lambda: history.hours(
                engine, since=now - dt.timedelta(days=args.days), source_id=SOURCE
            ),
        }
        for name, fn in calls.items():
            print(f"[{backend}] {name:34s} {timed(fn, args.calls)}")
        # the line's pace while a pass rolls up and deletes another hour at that pace
        insert(engine, past_day(engine, raw, 2), 3600, args.rate, rng)

        def a_pass() -> None:
            retain(engine, images, raw_window=raw, max_age=dt.timedelta(days=30), max_bytes=10**12)

        alone = throughput(engine, args.rate, lambda: time.sleep(5))
        during = throughput(engine, args.rate, a_pass)
        print(f"[{backend}] writer at {args.rate}/s: alone {alone}, during a retention pass {during}")
        engine.dispose()
    finally:
        if context is not None:
            context.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--history-rate", type=float, default=0.2, help="frames/s of the simulated days")
    parser.add_argument("--rate", type=float, default=100.0, help="frames/s of the newest hours (the line's pace)")
    parser.add_argument("--raw-hours", type=float, default=24.0)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run(backend, args)


if __name__ == "__main__":
    main()
