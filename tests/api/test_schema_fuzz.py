"""Hostile input, generated from the app's own OpenAPI schema by schemathesis: whatever a
client sends, the answer is never a 5xx and always matches the documented schema.

One check is left out: "schema-valid data is accepted". The schema cannot say everything the
API enforces (a key's limit is 1024 bytes of UTF-8, not characters; bucket names have rules
beyond a pattern), so some schema-valid requests are rightly refused with a 422.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis.specs.openapi import checks

from app.config import Settings
from app.main import create_app

EXAMPLES_PER_OPERATION = 30
API_KEY = "fuzz-key-0123456789"  # with keys set, schemathesis also checks requests without one


def test_no_server_errors_and_responses_match_the_schema(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_keys": SecretStr(API_KEY)}))
    with TestClient(app):  # runs the lifespan: clients on app state
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 7
        for operation in operations:

            @given(case=operation.as_strategy())
            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    excluded_checks=[checks.positive_data_acceptance],
                )

            check()
