"""The Structure search tab: NNC's search from a project's network, its progress, trade-off plot
and trials table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import ApiError, Client
from ui.components.jobs import pick_job, watch_job


def render(client: Client) -> None:
    st.caption(
        "NNC's structure search from a project's network: mutated networks are trained and evaluated; "
        "the Pareto front of validation error against multiply-adds is marked."
    )
    projects = client.projects()
    if not projects:
        st.info("Save a project under Config & run first.")
        return
    start_form(client, projects)
    job_id = pick_job(client, "search", "Search", "sr_job_pick", chosen="sr_job")
    if job_id is not None:
        watch_job(
            client,
            job_id,
            lambda job: show_trials(client, job),
            every=3,
            cancel_label="Stop search",
            cancel_key="sr_cancel",
        )


def start_form(client: Client, projects: list[dict]) -> None:
    c = st.columns(5)
    project_file = c[0].selectbox("Project", [p["file"] for p in projects], key="sr_project")
    method = c[1].selectbox("Method", ["bayes", "random"], key="sr_method", help="bayes: Gaussian process")
    objective = c[2].selectbox("Objective", ["error_and_madds", "error"], key="sr_objective")
    trials = c[3].number_input("Trials", 2, 1000, 20, key="sr_trials")
    epochs = c[4].number_input("Epochs per trial", 1, 1000, 10, key="sr_epochs")
    if st.button("Start search", type="primary", key="sr_start"):
        try:
            job = client.search(
                project_file, method=method, objective=objective, trials=int(trials), epochs=int(epochs)
            )
            st.session_state["sr_job"] = job["id"]
        except ApiError as exc:
            st.error(exc.message)


def show_trials(client: Client, job: dict) -> None:
    rows = job["result"].get("trials") or []
    if not rows:
        return
    plot = client.tradeoff_png(job["id"])
    if plot:
        st.image(plot, caption="trade-off: log multiply-adds against validation error")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "export a trial as a model bundle: `appliance search-export RUN TRIAL model.zip` "
        f"with RUN = {job['result'].get('run')}"
    )
