"""Typed dependencies of the routes: the running appliance, its database, and the caller (a
bearer token with a role: viewer < operator < engineer < admin).

They are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop to
another thread and back for each, on every request; these take microseconds and never block
(a token's row, read at most every TOKEN_TTL_S, is read in the pool). The line shares the
interpreter with the API, so what a request costs is time the line waits."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine

from appliance.api.pages import PageCache
from appliance.runtime import Appliance
from appliance.storage import queries, store
from appliance.storage.models import ApiToken, as_utc, utcnow

TOKEN_TTL_S = 2.0  # a token's row is read again after this long: a revocation elsewhere holds within it
_tokens: dict[tuple[int, str], tuple[float, ApiToken | None]] = {}
_tokens_lock = threading.Lock()


async def get_appliance(request: Request) -> Appliance:
    return request.app.state.appliance


async def get_engine(request: Request) -> Engine:
    return request.app.state.appliance.engine


async def get_pages(request: Request) -> PageCache:
    return request.app.state.pages


AppDep = Annotated[Appliance, Depends(get_appliance)]
PagesDep = Annotated[PageCache, Depends(get_pages)]
EngineDep = Annotated[Engine, Depends(get_engine)]


@dataclass(frozen=True)
class Actor:
    """Who calls: the token's role, and its name (what the audit log, alerts and MQTT show)."""

    role: str
    name: str


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token


async def stored_token(engine: Engine, token: str) -> ApiToken | None:
    """The token's row, read at most every TOKEN_TTL_S per token (consoles poll several times a
    second; the lookup was a tenth of the API's time under load), in the thread pool."""
    key, now = (id(engine), queries.token_digest(token)), time.monotonic()
    with _tokens_lock:
        hit = _tokens.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    row = await anyio.to_thread.run_sync(lambda: queries.token(engine, token=token))
    with _tokens_lock:
        if len(_tokens) >= 1024:  # bounded: unknown tokens are whatever a caller sends
            _tokens.clear()
        _tokens[key] = (now + TOKEN_TTL_S, row)
    return row


def forget_tokens() -> None:
    """Read every token from the database again (after a revocation here)."""
    with _tokens_lock:
        _tokens.clear()


def role_at_least(minimum: str):
    """A dependency that admits tokens of ``minimum`` or a higher role and gives their Actor."""

    async def check(request: Request, engine: EngineDep) -> Actor:
        row = await stored_token(engine, _bearer(request))
        if row is None or row.revoked:
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        if row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
            raise HTTPException(401, f"token expired at {as_utc(row.expires_at).isoformat(timespec='seconds')}")
        if store.ROLES.index(row.role) < store.ROLES.index(minimum):
            raise HTTPException(403, f"this needs the {minimum} role; the token has {row.role}")
        return Actor(role=row.role, name=row.name)  # the audit log and alerts name the token, never show it

    return check


Viewer = Annotated[Actor, Depends(role_at_least("viewer"))]
Operator = Annotated[Actor, Depends(role_at_least("operator"))]
Engineer = Annotated[Actor, Depends(role_at_least("engineer"))]
Admin = Annotated[Actor, Depends(role_at_least("admin"))]


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant) -> frozenset[str]:
    """The query parameters a route reads: its own and its dependencies'."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


async def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not read is refused (422 naming it), never ignored: a
    ``PUT /thresholds?source_id=…`` (the source goes in the body there) would otherwise set the
    default model's thresholds for every source."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _QUERY_NAMES.get(id(route))
    if known is None:
        known = _QUERY_NAMES[id(route)] = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        if request.method not in ("GET", "HEAD"):
            takes += "; the request's other fields go in its JSON body"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"{request.method} {route.path} does not read query parameter {name!r} ({takes})",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )
