"""Schemathesis over the OpenAPI spec of a running appliance: no request may cause a server error.

Cases come from schemathesis' Hypothesis strategies per operation, driven directly (its pytest
plugin does not work with pytest 9).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from appliance.api import create_app


def test_no_request_causes_a_server_error(running):
    app, _, tokens, _, _ = running
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app))
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    failures, calls = [], []

    def exercise(operation) -> None:
        heavy = operation.path.startswith(("/jobs", "/models", "/datasets"))  # spawn workers, write files
        examples = 5 if heavy else 20

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            case.headers = {**(case.headers or {}), **headers}
            response = case.call()
            calls.append(operation.path)
            if response.status_code >= 500:
                failures.append(
                    f"{operation.method.upper()} {operation.path}: {response.status_code} {response.text[:200]}"
                )

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "DELETE":  # removing sources would stop the line under test
            exercise(operation)
    assert len(set(calls)) >= 12 and not failures, failures[:5]
