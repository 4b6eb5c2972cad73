"""A job's worker shares the cores with the line: every core while no line inspects (commissioning:
sources in teach mode judge nothing), one BLAS thread while a line inspects or another job runs,
re-chosen between epochs and said in the job's log; the count is what the BLAS library reports."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlmodel import Session
from threadpoolctl import threadpool_info, threadpool_limits

from appliance.jobs import LINE_IDLE_S, JobContext
from appliance.storage import queries, store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection, utcnow


def blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture
def restore_blas():
    before = blas_threads()
    yield
    threadpool_limits(before)


def inspection(decided: dt.datetime) -> Inspection:
    return Inspection(
        source_id="cam", t_capture=decided, score=0.1, norm_score=0.1, decision="ok", model_version="m1",
        latency_ms=1.0, t_decided=decided,
    )  # fmt: skip


def test_a_job_takes_every_core_while_no_line_inspects_and_one_thread_beside_one(db_url, restore_blas):
    engine = make_engine(db_url)
    init_db(engine)
    cores = len(os.sched_getaffinity(0))
    job = store.create_job(engine, kind="teach", params={}, actor="t")
    store.update_job(engine, job_id=job, status="running")
    ctx = JobContext(engine, job)
    with Session(engine) as session:  # a line that stopped a while ago
        session.add(inspection(utcnow() - dt.timedelta(seconds=3 * LINE_IDLE_S)))
        session.commit()
    assert ctx.share_cores() == "no line is inspecting"
    assert blas_threads() == cores == ctx.blas_actual
    with Session(engine) as session:  # the line inspects again
        session.add(inspection(utcnow()))
        session.commit()
    ctx.check_cancel()  # between epochs
    assert blas_threads() == 1
    if cores > 1:
        assert "a line is inspecting: 1 BLAS thread from now on" in queries.job(engine, job_id=job).log
    other = store.create_job(engine, kind="retrain", params={}, actor="t")
    store.update_job(engine, job_id=other, status="running")
    with Session(engine) as session:
        session.get(Inspection, 2).t_decided = utcnow() - dt.timedelta(seconds=3 * LINE_IDLE_S)
        session.commit()
    assert ctx.share_cores() == "another job runs" and blas_threads() == 1
    store.update_job(engine, job_id=other, status="succeeded")
    assert ctx.share_cores() == "no line is inspecting" and blas_threads() == cores
