"""Faults between the service and S3, produced on the wire by a proxy in front of moto.

Each case ends one of two ways: 200 with a byte-identical, verified destination, or, once
the retry budget is spent (or the bytes do not verify), an error and nothing damaged at GCS.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import storage

from app.config import Settings
from app.dev import emulators
from tests.conftest import destination_bytes
from tests.faults import S3_SLOW_DOWN, Fault, FaultProxy
from tests.resilience.conftest import (
    CHUNK,
    assert_nothing_written,
    assert_replicated,
    gaps,
    proxied_settings,
    replicate,
    service,
)

SMALL = 200_000  # goes up in one simple upload
LARGE = 4 * CHUNK + 1000  # goes up in a resumable upload of five chunks
SIZES = pytest.mark.parametrize(
    ("size", "chunk"), [(SMALL, 64 * CHUNK), (LARGE, CHUNK)], ids=["simple", "resumable"]
)
SLOW_DOWN: dict[str, Any] = {"action": "status", "status": 503, "body": S3_SLOW_DOWN}

SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(
    s3_proxy: FaultProxy, gcs_server: emulators.Emulator, dest_bucket: str
) -> SettingsFor:
    """Settings that reach S3 through the proxy and GCS directly."""

    def build(**overrides: Any) -> Settings:
        return proxied_settings(s3_proxy.url, gcs_server.url, dest_bucket, **overrides)

    return build


@SIZES
def test_truncated_body_is_resumed_where_it_broke(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    size: int,
    chunk: int,
) -> None:
    data = os.urandom(size)
    s3.put_object(Bucket=source_bucket, Key="cut.bin", Body=data)
    cut = size // 2 + 123
    path = f"/{source_bucket}/cut.bin"
    fault = s3_proxy.add(Fault("GET", path, "truncate", at=cut, times=1))

    with service(settings_for(upload_chunk_size=chunk)) as client:
        response = replicate(client, source_bucket, "cut.bin")

    assert_replicated(response, gcs, dest_bucket, "cut.bin", data)
    assert fault.fired == 1
    gets = s3_proxy.seen("GET", path)
    assert [get.headers.get("range") for get in gets] == [None, f"bytes={cut}-"]
    etag = s3.head_object(Bucket=source_bucket, Key="cut.bin")["ETag"]
    assert [get.headers.get("if-match") for get in gets] == [etag, etag]  # the same version


@pytest.mark.parametrize(
    ("method", "fault"),
    [
        ("HEAD", {"action": "reset"}),
        ("HEAD", {**SLOW_DOWN, "headers": {"Retry-After": "0"}}),
        ("GET", {"action": "reset"}),
        ("GET", {**SLOW_DOWN, "headers": {"Retry-After": "0"}}),
        ("GET", {"action": "status", "status": 500}),
    ],
    ids=["head-reset", "head-slowdown", "get-reset", "get-slowdown", "get-500"],
)
def test_transient_faults_are_retried(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    method: str,
    fault: dict[str, Any],
) -> None:
    data = os.urandom(SMALL)
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=data)
    path = f"/{source_bucket}/a.bin"
    injected = s3_proxy.add(Fault(method, path, times=2, **fault))

    with service(settings_for(max_retries=3)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert_replicated(response, gcs, dest_bucket, "a.bin", data)
    assert injected.fired == 2
    assert len(s3_proxy.seen(method, path)) == 3  # two faults, then the attempt that worked


def test_retry_after_is_honoured(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=data)
    path = f"/{source_bucket}/a.bin"
    s3_proxy.add(Fault("GET", path, times=1, **SLOW_DOWN, headers={"Retry-After": "1"}))

    with service(settings_for(retry_delay=0.01, retry_max_delay=5)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert_replicated(response, gcs, dest_bucket, "a.bin", data)
    # The backoff alone would wait at most 0.01 s; S3 asked for a whole second.
    assert gaps(s3_proxy.seen("GET", path))[0] >= 0.9


def test_retry_after_is_capped_by_the_longest_delay(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=data)
    path = f"/{source_bucket}/a.bin"
    s3_proxy.add(Fault("HEAD", path, times=1, **SLOW_DOWN, headers={"Retry-After": "30"}))

    with service(settings_for(retry_delay=0.01, retry_max_delay=0.2)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert_replicated(response, gcs, dest_bucket, "a.bin", data)
    assert gaps(s3_proxy.seen("HEAD", path))[0] < 10  # not the 30 s S3 asked for


@pytest.mark.parametrize(
    ("method", "at"),
    [("HEAD", None), ("GET", None), ("GET", SMALL // 2)],
    ids=["head", "get", "get-mid-body"],
)
def test_stall_past_the_read_timeout_is_retried(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    method: str,
    at: int | None,
) -> None:
    data = os.urandom(SMALL)
    s3.put_object(Bucket=source_bucket, Key="slow.bin", Body=data)
    path = f"/{source_bucket}/slow.bin"
    fault = s3_proxy.add(Fault(method, path, "stall", at=at, times=1, stall_for=10))

    with service(settings_for(read_timeout=0.5)) as client:
        response = replicate(client, source_bucket, "slow.bin")

    assert_replicated(response, gcs, dest_bucket, "slow.bin", data)
    assert fault.fired == 1
    assert len(s3_proxy.seen(method, path)) == 2


@pytest.mark.parametrize(
    ("method", "fault"),
    [
        ("HEAD", {"action": "reset"}),
        ("HEAD", SLOW_DOWN),
        ("GET", {"action": "reset"}),
        ("GET", SLOW_DOWN),
        ("GET", {"action": "truncate", "at": SMALL // 10}),  # each attempt gets a tenth
    ],
    ids=["head-reset", "head-slowdown", "get-reset", "get-slowdown", "get-truncate"],
)
def test_fault_on_every_attempt_is_503_and_writes_nothing(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    method: str,
    fault: dict[str, Any],
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=os.urandom(SMALL))
    path = f"/{source_bucket}/a.bin"
    s3_proxy.add(Fault(method, path, **fault))

    with service(settings_for(max_retries=2)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert len(s3_proxy.seen(method, path)) == 3  # the first attempt and two retries
    assert_nothing_written(gcs, dest_bucket)


def test_backoff_grows_between_attempts(
    s3_proxy: FaultProxy, settings_for: SettingsFor, s3: Any, source_bucket: str
) -> None:
    """Full jitter draws each wait from [0, base * 2**n]; single gaps need not grow, but the
    late ones reach far past anything a fixed delay of `base` could produce."""
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=b"x")
    path = f"/{source_bucket}/a.bin"
    s3_proxy.add(Fault("HEAD", path, "reset"))

    with service(settings_for(max_retries=8, retry_delay=0.01)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert response.status_code == 503
    waits = gaps(s3_proxy.seen("HEAD", path))
    assert len(waits) == 8
    # Caps run 0.01, 0.02, ... 1.28 s. That all of the last four stay under 0.05 s has a
    # probability of 0.3 * 0.16 * 0.08 * 0.04 (about 1.5e-4); a constant 0.01 s always would.
    assert max(waits[-4:]) > 0.05, waits


@SIZES
def test_flipped_byte_is_an_integrity_error_and_writes_nothing(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    size: int,
    chunk: int,
) -> None:
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=os.urandom(size))
    fault = s3_proxy.add(Fault("GET", f"/{source_bucket}/a.bin", "flip", at=size // 3))

    with service(settings_for(upload_chunk_size=chunk)) as client:
        response = replicate(client, source_bucket, "a.bin")

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "integrity_error"
    assert fault.fired >= 1
    assert_nothing_written(gcs, dest_bucket)


@SIZES
def test_flipped_byte_keeps_the_previous_good_version(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
    size: int,
    chunk: int,
) -> None:
    good = os.urandom(size)
    s3.put_object(Bucket=source_bucket, Key="a.bin", Body=good)
    with service(settings_for(upload_chunk_size=chunk)) as client:
        first = replicate(client, source_bucket, "a.bin")
        assert_replicated(first, gcs, dest_bucket, "a.bin", good)
        s3.put_object(Bucket=source_bucket, Key="a.bin", Body=os.urandom(size))
        s3_proxy.add(Fault("GET", f"/{source_bucket}/a.bin", "flip", at=size - 10))
        second = replicate(client, source_bucket, "a.bin")

    assert second.status_code == 502, second.text
    assert second.json()["error"] == "integrity_error"
    assert destination_bytes(gcs, dest_bucket, "a.bin") == good
    blob = gcs.bucket(dest_bucket).get_blob("a.bin")
    assert blob is not None
    assert blob.generation == first.json()["generation"]


def test_flipped_byte_in_a_multipart_object_is_an_integrity_error(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    s3: Any,
    gcs: storage.Client,
    source_bucket: str,
    dest_bucket: str,
) -> None:
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]  # S3's smallest part is 5 MiB
    upload = s3.create_multipart_upload(Bucket=source_bucket, Key="multi.bin")
    etags = [
        s3.upload_part(
            Bucket=source_bucket,
            Key="multi.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
        )["ETag"]
        for number, part in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=source_bucket,
        Key="multi.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    s3_proxy.add(Fault("GET", f"/{source_bucket}/multi.bin", "flip", at=1234))

    with service(settings_for()) as client:
        response = replicate(client, source_bucket, "multi.bin")

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "integrity_error"
    assert_nothing_written(gcs, dest_bucket)
