"""The REST API's application: middleware, exception handlers and the routers.

Bearer tokens with roles: viewer < operator < engineer < admin (:mod:`appliance.api.deps`).
Domain errors become 4xx / 5xx answers in one place (:mod:`appliance.api.errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from appliance.api.errors import add_exception_handlers
from appliance.api.routes import ROUTERS

if TYPE_CHECKING:
    from appliance.runtime import Appliance


async def refuse_nul_characters(request: Request, call_next: Any) -> Response:
    """NUL characters cannot be stored (PostgreSQL text refuses them): named as a 422, never a 500."""
    raw = f"{request.url.path}?{request.url.query}".lower()
    if "%00" in raw or "\x00" in raw:
        return JSONResponse({"detail": "NUL characters are not allowed in the path or query"}, status_code=422)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if b"\\u0000" in body.lower():
            return JSONResponse({"detail": "NUL characters are not allowed in JSON bodies"}, status_code=422)
    return await call_next(request)


def create_app(appliance: Appliance) -> FastAPI:
    """The API of a running appliance (engine, model slot, pipeline, images, topics, publisher)."""
    app = FastAPI(title="Anomaly appliance", version="1", description="Inspections, alerts, thresholds, sources.")
    app.state.appliance = appliance
    app.middleware("http")(refuse_nul_characters)
    add_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
