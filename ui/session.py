"""Who is signed in, and with which client: the console's session state in one place."""

from __future__ import annotations

import os

import streamlit as st

from ui.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:8000"


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
