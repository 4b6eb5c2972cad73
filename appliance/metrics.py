"""The Prometheus text format of the pipeline's counters (``GET /metrics``)."""

from __future__ import annotations


def prometheus_label(value: str) -> str:
    """Escape a label value for the Prometheus text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(
    status: dict[str, dict], outbox_backlog: float, spool_backlog: int, cpu: dict[str, float] | None = None
) -> str:
    """Frames, decisions and latency percentiles per source; the outbox and spool backlogs; the
    inspector's CPU seconds per stage."""
    lines = ["# HELP appliance_frames_total Frames per source and stage.", "# TYPE appliance_frames_total counter"]
    for sid, s in status.items():
        label = prometheus_label(sid)
        for stage, value in (
            ("in", s.get("frames_in", 0)),
            ("scored", s["scored"]),
            ("dropped", s["queue_dropped"] + s.get("frames_dropped", 0)),
            ("rejected", s.get("rejected", 0)),
        ):
            lines.append(f'appliance_frames_total{{source="{label}",stage="{stage}"}} {value}')
    lines += ["# HELP appliance_decisions_total Decisions per source.", "# TYPE appliance_decisions_total counter"]
    for sid, s in status.items():
        for decision, value in s["decisions"].items():
            lines.append(f'appliance_decisions_total{{source="{prometheus_label(sid)}",decision="{decision}"}} {value}')
    lines += [
        "# HELP appliance_latency_ms Latency percentiles over recent items.",
        "# TYPE appliance_latency_ms gauge",
    ]
    for sid, s in status.items():
        for path in ("capture_to_decision_ms", "capture_to_alert_published_ms"):
            for q, value in s[path].items():
                quantile = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}[q]
                labels = f'source="{prometheus_label(sid)}",path="{path[:-3]}",quantile="{quantile}"'
                lines.append(f"appliance_latency_ms{{{labels}}} {value:.3f}")
    lines += [
        "# HELP appliance_inspector_cpu_seconds_total The inspector thread's CPU time per stage.",
        "# TYPE appliance_inspector_cpu_seconds_total counter",
    ]
    lines += [f'appliance_inspector_cpu_seconds_total{{stage="{k}"}} {v:.6f}' for k, v in sorted((cpu or {}).items())]
    lines.append(f"appliance_outbox_backlog {outbox_backlog}")
    lines.append(f"appliance_spool_backlog {spool_backlog}")
    return "\n".join(lines) + "\n"


def prometheus_mqtt(acknowledged: int, refused: int) -> str:
    """The durable MQTT messages (alerts, retained states) the broker acknowledged and refused."""
    return (
        "# HELP appliance_mqtt_messages_total Durable MQTT messages since start, by the broker's answer.\n"
        "# TYPE appliance_mqtt_messages_total counter\n"
        f'appliance_mqtt_messages_total{{answer="acknowledged"}} {acknowledged}\n'
        f'appliance_mqtt_messages_total{{answer="refused"}} {refused}\n'
    )


def prometheus_api(deferred: int) -> str:
    """API requests that waited for the line to catch up (``appliance.api.main.LineFirst``)."""
    return (
        "# HELP appliance_api_requests_deferred_total API requests that waited for the line to catch up.\n"
        "# TYPE appliance_api_requests_deferred_total counter\n"
        f"appliance_api_requests_deferred_total {deferred}\n"
    )
