"""Copies you can trust, end to end: every header and byte as stored, the overwrite policy,
every key S3 allows, and races between writers of different source versions."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from fastapi.testclient import TestClient
from google.cloud import storage

from app.config import Settings
from app.main import create_app
from app.names import SOURCE_ETAG, SOURCE_KEY
from tests.conftest import destination_bytes, digests


def replicate(client: TestClient, bucket: str, key: str, **extra: str) -> Any:
    return client.post("/v1/replicate", json={"s3_bucket": bucket, "s3_key": key, **extra})


def test_content_headers_and_gzip_bytes_are_copied_as_stored(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    compressed = gzip.compress(b"a line of text\n" * 2000)
    s3.put_object(
        Bucket=source_bucket,
        Key="logs/app.log.gz",
        Body=compressed,
        ContentType="text/plain; charset=utf-8",
        ContentEncoding="gzip",
        CacheControl="public, max-age=3600",
        ContentDisposition='attachment; filename="app.log"',
        ContentLanguage="en-GB",
        Metadata={"team": "payments", "Mixed-Case": "kept"},
    )

    response = replicate(client, source_bucket, "logs/app.log.gz")

    assert response.status_code == 200, response.text
    blob = gcs.bucket(dest_bucket).get_blob("logs/app.log.gz")
    assert blob is not None
    assert (
        blob.content_type,
        blob.content_encoding,
        blob.cache_control,
        blob.content_disposition,
        blob.content_language,
    ) == (
        "text/plain; charset=utf-8",
        "gzip",
        "public, max-age=3600",
        'attachment; filename="app.log"',
        "en-GB",
    )
    assert blob.metadata["team"] == "payments"
    assert blob.metadata["mixed-case"] == "kept"  # S3 keeps user metadata keys in lower case
    assert destination_bytes(gcs, dest_bucket, "logs/app.log.gz") == compressed  # still gzip
    shown = client.get(f"/v1/object/{dest_bucket}/logs/app.log.gz").json()
    assert shown["content_encoding"] == "gzip"
    assert {"md5": shown["md5"], "crc32c": shown["crc32c"]} == digests(compressed)


def test_user_metadata_cannot_collide_with_the_source_record(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    s3.put_object(
        Bucket=source_bucket,
        Key="a.txt",
        Body=b"x",
        Metadata={"replicator-source-etag": "forged", "replicator-source-key": "other"},
    )
    first = replicate(client, source_bucket, "a.txt")
    second = replicate(client, source_bucket, "a.txt")

    metadata = gcs.bucket(dest_bucket).get_blob("a.txt").metadata  # type: ignore[union-attr]
    assert metadata["replicator-source-etag"] == "forged"  # the user's, kept as it was
    assert metadata[SOURCE_ETAG] == hashlib.md5(b"x").hexdigest()  # ours, beside it
    assert metadata[SOURCE_KEY] == "a.txt"
    assert (first.json()["action"], second.json()["action"]) == ("replicated", "skipped")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("different", "skipped"), ("never", "skipped"), ("always", "replicated")],
)
def test_overwrite_policy_for_an_unchanged_source(
    client: TestClient, s3: Any, source_bucket: str, policy: str, expected: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"same")
    first = replicate(client, source_bucket, "a.txt")
    again = replicate(client, source_bucket, "a.txt", overwrite=policy)
    assert again.json()["action"] == expected
    assert (again.json()["generation"] == first.json()["generation"]) == (expected == "skipped")


@pytest.mark.parametrize(
    ("policy", "expected_bytes"),
    [("different", b"new"), ("never", b"foreign"), ("always", b"new")],
)
def test_overwrite_policy_for_a_destination_written_by_someone_else(
    settings: Settings,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    policy: str,
    expected_bytes: bytes,
) -> None:
    """The setting is the default; the destination here records no source at all."""
    gcs.bucket(dest_bucket).blob("a.txt").upload_from_string(b"foreign")
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"new")
    with TestClient(create_app(settings.model_copy(update={"overwrite": policy}))) as client:
        response = replicate(client, source_bucket, "a.txt")
    assert response.status_code == 200
    assert destination_bytes(gcs, dest_bucket, "a.txt") == expected_bytes


def test_request_overrides_the_overwrite_setting(
    settings: Settings, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    gcs.bucket(dest_bucket).blob("a.txt").upload_from_string(b"foreign")
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"new")
    with TestClient(create_app(settings.model_copy(update={"overwrite": "never"}))) as client:
        response = replicate(client, source_bucket, "a.txt", overwrite="different")
    assert response.json()["action"] == "replicated"
    assert destination_bytes(gcs, dest_bucket, "a.txt") == b"new"


KEYS = [
    "with spaces/and more spaces.txt",
    "unicodé/日本語/ファイル🙂.txt",
    "plus+sign and 100%25 percent?query=1#fragment",
    "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/deep.txt",
    "k" * 1024,
    "é" * 512,  # 1024 bytes of UTF-8
    "a//double/slash",
]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_every_key_s3_allows_keeps_its_name_and_bytes(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str, key: str
) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=source_bucket, Key=key, Body=data)

    response = replicate(client, source_bucket, key)

    assert response.status_code == 200, response.text
    assert response.json()["gcs_key"] == key
    assert destination_bytes(gcs, dest_bucket, key) == data


def test_multipart_object_over_the_threshold_is_verified_and_copied(
    settings: Settings, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    """A multipart ETag is not an MD5: the service re-derives it from the part layout."""
    data = os.urandom(12 * 1024 * 1024 + 12345)
    config = TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
    )
    s3.upload_fileobj(io.BytesIO(data), source_bucket, "parts.bin", Config=config)
    etag = s3.head_object(Bucket=source_bucket, Key="parts.bin")["ETag"].strip('"')
    assert etag.endswith("-3")

    small_chunks = settings.model_copy(update={"upload_chunk_size": 4 * 1024 * 1024})
    with TestClient(create_app(small_chunks)) as client:
        response = replicate(client, source_bucket, "parts.bin")

    assert response.status_code == 200, response.text
    assert response.json()["crc32c"] == digests(data)["crc32c"]
    assert destination_bytes(gcs, dest_bucket, "parts.bin") == data


def test_writers_of_different_versions_never_leave_a_mismatched_record(
    client: TestClient, s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str
) -> None:
    """Copies race while the source keeps changing: whoever wins, the recorded ETag is the
    MD5 of the bytes the destination holds."""
    versions = [os.urandom(200_000) for _ in range(4)]
    stop = threading.Event()

    def rewrite_source() -> None:
        n = 0
        while not stop.is_set():
            s3.put_object(Bucket=source_bucket, Key="hot.bin", Body=versions[n % len(versions)])
            n += 1

    s3.put_object(Bucket=source_bucket, Key="hot.bin", Body=versions[0])
    writer = threading.Thread(target=rewrite_source)
    writer.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: replicate(client, source_bucket, "hot.bin", overwrite="always"),
                    range(24),
                )
            )
    finally:
        stop.set()
        writer.join()

    assert {r.status_code for r in statuses} <= {200, 409}  # 409: lost a race, wrote nothing
    held = destination_bytes(gcs, dest_bucket, "hot.bin")
    blob = gcs.bucket(dest_bucket).get_blob("hot.bin")
    assert blob is not None
    assert held in versions
    assert blob.metadata[SOURCE_ETAG] == hashlib.md5(held).hexdigest()
    assert blob.md5_hash == base64.b64encode(hashlib.md5(held).digest()).decode()
