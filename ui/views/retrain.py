"""Retrain on new normal data: pick the data, start a job, watch its learning curve, compare the
candidate with the active model on the same data, then promote or discard; roll back any time."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError
from ui.components.jobs import pick_job, watch_job

client, role = session.current()
st.title("Retrain")

st.subheader("1 · New normal data")
if notice := st.session_state.pop("rt_notice", None):
    st.success(notice)
c1, c2, c3 = st.columns(3)
include_ok = c1.checkbox("Recent OK items", value=True, key="rt_ok")
include_fp = c2.checkbox("Items marked false positive", value=True, key="rt_fp")
max_images = c3.number_input("At most recent OK images", 10, 100_000, 500, step=100, key="rt_max")
try:
    datasets = client.datasets()
except ApiError as exc:
    st.error(exc.message)
    st.stop()


def describe(dataset: dict) -> str:
    aside = dataset.get("calibrate_only")
    return f"{dataset['name']} ({dataset['images']} images" + (f", {aside} to calibrate on only)" if aside else ")")


chosen = st.multiselect(
    "Uploaded datasets of normal images",
    [d["name"] for d in datasets],
    key="rt_datasets",
    format_func=lambda n: describe(next(d for d in datasets if d["name"] == n)),
)
with st.expander("Upload a folder of normal images (zip)"):
    name = st.text_input("Dataset name", key="rt_upload_name")
    upload = st.file_uploader("Zip of PNG / JPEG / BMP / TIFF / WebP / PGM images", type=["zip"], key="rt_upload")
    if st.button("Upload", key="rt_upload_go", disabled=not (name and upload)):
        try:
            out = client.upload_dataset(name, upload.name, upload.getvalue())
            st.session_state["rt_notice"] = f"dataset {out['name']}: {out['images']} images"
            st.rerun()  # the picker above lists it at once
        except ApiError as exc:
            st.error(exc.message)

st.subheader("2 · Train a candidate")
epochs = st.number_input("Epochs", 1, 500, 10, key="rt_epochs")
if st.button("Start retraining", type="primary", key="rt_start"):
    try:
        job = client.retrain(
            epochs=int(epochs),
            max_images=int(max_images),
            include_ok=include_ok,
            include_false_positives=include_fp,
            datasets=chosen,
        )
        st.session_state["rt_job"] = job["id"]
    except ApiError as exc:
        st.error(exc.message)


def show_retrain(job: dict) -> None:
    curve = job["result"].get("curve") or []
    if curve:
        st.line_chart(pd.DataFrame(curve).set_index("epoch")[["cost"]], height=200)
    if job["status"] == "succeeded":
        show_comparison(job)
    elif job["status"] in ("failed", "cancelled"):
        st.error(job["message"])
        with st.expander("Log"):
            st.code(client.job_log(job["id"]))


def show_comparison(job: dict) -> None:
    result = job["result"]
    comparison = result.get("comparison", {})
    st.subheader("3 · Candidate against the active model (same held-out normal data)")
    rows = []
    for which in ("active", "candidate"):
        entry = comparison.get(which, {})
        rows.append(
            {
                "model": which,
                "version": entry.get("version"),
                "T2": entry.get("t2"),
                "false-alarm rate at T2": entry.get("false_alarm_rate"),
                "AUROC (confirmed defects)": entry.get("auroc"),
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    band = result.get("review_band_images") or {}
    among = (
        f", {band['compared_on']} of them unjudged review items counted as good (the candidate's thresholds also "
        f"rest on {band['calibrated_on']} others: recent OK items alone leave out the good parts above T1)"
        if band.get("compared_on") or band.get("calibrated_on")
        else ""
    )
    st.caption(
        f"compared on {comparison.get('held_out_normal_images', 0)} held-out normal images (the candidate never "
        f"trained on them){among}, "
        f"{comparison.get('confirmed_defects', 0)} confirmed defects; "
        f"trained in {result.get('train_seconds', 0):.0f} s"
    )
    version = result.get("candidate_version")
    if version and session.can("engineer"):
        reason = st.text_input("Reason (audited)", value=f"retrained in job {job['id']}", key="rt_reason")
        b1, b2 = st.columns(2)
        if b1.button(f"Promote {version}", type="primary", key="rt_promote"):
            try:
                client.promote(version, reason)
                st.success(f"{version} is the active model")
            except ApiError as exc:
                st.error(exc.message)
        if b2.button("Discard candidate", key="rt_discard"):
            try:
                client.discard(version, reason)
                st.info(f"{version} discarded")
            except ApiError as exc:
                st.error(exc.message)


job_id = pick_job(client, "retrain", "Job", "rt_job_pick", chosen="rt_job")
if job_id is not None:
    watch_job(client, job_id, show_retrain, every=2, cancel_label="Cancel job", cancel_key="rt_cancel")

st.subheader("Roll back")
models = client.models()
earlier = [m["version"] for m in models if m["status"] != "active"]
if earlier:
    back_to = st.selectbox("Earlier version", earlier, key="rt_back_to")
    reason = st.text_input("Reason", key="rt_back_reason")
    if st.button("Make it active", key="rt_back", disabled=len(reason) < 3):
        try:
            client.promote(back_to, reason)
            st.success(f"{back_to} is the active model")
        except ApiError as exc:
            st.error(exc.message)
else:
    st.caption("no earlier version to return to")
