"""The alert message (JSON, UTF-8), schema version 1, and the MQTT topic layout.

Topics live under ``{prefix}/{site}/{line}/{appliance_id}/``: ``status`` (retained, ``online`` /
``offline`` last will), ``alerts`` (QoS 1), ``inspections`` (QoS 0, optional),
``config/threshold`` (retained), ``cmd/trigger`` (subscribed), ``events/drift/{source}`` (retained:
the source's drift state, ``drifting`` / ``stable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.storage.models import Alert, Inspection

ALERT_SCHEMA_VERSION = 1


def topic_safe(source_id: str) -> str:
    """A source id as one topic level: MQTT wildcards and separators become '_'."""
    return "".join("_" if c in "/+#" else c for c in source_id)


@dataclass(frozen=True)
class Topics:
    prefix: str = "appliance"
    site: str = "site"
    line: str = "line"
    appliance_id: str = "appliance-1"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.line}/{self.appliance_id}"

    @property
    def own(self) -> str:
        """What every topic of this node starts with (its outbox rows are those under it)."""
        return f"{self.base}/"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def inspections(self) -> str:
        return f"{self.base}/inspections"

    @property
    def threshold(self) -> str:
        return f"{self.base}/config/threshold"

    def source_state(self, source_id: str) -> str:
        """Retained state of one source."""
        return f"{self.base}/sources/{topic_safe(source_id)}/state"

    def source_threshold(self, source_id: str) -> str:
        """Retained model and thresholds of one source (``config/threshold``: the default's)."""
        return f"{self.base}/config/threshold/{topic_safe(source_id)}"

    def drift(self, source_id: str) -> str:
        """Retained drift state of one source (``drifting`` / ``stable``) with the event that set it."""
        return f"{self.base}/events/drift/{topic_safe(source_id)}"

    @property
    def trigger(self) -> str:
        return f"{self.base}/cmd/trigger"

    @property
    def recipe(self) -> str:
        """Subscribed: a PLC switches a source's model (its recipe)."""
        return f"{self.base}/cmd/recipe"


def alert_message(alert: Alert, inspection: Inspection, topics: Topics, api_url: str = "") -> dict[str, Any]:
    """The payload consumers receive; ``event_id`` is their de-duplication key. An alert raised
    while the database is away is sent before its inspection is stored: ``inspection_id`` and the
    image links are null then (``GET /alerts`` finds it by ``event_id`` once the row is written back)."""
    base = api_url.rstrip("/")
    stored = inspection.id is not None
    return {
        "schema_version": ALERT_SCHEMA_VERSION,
        "event_id": alert.event_id,
        "ts": alert.created_at.isoformat(),
        "t_capture": inspection.t_capture.isoformat(),
        "site": topics.site,
        "line": topics.line,
        "appliance_id": topics.appliance_id,
        "source_id": alert.source_id,
        "inspection_id": inspection.id,
        "score": alert.score,
        "norm_score": alert.norm_score,
        "decision": alert.decision,
        "threshold": alert.threshold,
        "label": inspection.label,
        "item": inspection.item,  # the source's name for the part: file name, frame, trigger id
        "model_version": alert.model_version,
        "image_url": f"{base}/inspections/{inspection.id}/image" if stored and inspection.image_ref else None,
        "heatmap_url": f"{base}/inspections/{inspection.id}/heatmap" if stored and inspection.heatmap_ref else None,
    }
