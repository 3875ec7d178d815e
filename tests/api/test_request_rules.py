"""Per-route request rules: the media types a route takes and how callers present a key, each
declared on the route. Checked on today's routes, and on a route declared here the way the
coming event intake will be (text/plain bodies, keys as the password of HTTP Basic), added
to the real app so that the real middleware and error handlers answer."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api.security import accepts, require_api_key_or_basic
from app.config import Settings
from app.main import create_app

KEY = "intake-key-0123456789"
INTAKE = "/test-only/intake"


def _intake_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        INTAKE,
        dependencies=[
            Depends(require_api_key_or_basic),
            Depends(accepts("application/json", "text/plain")),
        ],
    )
    async def intake(request: Request) -> dict[str, str]:
        return {"received": (await request.body()).decode()}

    return router


def _client(settings: Settings, **update: Any) -> TestClient:
    app = create_app(settings.model_copy(update=update))
    app.include_router(_intake_router())
    return TestClient(app)


@pytest.fixture
def locked(settings: Settings) -> Iterator[TestClient]:
    with _client(settings, api_keys=SecretStr(KEY)) as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain; charset=UTF-8", "application/json"]
)
def test_a_route_that_takes_text_gets_the_body_as_sent(
    locked: TestClient, content_type: str
) -> None:
    sent = '{"Type": "Notification", "Message": "{}"}'
    response = locked.post(
        INTAKE, content=sent, headers={"content-type": content_type, "X-API-Key": KEY}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": sent}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/html", None])
def test_a_route_refuses_media_types_it_does_not_declare(
    locked: TestClient, content_type: str | None
) -> None:
    headers = {"X-API-Key": KEY} | ({"content-type": content_type} if content_type else {})
    response = locked.post(INTAKE, content=b"hello", headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert (
        "'Content-Type: application/json' or 'Content-Type: text/plain'"
        in (response.json()["detail"])
    )


@pytest.mark.parametrize(
    "headers",
    [basic("sns", KEY), basic("", KEY), {"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}],
)
def test_a_basic_route_takes_the_key_as_the_password_or_as_today(
    locked: TestClient, headers: dict[str, str]
) -> None:
    response = locked.post(INTAKE, content="x", headers={"content-type": "text/plain", **headers})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "an API key is required"),
        (basic("sns", KEY + "0"), "the API key is not valid"),
        (basic(KEY, "wrong"), "the API key is not valid"),  # the user name is no key
        (basic("sns", ""), "an API key is required"),
        ({"Authorization": "Basic not-base64!"}, "not base64"),
        ({"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode()}, "no ':'"),
    ],
)
def test_a_basic_route_refuses_with_both_challenges(
    locked: TestClient, headers: dict[str, str], detail: str
) -> None:
    response = locked.post(INTAKE, content="x", headers={"content-type": "text/plain", **headers})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert detail in response.json()["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="cross-cloud-replicator"')
    assert 'Basic realm="cross-cloud-replicator"' in challenge


def test_todays_routes_take_no_basic_credentials(
    locked: TestClient, s3: Any, source_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a", Body=b"x")
    body = {"s3_bucket": source_bucket, "s3_key": "a"}

    by_basic = locked.post("/v1/replicate", json=body, headers=basic("sns", KEY))
    by_bearer = locked.post("/v1/replicate", json=body, headers={"Authorization": f"Bearer {KEY}"})

    assert by_basic.status_code == 401
    assert by_basic.headers["www-authenticate"] == 'Bearer realm="cross-cloud-replicator"'
    assert by_bearer.status_code == 200, by_bearer.text


def test_todays_routes_take_json_only(locked: TestClient) -> None:
    auth = {"X-API-Key": KEY}
    as_text = locked.post(
        "/v1/replicate/batch",
        content=b'{"s3_bucket": "a-b-c", "s3_keys": ["k"]}',
        headers={"content-type": "text/plain", **auth},
    )
    assert as_text.status_code == 415
    assert as_text.json()["detail"] == (
        "send the request body with 'Content-Type: application/json' (got text/plain)"
    )


def test_without_api_keys_a_basic_route_is_open(settings: Settings) -> None:
    with _client(settings) as client:
        response = client.post(INTAKE, content="x", headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text


def test_openapi_documents_each_routes_schemes(locked: TestClient) -> None:
    openapi = locked.get("/openapi.json").json()
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <one of API_KEYS>",
    }
    assert schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    assert schemes["HTTPBasic"]["scheme"] == "basic"

    def names(path: str, method: str = "post") -> set[str]:
        return {name for entry in openapi["paths"][path][method]["security"] for name in entry}

    assert names("/v1/replicate") == {"HTTPBearer", "APIKeyHeader"}
    assert names(INTAKE) == {"HTTPBearer", "APIKeyHeader", "HTTPBasic"}


def test_every_route_but_the_open_ones_declares_who_may_call_it(client: TestClient) -> None:
    open_paths = {"/", "/health", "/ready"}
    openapi = client.get("/openapi.json").json()
    undeclared = [
        f"{method.upper()} {path}"
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        if path not in open_paths and not operation.get("security")
    ]
    assert undeclared == []
    assert len(openapi["paths"]) > len(open_paths)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/replicate", "POST"),
        ("GET", "/v1/replicate/batch", "POST"),
        ("PUT", "/v1/object/some-bucket/a/b", "DELETE, GET"),
        ("POST", "/v1/object/some-bucket/a", "DELETE, GET"),
        ("POST", "/health", "GET"),
    ],
)
@pytest.mark.parametrize(
    "body", [{}, {"content": b"text", "headers": {"content-type": "text/plain"}}]
)
def test_a_method_a_path_does_not_take_is_405_before_any_media_type_check(
    client: TestClient, method: str, path: str, allow: str, body: dict[str, Any]
) -> None:
    response = client.request(method, path, **body)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"] == allow


def test_an_unknown_path_is_404_whatever_the_body(client: TestClient) -> None:
    response = client.post("/v1/nothing-here", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
