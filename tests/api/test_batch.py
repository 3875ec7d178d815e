"""POST /v1/replicate/batch end to end: one result per key, in request order, checked at the
destination."""

from __future__ import annotations

import os
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.cloud import storage

from app.dev import emulators
from app.main import create_app
from tests.conftest import destination_bytes, digests, make_settings
from tests.faults import FaultProxy


def test_results_in_request_order_with_summary(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    present = {"b.txt": b"bee", "nested/dir/a.bin": os.urandom(70_000), "z": b""}
    for key, data in present.items():
        s3.put_object(Bucket=source_bucket, Key=key, Body=data)
    keys = ["b.txt", "missing-1", "nested/dir/a.bin", "z", "missing-2"]

    request = {"s3_bucket": source_bucket, "s3_keys": keys}
    response = client.post("/v1/replicate/batch", json=request)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert [r["key"] for r in body["results"]] == keys
    assert [r["status"] for r in body["results"]] == [
        "success",
        "not_found",
        "success",
        "success",
        "not_found",
    ]
    assert body["summary"] == {
        "total": 5,
        "replicated": 3,
        "skipped": 0,
        "not_found": 2,
        "failed": 0,
    }
    for result in body["results"]:
        if result["status"] == "success":
            data = present[result["key"]]
            assert result["action"] == "replicated"
            assert result["size"] == len(data)
            assert {"md5": result["md5"], "crc32c": result["crc32c"]} == digests(data)
            assert destination_bytes(gcs, dest_bucket, result["key"]) == data
        else:
            assert f"s3://{source_bucket}/{result['key']}" in result["error"]
    assert sorted(b.name for b in gcs.list_blobs(dest_bucket)) == sorted(present)


def test_second_batch_skips_what_is_already_there(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    for key in ("a", "b"):
        s3.put_object(Bucket=source_bucket, Key=key, Body=key.encode())
    request = {"s3_bucket": source_bucket, "s3_keys": ["a", "b"]}
    first = client.post("/v1/replicate/batch", json=request).json()

    second = client.post("/v1/replicate/batch", json=request).json()

    assert [r["action"] for r in second["results"]] == ["skipped", "skipped"]
    assert second["summary"] == {
        "total": 2,
        "replicated": 0,
        "skipped": 2,
        "not_found": 0,
        "failed": 0,
    }
    assert [r["generation"] for r in second["results"]] == [
        r["generation"] for r in first["results"]
    ]
    for key, result in zip(["a", "b"], second["results"], strict=True):
        blob = gcs.bucket(dest_bucket).get_blob(key)
        assert blob is not None
        assert blob.generation == result["generation"]


def test_overwrite_always_copies_again(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a", Body=b"again")
    request: dict[str, Any] = {"s3_bucket": source_bucket, "s3_keys": ["a"]}
    first = client.post("/v1/replicate/batch", json=request).json()

    second = client.post("/v1/replicate/batch", json={**request, "overwrite": "always"}).json()

    assert second["results"][0]["action"] == "replicated"
    assert second["results"][0]["generation"] != first["results"][0]["generation"]
    assert destination_bytes(gcs, dest_bucket, "a") == b"again"


def test_a_thousand_keys_are_accepted(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    present = [f"obj/{i:04d}" for i in range(0, 1000, 20)]
    for key in present:
        s3.put_object(Bucket=source_bucket, Key=key, Body=key.encode())
    keys = [f"obj/{i:04d}" for i in range(1000)]

    request = {"s3_bucket": source_bucket, "s3_keys": keys}
    response = client.post("/v1/replicate/batch", json=request)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["key"] for r in body["results"]] == keys
    assert body["summary"] == {
        "total": 1000,
        "replicated": 50,
        "skipped": 0,
        "not_found": 950,
        "failed": 0,
    }
    succeeded = [r["key"] for r in body["results"] if r["status"] == "success"]
    assert succeeded == present
    stored = {b.name: b.download_as_bytes() for b in gcs.list_blobs(dest_bucket)}
    assert stored == {key: key.encode() for key in present}


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ([f"k{i}" for i in range(1001)], "s3_keys"),
        ([], "s3_keys"),
        (["a", "b", "a"], "'a'"),
        (["ok", ""], "s3_keys"),
        (["ok", "line\nbreak"], "s3_keys"),
    ],
)
def test_invalid_key_lists_are_422(
    client: TestClient,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    keys: list[str],
    named: str,
) -> None:
    request = {"s3_bucket": source_bucket, "s3_keys": keys}
    response = client.post("/v1/replicate/batch", json=request)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["detail"]
    assert list(gcs.list_blobs(dest_bucket)) == []


def test_duplicates_are_named(client: TestClient, source_bucket: str) -> None:
    response = client.post(
        "/v1/replicate/batch", json={"s3_bucket": source_bucket, "s3_keys": ["x", "y", "x"]}
    )
    assert response.status_code == 422
    assert "more than once" in response.json()["detail"]


def test_seed_field_names(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str
) -> None:
    other = f"{source_bucket}-other"
    gcs.create_bucket(other)
    s3.put_object(Bucket=source_bucket, Key="in.txt", Body=b"aliased")

    response = client.post(
        "/v1/replicate/batch",
        json={"src_bucket": source_bucket, "s3_keys": ["in.txt"], "dest_bucket": other},
    )

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "success"
    assert destination_bytes(gcs, other, "in.txt") == b"aliased"


def test_fields_that_do_not_apply_are_omitted(
    client: TestClient, s3: Any, source_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="here", Body=b"x")

    response = client.post(
        "/v1/replicate/batch", json={"s3_bucket": source_bucket, "s3_keys": ["here", "gone"]}
    )

    success, missing = response.json()["results"]
    assert set(success) == {
        "key",
        "status",
        "action",
        "size",
        "md5",
        "crc32c",
        "generation",
        "message",
    }
    assert success["message"].startswith("replicated")
    assert set(missing) == {"key", "status", "error"}
    assert missing == {
        "key": "gone",
        "status": "not_found",
        "error": f"s3://{source_bucket}/gone does not exist",
    }


def test_missing_source_bucket_reports_each_key(client: TestClient) -> None:
    response = client.post(
        "/v1/replicate/batch", json={"s3_bucket": "no-such-bucket", "s3_keys": ["a", "b"]}
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["not_found", "not_found"]
    assert all(r["error"] == "S3 bucket 'no-such-bucket' does not exist" for r in results)


def test_s3_is_asked_only_what_the_destination_cannot_answer(
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
) -> None:
    """A key GCS does not hold is copied on its GET alone (a missing one is found missing by
    it); the keys GCS holds are compared with one listing of S3, and only what changed is read."""
    data = {f"k{n:02}": os.urandom(1000 + n) for n in range(12)}
    for key, body in data.items():
        s3.put_object(Bucket=source_bucket, Key=key, Body=body)
    keys = [*data, "missing"]
    settings = make_settings(s3_proxy.url, gcs_server.url, dest_bucket, startup_probe=False)
    request = {"s3_bucket": source_bucket, "s3_keys": keys}

    with TestClient(create_app(settings)) as client:
        fresh = client.post("/v1/replicate/batch", json=request)
        first = list(s3_proxy.requests)
        data["k03"] = b"v2"
        s3.put_object(Bucket=source_bucket, Key="k03", Body=data["k03"])
        again = client.post("/v1/replicate/batch", json=request)
        second = s3_proxy.requests[len(first) :]

    assert fresh.json()["summary"] == {
        "total": 13,
        "replicated": 12,
        "skipped": 0,
        "not_found": 1,
        "failed": 0,
    }
    assert sorted((r.method, r.target.split("?")[0]) for r in first) == sorted(
        ("GET", f"/{source_bucket}/{key}") for key in keys
    )
    assert again.json()["summary"]["replicated"] == 1
    assert again.json()["summary"]["skipped"] == 11
    listing, *gets = second  # the listing comes first: it decides what is read
    assert "list-type=2" in listing.target
    assert sorted(r.target for r in gets) == [
        f"/{source_bucket}/{key}" for key in ("k03", "missing")
    ]
    assert {r.method for r in second} == {"GET"}
    for key, body in data.items():
        assert destination_bytes(gcs, dest_bucket, key) == body


def test_a_missing_bucket_is_not_asked_about_every_key(
    s3_proxy: FaultProxy, gcs_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = make_settings(s3_proxy.url, gcs_server.url, dest_bucket, startup_probe=False)
    keys = [f"k{n:03}" for n in range(200)]

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/replicate/batch", json={"s3_bucket": "no-such-bucket", "s3_keys": keys}
        )

    results = response.json()["results"]
    assert [r["status"] for r in results] == ["not_found"] * 200
    assert {r["error"] for r in results} == {"S3 bucket 'no-such-bucket' does not exist"}
    # Only the GETs already under way when the first answer came back.
    assert len(s3_proxy.seen("GET")) <= settings.batch_concurrency


def test_a_missing_source_bucket_is_not_found_per_key_not_a_404(client: TestClient) -> None:
    # What the README's API table promises: a batch answers 200 whatever its keys find.
    keys = ["a", "b/c"]
    response = client.post(
        "/v1/replicate/batch", json={"s3_bucket": "no-such-bucket-4d1c", "s3_keys": keys}
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["key"], r["status"]) for r in results] == [(k, "not_found") for k in keys]
    assert all("no-such-bucket-4d1c" in r["error"] for r in results)
    assert response.json()["summary"]["not_found"] == 2
