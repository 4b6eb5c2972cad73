"""The REST API (FastAPI): ``create_app`` in :mod:`appliance.api.main`, one router per resource
in :mod:`appliance.api.routes`."""

from appliance.api.main import create_app

__all__ = ["create_app"]
