"""The Classify tab: an uploaded image or a typed vector through the model of a finished run."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.client import ApiError, Client, parse_vector

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "pgm", "ppm", "pnm", "jp2"]  # as the API reads


def render(client: Client) -> None:
    done = [j for j in client.jobs(50) if j["kind"] == "project" and j["status"] == "succeeded"]
    if not done:
        st.info("Train a model first.")
        return
    ids = [j["id"] for j in done]
    current = st.session_state.get("tr_job")
    pick = st.selectbox(
        "Model of run",
        ids,
        # follows the run chosen under "Config & run" (a new run selects its own model)
        index=ids.index(current) if current in ids else 0,
        key=f"tr_cls_job_{current}_{current in ids}",
        format_func=lambda i: f"job {i}: {next(j['params'].get('project') for j in done if j['id'] == i)}",
    )
    kind = st.radio("Input", ["image", "vector"], horizontal=True, key="tr_cls_kind")
    try:
        result = classify_image(client, pick) if kind == "image" else classify_vector(client, pick)
    except (ApiError, ValueError) as exc:
        st.error(getattr(exc, "message", str(exc)))
        result = None
    if result:
        show_result(result)


def classify_image(client: Client, job_id: int) -> dict | None:
    image = st.file_uploader("Image", type=IMAGE_TYPES, key="tr_cls_img")
    if image is None:
        return None
    result = client.predict(job_id, image.name, image.getvalue())
    st.image(image.getvalue(), width=160)
    return result


def classify_vector(client: Client, job_id: int) -> dict | None:
    text = st.text_area("Values (comma or space separated)", key="tr_cls_vec")
    return client.predict_vector(job_id, parse_vector(text)) if text.strip() else None


def show_result(result: dict) -> None:
    st.metric("Label", result["label"] or "—")
    if result.get("output"):
        out = pd.DataFrame({"class": [str(i) for i in range(len(result["output"]))], "output": result["output"]})
        st.altair_chart(alt.Chart(out).mark_bar().encode(x="class:N", y="output:Q"), width="stretch")
