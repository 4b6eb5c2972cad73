"""Teach: commission a source. Review the good parts it collected (reject what is not good), choose
the region of interest and colour on a real frame, train a new detector from scratch as a job,
read its test report (held-out good parts, known-bad parts) with plots and gallery, and promote it
to the source."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from ui import session
from ui.client import ApiError
from ui.components.jobs import pick_job, watch_job

client, role = session.current()
st.title("Teach a source")

try:
    sources = {sid: s for sid, s in client.sources().items() if s.get("kind") not in ("csv", "mqtt", "modbus")}
    datasets = client.datasets()
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if not sources:
    st.info("No image sources. Add a camera or folder under Settings first.")
    st.stop()


def describe(sid: str) -> str:
    s = sources[sid]
    return f"{sid} — teach mode" if s.get("mode") == "teach" else f"{sid} — judged by {s.get('model_version')}"


teaching = [sid for sid, s in sources.items() if s.get("mode") == "teach"]
first = list(sources).index(teaching[0]) if teaching else 0  # a source waiting to be taught first
source_id = st.selectbox("Source", list(sources), index=first, format_func=describe, key="teach_source")
status = sources[source_id]
if status.get("mode") == "teach":
    st.warning("This source is in **teach mode**: it streams and keeps frames, and raises no alerts until taught.")

# -- 1. the good parts ------------------------------------------------------------------------
st.header("1. Good parts")
origin = st.radio(
    "Learn from",
    ["live", "dataset", "folder"],
    format_func={"live": "frames this source collected", "dataset": "an uploaded dataset", "folder": "a folder"}.get,
    horizontal=True,
    key="teach_origin",
)
frames: list[str] = []
if origin == "live":
    frames = client.teach_frames(source_id)["frames"]
    st.caption(f"{len(frames)} frames kept (newest last). Tick the ones that are **not** good parts and reject them.")
    shown = frames[-24:]
    cols = st.columns(6)
    rejected = []
    for i, name in enumerate(shown):
        with cols[i % 6]:
            data = client.teach_frame(source_id, name)
            if data is not None:
                stamp = f"{name[9:11]}:{name[11:13]}:{name[13:15]}.{name[16:19]}"  # 20261202T101530.123456.png
                st.image(data, caption=stamp, width="stretch")
            if st.checkbox("reject", key=f"teach_rej_{name}"):
                rejected.append(name)
    if rejected and st.button(f"Reject {len(rejected)} frame(s)", key="teach_reject"):
        client.reject_frames(source_id, rejected)
        st.rerun()
dataset = folder = None
if origin == "dataset":
    names = [d["name"] for d in datasets]
    dataset = st.selectbox("Dataset of good parts", names, key="teach_dataset") if names else None
    if not names:
        st.info("No datasets yet: upload a zip of good parts on the Retrain page.")
if origin == "folder":
    folder = st.text_input("Folder on the appliance (inside its data folder or allowed_paths)", key="teach_folder")

# -- 2. how the detector sees the part -------------------------------------------------------------
st.header("2. Region of interest and colour")
sample = client.teach_frame(source_id, frames[-1]) if frames else (client.frame(source_id, heatmap=False) or [None])[0]
width = height = None
if sample is not None:
    image = Image.open(io.BytesIO(sample)).convert("RGB")
    width, height = image.size
c = st.columns(5)
use_roi = c[0].toggle("Region of interest", key="teach_use_roi")
roi = None
if use_roi and width:
    x = c[1].number_input("x", 0, width - 1, 0, key="teach_x")
    y = c[2].number_input("y", 0, height - 1, 0, key="teach_y")
    w = c[3].number_input("width", 1, width - x, width - x, key="teach_w")
    h = c[4].number_input("height", 1, height - y, height - y, key="teach_h")
    roi = [int(x), int(y), int(w), int(h)]
if sample is not None:
    drawn = image.copy()
    if roi:
        ImageDraw.Draw(drawn).rectangle(
            [roi[0], roi[1], roi[0] + roi[2] - 1, roi[1] + roi[3] - 1], outline="red", width=2
        )
    st.image(drawn, caption=f"a real frame, {width}×{height}" + (f"; ROI {roi}" if roi else ""), width=360)
o = st.columns(5)
channels = o[0].selectbox("Colour", [1, 3], format_func={1: "grey", 3: "colour"}.get, key="teach_channels")
size = o[1].selectbox("Network input (px)", [64, 96, 128, 192, 256], index=2, key="teach_size")
epochs = o[2].number_input(
    "Epochs", 1, 1000, None, key="teach_epochs", placeholder="auto", help="empty: enough for 1,500 training steps"
)
method = o[3].selectbox("Detector", ["draem", "autoencoder"], key="teach_method")
rate = o[4].number_input("False-alarm rate", 0.001, 0.2, 0.01, step=0.005, format="%.3f", key="teach_rate")
full_resolution = st.toggle(
    "Defect map at full resolution",
    key="teach_full_resolution",
    disabled=method != "draem",
    help="finds thin scratches and cracks better; training takes about 2.5 times as long",
)
light_tolerance = st.slider(
    "Light tolerance",
    0.0,
    0.3,
    0.1,
    step=0.05,
    key="teach_light_tolerance",
    help="training shows the good parts under light up to this share weaker or stronger, so that a lamp's drift is "
    "not a defect; 0 where brightness itself is what you inspect (measured values: always 0)",
)
appearance_check = st.toggle(
    "Frames unlike every good part are NG",
    value=True,
    key="teach_appearance_check",
    help="a blank frame, a part missing or far off its place: NG however its defect map looks. Off where good "
    "parts vary in their whole look beyond the good images",
)
orientation_choices = {
    "auto": "auto: those the surface looks the same in",
    "none": "none: as the parts come",
    "all": "all 8 turns and mirror images",
}
orientations = st.selectbox(
    "Orientations shown in training",
    list(orientation_choices),
    format_func=orientation_choices.get,
    key="teach_orientations",
    help="auto trains aligned parts as they come, and textures in the turns and mirror images they look the same in",
)
bad_sets = [d["name"] for d in datasets]
known_bad = st.selectbox(
    "Known-bad parts to test on (a dataset uploaded in the MVTec AD layout; optional)",
    ["(none)", *bad_sets],
    key="teach_bad",
)

# -- 3. train, read the report, promote ---------------------------------------------------------------------
st.header("3. Train and prove it")
if st.button("Train a detector for this source", type="primary", key="teach_start"):
    params = {
        "source_id": source_id,
        "source": origin,
        "dataset": dataset,
        "folder": folder or None,
        "known_bad": None if known_bad == "(none)" else known_bad,
        "size": size,
        "channels": channels,
        "roi": roi,
        "epochs": None if epochs is None else int(epochs),
        "method": method,
        "full_resolution": bool(full_resolution),
        "orientations": orientations,
        "appearance_check": bool(appearance_check),
        "light_tolerance": float(light_tolerance),
        "false_alarm_rate": float(rate),
    }
    try:
        st.session_state["teach_job"] = client.teach(**params)["id"]
    except ApiError as exc:
        st.error(exc.message)

job_id = pick_job(client, "teach", "Teach job", key="teach_pick", chosen="teach_job")


def show(job: dict) -> None:
    result = job.get("result") or {}
    report = result.get("report")
    if job["status"] == "failed":
        st.error(job["message"])
    if not report:
        return
    for warning in result.get("warnings", []):
        st.warning(warning)
    m = st.columns(5)
    fmt = lambda v, p=False: "n/a" if v is None else (f"{v:.1%}" if p else f"{v:.3f}")  # noqa: E731
    m[0].metric("Image AUROC", fmt(report["image_auroc"]))
    m[1].metric("Pixel AUROC", fmt(report["pixel_auroc"]))
    m[2].metric("AUPRO (FPR ≤ 0.3)", fmt(report["aupro"]))
    m[3].metric(
        "False alarms",  # a longer label is cut short in a fifth of the page
        fmt(report["false_alarm_rate"], True),
        help=f"on the held-out good parts, which the detector never trained or calibrated on; "
        f"nominal {fmt(report['nominal_false_alarm_rate'], True)}",
    )
    band = result.get("calibrate_only_images") or {}
    st.caption(
        f"T1 and T2 rest on {report.get('calibrated_on', 'n/a')} good images the detector never trained on "
        f"({report.get('calibration_method', 'n/a')}: a 90 % upper confidence bound of the nominal rate's quantile)"
        + (
            f"; {result['twins_set_aside']} good parts sharing content with the held-out test parts (the same part "
            "in successive frames, overlapping views) were set aside: the false-alarm figure is that of new parts"
            if result.get("twins_set_aside")
            else ""
        )
        + (
            f"; {band['calibrated_on']} of them and {band['tested_on']} of the test's good parts are the dataset's "
            "images to calibrate on only (review items not judged yet: the OK items alone leave out the good parts "
            "above the old T1)"
            if band.get("calibrated_on") or band.get("tested_on")
            else ""
        )
    )
    m[4].metric("Defects flagged", fmt(report["defects_flagged"], True))
    if report["per_defect"]:
        st.dataframe(pd.DataFrame(report["per_defect"]).T, width="stretch")
    for name, caption in (
        ("score_histogram.png", "scores with T1 and T2"),
        ("roc_pr.png", "ROC and precision-recall"),
        ("gallery.png", "worst-scored good parts and best-hidden defects"),
    ):
        data = client.job_file(job["id"], name)
        if data is not None:
            st.image(data, caption=caption, width="stretch")
    version = result["candidate_version"]
    st.subheader(f"Candidate {version}")
    confirm = st.checkbox(f"I have read the report: promote {version} to {result['source_id']}", key="teach_confirm")
    reason = st.text_input("Reason (audit log)", "commissioned from the teach report", key="teach_reason")
    if st.button("Promote to the source", disabled=not confirm, key="teach_promote"):
        try:
            done = client.promote(version, reason, source_id=result["source_id"])
            st.success(f"{result['source_id']} is now judged by {done['model_version']} (T2 {done['t2']:.4g})")
        except ApiError as exc:
            st.error(exc.message)


if job_id is not None:
    watch_job(client, job_id, show, every=2.0, cancel_label="Cancel teaching", cancel_key="teach_cancel")
elif teaching:
    st.caption(f"sources waiting to be taught: {', '.join(teaching)}")
