"""The console's only way to the appliance: its REST API over HTTP.

The console may run on another machine than the appliance, so nothing here imports the appliance;
every figure a page shows comes from an API answer. Errors come back as :class:`ApiError` carrying
the API's own message (which names what was wrong), so pages can show it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx

ROLES = ("viewer", "operator", "engineer", "admin")


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status, self.message = status, message


@dataclass
class Client:
    base_url: str
    token: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout
        )

    # -- plumbing
    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            msg = f"cannot reach the appliance API at {self.base_url}: {exc}"
            raise ApiError(0, msg) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # FastAPI validation errors: name the field
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
            raise ApiError(response.status_code, str(detail))
        return response

    def _optional(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """The response, or None when the API says 404 (an image or frame that is not there)."""
        try:
            return self._call(method, path, **kwargs)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        return response.json() if response.content else None

    # -- who am I
    def role(self) -> str:
        return self._json("GET", "/me")["role"]

    @staticmethod
    def allows(role: str, minimum: str) -> bool:
        return ROLES.index(role) >= ROLES.index(minimum)

    # -- health and sources
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def sources(self) -> dict[str, dict[str, Any]]:
        return self._json("GET", "/sources")

    def frame(self, source_id: str, heatmap: bool = True) -> tuple[bytes, dict[str, str]] | None:
        """The newest inspected frame of a source (PNG) and its score / decision headers."""
        response = self._optional("GET", f"/sources/{_part(source_id)}/frame", params={"heatmap": heatmap})
        if response is None:
            return None
        headers = ("score", "norm-score", "decision", "captured", "label")
        return response.content, {k: unquote(response.headers.get(f"x-{k}", "")) for k in headers}

    def add_source(self, url: str, source_id: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/sources", json={"url": url, "source_id": source_id or None})

    def test_source(self, url: str) -> dict[str, Any]:
        return self._json("POST", "/sources/test", json={"url": url})

    def remove_source(self, source_id: str) -> None:
        self._call("DELETE", f"/sources/{_part(source_id)}")

    def trigger(self, source_id: str) -> dict[str, Any]:
        return self._json("POST", f"/sources/{_part(source_id)}/trigger")

    # -- inspections and alerts
    def inspections(self, source_id: str | None = None, limit: int = 200, **filters: Any) -> dict[str, Any]:
        params = {"limit": limit, **({"source_id": source_id} if source_id else {}), **filters}
        return self._json("GET", "/inspections", params=params)

    def hourly(self, hours: float = 24, source_id: str | None = None) -> list[dict[str, Any]]:
        """Inspections per source and hour: counts per decision, latency percentiles."""
        return self._json("GET", "/inspections/hourly", params={"hours": hours, **_source(source_id)})

    def inspection_image(self, inspection_id: int, heatmap: bool = False) -> bytes | None:
        response = self._optional("GET", f"/inspections/{inspection_id}/{'heatmap' if heatmap else 'image'}")
        return None if response is None else response.content

    def alerts(
        self,
        state: str | None = None,
        limit: int = 200,
        offset: int = 0,
        sources: Sequence[str] = (),
        decisions: Sequence[str] = (),
    ) -> dict[str, Any]:
        params = {"limit": limit, "offset": offset, "source_id": list(sources), "decision": list(decisions)}
        return self._json("GET", "/alerts", params={**params, **({"state": state} if state else {})})

    def alerts_export(
        self, state: str | None = None, sources: Sequence[str] = (), decisions: Sequence[str] = ()
    ) -> bytes:
        """Every alert that matches, as CSV (the API streams it from the database)."""
        params = {"source_id": list(sources), "decision": list(decisions), **({"state": state} if state else {})}
        return self._call("GET", "/alerts/export.csv", params=params).content

    def acknowledge(self, alert_id: int) -> dict[str, Any]:
        return self._json("POST", f"/alerts/{alert_id}/acknowledge")

    def verdict(self, alert_id: int, verdict: str) -> dict[str, Any]:
        return self._json("POST", f"/alerts/{alert_id}/verdict", json={"verdict": verdict})

    # -- shadow mode
    def shadows(self, version: str, source_id: str | None = None) -> list[dict[str, Any]]:
        return self._json("GET", f"/models/{_part(version)}/shadow", params=_source(source_id))

    def start_shadow(self, version: str, source_id: str, reason: str) -> dict[str, Any]:
        body = {"source_id": source_id, "reason": reason}
        return self._json("POST", f"/models/{_part(version)}/shadow", json=body)

    def stop_shadow(self, version: str, source_id: str, reason: str) -> dict[str, Any]:
        body = {"source_id": source_id, "reason": reason}
        return self._json("POST", f"/models/{_part(version)}/shadow/stop", json=body)

    def shadow_heatmap(self, version: str, result_id: int) -> bytes | None:
        r = self._optional("GET", f"/models/{_part(version)}/shadow/results/{result_id}/heatmap")
        return None if r is None else r.content

    # -- drift watch
    def drift(self) -> list[dict[str, Any]]:
        return self._json("GET", "/drift")

    def drift_events(self, source_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._json("GET", "/drift/events", params={"limit": limit, **_source(source_id)})

    def drift_event(self, event_id: int) -> dict[str, Any]:
        return self._json("GET", f"/drift/events/{event_id}")

    def reset_drift(self, source_id: str, reason: str) -> dict[str, Any]:
        return self._json("POST", f"/drift/{_part(source_id)}/reset", json={"reason": reason})

    # -- thresholds (``source_id`` None: the default model's, on every source without its own)
    def thresholds(self, source_id: str | None = None) -> dict[str, Any]:
        return self._json("GET", "/thresholds", params=_source(source_id))

    def scores(self, hours: float = 24, false_alarm_rate: float = 0.01, source_id: str | None = None) -> dict[str, Any]:
        params = {"hours": hours, "false_alarm_rate": false_alarm_rate, **_source(source_id)}
        return self._json("GET", "/thresholds/scores", params=params)

    def preview(self, t1: float, t2: float, hours: float = 24, source_id: str | None = None) -> dict[str, Any]:
        return self._json(
            "POST", "/thresholds/preview", json={"t1": t1, "t2": t2, "hours": hours, **_source(source_id)}
        )

    def set_thresholds(self, t1: float, t2: float, reason: str, source_id: str | None = None) -> dict[str, Any]:
        body = {"t1": t1, "t2": t2, "reason": reason, **_source(source_id)}
        return self._json("PUT", "/thresholds", json=body)

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._json("GET", "/audit", params={"limit": limit})

    # -- models
    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/models")

    def promote(self, version: str, reason: str, source_id: str | None = None) -> dict[str, Any]:
        body = {"reason": reason, **_source(source_id)}
        return self._json("POST", f"/models/{_part(version)}/promote", json=body)

    def rollback(self, reason: str, source_id: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/models/rollback", json={"reason": reason, **_source(source_id)})

    def test_model(self, version: str, dataset: str) -> dict[str, Any]:
        return self._json("POST", f"/models/{_part(version)}/test", json={"dataset": dataset})

    # -- teaching a source
    def teach_frames(self, source_id: str) -> dict[str, Any]:
        return self._json("GET", f"/sources/{_part(source_id)}/teach")

    def teach_frame(self, source_id: str, name: str) -> bytes | None:
        response = self._optional("GET", f"/sources/{_part(source_id)}/teach/{_part(name)}")
        return None if response is None else response.content

    def reject_frames(self, source_id: str, names: list[str]) -> dict[str, Any]:
        return self._json("POST", f"/sources/{_part(source_id)}/teach/reject", json={"names": names})

    def teach(self, **params: Any) -> dict[str, Any]:
        return self._json("POST", "/jobs/teach", json=params)

    def job_file(self, job_id: int, name: str) -> bytes | None:
        response = self._optional("GET", f"/jobs/{job_id}/files/{_part(name)}")
        return None if response is None else response.content

    def discard(self, version: str, reason: str) -> dict[str, Any]:
        return self._json("POST", f"/models/{_part(version)}/discard", json={"reason": reason})

    def download(self, version: str, onnx: bool = False) -> bytes:
        return self._call("GET", f"/models/{_part(version)}/{'onnx' if onnx else 'download'}").content

    def upload_model(self, name: str, data: bytes) -> dict[str, Any]:
        return self._json("POST", "/models", files={"file": (name, data, "application/zip")})

    # -- jobs and datasets
    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._json("GET", "/jobs", params={"limit": limit})

    def job(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def job_log(self, job_id: int) -> str:
        return self._call("GET", f"/jobs/{job_id}/log").text

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def retrain(self, **params: Any) -> dict[str, Any]:
        return self._json("POST", "/jobs/retrain", json=params)

    def run_project(self, project: str) -> dict[str, Any]:
        return self._json("POST", "/jobs/project", json={"project": project})

    def search(self, project: str, **params: Any) -> dict[str, Any]:
        return self._json("POST", "/jobs/search", json={"project": project, **params})

    def tradeoff_png(self, job_id: int) -> bytes | None:
        response = self._optional("GET", f"/jobs/{job_id}/tradeoff.png")
        return None if response is None else response.content

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/datasets")

    def dataset(self, name: str, limit: int = 50) -> dict[str, Any]:
        return self._json("GET", f"/datasets/{_part(name)}", params={"limit": limit})

    def dataset_file(self, name: str, path: str) -> bytes | None:
        response = self._optional("GET", f"/datasets/{_part(name)}/file", params={"path": path})
        return None if response is None else response.content

    def upload_dataset(self, name: str, filename: str, data: bytes, layout: str = "normal", **fmt: Any) -> dict:
        return self._json(
            "POST",
            "/datasets/upload",
            params={"name": name, "layout": layout, **fmt},
            files={"file": (filename, data, "application/zip")},
        )

    def sample_dataset(self, name: str, sample: str) -> dict[str, Any]:
        return self._json("POST", "/datasets/sample", json={"name": name, "sample": sample})

    # -- NNC workflows
    def networks(self) -> list[dict[str, Any]]:
        return self._json("GET", "/networks")

    def network_stats(self, zoo: str, input_shape: list[int] | None = None, **options: Any) -> dict[str, Any]:
        return self._json("POST", "/networks/stats", json={"zoo": zoo, "input": input_shape, "options": options})

    def spec_stats(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/networks/stats", json={"spec": spec})

    def import_nnc_project(self, filename: str, data: bytes) -> dict[str, Any]:
        """An NNC project (.sdcproj) as a network spec, task, config and the importer's notes."""
        return self._json("POST", "/networks/import", files={"file": (filename, data, "text/plain")})

    def projects(self) -> list[dict[str, Any]]:
        return self._json("GET", "/projects")

    def create_project(self, **body: Any) -> dict[str, Any]:
        return self._json("POST", "/projects", json=body)

    def predict(self, job_id: int, filename: str, data: bytes) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/predict", files={"file": (filename, data)})

    def predict_vector(self, job_id: int, values: list[float]) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/predict/vector", json={"values": values})

    # -- administration
    def settings(self) -> dict[str, Any]:
        return self._json("GET", "/settings")

    def tokens(self) -> list[dict[str, Any]]:
        return self._json("GET", "/tokens")

    def create_token(self, name: str, role: str) -> dict[str, Any]:
        return self._json("POST", "/tokens", json={"name": name, "role": role})

    def revoke_token(self, token_id: int) -> None:
        self._call("DELETE", f"/tokens/{token_id}")


def _source(source_id: str | None) -> dict[str, str]:
    return {"source_id": source_id} if source_id else {}


def _part(text: str) -> str:
    """One URL path segment: source strings hold '?', '&', '/' and ':'."""
    return quote(text, safe="")


# -- small pure helpers the pages share (kept here, out of the layout code) --------------------------
def parse_vector(text: str) -> list[float]:
    """Comma, space or newline separated numbers; the first bad token is named."""
    values = []
    for token in text.replace(",", " ").split():
        try:
            values.append(float(token))
        except ValueError as exc:
            msg = f"{token!r} is not a number"
            raise ValueError(msg) from exc
    if not values:
        msg = "no numbers given"
        raise ValueError(msg)
    return values
