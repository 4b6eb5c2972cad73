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

    operations = [result.ok() for result in schema.get_all_operations()]
    # every route, DELETE included (this module's appliance is its own); deletions last, since a
    # revoked token or a removed source leaves the rest to answer 401 / 404
    for operation in sorted(operations, key=lambda o: o.method.upper() == "DELETE"):
        exercise(operation)
    assert {"/sources/{source_id}", "/tokens/{token_id}"} <= set(calls) and len(set(calls)) >= 30
    assert not failures, failures[:5]
