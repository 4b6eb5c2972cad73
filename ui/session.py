"""Who is signed in, and with which client: the console's session state in one place."""

from __future__ import annotations

import os
import time

import streamlit as st

from ui.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:8000"
# minutes without a click before the console signs out (0: never); live-view refreshes do not count
IDLE_MINUTES = float(os.environ.get("APPLIANCE_CONSOLE_IDLE_MINUTES", "30"))


def check_idle(now: float | None = None) -> None:
    """Sign out a session idle for IDLE_MINUTES; otherwise note this run as activity."""
    now = time.time() if now is None else now
    last = st.session_state.get("last_active")
    if "client" in st.session_state and last is not None and IDLE_MINUTES and now - last > IDLE_MINUTES * 60:
        sign_out()
        st.session_state["idle_signed_out"] = IDLE_MINUTES
    st.session_state["last_active"] = now


def sign_in(url: str, token: str) -> str | None:
    """Check the token against the API; on success keep client and role in the session."""
    client = Client(url, token.strip())
    try:
        role = client.role()
    except ApiError as exc:
        return exc.message
    st.session_state["client"], st.session_state["role"] = client, role
    return None


def from_environment() -> None:
    """Sign in with APPLIANCE_API_URL / APPLIANCE_TOKEN when given (``appliance console`` sets them)."""
    token = os.environ.get("APPLIANCE_TOKEN", "")
    if token and "client" not in st.session_state and not st.session_state.get("signed_out"):
        error = sign_in(os.environ.get("APPLIANCE_API_URL", DEFAULT_URL), token)
        if error:
            st.session_state["env_error"] = error


def current() -> tuple[Client, str]:
    return st.session_state["client"], st.session_state["role"]


def sign_out() -> None:
    for key in ("client", "role"):
        st.session_state.pop(key, None)
    st.session_state["signed_out"] = True


def can(minimum: str) -> bool:
    return Client.allows(st.session_state.get("role", "viewer"), minimum)


def show_error(exc: Exception) -> None:
    st.error(str(exc.message if isinstance(exc, ApiError) else exc))
