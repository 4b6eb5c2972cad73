"""Settings: sources (add, remove, test the connection), MQTT and retention as in force, and API
tokens (admins)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError

client, role = session.current()
st.title("Settings")

st.subheader("Sources")
try:
    sources = client.sources()
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if sources:
    st.dataframe(
        pd.DataFrame(
            [
                {"source": k, **{f: v.get(f) for f in ("state", "frames_in", "scored", "queue_dropped")}}
                for k, v in sources.items()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
with st.form("src_add"):
    st.caption(
        "synth:line, folder:/path, file:/video.mp4, camera:0, rtsp://…, csv:/path.csv, mqtt://host/topic, modbus://host/…"
    )
    c = st.columns([3, 1])
    url = c[0].text_input("Source string", key="src_url")
    source_id = c[1].text_input("Id (optional)", key="src_id")
    b = st.columns(2)
    test = b[0].form_submit_button("Test connection")
    add = b[1].form_submit_button("Add source", type="primary")
    if test and url:
        try:
            out = client.test_source(url)
            (st.success if out["ok"] else st.warning)(out["message"])
        except ApiError as exc:
            st.error(exc.message)
    if add and url:
        try:
            out = client.add_source(url, source_id or None)
            st.success(f"added {out.get('source_id', url)}")
        except ApiError as exc:
            st.error(exc.message)
if sources:
    c = st.columns([3, 1])
    gone = c[0].selectbox("Remove source", list(sources), key="src_remove")
    if c[1].button("Remove", key="src_remove_go"):
        try:
            client.remove_source(gone)
            st.success(f"removed {gone}")
        except ApiError as exc:
            st.error(exc.message)

st.subheader("MQTT, retention, storage")
try:
    st.json(client.settings())
except ApiError as exc:
    st.error(exc.message)

if session.can("admin"):
    st.subheader("API tokens")
    tokens = client.tokens()
    st.dataframe(pd.DataFrame(tokens), hide_index=True, width="stretch")
    with st.form("tok_new"):
        c = st.columns(2)
        name = c[0].text_input("Name", key="tok_name")
        new_role = c[1].selectbox("Role", ["viewer", "operator", "engineer", "admin"], key="tok_role")
        if st.form_submit_button("Create token") and name:
            try:
                out = client.create_token(name, new_role)
                st.success("Copy it now; it is not shown again:")
                st.code(out["token"])
            except ApiError as exc:
                st.error(exc.message)
    live = [t for t in tokens if not t["revoked"]]
    if live:
        c = st.columns([3, 1])
        revoke = c[0].selectbox(
            "Revoke",
            [t["id"] for t in live],
            key="tok_revoke",
            format_func=lambda i: next(f"{t['name']} ({t['role']})" for t in live if t["id"] == i),
        )
        if c[1].button("Revoke", key="tok_revoke_go"):
            client.revoke_token(revoke)
            st.rerun()
