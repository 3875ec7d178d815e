"""What a caller gets back when a request is wrong: a 422 naming each unknown field (a typo
never copies anywhere), one JSON error body on every error answer, and /docs listing every
status a route can answer with."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Buckets

BODY_STATUSES = {"413", "415", "422"}


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/v1/replicate", {"s3_key": "data.txt"}),
        ("/v1/replicate/batch", {"s3_keys": ["data.txt"]}),
    ],
)
def test_a_misspelled_field_is_a_422_naming_it_and_nothing_is_written(
    client: TestClient, buckets: Buckets, path: str, extra: dict[str, Any]
) -> None:
    buckets.put("data.txt", b"meant for another bucket")

    body = {"s3_bucket": buckets.source, **extra, "gcs_bukcet": "elsewhere", "overwrit": "always"}
    response = client.post(path, json=body)

    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "detail": "gcs_bukcet: not a field of this request (misspelled?); "
        "overwrit: not a field of this request (misspelled?)",
    }
    buckets.assert_nothing_written()


def test_a_field_given_under_both_its_names_is_a_422(client: TestClient, buckets: Buckets) -> None:
    buckets.put("data.txt", b"which bucket?")

    response = client.post(
        "/v1/replicate",
        json={"s3_key": "data.txt", "s3_bucket": buckets.source, "src_bucket": "other-bucket"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "s3_bucket and src_bucket are one field: give one"
    buckets.assert_nothing_written()


def test_the_seed_field_names_still_copy(client: TestClient, buckets: Buckets) -> None:
    data = buckets.put("seed.txt", b"src_ and dest_ names, as the first clients sent them")

    response = client.post(
        "/v1/replicate",
        json={
            "src_bucket": buckets.source,
            "src_key": "seed.txt",
            "dest_bucket": buckets.dest,
            "dest_key": "renamed.txt",
        },
    )

    assert response.status_code == 200, response.text
    assert buckets.destination_bytes("renamed.txt") == data


@pytest.mark.parametrize("path", ["/v1/replicate", "/v1/replicate/batch", "/v1/jobs"])
def test_an_empty_body_is_a_422_that_says_the_body_is_missing(
    client: TestClient, path: str
) -> None:
    response = client.post(path, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "detail": "the request body is missing: send a JSON object",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/no-such-route", 404, "not_found"),
        ("PUT", "/v1/replicate", 405, "method_not_allowed"),
    ],
)
def test_routing_answers_in_the_same_error_body(
    client: TestClient, method: str, path: str, status: int, error: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error", "detail"}
    assert response.json()["error"] == error
    assert path in response.json()["detail"]


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_the_schema_lists_every_answer_a_route_can_give(client: TestClient) -> None:
    operations = _operations(client.get("/openapi.json").json())
    assert len(operations) >= 14

    for name, operation in operations:
        answers = operation["responses"]
        assert "500" in answers, name
        if operation.get("security"):
            assert "401" in answers, name
        if "requestBody" in operation:
            assert BODY_STATUSES <= set(answers), name
        for status, answer in answers.items():
            if int(status) < 400:
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema["$ref"].rsplit("/", 1)[1] in {"ErrorResponse", "ForbiddenResponse"}, (
                name,
                status,
            )


def test_the_routes_that_take_keys_declare_401_413_415(client: TestClient) -> None:
    operations = dict(_operations(client.get("/openapi.json").json()))

    for name in ("POST /v1/replicate", "POST /v1/replicate/batch", "POST /v1/events"):
        assert {"401", "413", "415", "422"} <= set(operations[name]["responses"]), name
    assert "401" in operations["GET /v1/object/{bucket}/{key}"]["responses"]
    assert "401" in operations["GET /metrics"]["responses"]
