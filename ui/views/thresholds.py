"""Threshold tuning on the real score histograms: current and candidate T1/T2 drawn on the recent
scores of OK items and confirmed defects; the API replays the stored scores to say what the
candidate would have raised and missed; presets; apply with a reason (audited). Per source and
model version: thresholds belong to the model that judges a source, and only its scores count."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError
from ui.components.charts import utc_time, utc_tooltip

client, role = session.current()
st.title("Threshold tuning")

try:
    sources = client.sources()
except ApiError as exc:
    st.error(exc.message)
    st.stop()
DEFAULT = "(the default model, on every source without thresholds of its own)"
judged = [sid for sid, s in sources.items() if s.get("mode") != "teach"]
scope = st.selectbox("Source", [*judged, DEFAULT], key="thr_source", help="sources in teach mode have no thresholds")
source_id = None if scope == DEFAULT else scope
c1, c2 = st.columns(2)
hours = c1.selectbox(
    "Scores from the last", [1, 8, 24, 72, 168, 720], index=2, format_func=lambda h: f"{h} h", key="thr_hours"
)
rate = c2.number_input("Target false-alarm rate (preset)", 0.0001, 0.4, 0.01, step=0.005, format="%.4f", key="thr_rate")
try:
    data = client.scores(hours=hours, false_alarm_rate=rate, source_id=source_id)
except ApiError as exc:
    st.error(exc.message)
    st.stop()

normal, confirmed, flagged = data["normal"], data["confirmed"], data["flagged"]
if not normal and not confirmed:
    st.info("No scores stored in this window yet.")
    st.stop()
everything = normal + confirmed + flagged + [data["t1"], data["t2"]]
low, high = float(min(everything)), float(max(everything)) * 1.05
current_key = (source_id, data["model_version"], data["t1"], data["t2"])


def choose(t1: float, t2: float) -> None:
    st.session_state["thr_t1"], st.session_state["thr_t2"] = float(t1), float(t2)


if st.session_state.get("thr_current") != current_key:  # another source or model, or applied: start from it
    choose(data["t1"], data["t2"])
    st.session_state["thr_current"] = current_key

presets = data["presets"]
p1, p2, p3 = st.columns(3)
if p1.button("Preset: target false-alarm rate", disabled="false_alarm_rate" not in presets, key="thr_p_rate"):
    choose(presets["false_alarm_rate"]["t1"], presets["false_alarm_rate"]["t2"])
if p2.button(
    "Preset: max F1", disabled="max_f1" not in presets, key="thr_p_f1", help="needs confirmed defects in the window"
):
    choose(presets["max_f1"]["t1"], presets["max_f1"]["t2"])
if p3.button("Back to current", key="thr_p_current"):
    choose(data["t1"], data["t2"])
rests = []
if data.get("calibrated_on"):
    rests.append(f"the model's own T1/T2 rest on {data['calibrated_on']} good items it never trained on")
if "false_alarm_rate" in presets:
    preset = presets["false_alarm_rate"]
    unjudged = int(preset["unjudged"])
    rests.append(
        f"the false-alarm preset on {int(preset['n']):,} scores from this window, every item not confirmed as a "
        "defect" + (f" ({unjudged:,} alerts not judged yet counted as good: judging them sharpens it)" * bool(unjudged))
    )
else:
    rests.append(f"the false-alarm preset needs more scores in this window ({len(normal) + len(flagged)} now)")
st.caption(
    "Thresholds from few items sit higher (an upper confidence bound on the quantile): " + "; ".join(rests) + "."
)
# exact values, never snapped to a grid: what is applied is what the operator typed or picked
step = max((high - low) / 200, 1e-6)
n1, n2 = st.columns(2)
t1 = n1.number_input("Candidate T1 (review)", min_value=0.0, step=step, format="%.6f", key="thr_t1")
t2 = n2.number_input("Candidate T2 (NG)", min_value=0.0, step=step, format="%.6f", key="thr_t2")
if t1 > t2:
    st.error("T1 (review) must not exceed T2 (NG)")
    st.stop()
low, high = min(low, t1), max(high, t2)

frames = [pd.DataFrame({"score": normal, "kind": "OK / false positive"})]
if confirmed:
    frames.append(pd.DataFrame({"score": confirmed, "kind": "confirmed defect"}))
if flagged:
    frames.append(pd.DataFrame({"score": flagged, "kind": "flagged, not judged"}))
scores = pd.concat(frames)
hist = (
    alt.Chart(scores)
    .mark_bar(opacity=0.6)
    .encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=60), title="anomaly score"),
        y=alt.Y("count():Q", stack=None, title="items", scale=alt.Scale(type="symlog")),
        color=alt.Color("kind:N", scale=alt.Scale(range=["#1565c0", "#c62828", "#f9a825"])),
    )
)
lines = pd.DataFrame(
    {
        "x": [data["t1"], data["t2"], t1, t2],
        "which": ["current T1", "current T2", "candidate T1", "candidate T2"],
        "dash": ["current", "current", "candidate", "candidate"],
    }
)
rules = (
    alt.Chart(lines)
    .mark_rule(size=2)
    .encode(
        x="x:Q",
        strokeDash=alt.StrokeDash("dash:N", title=None),
        tooltip=["which", "x"],
        color=alt.value("black"),
    )
)
st.altair_chart(alt.layer(hist, rules).properties(height=300), width="stretch")
st.caption(
    f"{len(normal)} OK scores, {len(confirmed)} confirmed defects, {len(flagged)} flagged not judged "
    f"(log-scaled counts); model {data['model_version']}"
)

try:
    preview = client.preview(t1, t2, hours, source_id=source_id)
    # a second read of the same thresholds would differ only by the line's progress in between
    unchanged = (t1, t2) == (data["t1"], data["t2"])
    current = preview if unchanged else client.preview(data["t1"], data["t2"], hours, source_id=source_id)
except ApiError as exc:
    st.error(exc.message)
    st.stop()


def _rate(value: float, sign: str = "") -> str:
    """A count per hour or shift as people read it: 32,220 / 41.5 / 0.25."""
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:{sign},.{digits}f}"


def _change(value: float) -> str | None:
    """The change against the current thresholds; nothing when there is none."""
    return None if abs(value) < 1e-9 else _rate(value, "+")


def _entry(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return "" if value is None else str(value)


def _span(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


m = st.columns(5)
m[0].metric(
    "Alerts per hour",
    _rate(preview["alerts_per_hour"]),
    delta=_change(preview["alerts_per_hour"] - current["alerts_per_hour"]),
    delta_color="inverse",
)
m[1].metric(
    "Alerts per 8 h shift",
    _rate(preview["alerts_per_shift"]),
    delta=_change(preview["alerts_per_shift"] - current["alerts_per_shift"]),
    delta_color="inverse",
)
m[2].metric("NG per hour", _rate(preview["ng_per_hour"]))
m[3].metric("Review per hour", _rate(preview["review_per_hour"]))
m[4].metric(
    "Confirmed defects missed",
    f"{preview['missed_confirmed_defects']} of {preview['confirmed_defects']}",
    delta=_change(preview["missed_confirmed_defects"] - current["missed_confirmed_defects"]),
    delta_color="inverse",
)
if preview["replayed"]:
    st.caption(f"replayed over {preview['inspections']:,} inspections in {_span(preview['hours'])}")
else:
    st.caption(
        f"{preview['inspections']:,} inspections in {_span(preview['hours'])}, read from the hourly history "
        "(scores resolved to 0.5 %; debounce not replayed over so many)"
    )

hourly = pd.DataFrame(client.hourly(hours=hours, source_id=source_id))
if not hourly.empty:
    per_hour = hourly.melt(id_vars=["hour"], value_vars=["review", "ng"], var_name="decision", value_name="items")
    per_hour = per_hour.groupby(["hour", "decision"], as_index=False)["items"].sum()
    chart = (
        alt.Chart(per_hour)
        .mark_bar()
        .encode(
            x=utc_time("hour", "hour"),
            y=alt.Y("items:Q", title="alerts raised"),
            color=alt.Color("decision:N", scale=alt.Scale(domain=["review", "ng"], range=["#f9a825", "#c62828"])),
            tooltip=[utc_tooltip("hour", "hour"), "decision", "items"],
        )
        .properties(height=160)
    )
    st.altair_chart(chart, width="stretch")
    st.caption(f"alerts per hour under the thresholds of the time; {int(hourly['inspections'].sum()):,} inspections")

if session.can("engineer"):
    with st.form("thr_apply"):
        reason = st.text_input("Reason (kept in the audit log)", key="thr_reason")
        if st.form_submit_button("Apply candidate thresholds"):
            try:
                applied = client.set_thresholds(t1, t2, reason, source_id=source_id)
                where = f"source {source_id}" if source_id else "every source the default model judges"
                st.success(
                    f"applied T1 {applied['t1']:.6g}, T2 {applied['t2']:.6g} to {applied['model_version']} on {where}"
                )
            except ApiError as exc:
                st.error(exc.message)
    with st.expander("Audit log"):
        audit = pd.DataFrame(client.audit(50))
        for column in ("old", "new"):  # one line of text each: entries hold settings, versions or nothing
            if column in audit:
                audit[column] = audit[column].map(_entry)
        st.dataframe(audit, width="stretch", hide_index=True)
else:
    st.caption("Applying thresholds needs an engineer token.")
