"""Models: the registry with versions, metrics, provenance and status; download a bundle or its
ONNX graph; promote, roll back or discard (engineers)."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError

client, role = session.current()
st.title("Models")

try:
    models = client.models()
except ApiError as exc:
    st.error(exc.message)
    st.stop()
if notice := st.session_state.pop("models_notice", None):
    st.success(notice)
active = next((m for m in models if m["status"] == "active"), None)
st.metric("Active model", active["version"] if active else "none")
table = pd.DataFrame(
    [
        {
            "version": m["version"],
            "status": m["status"],
            "kind": m["kind"],
            "created": m["created_at"][:19],
            "activated": (m["activated_at"] or "")[:19],
            "digest": m["digest"][:12],
        }
        for m in models
    ]
)
st.dataframe(table, width="stretch", hide_index=True)

version = st.selectbox("Version", [m["version"] for m in models], key="models_version")
chosen = next((m for m in models if m["version"] == version), None)
if chosen:
    left, right = st.columns(2)
    with left:
        st.subheader("Metrics and provenance")
        st.json(chosen["metrics"] or {}, expanded=1)
    with right:
        st.subheader("Files")
        if st.button("Prepare downloads", key="models_fetch"):
            try:
                st.session_state["models_files"] = (
                    version,
                    client.download(version),
                    client.download(version, onnx=True),
                )
            except ApiError as exc:
                st.error(exc.message)
        files = st.session_state.get("models_files")
        if files and files[0] == version:
            st.download_button("Model bundle (.zip)", files[1], f"{version}.zip", "application/zip", key="models_zip")
            st.download_button("ONNX graph", files[2], f"{version}.onnx", "application/octet-stream", key="models_onnx")
        if session.can("engineer"):
            st.subheader("Change the model that judges")
            default = "(the default model: sources without one of their own)"
            scopes = [default, *client.sources()]
            scope = st.selectbox("For", scopes, key="models_scope", help="a source's own model is its recipe")
            source_id = None if scope == default else scope
            where = f"on {source_id}" if source_id else "as the default"
            reason = st.text_input("Reason (audited)", key="models_reason")

            def change(action: str) -> None:
                try:
                    if action == "promote":
                        out = client.promote(version, reason, source_id=source_id)
                        st.session_state["models_notice"] = f"{out['model_version']} is active {where}"
                    elif action == "rollback":
                        out = client.rollback(reason, source_id=source_id)
                        st.session_state["models_notice"] = f"rolled back: {out['model_version']} is active {where}"
                    else:
                        client.discard(version, reason)
                        st.session_state["models_notice"] = f"{version} discarded"
                except ApiError as exc:
                    st.session_state["models_error"] = exc.message

            active_or_no_reason = chosen["status"] == "active" or len(reason) < 3
            for label, action, disabled, why in (
                ("Promote this version", "promote", active_or_no_reason, None),
                ("Roll back", "rollback", len(reason) < 3, "back to the model active before the current one"),
                ("Discard", "discard", active_or_no_reason, None),
            ):
                st.button(
                    label,
                    on_click=change,
                    args=(action,),
                    key=f"models_{action}",
                    disabled=disabled,
                    help=why,
                    width="stretch",
                )
            if error := st.session_state.pop("models_error", None):
                st.error(error)
            upload = st.file_uploader("Register a model bundle (.zip)", type=["zip"], key="models_upload")
            if upload is not None and st.button("Upload", key="models_upload_go"):
                try:
                    out = client.upload_model(upload.name, upload.getvalue())
                    st.success(f"registered {out['version']} as a candidate")
                except ApiError as exc:
                    st.error(exc.message)
    with st.expander("Raw record"):
        st.code(json.dumps(chosen, indent=1), language="json")
