"""The REST API's application: middleware, exception handlers and the routers.

Bearer tokens with roles: viewer < operator < engineer < admin (:mod:`appliance.api.deps`).
Domain errors become 4xx / 5xx answers in one place (:mod:`appliance.api.errors`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from appliance.api.errors import add_exception_handlers
from appliance.api.routes import ROUTERS

if TYPE_CHECKING:
    from appliance.runtime import Appliance


MAX_JSON_BYTES = 32 * 1024 * 1024  # the largest JSON body (a vector of a million values fits)
# a UTF-16 surrogate escape that is not half of a pair: text that no database can store
LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _refuse(detail: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def refuse_unstorable_requests(request: Request, call_next: Any) -> Response:
    """Before authentication: JSON bodies over MAX_JSON_BYTES (413), and text no database can
    store, NUL characters (PostgreSQL refuses them) and lone surrogates, as a named 422."""
    raw = f"{request.url.path}?{request.url.query}".lower()
    if "%00" in raw or "\x00" in raw:
        return _refuse("NUL characters are not allowed in the path or query")
    if request.headers.get("content-type", "").startswith("application/json"):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_JSON_BYTES:
            return _refuse(f"JSON body larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB", 413)
        body = await request.body()
        if len(body) > MAX_JSON_BYTES:
            return _refuse(f"JSON body larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB", 413)
        if b"\\u0000" in body.lower():
            return _refuse("NUL characters are not allowed in JSON bodies")
        if LONE_SURROGATE.search(body):
            return _refuse("JSON bodies may not hold lone UTF-16 surrogates (text that is not Unicode)")
    return await call_next(request)


def create_app(appliance: Appliance) -> FastAPI:
    """The API of a running appliance (engine, model slot, pipeline, images, topics, publisher)."""
    app = FastAPI(title="Anomaly appliance", version="1", description="Inspections, alerts, thresholds, sources.")
    app.state.appliance = appliance
    app.middleware("http")(refuse_unstorable_requests)
    add_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
