"""One router per resource; ``ROUTERS`` is the order they appear in the OpenAPI document."""

from appliance.api.routes import (
    admin,
    alerts,
    datasets,
    drift,
    health,
    inspect,
    inspections,
    jobs,
    models,
    sources,
    thresholds,
    workflows,
)

ROUTERS = [
    health.router,
    sources.router,
    inspect.router,
    inspections.router,
    alerts.router,
    thresholds.router,
    drift.router,
    models.router,
    jobs.router,
    datasets.router,
    workflows.router,
    admin.router,
]
