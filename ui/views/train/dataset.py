"""The Dataset tab: create a dataset from a zip of class folders or a sample, browse and check."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiError, Client

SAMPLES = ["iris", "digits", "digits_4or9", "digits_4or9_anomaly"]


def render(client: Client, datasets: list[dict]) -> None:
    if notice := st.session_state.pop("tr_ds_notice", None):
        st.success(notice)
    create_from_zip(client)
    with st.expander("Or a sample dataset (scikit-learn's digits images or iris vectors)"):
        create_sample(client)
    st.subheader("Browse and check")
    if datasets:
        browse(client, datasets)
    else:
        st.info("No datasets yet.")


def _say(call) -> None:
    try:
        out = call()
    except ApiError as exc:
        st.error(exc.message)
        return
    st.session_state["tr_ds_notice"] = ", ".join(f"{k} {v}" for k, v in out.items())
    st.rerun()  # every dataset picker on the page lists the new one at once


def create_from_zip(client: Client) -> None:
    st.subheader("Create from class folders")
    st.caption("A zip with one folder per class (the label is the folder's sorted index); images are resized.")
    c = st.columns(5)
    name = c[0].text_input("Dataset name", key="tr_ds_name")
    channels = c[1].selectbox("Channels", [1, 3], key="tr_ds_ch")
    width = c[2].number_input("Width", 4, 1024, 28, key="tr_ds_w")
    height = c[3].number_input("Height", 4, 1024, 28, key="tr_ds_h")
    percent = c[4].number_input("Training %", 1.0, 100.0, 80.0, key="tr_ds_pct")
    upload = st.file_uploader("Zip of class folders", type=["zip"], key="tr_ds_zip")
    if st.button("Create dataset", key="tr_ds_go", disabled=not (name and upload)):
        options = {"channels": channels, "width": int(width), "height": int(height), "train_percent": float(percent)}
        _say(lambda: client.upload_dataset(name, upload.name, upload.getvalue(), layout="classes", **options))


def create_sample(client: Client) -> None:
    c = st.columns(3)
    sample = c[0].selectbox("Sample", SAMPLES, key="tr_sample")
    sample_name = c[1].text_input("Dataset name", value=sample, key="tr_sample_name")
    if c[2].button("Create sample", key="tr_sample_go"):
        _say(lambda: client.sample_dataset(sample_name, sample))


def browse(client: Client, datasets: list[dict]) -> None:
    name = st.selectbox("Dataset", [d["name"] for d in datasets], key="tr_ds_browse")
    info = client.dataset(name, limit=24)
    for file, meta in info["files"].items():
        st.markdown(f"**{file}**: {meta['rows']} rows, columns {', '.join(meta['header'])}")
    head = info["files"].get("training.csv")
    if head and head["head"]:
        image_col = next((i for i, h in enumerate(head["header"]) if h.startswith("x")), 0)
        cols = st.columns(8)
        for i, row in enumerate(head["head"][:24]):
            data = client.dataset_file(name, row[image_col])
            if data:
                cols[i % 8].image(data, caption=" ".join(row[1:]) or row[0], width="stretch")
