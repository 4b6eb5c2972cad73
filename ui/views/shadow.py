"""Shadow mode: prove a candidate on the live line before it decides anything. Put a registered
version in shadow on a source; it scores every frame the source's model scores and raises
nothing. Compare the two on the same frames (agreement, alert rates per hour and shift, score
distributions, judged alerts, the frames where they disagree with both heat maps), then promote
it in one click or stop it; the comparison stays with the model."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError
from ui.components.charts import utc_time, utc_tooltip

client, role = session.current()
st.title("Shadow mode")

try:
    models = client.models()
    sources = client.sources()
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if notice := st.session_state.pop("shadow_notice", None):
    st.success(notice)
judged = {sid: s for sid, s in sources.items() if s.get("mode") == "inspecting"}
running = {s["shadow_version"]: sid for sid, s in judged.items() if s.get("shadow_version")}
versions = [m["version"] for m in models if m["status"] != "retired"]
if not versions:
    st.info("No models registered.")
    st.stop()
version = st.selectbox(
    "Candidate",
    versions,
    index=versions.index(next(iter(running))) if running else 0,
    key="shadow_version",
    format_func=lambda v: f"{v} (in shadow on {running[v]})" if v in running else v,
)

if session.can("engineer"):
    with st.expander("Put this version in shadow on a source", expanded=version not in running):
        if not judged:
            st.info("No source is judged by a model yet: a shadow needs one to compare with.")
        else:
            source = st.selectbox(
                "Source",
                list(judged),
                key="shadow_source",
                format_func=lambda sid: f"{sid} (judged by {judged[sid]['model_version']})",
            )
            reason = st.text_input("Reason (audited)", key="shadow_reason")
            if st.button("Start shadow", key="shadow_start", disabled=len(reason) < 3):
                try:
                    client.start_shadow(version, source, reason)
                    st.session_state["shadow_notice"] = f"{version} is in shadow on {source}"
                    st.rerun()
                except ApiError as exc:
                    st.error(exc.message)

try:
    shadows = client.shadows(version)
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if not shadows:
    st.info(f"{version} has not been in shadow yet.")
    st.stop()


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def show(c: dict, key: str) -> None:
    b = c["binding"]
    st.subheader(f"{b['source_id']} · {b['state']}")
    st.caption(
        f"started {b['started_at'][:19]} by {b['started_by']} ({b['reason']})"
        + (f"; ended {b['ended_at'][:19]} by {b['ended_by']}" if b["ended_at"] else "")
    )
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Frames compared", c["frames"])
    m2.metric("Decisions agree", pct(c["agreement"]))
    m3.metric("Alert rate: model in charge", pct(c["alert_rate"]["active"]))
    m4.metric("Alert rate: shadow", pct(c["alert_rate"]["shadow"]))
    left, right = st.columns(2)
    with left:
        st.markdown("**Decisions** (rows: the model in charge; columns: the shadow)")
        st.dataframe(pd.DataFrame(c["confusion"]).T, width="stretch")
        v = c["verdicts"]
        st.markdown(
            f"**Judged alerts**: of {v['confirmed']['n']} confirmed defects the shadow would have caught "
            f"{v['confirmed']['shadow_caught']}; of {v['false_positive']['n']} false positives it would have "
            f"raised {v['false_positive']['shadow_raised']}. Flagged only by the shadow (no verdict, nobody "
            f"saw an alert): {c['only_shadow_flagged']}; only by the model in charge: {c['only_active_flagged']}."
        )
        if c["shifts"]:
            shifts = pd.DataFrame(c["shifts"])
            shifts["start"] = shifts["start"].str[:16]
            st.markdown("**Alert rate per shift**")
            st.dataframe(
                shifts[["start", "frames", "active_rate", "shadow_rate"]].style.format(
                    {"active_rate": "{:.1%}", "shadow_rate": "{:.1%}"}
                ),
                hide_index=True,
                width="stretch",
            )
    with right:
        scores = pd.concat(
            [
                pd.DataFrame({"norm_score": c["scores"]["active"], "model": "in charge"}),
                pd.DataFrame({"norm_score": c["scores"]["shadow"], "model": "shadow"}),
            ]
        )
        if len(scores):
            chart = (
                alt.Chart(scores, title="Normalised scores (T2 at 0.5 for both)")
                .mark_bar(opacity=0.55)
                .encode(
                    x=alt.X("norm_score:Q", bin=alt.Bin(maxbins=40), title="normalised score"),
                    y=alt.Y("count():Q", stack=None, title="frames"),
                    color="model:N",
                )
                .properties(height=220)
            )
            st.altair_chart(chart, width="stretch")
        if c["hours"]:
            hours = pd.DataFrame(c["hours"])
            hours["in charge"] = hours["active_flagged"] / hours["frames"]
            hours["shadow"] = hours["shadow_flagged"] / hours["frames"]
            long = hours.melt("hour", ["in charge", "shadow"], var_name="model", value_name="alert rate")
            chart = (
                alt.Chart(long, title="Alert rate per hour")
                .mark_line(point=True)
                .encode(
                    x=utc_time("hour", "hour"),
                    y=alt.Y("alert rate:Q", axis=alt.Axis(format="%")),
                    color="model:N",
                    tooltip=[utc_tooltip("hour", "hour"), "model", alt.Tooltip("alert rate:Q", format=".1%")],
                )
                .properties(height=200)
            )
            st.altair_chart(chart, width="stretch")
    if c["disagreements"]:
        st.markdown(
            "**Where they disagree** (newest first): the frame, the heat map of the model in charge, the shadow's"
        )
        for item in c["disagreements"][:6]:
            cols = st.columns([1, 1, 1, 2])
            iid = item["inspection_id"]
            image = client.inspection_image(iid) if iid else None
            heat = client.inspection_image(iid, heatmap=True) if iid else None
            shadow_heat = client.shadow_heatmap(b["model_version"], item["id"]) if item["shadow_heatmap_url"] else None
            for col, data in zip(cols[:3], (image, heat, shadow_heat), strict=True):
                if data:
                    col.image(data, width="stretch")
                else:
                    col.caption("(not kept)")
            cols[3].markdown(
                f"`{item['t_capture'][:19]}` inspection {iid}  \n"
                f"in charge: **{item['active_decision']}** ({item['active_score']:.4g})  \n"
                f"shadow: **{item['decision']}** ({item['score']:.4g})"
            )
    if b["state"] == "running" and session.can("engineer"):
        reason = st.text_input("Reason (audited)", key=f"shadow_end_reason_{key}")
        c1, c2 = st.columns(2)
        try:
            if c1.button(f"Promote {b['model_version']} on this source", key=f"shadow_promote_{key}",
                         type="primary", disabled=len(reason) < 3):  # fmt: skip
                client.promote(b["model_version"], reason, source_id=b["source_id"])
                st.session_state["shadow_notice"] = f"{b['model_version']} judges {b['source_id']} now"
                st.rerun()
            if c2.button("Stop the shadow", key=f"shadow_stop_{key}", disabled=len(reason) < 3):
                client.stop_shadow(b["model_version"], b["source_id"], reason)
                st.session_state["shadow_notice"] = f"shadow of {b['model_version']} on {b['source_id']} stopped"
                st.rerun()
        except ApiError as exc:
            st.error(exc.message)


for comparison in shadows:
    with st.container(border=True):
        show(comparison, str(comparison["binding"]["id"]))
