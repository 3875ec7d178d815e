"""POST /v1/replicate end to end: moto -> service -> fake-gcs-server, checked at the destination."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.cloud import storage

from app.config import Settings
from app.main import create_app
from tests.conftest import destination_bytes, digests


def test_replicates_bytes_headers_and_metadata(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    data = os.urandom(100_000)
    s3.put_object(
        Bucket=source_bucket,
        Key="docs/report.bin",
        Body=data,
        ContentType="application/x-report",
        Metadata={"owner": "finance"},
    )

    response = client.post(
        "/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "docs/report.bin"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    assert body["action"] == "replicated"
    assert (body["gcs_bucket"], body["gcs_key"]) == (dest_bucket, "docs/report.bin")
    assert body["size"] == len(data)
    assert {"md5": body["md5"], "crc32c": body["crc32c"]} == digests(data)
    assert destination_bytes(gcs, dest_bucket, "docs/report.bin") == data
    blob = gcs.bucket(dest_bucket).get_blob("docs/report.bin")
    assert blob is not None
    assert blob.content_type == "application/x-report"
    assert blob.metadata["owner"] == "finance"
    assert blob.generation == body["generation"]


def test_second_request_skips_without_writing(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"once")
    first = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a.txt"})
    second = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a.txt"})

    assert first.json()["action"] == "replicated"
    assert second.status_code == 200
    assert second.json()["action"] == "skipped"
    assert second.json()["generation"] == first.json()["generation"]
    blob = gcs.bucket(dest_bucket).get_blob("a.txt")
    assert blob is not None
    assert blob.generation == first.json()["generation"]


def test_changed_source_is_replicated_again(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"version one")
    first = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a.txt"})
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"version two")
    second = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a.txt"})

    assert second.json()["action"] == "replicated"
    assert second.json()["generation"] != first.json()["generation"]
    assert destination_bytes(gcs, dest_bucket, "a.txt") == b"version two"


def test_seed_field_names_and_explicit_destination(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str
) -> None:
    other = f"{source_bucket}-other"
    gcs.create_bucket(other)
    s3.put_object(Bucket=source_bucket, Key="in.txt", Body=b"renamed")
    response = client.post(
        "/v1/replicate",
        json={
            "src_bucket": source_bucket,
            "src_key": "in.txt",
            "dest_bucket": other,
            "dest_key": "out/renamed.txt",
        },
    )
    assert response.status_code == 200, response.text
    assert (response.json()["gcs_bucket"], response.json()["gcs_key"]) == (
        other,
        "out/renamed.txt",
    )
    assert destination_bytes(gcs, other, "out/renamed.txt") == b"renamed"


@pytest.mark.parametrize("size", [0, 1, 256 * 1024, 256 * 1024 + 1, 3 * 256 * 1024 + 17])
def test_sizes_around_the_chunk_boundary(
    settings: Settings,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    size: int,
) -> None:
    """With 256 KiB chunks, anything larger goes through the resumable, chunked upload."""
    data = os.urandom(size)
    s3.put_object(Bucket=source_bucket, Key="blob", Body=data)
    small_chunks = settings.model_copy(update={"upload_chunk_size": 256 * 1024})
    with TestClient(create_app(small_chunks)) as client:
        response = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "blob"})
    assert response.status_code == 200, response.text
    assert response.json()["size"] == size
    assert {"md5": response.json()["md5"], "crc32c": response.json()["crc32c"]} == digests(data)
    assert destination_bytes(gcs, dest_bucket, "blob") == data


def test_concurrent_requests_for_one_object_write_it_once(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    data = os.urandom(300_000)
    s3.put_object(Bucket=source_bucket, Key="hot.bin", Body=data)

    def post(_: int) -> Any:
        return client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "hot.bin"})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(post, range(12)))

    assert [r.status_code for r in responses] == [200] * 12
    actions = sorted(r.json()["action"] for r in responses)
    assert actions == ["replicated"] + ["skipped"] * 11
    assert len({r.json()["generation"] for r in responses}) == 1
    assert destination_bytes(gcs, dest_bucket, "hot.bin") == data


def test_missing_object_is_404(client: TestClient, source_bucket: str) -> None:
    response = client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "nope"})
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": f"s3://{source_bucket}/nope does not exist",
    }


def test_missing_source_bucket_is_404(client: TestClient) -> None:
    response = client.post("/v1/replicate", json={"s3_bucket": "no-such-bucket", "s3_key": "x"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "no-such-bucket" in response.json()["detail"]
    assert "bucket" in response.json()["detail"]


def test_missing_destination_bucket_is_404_and_nothing_written(
    client: TestClient, s3: Any, source_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"x")
    response = client.post(
        "/v1/replicate",
        json={"s3_bucket": source_bucket, "s3_key": "a.txt", "gcs_bucket": "absent-bucket-x"},
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "absent-bucket-x" in response.json()["detail"]


LONG_KEY = "k" * 1025
TWO_BYTE_KEY = "é" * 513  # 1026 bytes of UTF-8 in 513 characters


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"s3_key": "a"}, "s3_bucket"),
        ({"s3_bucket": "source-bucket"}, "s3_key"),
        ({"s3_bucket": "source-bucket", "s3_key": ""}, "s3_key"),
        ({"s3_bucket": "source-bucket", "s3_key": LONG_KEY}, "s3_key"),
        ({"s3_bucket": "source-bucket", "s3_key": TWO_BYTE_KEY}, "s3_key"),
        ({"s3_bucket": "source-bucket", "s3_key": "a\x00b"}, "s3_key"),
        ({"s3_bucket": "Source_Bucket", "s3_key": "a"}, "s3_bucket"),
        ({"s3_bucket": "ab", "s3_key": "a"}, "s3_bucket"),
        ({"s3_bucket": "192.168.1.1", "s3_key": "a"}, "s3_bucket"),
        ({"s3_bucket": "source-bucket", "s3_key": "a", "gcs_bucket": "google-x"}, "gcs_bucket"),
        ({"s3_bucket": "source-bucket", "s3_key": "a", "gcs_bucket": "-x-"}, "gcs_bucket"),
        ({"s3_bucket": "source-bucket", "s3_key": "a\nb"}, "s3_key"),
        ({"s3_bucket": "source-bucket", "s3_key": "a", "gcs_key": "a\rb"}, "gcs_key"),
        ({"s3_bucket": "source-bucket", "s3_key": "replicator-tmp/x"}, "s3_key"),
        (
            {"s3_bucket": "source-bucket", "s3_key": "a", "gcs_key": "replicator-tmp/a"},
            "temporary objects",
        ),
        ({"s3_bucket": "source-bucket", "s3_key": "a", "overwrite": "sometimes"}, "overwrite"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient, payload: dict[str, str], field: str
) -> None:
    response = client.post("/v1/replicate", json=payload)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/replicate", content=b'{"s3_bucket": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"].startswith("the request body is not valid JSON (")


def test_invalid_input_writes_nothing(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a", Body=b"x")
    response = client.post(
        "/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a", "gcs_key": "a\nb"}
    )
    assert response.status_code == 422
    assert list(gcs.list_blobs(dest_bucket)) == []
