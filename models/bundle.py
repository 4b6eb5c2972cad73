"""The model bundle: one zip file that carries a trained model.

Members: ``model.json`` (format version, kind, networks as specs, input spec, post-processing:
score statistics and calibrated thresholds, labels, provenance), ``params.npz`` (read with
``allow_pickle=False``) and ``model.onnx``. Serving reads ``model.json`` and ``model.onnx`` only;
training code rebuilds the engine networks from the specs and parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MEMBERS = ("model.json", "params.npz", "model.onnx")
KINDS = ("classifier", "regressor", "autoencoder", "detector")


class BundleError(ValueError):
    """A bundle file is missing, corrupt, truncated or of a newer format."""


@dataclass
class Bundle:
    meta: dict[str, Any]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    onnx_bytes: bytes = b""

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", ""))

    def save(self, path: str | Path) -> str:
        """Write atomically; returns the file's SHA-256."""
        validate_meta(self.meta, "bundle")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params = io.BytesIO()
        np.savez(params, **self.params)
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("model.json", json.dumps(self.meta, indent=2, sort_keys=True))
            zf.writestr("params.npz", params.getvalue())
            zf.writestr("model.onnx", self.onnx_bytes)
        tmp.replace(path)
        return file_digest(path)

    def network(self, name: str):
        """Rebuild engine network ``name`` with its trained parameters (training side only)."""
        from models.spec import build

        specs = self.meta["networks"]
        if name not in specs:
            msg = f"bundle has no network {name!r}; it has {sorted(specs)}"
            raise BundleError(msg)
        net = build(specs[name])
        prefix = f"{name}/"
        state = {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}
        try:
            net.module.load_state_dict(state)
        except (KeyError, ValueError) as exc:
            msg = f"bundle parameters do not fit network {name!r}: {exc}"
            raise BundleError(msg) from exc
        net.module.eval()
        return net


def new_meta(kind: str, name: str, networks: dict[str, dict], input_spec: dict, **extra: Any) -> dict[str, Any]:
    """Fresh ``model.json`` contents with format version and creation time."""
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        # time, then random: two models made in the same second (a first start and a retrain, two
        # nodes) still get distinct versions, and the registry keys models by version
        "version": extra.pop("version", f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "networks": networks,
        "input": input_spec,
        "postprocess": extra.pop("postprocess", {}),
        "labels": extra.pop("labels", []),
        "provenance": extra.pop("provenance", {}),
    }
    meta.update(extra)
    validate_meta(meta, "new bundle")
    return meta


def validate_meta(meta: Any, where: str) -> None:
    if not isinstance(meta, dict):
        msg = f"{where}: model.json is not a JSON object"
        raise BundleError(msg)
    version = meta.get("format_version")
    if not isinstance(version, int):
        msg = f"{where}: model.json has no integer format_version"
        raise BundleError(msg)
    if version > FORMAT_VERSION:
        msg = f"{where}: bundle format {version} is newer than this software reads ({FORMAT_VERSION}); upgrade"
        raise BundleError(msg)
    for key in ("kind", "networks", "input"):
        if key not in meta:
            msg = f"{where}: model.json lacks {key!r}"
            raise BundleError(msg)
    if meta["kind"] not in KINDS:
        msg = f"{where}: kind {meta['kind']!r} is not one of {KINDS}"
        raise BundleError(msg)


def read_member(zf: zipfile.ZipFile, name: str, where: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError as exc:
        msg = f"{where}: bundle lacks {name}"
        raise BundleError(msg) from exc
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        msg = f"{where}: {name} is corrupt or truncated ({exc})"
        raise BundleError(msg) from exc


def open_zip(path: str | Path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such bundle file"
        raise BundleError(msg)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        msg = f"{path}: not a model bundle (corrupt or truncated zip: {exc})"
        raise BundleError(msg) from exc


def read_meta(zf: zipfile.ZipFile, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(read_member(zf, "model.json", where).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{where}: model.json is not valid JSON ({exc})"
        raise BundleError(msg) from exc
    validate_meta(meta, where)
    return meta


def load(path: str | Path) -> Bundle:
    """Read and check a whole bundle (meta, parameters, ONNX graph)."""
    where = str(path)
    with open_zip(path) as zf:
        meta = read_meta(zf, where)
        raw = read_member(zf, "params.npz", where)
        onnx_bytes = read_member(zf, "model.onnx", where)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            params = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        msg = f"{where}: params.npz is unreadable ({exc})"
        raise BundleError(msg) from exc
    if not onnx_bytes:
        msg = f"{where}: model.onnx is empty"
        raise BundleError(msg)
    return Bundle(meta=meta, params=params, onnx_bytes=onnx_bytes)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def params_of(networks: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{name: module}`` → flat parameter dict with ``name/`` prefixes (params + buffers)."""
    return {f"{name}/{k}": v for name, module in networks.items() for k, v in module.state_dict().items()}


def bundle_from_network(
    net: Any,
    kind: str,
    input_spec: dict[str, Any],
    labels: list[str] | None = None,
    postprocess: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
) -> Bundle:
    """A bundle holding one trained network (``models.spec.Network``) as ``main``."""
    from models.onnx_export import to_onnx

    onnx_model = to_onnx(net.module, net.input_shape, net.name)
    meta = new_meta(
        kind,
        name or net.name,
        {"main": net.spec},
        input_spec,
        labels=labels or [],
        postprocess=postprocess or {},
        provenance=provenance or {},
    )
    return Bundle(meta, params_of({"main": net.module}), onnx_model.SerializeToString())
