"""API keys (API_KEYS): who may call which route, and that keys never leak."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from app.main import create_app

KEYS = "first-key-0123456789,second-key-9876543210"
AWS_SECRET = "aws-secret-that-must-not-leak"


@pytest.fixture
def locked(settings: Settings) -> Iterator[TestClient]:
    keyed = settings.model_copy(
        update={"api_keys": SecretStr(KEYS), "aws_secret_access_key": SecretStr(AWS_SECRET)}
    )
    with TestClient(create_app(keyed)) as client:
        yield client


PROTECTED = [
    ("POST", "/v1/replicate", {"s3_bucket": "source-bucket", "s3_key": "a"}),
    ("POST", "/v1/replicate/batch", {"s3_bucket": "source-bucket", "s3_keys": ["a"]}),
    ("GET", "/v1/object/some-bucket/a", None),
    ("DELETE", "/v1/object/some-bucket/a", None),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_protected_routes_need_a_key(locked: TestClient, method: str, path: str, body: Any) -> None:
    response = locked.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_a_wrong_key_is_refused(locked: TestClient, method: str, path: str, body: Any) -> None:
    response = locked.request(
        method, path, json=body, headers={"Authorization": "Bearer first-key-01234567890"}
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "the API key is not valid"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer first-key-0123456789"},
        {"Authorization": "Bearer second-key-9876543210"},
        {"X-API-Key": "second-key-9876543210"},
    ],
)
def test_either_header_with_any_key_is_accepted(
    locked: TestClient, s3: Any, source_bucket: str, headers: dict[str, str]
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a", Body=b"x")
    response = locked.post(
        "/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert locked.get("/metrics", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/", "/ready", "/docs", "/openapi.json"])
def test_health_ready_and_docs_stay_open(locked: TestClient, path: str) -> None:
    assert locked.get(path).status_code == 200


def test_keys_and_secrets_never_appear_in_bodies_or_logs(
    locked: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [
        locked.get("/health").text,
        locked.post(
            "/v1/replicate",
            json={"s3_bucket": "no-such-bucket", "s3_key": "a"},
            headers={"X-API-Key": "first-key-0123456789"},
        ).text,
        locked.post(
            "/v1/replicate", json={"s3_bucket": "x"}, headers={"X-API-Key": "wrong-key"}
        ).text,
    ]
    seen = "\n".join([*bodies, caplog.text])
    for secret in ("first-key-0123456789", "second-key-9876543210", AWS_SECRET, "wrong-key"):
        assert secret not in seen


def test_open_service_says_so_once_at_start_up(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings)) as client:
        client.get("/health")
        client.get("/health")
    warnings = [r.getMessage() for r in caplog.records if "API_KEYS is not set" in r.getMessage()]
    assert len(warnings) == 1
