"""Live: per source the newest frame with its heat map, score against the source's T1/T2, decision,
state, the model judging it (or teach mode), and a rolling score chart; refreshes itself every few
seconds without reloading the page."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError
from ui.components.charts import MINUTES, utc_time, utc_tooltip

client, role = session.current()
st.title("Live")
every = st.sidebar.select_slider("Refresh every (s)", options=[1, 2, 5, 10, 30], value=2, key="live_every")
show_heatmap = st.sidebar.toggle("Heat-map overlay", value=True, key="live_heatmap")


def score_chart(rows: list[dict], t1: float, t2: float) -> alt.LayerChart:
    data = pd.DataFrame(rows)[["t_capture", "score", "decision"]]
    data["t_capture"] = pd.to_datetime(data["t_capture"], utc=True)
    colors = alt.Scale(domain=["ok", "review", "ng"], range=["#2e7d32", "#f9a825", "#c62828"])
    points = (
        alt.Chart(data)
        .mark_circle(size=28)
        .encode(
            x=utc_time("t_capture", "captured", MINUTES),
            y=alt.Y("score:Q", title="score"),
            color=alt.Color("decision:N", scale=colors),
            tooltip=[utc_tooltip("t_capture", "captured", MINUTES), alt.Tooltip("score:Q", format=".4f"), "decision"],
        )
    )
    rules = (
        alt.Chart(pd.DataFrame({"y": [t1, t2], "line": ["T1 review", "T2 NG"]}))
        .mark_rule(strokeDash=[4, 3])
        .encode(
            y=alt.Y("y:Q", title="score"),
            color=alt.Color("line:N", scale=alt.Scale(range=["#f9a825", "#c62828"]), title="threshold"),
        )
    )
    return alt.layer(points, rules).resolve_scale(color="independent").properties(height=180)


@st.fragment(run_every=every)
def live() -> None:
    try:
        sources = client.sources()
        health = client.health()
    except ApiError as exc:
        st.error(exc.message)
        return
    training = health.get("first_start_training")
    if training and training["state"] == "training":
        done = training["epoch"] / max(training["epochs"], 1)
        st.progress(
            done,
            text=f"first start: training the synthetic line's model, epoch {training['epoch']} of {training['epochs']}",
        )
    elif training and training["state"].startswith("failed"):
        st.error(f"first-start training {training['state']}")
    top = st.columns(4)
    top[0].metric("Frames scored", f"{health['scored']:,}")
    top[1].metric("Dropped from queues", f"{health['queue_dropped']:,}")
    top[2].metric("Worst p99 capture→decision", f"{health['worst_p99_ms']['capture_to_decision_ms']:.0f} ms")
    top[3].metric("Sources in teach mode", health.get("sources_in_teach_mode", 0))
    if not sources:
        st.info("No sources. An engineer adds them under Settings.")
        return
    for source_id, status in sources.items():
        try:
            if status.get("mode") == "teach":
                show_teaching(source_id, status)
            else:
                show_source(source_id, status, status["t1"], status["t2"])
        except ApiError as exc:
            st.error(f"{source_id}: {exc.message}")


def show_teaching(source_id: str, status: dict) -> None:
    """A source no model judges yet: its frames stream and are kept for teaching, nothing alerts."""
    with st.container(border=True):
        st.subheader(source_id)
        left, right = st.columns([1, 2])
        frame = client.frame(source_id, heatmap=False)
        if frame is not None:
            left.image(frame[0], caption="teach mode: not inspected", width="stretch")
        right.warning(
            "**Teach mode**: no model judges this source yet, so it raises no alerts. "
            f"{status.get('teach_frames', 0):,} frames seen; an engineer teaches it on the Teach page."
        )
        right.metric("State", status.get("state", "?"))


def judged(frame: tuple[bytes, dict[str, str]] | None, history: list[dict]) -> dict | None:
    """What the panel reports: the frame on screen when there is one (the list of inspections is
    read separately and can be a frame behind or ahead), else the newest stored inspection (also
    when the appliance is older than its console and does not say a frame's normalised score)."""
    if frame is None or not frame[1]["score"] or not frame[1]["norm-score"]:
        return history[0] if history else None
    info = frame[1]
    return {**info, "score": float(info["score"]), "norm_score": float(info["norm-score"])}


def show_source(source_id: str, status: dict, t1: float, t2: float) -> None:
    with st.container(border=True):
        st.subheader(source_id)
        own = "its own model" if status.get("own_model") else "the default model"
        st.caption(f"{own} **{status.get('model_version')}** · T1 (review) {t1:.4g} · T2 (NG) {t2:.4g}")
        if status.get("rejected"):
            st.warning(
                f"{status['rejected']:,} frames left unjudged: the model cannot read them. "
                f"Last: {status.get('last_rejected')}"
            )
        left, right = st.columns([1, 2])
        frame = client.frame(source_id, heatmap=show_heatmap)
        history = client.inspections(source_id=source_id, limit=200)["data"]
        shown = judged(frame, history)
        with left:
            if frame is not None:
                info = frame[1]
                caption = "not judged"  # a frame from before the source left teach mode
                if info["score"]:
                    caption = (
                        f"{info['decision'].upper()} · score {float(info['score']):.4g} · {info['captured'][11:23]} UTC"
                    )
                st.image(frame[0], caption=caption, width="stretch")
            else:
                st.caption("no image frame yet (sensor sources show scores only)")
        with right:
            cols = st.columns(4)
            state = status.get("state", "?")
            cols[0].metric("State", state)
            if shown:
                badge = {"ok": ":green[OK]", "review": ":orange[REVIEW]", "ng": ":red[NG]"}[shown["decision"]]
                cols[1].markdown(f"**Decision**  \n### {badge}")
                cols[2].metric(
                    "Score", f"{shown['score']:.4g}", delta=f"{shown['score'] - t2:+.3g} vs T2", delta_color="inverse"
                )
                cols[3].metric("Label", shown.get("label") or "—")
                st.progress(
                    min(max(shown["norm_score"], 0.0), 1.0),
                    text=f"normalised score {shown['norm_score']:.2f} (0.5 = T2)",
                )
            if history:
                st.altair_chart(score_chart(list(reversed(history)), t1, t2), width="stretch")
            if session.can("operator") and st.button("Capture now", key=f"trigger-{source_id}"):
                try:
                    result = client.trigger(source_id)
                    st.toast(f"{source_id}: {result.get('decision', '?')} (score {result.get('score', 0):.4g})")
                except ApiError as exc:
                    st.error(exc.message)


live()
