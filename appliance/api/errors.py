"""Domain errors become HTTP answers here, once: each type has its status (``appliance.errors``)
and the answer's ``detail`` is the domain message, unchanged."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from appliance.errors import domain_errors


def add_exception_handlers(app: FastAPI) -> None:
    for kind, status in domain_errors().items():

        async def handle(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(kind, handle)
