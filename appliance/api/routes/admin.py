"""Administration: API tokens (audited) and the settings in force."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from appliance.api.deps import Admin, AppDep, EngineDep, Engineer, forget_tokens
from appliance.api.schemas import TokenId, TokenIn
from appliance.errors import NotFound
from appliance.storage import partitions, queries, store

router = APIRouter(tags=["admin"])


@router.get("/tokens")
def read_tokens(engine: EngineDep, _: Admin) -> list[dict[str, Any]]:
    """API tokens: name, role, state (the secrets themselves are never stored)."""
    return queries.list_tokens(engine)


@router.post("/tokens", status_code=201)
def create_api_token(body: TokenIn, engine: EngineDep, actor: Admin) -> dict[str, Any]:
    """Create a token with a role and an expiry (30 days for viewers and operators unless set);
    the token is in this answer only."""
    expires_at = store.token_expiry(body.role, body.expires_in_days)
    token = store.create_token(engine, name=body.name, role=body.role, expires_at=expires_at)
    new = {"name": body.name, "role": body.role, "expires_at": expires_at.isoformat() if expires_at else None}
    store.audit(engine, actor=actor.name, action="token.create", new=new)
    return {**new, "token": token}


@router.delete("/tokens/{token_id}", status_code=204)
def delete_api_token(token_id: TokenId, engine: EngineDep, actor: Admin) -> None:
    """Revoke a token: it stops working at once (on other nodes sharing the database within 2 s)."""
    if not store.revoke_token(engine, token_id=token_id):
        msg = f"no token {token_id}"
        raise NotFound(msg)
    forget_tokens()  # here at once; other nodes within deps.TOKEN_TTL_S
    store.audit(engine, actor=actor.name, action="token.revoke", new={"id": token_id})


@router.get("/settings")
def read_settings(appliance: AppDep, _: Engineer) -> dict[str, Any]:
    """The settings in force (secrets left out): MQTT, topics, retention, storage."""
    s, topics = appliance.settings, appliance.topics
    return {
        "site": s.mqtt.site,
        "line": s.mqtt.line,
        "mqtt": {  # the broker in use: an embedded one listens where it could (see README)
            "host": s.mqtt.host or "embedded broker on 127.0.0.1",
            "port": appliance.broker_settings.port if appliance.broker_settings else s.mqtt.port,
            "tls": bool(s.mqtt.tls),
            "username": s.mqtt.username,
            "keepalive": s.mqtt.keepalive,
        },
        "topics": {"alerts": topics.alerts, "status": topics.status, "threshold": topics.threshold},
        "retention": {
            "days": s.retention_days,
            "max_gb": s.retention_max_gb,
            "raw_days": s.history_raw_days,
            "partitions": partitions.status(appliance.engine),  # PostgreSQL's day partitions; None on SQLite
        },
        "database": appliance.engine.url.render_as_string(hide_password=True),
    }
