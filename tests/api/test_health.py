"""GET /health and GET /: liveness and where the service points, never a secret; the docs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.dev import emulators
from app.main import create_app
from tests.conftest import make_settings

AWS_SECRET = "do-not-print-this-aws-secret-0451"
API_KEY = "do-not-print-this-api-key-0451"


@pytest.fixture
def secret_client(
    moto_server: emulators.Emulator, gcs_server: emulators.Emulator, dest_bucket: str
) -> Iterator[TestClient]:
    """A service holding recognisable secrets, to look for them in every open answer."""
    settings = make_settings(
        moto_server.url,
        gcs_server.url,
        dest_bucket,
        aws_secret_access_key=AWS_SECRET,
        api_keys=API_KEY,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", ["/health", "/"])
def test_health_reports_the_configured_endpoints(
    client: TestClient,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
    path: str,
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message", "current_config", "identities"}
    assert body["status"] == "ok"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["current_config"] == {
        "s3_target": moto_server.url,
        "gcs_target": gcs_server.url,
        "gcs_bucket": dest_bucket,
    }
    assert body["identities"] == {
        "aws": {"credentials": "static keys (AWS_ACCESS_KEY_ID)"},
        "gcs": {"credentials": "none"},
    }


@pytest.mark.parametrize("path", ["/health", "/", "/docs", "/openapi.json"])
def test_no_secret_in_open_answers(secret_client: TestClient, path: str) -> None:
    response = secret_client.get(path)

    assert response.status_code == 200
    assert AWS_SECRET not in response.text
    assert API_KEY not in response.text


def test_health_stays_open_when_api_keys_are_set(secret_client: TestClient) -> None:
    assert secret_client.get("/health").status_code == 200


def settings_without_emulators(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "gcs_bucket_name": "destination-bucket",
        "s3_endpoint_url": None,
        "storage_emulator_host": None,
        "local_gcs_path": None,
    }
    return Settings(**{**values, **overrides})


def test_describe_without_emulators_says_real_clouds(tmp_path: Path) -> None:
    key_file = tmp_path / "service-account.json"
    key_file.write_text("{}")

    settings = settings_without_emulators(
        google_application_credentials=key_file,
        aws_access_key_id="id",
        aws_secret_access_key=AWS_SECRET,
    )

    assert settings.describe() == {
        "s3_target": "REAL AWS",
        "gcs_target": "REAL GCS",
        "gcs_bucket": "destination-bucket",
    }


def test_describe_with_a_local_destination(tmp_path: Path) -> None:
    settings = settings_without_emulators(local_gcs_path=tmp_path)

    assert settings.describe()["gcs_target"] == f"LOCAL {tmp_path}"
    assert settings.describe()["s3_target"] == "REAL AWS"


def test_docs_answer(client: TestClient) -> None:
    docs = client.get("/docs")
    schema = client.get("/openapi.json")

    assert docs.status_code == 200
    assert "swagger-ui" in docs.text.lower()
    assert schema.status_code == 200
    assert "/v1/replicate" in schema.json()["paths"]


def _resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = openapi
    for part in ref.removeprefix("#/").split("/"):
        resolved = resolved[part]
    return resolved


def test_every_request_body_has_an_example(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()
    bodies = {
        f"{method.upper()} {path}": operation["requestBody"]
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert {"POST /v1/replicate", "POST /v1/replicate/batch"} <= set(bodies)

    without_example = []
    for route, body in bodies.items():
        for media in body["content"].values():
            schema = _resolve(media.get("schema", {}), openapi)
            if not (media.get("example") or media.get("examples") or schema.get("examples")):
                without_example.append(route)
    assert without_example == []
