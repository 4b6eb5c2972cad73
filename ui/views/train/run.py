"""The Config & run tab: save a project (network, dataset, solver) and train it as a job; follow
the learning curve live."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import ApiError, Client
from ui.components.jobs import pick_job, watch_job
from ui.views.train.network import NetworkChoice

SOLVERS = [
    "Adam",
    "AdamW",
    "Momentum",
    "Nesterov",
    "SGD",
    "RMSprop",
    "AdaGrad",
    "AdaDelta",
    "Adamax",
    "AMSGrad",
    "AdaBound",
]


def render(client: Client, datasets: list[dict], choice: NetworkChoice) -> None:
    if not datasets:
        st.info("Create a dataset first.")
    else:
        project_form(client, datasets, choice)
    job_id = pick_job(client, "project", "Run", "tr_run_pick", chosen="tr_job")
    if job_id is not None:
        watch_job(client, job_id, show_curve, every=2, cancel_label="Cancel", cancel_key="tr_cancel")


TASKS = ["classification", "autoencoder", "regression"]


def project_form(client: Client, datasets: list[dict], choice: NetworkChoice) -> None:
    imported = choice.imported or {}
    nnc = imported.get("config", {})  # an imported project's own settings are the defaults
    solver = nnc.get("solver", {})

    def key(base: str) -> str:  # fresh widgets (with the project's defaults) for each imported project
        return f"{base}_nnc_{imported['name']}" if imported else base

    with st.form("tr_project"):
        c = st.columns(3)
        project = c[0].text_input("Project name", imported.get("name", ""), key=key("tr_proj_name"))
        dataset = c[1].selectbox("Dataset", [d["name"] for d in datasets], key="tr_proj_ds")
        task = c[2].selectbox("Task", TASKS, TASKS.index(imported.get("task", "classification")), key=key("tr_task"))
        c = st.columns(4)
        config = {
            "max_epoch": int(
                c[0].number_input("Max epochs", 1, 1000, int(nnc.get("max_epoch", 10)), key=key("tr_epochs"))
            ),
            "batch_size": int(
                c[1].number_input("Batch size", 1, 4096, int(nnc.get("batch_size", 64)), key=key("tr_batch"))
            ),
            "solver": c[2].selectbox(
                "Solver",
                SOLVERS,
                SOLVERS.index(solver.get("type", "Adam")) if solver.get("type") in SOLVERS else 0,
                key=key("tr_solver"),
            ),
            "lr": float(
                c[3].number_input(
                    "Learning rate", 1e-6, 10.0, float(solver.get("lr", 0.001)), format="%.5f", key=key("tr_lr")
                )
            ),
        }
        if imported:
            st.caption(f"network: {imported['name']}, imported from Neural Network Console (Network tab)")
            network = {"spec": imported["network"], "score": imported.get("score"), "variables": imported["dataset"]}
        else:
            st.caption(f"network: {choice.zoo} with the options of the Network tab")
            network = {"zoo": choice.zoo, "options": choice.options(task)}
        if st.form_submit_button("Save project and train", type="primary", disabled=not (imported or choice.zoo)):
            try:
                client.create_project(name=project, dataset=dataset, task=task, **network, **config)
                job = client.run_project(f"{project}.yaml")
                st.session_state["tr_job"] = job["id"]
                st.success(f"job {job['id']} started")
            except ApiError as exc:
                st.error(exc.message)


def show_curve(job: dict) -> None:
    curve = job["result"].get("curve") or []
    if not curve:
        return
    frame = pd.DataFrame(curve).set_index("epoch")
    left, right = st.columns(2)
    left.line_chart(frame[[k for k in ("cost", "train_error", "valid_error") if k in frame]], height=220)
    metrics = [k for k in ("valid_accuracy", "valid_auroc", "valid_rmse") if k in frame]
    if metrics:
        right.line_chart(frame[metrics], height=220)
