"""The job picker and the job watcher: one way to choose a job, follow its progress live and
cancel it, for retraining, training runs and structure searches."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import streamlit as st

from ui import session
from ui.client import Client

RUNNING = ("queued", "running")  # the statuses of a job that may still change


def pick_job(client: Client, kind: str, label: str, key: str, chosen: str) -> int | None:
    """A select box over the newest jobs of one kind, each with its status; ``chosen`` names the
    session-state key of the job to preselect (kept up to date with the pick)."""
    found = [j for j in client.jobs(50) if j["kind"] == kind]
    if not found:
        return None
    ids = [j["id"] for j in found]
    by_id = {j["id"]: j for j in found}

    def describe(i: int) -> str:
        job = by_id[i]
        name = job["params"].get("project")
        return f"job {i}: {name} ({job['status']})" if name else f"job {i}: {job['status']}"

    default = ids.index(st.session_state[chosen]) if st.session_state.get(chosen) in ids else 0
    # the labels are part of the box's key: Streamlit keeps a keyed select box's labels as first
    # drawn, and a job picked while it ran read "running" after it had finished
    labels = zlib.crc32("|".join(map(describe, ids)).encode())
    job_id = st.selectbox(label, ids, index=default, key=f"{key}-{labels:08x}", format_func=describe)
    st.session_state[chosen] = job_id
    return job_id


def watch_job(
    client: Client, job_id: int, show: Callable[[dict], None], *, every: float, cancel_label: str, cancel_key: str
) -> None:
    """While the job runs, refresh every ``every`` seconds: the progress bar with the status and
    latest message, what ``show`` draws of the job, and a cancel button (engineers only). A finished
    job is drawn once and left alone, so that what its buttons answer (a promotion's confirmation)
    stays on the page and its report is not fetched again every few seconds."""

    def draw(job: dict) -> bool:
        st.progress(job["progress"], text=f"{job['status']}: {job['message'][-200:]}")
        show(job)
        running = job["status"] in RUNNING
        if running and session.can("engineer") and st.button(cancel_label, key=cancel_key):
            client.cancel_job(job_id)
        return running

    job = client.job(job_id)
    if job["status"] not in RUNNING:
        draw(job)
        return

    @st.fragment(run_every=every)
    def watch() -> None:
        if not draw(client.job(job_id)):
            st.rerun()  # finished: the whole page once more, without the refresh

    watch()
