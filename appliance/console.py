"""Start the console: ``streamlit run ui/app.py`` in a child process, pointed at the API.

The console is a separate program talking HTTP to the API; the appliance never imports it, it only
finds its script (DESIGN.md's import directions)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def app_path() -> Path:
    spec = importlib.util.find_spec("ui")  # locates the package without importing it
    if spec is None or spec.origin is None:
        msg = "the console package 'ui' is not installed"
        raise RuntimeError(msg)
    return Path(spec.origin).parent / "app.py"


def console_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        "200",
        "--client.toolbarMode",
        "minimal",
        "--logger.level",
        "warning",
    ]


def console_env(api_url: str, token: str | None) -> dict[str, str]:
    env = {**os.environ, "APPLIANCE_API_URL": api_url}
    if token:
        env["APPLIANCE_TOKEN"] = token
    return env


def exec_console(api_url: str, token: str | None, host: str = "127.0.0.1", port: int = 8501) -> None:
    """Become the console process (``appliance console``): signals reach Streamlit itself."""
    command = console_command(host, port)
    os.execve(command[0], command, console_env(api_url, token))


def start_console(api_url: str, token: str | None, host: str = "127.0.0.1", port: int = 8501) -> subprocess.Popen:
    """The console as a child process; with ``token`` it signs in by itself (else it asks)."""
    return subprocess.Popen(console_command(host, port), env=console_env(api_url, token), stdout=subprocess.DEVNULL)
