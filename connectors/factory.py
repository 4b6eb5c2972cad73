"""One source string per input (OpenCV's ``video.py`` convention): ``open_source`` parses it,
builds the source, and starts it.

- ``synth:line?size=128&defect_rate=0.1&seed=0&fps=50``: the synthetic production line
- ``folder:/path?poll=0.5&settle=2``: new images in a folder, each processed once (restart-safe;
  a half-written image is retried until it has stopped changing for ``settle`` seconds)
- ``file:video.mp4?loop=1&live=0``, ``camera:0``, ``rtsp://…``, ``http://…``: OpenCV video
  (``file:…?fps=100&loop=1``: a recording replayed at line speed, as a camera delivers it)
- ``csv:readings.csv?rate=100&window=64&hop=32``: sensor readings replayed into windows
- ``mqtt://host:port/plant/line/sensors?window=64&hop=32&channels=a,b&share=ingest``: JSON readings
- ``modbus://host:502/100?count=3&unit=1&interval=0.1&window=32``: Modbus TCP registers, polled

A source's id defaults to its string without credentials (``source_id_for``).
"""

from __future__ import annotations

import urllib.parse

from connectors.base import Source, SourceError, check_source_id, parse_options, redact, source_id_for
from connectors.folder import FolderSource
from connectors.sensors import CsvSensorSource, ModbusSource, MqttSensorSource
from connectors.synthetic import SyntheticSource
from connectors.video import VideoSource

MODBUS_OPTIONS = {
    "count": int,
    "unit": int,
    "kind": str,
    "scale": float,
    "interval": float,
    "window": int,
    "hop": int,
    "backoff": float,
    "max_backoff": float,
}
VIDEO_OPTIONS = {
    "live": int,
    "loop": int,
    "fps": float,
    "buffer": int,
    "backoff": float,
    "max_backoff": float,
    "max_retries": int,
}


def file_paths(url: str) -> list[str]:
    """The files a source string reads (file, folder, CSV) and the state file it writes."""
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    paths = [path] if scheme in ("folder", "file", "csv") else []
    return paths + urllib.parse.parse_qs(query).get("state_file", [])


def open_source(url: str, source_id: str | None = None) -> Source:
    """Build the source a string names and start it (see the module docstring)."""
    return build_source(url, source_id).start()


def build_source(url: str, source_id: str | None = None) -> Source:
    """The source a string names, not started yet."""
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    sid = check_source_id(source_id or source_id_for(url))
    if scheme == "synth":
        if path != "line":
            msg = f"unknown synthetic source {path!r}; use synth:line"
            raise SourceError(msg)
        opts = parse_options(query, {"size": int, "defect_rate": float, "seed": int, "fps": float, "kinds": str})
        return SyntheticSource(sid, url, **opts)
    if scheme == "folder":
        return FolderSource(sid, url, path, **parse_options(query, {"poll": float, "settle": float, "state_file": str}))
    if scheme in ("camera", "file", "rtsp", "http", "https"):
        return _video(sid, url, scheme, path, query)
    if scheme == "mqtt":
        return _mqtt(sid, url)
    if scheme == "modbus":
        return _modbus(sid, url)
    if scheme == "csv":
        opts = parse_options(query, {"rate": float, "window": int, "hop": int, "loop": int})
        opts["loop"] = bool(opts.get("loop", 0))
        return CsvSensorSource(sid, url, path, **opts)
    msg = (
        f"unknown source {redact(url)!r}; use synth:line, folder:, file:, camera:, rtsp://, http://, csv:, "
        "mqtt://, modbus://"
    )
    raise SourceError(msg)


def _video(sid: str, url: str, scheme: str, path: str, query: str) -> VideoSource:
    opts = parse_options(query, VIDEO_OPTIONS)
    if scheme == "camera":
        if not path.isdigit():
            msg = f"camera index must be a number, got {path!r}"
            raise SourceError(msg)
        target: str | int = int(path)
    else:
        target = path if scheme == "file" else url.split("?")[0]
    live = bool(opts.pop("live", scheme != "file" or opts.get("fps", 0) > 0))
    return VideoSource(sid, url, target, live=live, loop=bool(opts.pop("loop", 0)), **opts)


def _mqtt(sid: str, url: str) -> MqttSensorSource:
    parsed = urllib.parse.urlsplit(url)
    opts = parse_options(parsed.query, {"window": int, "hop": int, "channels": str, "share": str})
    return MqttSensorSource(
        sid,
        url,
        parsed.hostname or "127.0.0.1",
        parsed.port or 1883,
        parsed.path.lstrip("/"),
        username=urllib.parse.unquote(parsed.username or ""),
        password=urllib.parse.unquote(parsed.password or ""),
        **opts,
    )


def _modbus(sid: str, url: str) -> ModbusSource:
    parsed = urllib.parse.urlsplit(url)
    register = parsed.path.lstrip("/")
    if not register.isdigit():
        msg = f"modbus source needs the first register as its path: modbus://host:502/100, got {redact(url)!r}"
        raise SourceError(msg)
    opts = parse_options(parsed.query, MODBUS_OPTIONS)
    return ModbusSource(sid, url, parsed.hostname or "127.0.0.1", parsed.port or 502, int(register), **opts)
