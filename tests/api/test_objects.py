"""GET and DELETE /v1/object/{bucket}/{key}: the destination object as GCS holds it."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from google.cloud import storage

from tests.conftest import digests

# Starlette's TestClient percent-decodes the path twice, so a key holding an escape such as
# `%20` cannot be sent through it intact; `%` followed by non-hex characters survives.
KEYS = [
    "plain.txt",
    "nested/dir/deeper/file.csv",
    "with spaces/file name.txt",
    "unicodé/日本語/ファイル.txt",
    "symbols/a+b 100%?d=1&e#f.txt",
    "trailing/slash/",
]


def object_url(bucket: str, key: str) -> str:
    """The route's URL with the key percent-encoded, slashes kept as separators."""
    return f"/v1/object/{bucket}/{quote(key, safe='/')}"


def put_destination_object(gcs: storage.Client, bucket: str, key: str, data: bytes) -> None:
    blob = gcs.bucket(bucket).blob(key)
    blob.content_type = "text/csv"
    blob.content_encoding = "gzip"
    blob.cache_control = "no-cache"
    blob.content_disposition = "inline"
    blob.content_language = "de"
    blob.metadata = {"owner": "finance", "Replicator-Source-Key": key}
    blob.upload_from_string(data, content_type="text/csv")


@pytest.mark.parametrize("key", KEYS)
def test_get_reports_the_destination_object(
    client: TestClient, gcs: storage.Client, dest_bucket: str, key: str
) -> None:
    data = gzip.compress(f"contents of {key}".encode())
    put_destination_object(gcs, dest_bucket, key, data)
    blob = gcs.bucket(dest_bucket).get_blob(key)
    assert blob is not None

    response = client.get(object_url(dest_bucket, key))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "bucket": dest_bucket,
        "key": key,
        "size": len(data),
        **digests(data),
        "generation": blob.generation,
        "content_type": "text/csv",
        "content_encoding": "gzip",
        "cache_control": "no-cache",
        "content_disposition": "inline",
        "content_language": "de",
        "metadata": {"owner": "finance", "Replicator-Source-Key": key},
    }


def test_get_after_replication(
    client: TestClient, s3: Any, source_bucket: str, dest_bucket: str
) -> None:
    """What the replication wrote is what GET reports."""
    s3.put_object(Bucket=source_bucket, Key="a/b c.txt", Body=b"copied", ContentType="text/plain")
    replicated = client.post(
        "/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "a/b c.txt"}
    ).json()

    response = client.get(object_url(dest_bucket, "a/b c.txt"))

    assert response.status_code == 200
    body = response.json()
    assert (body["size"], body["content_type"]) == (len(b"copied"), "text/plain")
    assert {"md5": body["md5"], "crc32c": body["crc32c"]} == digests(b"copied")
    assert body["generation"] == replicated["generation"]
    assert body["metadata"]["Replicator-Source-Bucket"] == source_bucket


@pytest.mark.parametrize("key", ["missing.txt", "nested/missing file ü.txt"])
def test_get_missing_object_is_404(client: TestClient, dest_bucket: str, key: str) -> None:
    response = client.get(object_url(dest_bucket, key))

    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": f"gs://{dest_bucket}/{key} does not exist",
    }


def test_get_in_missing_bucket_is_404(client: TestClient) -> None:
    response = client.get(object_url("absent-bucket-x", "a.txt"))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "absent-bucket-x" in response.json()["detail"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_invalid_bucket_name_is_422(client: TestClient, method: str) -> None:
    response = client.request(method, object_url("Not_A_Bucket", "a.txt"))

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "bucket" in response.json()["detail"]


@pytest.mark.parametrize("key", KEYS)
def test_delete_removes_the_object(
    client: TestClient, gcs: storage.Client, dest_bucket: str, key: str
) -> None:
    put_destination_object(gcs, dest_bucket, key, b"doomed")
    put_destination_object(gcs, dest_bucket, f"{key}-neighbour", b"stays")

    response = client.delete(object_url(dest_bucket, key))

    assert response.status_code == 204
    assert response.content == b""
    assert gcs.bucket(dest_bucket).get_blob(key) is None
    assert gcs.bucket(dest_bucket).get_blob(f"{key}-neighbour") is not None
    assert client.get(object_url(dest_bucket, key)).status_code == 404


def test_delete_missing_object_is_404(client: TestClient, dest_bucket: str) -> None:
    response = client.delete(object_url(dest_bucket, "never/there.txt"))

    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": f"gs://{dest_bucket}/never/there.txt does not exist",
    }
