"""The Evaluation tab: the chosen run's report on its validation data (NNC's confusion matrix,
per-class precision / recall / F-measure, the first output rows with their inputs)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import Client


def render(client: Client) -> None:
    job_id = st.session_state.get("tr_job")
    job = client.job(job_id) if job_id else None
    report = (job or {}).get("result", {}).get("evaluation")
    if not report:
        st.info("The evaluation shows here once a run has finished (it uses the dataset's validation part).")
        return
    m = st.columns(4)
    for i, key in enumerate(("accuracy", "auroc", "rmse", "samples")):
        if key in report:
            m[i].metric(key, f"{report[key]:.4f}" if isinstance(report[key], float) else report[key])
    if "confusion_matrix" in report:
        confusion(report)
    rows = report.get("output_head") or []
    if len(rows) > 1:
        output_head(client, report, rows)


def confusion(report: dict) -> None:
    labels = [str(c) for c in report["classes"]]
    cm = pd.DataFrame(report["confusion_matrix"], index=labels, columns=labels)
    long = cm.reset_index(names="true").melt(id_vars="true", var_name="predicted", value_name="count")
    base = alt.Chart(long).encode(x=alt.X("predicted:N", sort=labels), y=alt.Y("true:N", sort=labels))
    cells = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")))
    st.altair_chart(
        (cells + base.mark_text().encode(text="count:Q")).properties(height=320, title="confusion matrix"),
        width="stretch",
    )
    per_class = pd.DataFrame(report["per_class"]).T
    per_class.loc["macro avg"] = pd.Series(report["macro_avg"])
    st.dataframe(per_class, width="stretch")


def output_head(client: Client, report: dict, rows: list[list[str]]) -> None:
    st.subheader("Output (first rows)")
    table = pd.DataFrame(rows[1:], columns=rows[0])
    if report.get("dataset_name"):  # thumbnails of the first inputs, with what the model said
        cols = st.columns(8)
        for i, row in enumerate(rows[1:17]):
            data = client.dataset_file(report["dataset_name"], row[0])
            if data:
                cols[i % 8].image(data, caption=" · ".join(row[1:3]), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")
