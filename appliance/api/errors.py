"""Domain errors become HTTP answers here, once: each type has its status (``appliance.errors``)
and the answer's ``detail`` is the domain message, unchanged. Request validation errors keep
FastAPI's 422 form, with values JSON cannot carry (NaN, ±Infinity) shown as text."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from appliance.errors import domain_errors


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_failed)
    for kind, status in domain_errors().items():

        async def handle(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(kind, handle)
