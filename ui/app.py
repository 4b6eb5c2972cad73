"""The operator console (Streamlit). Run with ``appliance console`` or
``streamlit run ui/app.py`` with APPLIANCE_API_URL and APPLIANCE_TOKEN set.

Menus follow the token's role: viewers read, operators also judge alerts and trigger captures,
engineers also tune thresholds, retrain, train and manage models and sources, admins also manage
tokens.
"""

from __future__ import annotations

import os

import streamlit as st

from ui import session

st.set_page_config(page_title="Anomaly appliance", page_icon=":material/search:", layout="wide")
session.check_idle()
session.from_environment()


def login_page() -> None:
    st.title("Anomaly appliance console")
    if "idle_signed_out" in st.session_state:
        st.info(f"signed out after {st.session_state['idle_signed_out']:g} minutes without activity")
    if "env_error" in st.session_state:
        st.warning(f"the token from APPLIANCE_TOKEN was refused: {st.session_state['env_error']}")
    with st.form("login"):
        url = st.text_input("API address", os.environ.get("APPLIANCE_API_URL", session.DEFAULT_URL))
        token = st.text_input("Token", type="password", help="from `appliance token create` or the admin")
        if st.form_submit_button("Sign in") and token:
            error = session.sign_in(url, token)
            if error:
                st.error(error)
            else:
                st.rerun()


if "client" not in st.session_state:
    st.navigation([st.Page(login_page, title="Sign in", url_path="login")]).run()
else:
    role = st.session_state["role"]
    pages = {
        "Line": [
            st.Page("views/live.py", title="Live", icon=":material/videocam:", default=True),
            st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
            st.Page("views/thresholds.py", title="Threshold tuning", icon=":material/tune:"),
            st.Page("views/drift.py", title="Drift watch", icon=":material/trending_down:"),
        ],
        "Models": [
            st.Page("views/models.py", title="Models", icon=":material/inventory_2:"),
            st.Page("views/shadow.py", title="Shadow mode", icon=":material/compare:"),
        ],
    }
    if session.can("engineer"):
        pages["Models"][:0] = [
            st.Page("views/teach.py", title="Teach a source", icon=":material/school:"),
            st.Page("views/retrain.py", title="Retrain", icon=":material/model_training:"),
            st.Page("views/train/page.py", title="Train & evaluate", icon=":material/science:"),
        ]
        pages["Administration"] = [st.Page("views/settings.py", title="Settings", icon=":material/settings:")]
    with st.sidebar:
        st.caption(f"signed in as **{role}** at {st.session_state['client'].base_url}")
        if st.button("Sign out"):
            session.sign_out()
            st.rerun()
    st.navigation(pages).run()
