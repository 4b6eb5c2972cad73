"""Drift watch: each source's inputs and normal scores against the reference it learned when its
model began judging it. A drifting source shows what moved (before / after histograms per feature)
and what to do: check the lighting or optics, retrain from recent OK items, or, when the new
conditions are the line's normal, reset the reference (audited)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError

client, role = session.current()
st.title("Drift watch")
st.caption(
    "Every window of frames is compared with the source's reference (brightness, contrast, sharpness, "
    "and the scores of normal-looking parts, below the lowest review threshold either side had). "
    "A drift is called when a feature moves past its critical distance: "
    "on an unchanged line that happens at most at the configured rate per window."
)

try:
    sources = client.drift()
    events = client.drift_events(limit=100)
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if not sources:
    st.info("No sources are running.")
    st.stop()

table = pd.DataFrame(
    [
        {
            "source": s["source_id"],
            "state": s["state"],
            "model": s["model_version"] or "(teach mode)",
            "reference": f"{s['reference_frames']}/{s['reference_needed']}",
            "window": f"{s['window_frames']}/{s['window']}",
            "windows tested": s["windows_tested"],
            "scores compared below": s.get("score_below"),  # the lowest T1 either side had
        }
        for s in sources
    ]
)
st.dataframe(table, hide_index=True, width="stretch")

for s in sources:
    if s["state"] != "drifting":
        continue
    latest = next((e for e in events if e["source_id"] == s["source_id"]), None)
    with st.container(border=True):
        st.warning(f"**{s['source_id']}** is drifting: {latest['reason'] if latest else ''}")
        for hint in latest["hints"] if latest else []:
            st.markdown(f"- {hint}")
        c1, c2 = st.columns(2)
        c1.page_link("views/retrain.py", label="Retrain from recent OK items", icon=":material/model_training:")
        if session.can("engineer"):
            with c2.popover("The new conditions are normal: reset the reference"):
                reason = st.text_input("Reason (audited)", key=f"drift_reason_{s['source_id']}")
                if st.button("Reset", key=f"drift_reset_{s['source_id']}", disabled=len(reason) < 3):
                    try:
                        client.reset_drift(s["source_id"], reason)
                        st.rerun()
                    except ApiError as exc:
                        st.error(exc.message)

st.subheader("Events")
if not events:
    st.info("No drift events yet.")
    st.stop()
pick = st.selectbox(
    "Event",
    [e["id"] for e in events],
    format_func=lambda i: next(
        f"#{e['id']} {e['created_at'][:19]} {e['source_id']}: {e['state']} ({e['reason']})"
        for e in events
        if e["id"] == i
    ),
    key="drift_event",
)
try:
    event = client.drift_event(pick)
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if event["tests"]:
    st.dataframe(pd.DataFrame(event["tests"]), hide_index=True, width="stretch")
if event.get("before") and event.get("after"):
    features = [f for f in event["before"] if f in event["after"] and event["before"][f] and event["after"][f]]
    columns = st.columns(min(len(features), 2) or 1)
    for i, feature in enumerate(features):
        data = pd.concat(
            [
                pd.DataFrame({"value": event["before"][feature], "frames": "reference"}),
                pd.DataFrame({"value": event["after"][feature], "frames": "window"}),
            ]
        )
        chart = (  # shares of each side's frames: the reference holds more frames than a window
            alt.Chart(data, title=feature)
            .transform_bin(["bin", "bin_end"], "value", bin=alt.Bin(maxbins=40))
            .transform_aggregate(n="count()", groupby=["bin", "bin_end", "frames"])
            .transform_joinaggregate(total="sum(n)", groupby=["frames"])
            .transform_calculate(share="datum.n / datum.total")
            .mark_bar(opacity=0.55)
            .encode(
                x=alt.X("bin:Q", title=feature, scale=alt.Scale(zero=False)),
                x2="bin_end:Q",
                y=alt.Y("share:Q", stack=None, title="share of frames", axis=alt.Axis(format="%")),
                y2=alt.datum(0),
                color=alt.Color("frames:N", scale=alt.Scale(range=["#4c78a8", "#e45756"])),
            )
            .properties(height=220)
        )
        columns[i % len(columns)].altair_chart(chart, width="stretch")
