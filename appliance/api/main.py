"""The REST API's application: middleware, exception handlers and the routers.

Bearer tokens with roles: viewer < operator < engineer < admin (:mod:`appliance.api.deps`).
Domain errors become 4xx / 5xx answers in one place (:mod:`appliance.api.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.deps import refuse_unknown_query
from appliance.api.errors import add_exception_handlers
from appliance.api.pages import PageCache
from appliance.api.routes import ROUTERS

if TYPE_CHECKING:
    from appliance.runtime import Appliance


LINE_FIRST_LAG_S = 0.05  # a live frame waiting this long for the inspector is late
LINE_FIRST_MAX_WAIT_S = 0.2  # the longest a request waits for the line to catch up
LINE_FIRST_POLL_S = 0.005
MAX_JSON_BYTES = 32 * 1024 * 1024  # the largest JSON body (a vector of a million values fits)
# a UTF-16 surrogate escape that is not half of a pair: text that no database can store
LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _refuse(detail: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class RefuseUnstorableRequests:
    """Before authentication: JSON bodies over MAX_JSON_BYTES (413), and text no database can
    store, NUL characters (PostgreSQL refuses them) and lone surrogates, as a named 422.

    Plain ASGI (no per-request task and body streams as with ``@app.middleware``): every request
    passes here, and the line shares the interpreter with the API."""

    def __init__(self, app: ASGIApp, pages: PageCache) -> None:
        self.app, self.pages = app, pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):  # a write: kept pages are stale, before and after it
            self.pages.bump()
            try:
                await self._checked(scope, receive, send)
            finally:
                self.pages.bump()
            return
        await self._checked(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = f"{scope['path']}?{scope.get('query_string', b'').decode('latin-1')}".lower()
        if "%00" in raw or "\x00" in raw:
            await _refuse("NUL characters are not allowed in the path or query")(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not headers.get("content-type", "").startswith("application/json"):
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length", "")
        too_big = _refuse(f"JSON body larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB", 413)
        if length.isdigit() and int(length) > MAX_JSON_BYTES:
            await too_big(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_JSON_BYTES:
                await too_big(scope, receive, send)
                return
        body = b"".join(chunks)
        if b"\\u0000" in body.lower():
            await _refuse("NUL characters are not allowed in JSON bodies")(scope, receive, send)
            return
        if LONE_SURROGATE.search(body):
            detail = "JSON bodies may not hold lone UTF-16 surrogates (text that is not Unicode)"
            await _refuse(detail)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class LineFirst:
    """The line before the API: while the line is late (more than one live frame waiting for the
    inspector, the oldest for over LINE_FIRST_LAG_S), a new request waits, up to ``max_wait``
    seconds, then is served anyway.

    The line and the API share one interpreter. Twenty clients polling as fast as they were
    answered took it from the inspector until its queue was full and frames were dropped; a
    request that waits here costs the line nothing. A slow model keeps its one frame waiting as
    long as it takes without holding the API back; ``/health`` never waits (it says whether the
    appliance is alive)."""

    def __init__(
        self, app: ASGIApp, appliance: Appliance, counts: Counter[str], max_wait: float = LINE_FIRST_MAX_WAIT_S
    ) -> None:
        self.app, self.appliance, self.counts, self.max_wait = app, appliance, counts, max_wait

    def _behind(self) -> bool:
        if self.appliance.pipeline is None:
            return False
        frames, oldest = self.appliance.pipeline.waiting()
        return frames > 1 and oldest > LINE_FIRST_LAG_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and self._behind():
            self.counts["deferred"] += 1  # GET /metrics: appliance_api_requests_deferred_total
            deadline = time.monotonic() + self.max_wait
            while self._behind() and time.monotonic() < deadline:
                await asyncio.sleep(LINE_FIRST_POLL_S)
        await self.app(scope, receive, send)


def create_app(appliance: Appliance) -> FastAPI:
    """The API of a running appliance (engine, model slot, pipeline, images, topics, publisher)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # sync routes and the work handed off the event loop share this many threads
        anyio.to_thread.current_default_thread_limiter().total_tokens = appliance.settings.api_workers
        yield

    app = FastAPI(
        title="Anomaly appliance",
        version="1",
        description="Inspections, alerts, thresholds, sources.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_unknown_query)],
    )
    app.state.appliance = appliance
    app.state.pages = PageCache(appliance.settings.api_page_cache_s)
    app.add_middleware(RefuseUnstorableRequests, pages=app.state.pages)
    app.state.api_counts = Counter()
    app.add_middleware(LineFirst, appliance=appliance, counts=app.state.api_counts)
    add_exception_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
