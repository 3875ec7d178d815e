"""Parallel composite uploads (app.replication.composite), seen on the wire: the object read on
one GET, its parts uploaded as temporary objects, composed, deleted; and what a fault leaves."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from app.config import Settings
from app.replication.composite import PARTS_PREFIX
from tests.conftest import Buckets
from tests.faults import S3_SLOW_DOWN, Fault, FaultProxy
from tests.resilience.conftest import (
    assert_error,
    proxied_settings,
    replace_under_fault,
)

PART = 256 * 1024
SIZE = 5 * PART + 777  # six parts, the last one short


@pytest.fixture
def settings(s3_proxy: FaultProxy, gcs_proxy: FaultProxy, dest_bucket: str) -> Settings:
    return proxied_settings(
        s3_proxy.url,
        gcs_proxy.url,
        dest_bucket,
        parallel_composite_threshold=4 * PART,
        parallel_composite_part_size=PART,
        parallel_composite_workers=3,
    )


def part_uploads(proxy: FaultProxy) -> list[Any]:
    return proxy.seen("POST", "uploadType=multipart")


def assert_only(buckets: Buckets, *keys: str) -> None:
    """The destination holds exactly `keys`: no part was left behind."""
    assert sorted(blob.name for blob in buckets.gcs.list_blobs(buckets.dest)) == sorted(keys)


def test_a_large_object_goes_up_in_parts_and_leaves_none_behind(
    settings: Settings, s3_proxy: FaultProxy, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    data = buckets.put_random("big.bin", SIZE)

    response = buckets.replicate(settings, "big.bin")

    buckets.assert_replicated(response, "big.bin", data)
    assert_only(buckets, "big.bin")
    etag = buckets.s3.head_object(Bucket=buckets.source, Key="big.bin")["ETag"]
    gets = s3_proxy.seen("GET", "/big.bin")
    assert [(get.headers.get("range"), get.headers["if-match"]) for get in gets] == [(None, etag)]
    assert len(part_uploads(gcs_proxy)) == 6
    assert len(gcs_proxy.seen("POST", "/compose")) == 1
    assert len(gcs_proxy.seen("DELETE", PARTS_PREFIX.replace("/", "%2F"))) == 6
    metadata = buckets.gcs.bucket(buckets.dest).get_blob("big.bin").metadata
    assert metadata["Replicator-Source-Etag"] == etag.strip('"')


def test_a_multipart_source_in_more_than_32_parts_is_verified_and_composed_in_steps(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    """The multipart ETag is checked across parts; over 32 parts, composition goes in steps."""
    data = bytes(range(256)) * (40 * PART // 256) + b"tail"
    config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    buckets.s3.upload_fileobj(io.BytesIO(data), buckets.source, "parts.bin", Config=config)

    response = buckets.replicate(settings, "parts.bin")

    buckets.assert_replicated(response, "parts.bin", data)
    assert_only(buckets, "parts.bin")
    assert len(part_uploads(gcs_proxy)) == 41
    assert len(gcs_proxy.seen("POST", "/compose")) == 2  # 32 parts, then that and 9 more


def test_a_flipped_byte_in_one_part_publishes_nothing(
    settings: Settings, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    buckets.put_random("big.bin", SIZE)
    flip = s3_proxy.add(Fault("GET", "/big.bin", "flip", at=3 * PART + 1000))  # the 4th part

    response = buckets.replicate(settings, "big.bin")

    assert_error(response, 502, "integrity_error")
    assert flip.fired == 1
    assert_only(buckets)


def test_a_flipped_byte_keeps_the_previous_version(
    settings: Settings, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    flip = Fault("GET", "/a.bin", "flip", at=SIZE - 7, times=1)
    second = replace_under_fault(buckets, settings, SIZE, s3_proxy, flip)

    assert_error(second, 502, "integrity_error")
    assert flip.fired == 1
    assert_only(buckets, "a.bin")


@pytest.mark.parametrize(
    "fault",
    [
        Fault("POST", "uploadType=multipart", "reset", nth=3),
        Fault("POST", "uploadType=multipart", "reset", at=PART // 2, nth=3),  # mid-part
        Fault("POST", "uploadType=multipart", "reset_after_upload", nth=2),
        Fault("POST", "/compose", "status", status=503, times=1),
        Fault("POST", "/compose", "reset_after_upload", times=1),
    ],
    ids=[
        "part-reset",
        "part-reset-mid-body",
        "part-answer-lost",
        "compose-503",
        "compose-answer-lost",
    ],
)
def test_transient_faults_in_parts_or_compose_are_retried(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets, fault: Fault
) -> None:
    data = buckets.put_random("big.bin", SIZE)
    gcs_proxy.add(fault)

    response = buckets.replicate(settings, "big.bin")

    assert fault.fired == 1
    if fault.action == "reset_after_upload" and "compose" in fault.path:
        # GCS composed it and the answer was lost. Real GCS refuses the retry (412) and the
        # service recognises its own copy ("skipped"); fake-gcs-server ignores
        # ifGenerationMatch on compose and composes again. Either way: these bytes, once.
        assert response.status_code == 200, response.text
        assert buckets.destination_bytes("big.bin") == data
    else:
        buckets.assert_replicated(response, "big.bin", data)
    assert_only(buckets, "big.bin")


def test_a_source_fault_on_every_attempt_is_503_and_leaves_nothing(
    settings: Settings, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    buckets.put_random("big.bin", SIZE)
    s3_proxy.add(Fault("GET", "/big.bin", "status", status=503, body=S3_SLOW_DOWN))

    response = buckets.replicate(settings, "big.bin")

    assert_error(response, 503, "unavailable")
    assert_only(buckets)


def test_a_source_failing_while_its_part_is_sent_is_503_and_leaves_nothing(
    settings: Settings, s3_proxy: FaultProxy, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    """S3 breaks for good in the middle of the third part, which is already going to GCS as
    it is read: the reads are retried, that part's upload is not retried on top of them."""
    buckets.put_random("big.bin", SIZE)
    s3_proxy.add(Fault("GET", "/big.bin", "truncate", at=2 * PART + 1000, nth=1))
    s3_proxy.add(Fault("GET", "/big.bin", "reset"))  # every later read

    response = buckets.replicate(settings, "big.bin")

    assert_error(response, 503, "unavailable")
    # The third part went at most once (unless the copy ended before its upload began).
    assert len(part_uploads(gcs_proxy)) <= 3
    assert_only(buckets)


