"""Alerts: open ones first, with image, heat map, score and model version; acknowledge, confirm a
defect, or mark a false positive (its image becomes new normal data for the next retraining)."""

from __future__ import annotations

import streamlit as st

from ui import session
from ui.client import ApiError

client, role = session.current()
st.title("Alerts")

STATES = {
    "open": "Open",
    "acknowledged": "Acknowledged",
    "confirmed": "Confirmed defect",
    "false_positive": "False positive",
}
f1, f2, f3, f4 = st.columns(4)
state = f1.selectbox("State", ["all", *STATES], format_func=lambda s: STATES.get(s, "All"), key="alerts_state")
try:
    known = sorted(client.sources())
except ApiError as exc:
    st.error(exc.message)
    st.stop()
# a source removed since its alerts were raised stays pickable while picked
sources = f2.multiselect("Source", sorted({*known, *st.session_state.get("alerts_sources", [])}), key="alerts_sources")
decisions = f3.multiselect("Decision", ["ng", "review"], key="alerts_decisions")
limit = f4.number_input("Show at most", 5, 500, 20, step=10, key="alerts_limit")
try:
    answer = client.alerts(
        state=None if state == "all" else state, limit=int(limit), sources=sources, decisions=decisions
    )
except ApiError as exc:
    st.error(exc.message)
    st.stop()
shown = answer["data"]
st.caption(f"{len(shown)} shown of {answer['count']:,} alerts; {answer['open']:,} open")
st.download_button(
    f"Export CSV: all {answer['count']:,} matching",
    # made when clicked, not at every rerun: months of alerts are many
    lambda: client.alerts_export(state=None if state == "all" else state, sources=sources, decisions=decisions),
    "alerts.csv",
    "text/csv",
    key="alerts_csv",
)


def act(alert_id: int, action: str) -> None:
    try:
        if action == "acknowledge":
            client.acknowledge(alert_id)
        else:
            client.verdict(alert_id, action)
        st.session_state["alerts_notice"] = f"alert {alert_id}: {action.replace('_', ' ')}"
    except ApiError as exc:
        st.session_state["alerts_notice"] = f"alert {alert_id}: {exc.message}"


if notice := st.session_state.pop("alerts_notice", None):
    st.toast(notice)

for alert in shown:
    title = (
        f"#{alert['id']} · {alert['source_id']} · {alert['decision'].upper()} · score {alert['score']:.4g} "
        + (f"· {alert['label']} " if alert.get("label") else "")
        + f"· {STATES[alert['state']]} · {alert['created_at'][:19]}"
    )
    first = alert is shown[0]
    with st.expander(title, expanded=alert["state"] == "open" and first):
        left, middle, right = st.columns([1, 1, 1])
        # images only where asked for (Streamlit renders collapsed expanders too): the first alert's at once
        if left.toggle("Image and heat map", value=first, key=f"img-{alert['id']}"):
            image = client.inspection_image(alert["inspection_id"])
            heat = client.inspection_image(alert["inspection_id"], heatmap=True)
            if image:
                left.image(image, caption="image", width="stretch")
            if heat:
                middle.image(heat, caption="heat map", width="stretch")
        crossed = "T2" if alert["decision"] == "ng" else "T1"
        right.markdown(
            f"**Score** {alert['score']:.4g} ({crossed} {alert['threshold']:.4g}, normalised {alert['norm_score']:.2f})"
            + (f"  \n**Found** {alert['label']}" if alert.get("label") else "")
            + (f"  \n**Item** {alert['item']}" if alert.get("item") else "")
            + f"  \n**Model** {alert['model_version']}  \n**Inspection** {alert['inspection_id']}  \n"
            f"**Event** `{alert['event_id']}`"
            + (f"  \n**Acknowledged by** {alert['acknowledged_by']}" if alert.get("acknowledged_by") else "")
            + (f"  \n**Judged by** {alert['verdict_by']}" if alert.get("verdict_by") else "")
        )
        if session.can("operator"):
            actions = (  # label, key prefix, action, disabled when, help
                ("Acknowledge", "ack", "acknowledge", alert["state"] != "open", None),
                ("Confirm defect", "conf", "confirmed", alert["state"] == "confirmed", None),
                (
                    "False positive",
                    "fp",
                    "false_positive",
                    alert["state"] == "false_positive",
                    "the image is queued as new normal data for the next retraining",
                ),
            )
            for label, prefix, action, disabled, why in actions:
                right.button(
                    label,
                    key=f"{prefix}-{alert['id']}",
                    on_click=act,
                    args=(alert["id"], action),
                    disabled=disabled,
                    help=why,
                    width="stretch",
                )
