"""The destination's real settings: GCS_STORAGE_CLASS, GCS_KMS_KEY and the source's
LastModified as `customTime`, on one upload, a resumable upload and a composite upload; and
GCS's answers for an object it must keep (a retention policy or a hold), as GCS gives them.

fake-gcs-server keeps `storageClass` and `customTime` in the object resource; it has no KMS,
so the key is checked where GCS would take it: on the wire, at the proxy.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.storage.gcs import errors as gcs_errors
from tests.conftest import Buckets, make_settings
from tests.faults import Fault, FaultProxy

KEY = "projects/dr/locations/us/keyRings/replicas/cryptoKeys/objects"
PART = 256 * 1024


def replicate(settings: Any, buckets: Buckets, key: str) -> Any:
    with TestClient(create_app(settings)) as client:
        return client.post("/v1/replicate", json={"s3_bucket": buckets.source, "s3_key": key})


def requested(proxy: FaultProxy) -> dict[str, Any]:
    """The object resource a resumable session or a compose asked GCS for."""
    composed = proxy.seen("POST", "/compose")
    if composed:
        destination: dict[str, Any] = json.loads(composed[-1].body)["destination"]
        return destination
    [start] = proxy.seen("POST", "uploadType=resumable")
    resource: dict[str, Any] = json.loads(start.body)
    return resource


def query(seen: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(seen.target).query)


@pytest.mark.parametrize(
    ("size", "composite"),
    [(1000, False), (3 * 1024 * 1024, False), (5 * PART, True)],
    ids=["one-request", "resumable", "composite"],
)
def test_every_object_written_has_the_class_the_key_and_the_sources_age(
    s3_proxy: FaultProxy,
    gcs_proxy: FaultProxy,
    buckets: Buckets,
    size: int,
    composite: bool,
) -> None:
    data = buckets.put_random("dr.bin", size)
    modified = buckets.s3.head_object(Bucket=buckets.source, Key="dr.bin")["LastModified"]
    settings = make_settings(
        s3_proxy.url,
        gcs_proxy.url,
        buckets.dest,
        gcs_storage_class="coldline",
        gcs_kms_key=KEY,
        upload_chunk_size=1024 * 1024,
        parallel_composite_threshold=4 * PART if composite else 0,
        parallel_composite_part_size=PART,
    )
    buckets.assert_replicated(replicate(settings, buckets, "dr.bin"), "dr.bin", data)
    blob = buckets.gcs.bucket(buckets.dest).get_blob("dr.bin")
    assert blob is not None
    if size <= 1000:  # fake-gcs-server keeps what a one-request upload asked for
        assert blob.storage_class == "COLDLINE"
        assert blob.custom_time == modified.astimezone(datetime.UTC)
    else:
        # It drops a resumable session's and a compose's storageClass and customTime (GCS
        # keeps them): the resource asked for, on the wire, is what GCS would keep.
        asked = requested(gcs_proxy)
        assert asked["storageClass"] == "COLDLINE"
        assert datetime.datetime.fromisoformat(asked["customTime"]) == modified
    writes = gcs_proxy.seen("POST", "/upload/") + gcs_proxy.seen("POST", "/compose")
    assert writes
    assert all(query(w).get("kmsKeyName") == [KEY] for w in writes)
    if composite:
        parts = gcs_proxy.seen("POST", "/upload/")
        assert len(parts) == 5
        # The temporary parts take the bucket's default class (STANDARD here: no minimum
        # storage duration), and are deleted right after the compose: nothing is charged
        # for a cold class's minimum duration.
        assert all("storageClass" not in part.body.decode("latin-1") for part in parts)
        assert [b.name for b in buckets.gcs.list_blobs(buckets.dest)] == ["dr.bin"]


def test_without_the_settings_the_bucket_decides(
    s3_proxy: FaultProxy, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    data = buckets.put_random("plain.bin", 100)
    settings = make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest)
    buckets.assert_replicated(replicate(settings, buckets, "plain.bin"), "plain.bin", data)
    [upload] = gcs_proxy.seen("POST", "/upload/")
    assert "kmsKeyName" not in query(upload)
    assert buckets.gcs.bucket(buckets.dest).get_blob("plain.bin").storage_class == "STANDARD"


HOLD = (
    "Object 'dst/held.bin' is under active Event-Based hold and cannot be deleted, overwritten "
    "or archived until hold is removed."
)
RETENTION = (
    "Object 'dst/kept.bin' is subject to bucket's retention policy or object retention and "
    "cannot be deleted or overwritten until 2027-01-01T00:00:00Z"
)


@pytest.mark.parametrize("message", [HOLD, RETENTION], ids=["hold", "retention"])
def test_a_destination_under_retention_or_a_hold_is_retained_and_not_retried(
    s3_proxy: FaultProxy, gcs_proxy: FaultProxy, buckets: Buckets, message: str
) -> None:
    buckets.put("kept.bin", b"new version")
    body = {"error": {"code": 403, "message": message, "errors": [{"reason": "forbidden"}]}}
    gcs_proxy.add(
        Fault(
            method="POST",
            path="/upload/",
            action="status",
            status=403,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    )
    settings = make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest)
    response = replicate(settings, buckets, "kept.bin")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "retained"
    assert "retention policy or hold" in response.json()["detail"]
    assert len(gcs_proxy.seen("POST", "/upload/")) == 1


def test_an_ordinary_403_is_still_access_denied() -> None:
    """Only GCS's words for retention and holds make a 403 `retained`."""

    class Answer:
        status_code = 403
        headers: dict[str, str] = {}
        content = json.dumps({"error": {"message": "caller does not have storage.objects.create"}})
        text = content

    translated = gcs_errors.translate(Answer(), "gs://b/k")  # type: ignore[arg-type]
    assert translated.kind == "access_denied"
    assert os.environ.get("GCS_KMS_KEY") is None