def test_a_part_gcs_stored_differently_from_what_was_read_publishes_nothing(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    """A part's CRC32C is known only once it was sent, so what GCS stored is checked after."""
    buckets.put_random("big.bin", SIZE)
    flip = gcs_proxy.add(Fault("POST", "uploadType=multipart", "flip_request", at=PART // 2, nth=2))

    response = buckets.replicate(settings, "big.bin")

    assert_error(response, 502, "integrity_error")
    assert flip.fired == 1
    assert not gcs_proxy.seen("POST", "/compose")  # caught at the part, before composing
    assert_only(buckets)


def test_compose_failing_on_every_attempt_is_503_and_leaves_nothing(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    buckets.put_random("big.bin", SIZE)
    gcs_proxy.add(Fault("POST", "/compose", "status", status=503))

    response = buckets.replicate(settings, "big.bin")

    assert_error(response, 503, "unavailable")
    assert_only(buckets)


@pytest.mark.parametrize(
    "bucket_fields",
    [{"storageClass": "NEARLINE"}, {"retentionPolicy": {"retentionPeriod": "86400"}}],
    ids=["nearline", "retention-policy"],
)
def test_buckets_where_parts_would_cost_or_stay_get_one_upload(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets, bucket_fields: dict[str, Any]
) -> None:
    """As gcloud does: no parts where deleting them early is charged or not allowed.
    (fake-gcs-server keeps neither field, so the proxy answers the bucket lookup.)"""
    data = buckets.put_random("big.bin", SIZE)
    resource = {"kind": "storage#bucket", "name": buckets.dest, "id": buckets.dest}
    body = json.dumps({**resource, **bucket_fields}).encode()
    gcs_proxy.add(Fault("GET", f"/b/{buckets.dest}?", "status", status=200, body=body))

    response = buckets.replicate(settings, "big.bin")

    buckets.assert_replicated(response, "big.bin", data)
    assert gcs_proxy.seen("POST", "/compose") == []
    assert len(part_uploads(gcs_proxy)) == 1  # the whole object, in one request


def test_below_the_threshold_one_upload(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    data = buckets.put_random("small.bin", 4 * PART - 1)

    response = buckets.replicate(settings, "small.bin")

    buckets.assert_replicated(response, "small.bin", data)
    assert gcs_proxy.seen("POST", "/compose") == []


def test_a_read_broken_mid_part_resumes_where_it_stopped(
    settings: Settings, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    data = buckets.put_random("big.bin", SIZE)
    cut = 2 * PART + 5
    s3_proxy.add(Fault("GET", "/big.bin", "truncate", at=cut, times=1))

    response = buckets.replicate(settings, "big.bin")

    buckets.assert_replicated(response, "big.bin", data)
    assert_only(buckets, "big.bin")
    ranges = [get.headers.get("range") for get in s3_proxy.seen("GET", "/big.bin")]
    assert ranges == [None, f"bytes={cut}-"]


def test_without_permission_to_read_the_bucket_objects_go_up_whole(
    settings: Settings, gcs_proxy: FaultProxy, buckets: Buckets
) -> None:
    """A role with object permissions only (no storage.buckets.get) still copies."""
    data = buckets.put_random("big.bin", SIZE)
    denied = json.dumps({"error": {"code": 403, "message": "no storage.buckets.get"}}).encode()
    gcs_proxy.add(Fault("GET", f"/b/{buckets.dest}?", "status", status=403, body=denied))

    response = buckets.replicate(settings, "big.bin")

    buckets.assert_replicated(response, "big.bin", data)
    assert gcs_proxy.seen("POST", "/compose") == []
