"""Faults between the service and GCS, produced on the wire by a proxy in front of
fake-gcs-server.

The proxy answers resumable-upload status queries as real GCS does (see
tests.faults.FaultProxy); the last tests here show what the emulator's own answers lead to.
Each case ends with 200 and a byte-identical, verified destination, or with a clean 503
and nothing new at the destination.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.dev import emulators
from app.main import create_app
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy
from tests.resilience.conftest import (
    CHUNK,
    LARGE,
    SMALL,
    SettingsFor,
    assert_error,
    gaps,
    proxied_settings,
    replace_under_fault,
)

SIMPLE_UPLOAD = "uploadType=multipart"
SESSION = "uploadType=resumable"  # the initiating POST, and every PUT to the session
CHUNK_PUT = "upload_id="
# The object's metadata (GET .../o/a.bin?...), the destination's HEAD; a listing of the bucket
# (.../o?prefix=...) does not match.
OBJECT_METADATA = "/o/a.bin?"
GCS_503 = b'{"error": {"code": 503, "message": "Backend Error"}}'  # GCS's error shape
SERVICE_UNAVAILABLE: dict[str, Any] = {"action": "status", "status": 503, "body": GCS_503}


@pytest.fixture
def settings_for(
    gcs_proxy: FaultProxy, moto_server: emulators.Emulator, dest_bucket: str
) -> SettingsFor:
    """Settings that reach GCS through the proxy and S3 directly; 256 KiB upload chunks."""
    return functools.partial(
        proxied_settings, moto_server.url, gcs_proxy.url, dest_bucket, upload_chunk_size=CHUNK
    )


def size_for(path: str) -> int:
    """An object that goes up through `path`: a simple upload, or a resumable one."""
    return SMALL if path == SIMPLE_UPLOAD else LARGE


def chunk_ranges(proxy: FaultProxy) -> list[str]:
    """The Content-Range of every chunk PUT the proxy received, status queries left out."""
    ranges = [put.headers.get("content-range", "") for put in proxy.seen("PUT", CHUNK_PUT)]
    return [r for r in ranges if not r.startswith("bytes */")]


def chunks_of(size: int) -> list[str]:
    return [
        f"bytes {start}-{min(start + CHUNK, size) - 1}/{size}" for start in range(0, size, CHUNK)
    ]


def _valid(content_range: str) -> bool:
    """RFC 9110 14.4: a range whose last byte comes before its first is invalid."""
    first, last = content_range.removeprefix("bytes ").split("/")[0].split("-")
    return int(first) <= int(last)


@pytest.mark.parametrize(
    ("path", "fault"),
    [
        (SIMPLE_UPLOAD, SERVICE_UNAVAILABLE),
        (SIMPLE_UPLOAD, {"action": "reset"}),
        (SIMPLE_UPLOAD, {"action": "stall", "stall_for": 10}),
        (SESSION, SERVICE_UNAVAILABLE),
        (SESSION, {"action": "reset"}),
    ],
    ids=["simple-503", "simple-reset", "simple-stall", "session-503", "session-reset"],
)
def test_failed_upload_request_is_retried(
    gcs_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    path: str,
    fault: dict[str, Any],
) -> None:
    data = buckets.put_random("a.bin", size_for(path))
    injected = gcs_proxy.add(Fault("POST", path, times=2, **fault))

    response = buckets.replicate(settings_for(read_timeout=0.5), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert injected.fired == 2
    assert len(gcs_proxy.seen("POST", path)) == 3


def test_metadata_lookup_is_retried(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    data = buckets.put_random("a.bin", SMALL)
    path = f"/storage/v1/b/{buckets.dest}/o/a.bin"
    fault = gcs_proxy.add(Fault("GET", path, times=2, **SERVICE_UNAVAILABLE))

    response = buckets.replicate(settings_for(), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert fault.fired == 2
    assert len(gcs_proxy.seen("GET", path)) > 2  # the lookup went through in the end


def test_a_failing_metadata_lookup_is_retried_in_one_layer_only(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """The replicator retries the lookup; the adapter does not retry it again inside, so
    GCS sees exactly MAX_RETRIES + 1 attempts, not (MAX_RETRIES + 1) squared."""
    buckets.put_random("a.bin", SMALL)
    path = f"/storage/v1/b/{buckets.dest}/o/a.bin"
    gcs_proxy.add(Fault("GET", path, **SERVICE_UNAVAILABLE))

    response = buckets.replicate(settings_for(max_retries=2), "a.bin")

    assert_error(response, 503, "unavailable")
    assert len(gcs_proxy.seen("GET", path)) == 3
    buckets.assert_nothing_written()


def test_a_failing_delete_is_retried_by_the_service(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """DELETE /v1/object is one idempotent call: the service retries it (app.retry's rule),
    so two 503s cost two retries and the object still goes; the adapter adds none."""
    buckets.put_random("a.bin", SMALL)
    with TestClient(create_app(settings_for(max_retries=2))) as client:
        assert (
            client.post(
                "/v1/replicate", json={"s3_bucket": buckets.source, "s3_key": "a.bin"}
            ).status_code
            == 200
        )
        path = f"/storage/v1/b/{buckets.dest}/o/a.bin"
        fault = gcs_proxy.add(Fault("DELETE", path, times=2, **SERVICE_UNAVAILABLE))

        response = client.delete(f"/v1/object/{buckets.dest}/a.bin")
        after = client.get(f"/v1/object/{buckets.dest}/a.bin")

    assert response.status_code == 204
    assert fault.fired == 2
    assert len(gcs_proxy.seen("DELETE", path)) == 3
    assert after.status_code == 404


def test_a_garbled_answer_is_a_json_500_and_writes_nothing(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """An answer the service cannot read (200 with a body that is not JSON) is no condition it
    knows: the caller still gets the usual JSON error body, with the request id to look up."""
    buckets.put_random("a.bin", SMALL)
    path = f"/storage/v1/b/{buckets.dest}/o/a.bin"
    gcs_proxy.add(Fault("GET", path, action="status", status=200, body=b"<html>proxy</html>"))

    # raise_server_exceptions=False: answer as a real server would, instead of re-raising.
    with TestClient(create_app(settings_for()), raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/replicate",
            json={"s3_bucket": buckets.source, "s3_key": "a.bin"},
            headers={"X-Request-ID": "garbled-1"},
        )

    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "an unexpected error occurred (request id garbled-1); see the logs",
    }
    buckets.assert_nothing_written()


def test_lost_answer_to_a_simple_upload_is_not_a_failure(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """GCS stored the object, but its answer was lost: the retry meets the generation
    precondition (412), and the service sees that its own write is in place."""
    data = buckets.put_random("a.bin", SMALL)
    gcs_proxy.add(Fault("POST", SIMPLE_UPLOAD, "reset_after_upload", times=1))

    response = buckets.replicate(settings_for(), "a.bin")

    assert response.status_code == 200, response.text
    buckets.assert_holds("a.bin", data, response.json()["generation"])
    assert len(gcs_proxy.seen("POST", SIMPLE_UPLOAD)) == 2


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "reset"},
        {"action": "reset", "at": CHUNK // 2},  # while the chunk is being sent
        SERVICE_UNAVAILABLE,
        {"action": "stall", "stall_for": 10},
        {"action": "reset_after_upload"},
    ],
    ids=["reset", "reset-mid-chunk", "503", "stall", "reset-after-upload"],
)
def test_fault_on_a_middle_chunk_resumes_where_gcs_left_off(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets, fault: dict[str, Any]
) -> None:
    data = buckets.put_random("a.bin", LARGE)
    injected = gcs_proxy.add(Fault("PUT", CHUNK_PUT, nth=3, **fault))  # the third chunk

    response = buckets.replicate(settings_for(read_timeout=0.5), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert injected.fired == 1
    sent = chunks_of(LARGE)
    if fault["action"] != "reset_after_upload":
        sent.insert(3, sent[2])  # GCS never saw the third chunk: it goes again, whole
    assert chunk_ranges(gcs_proxy) == sent
    assert all(_valid(r) for r in chunk_ranges(gcs_proxy)), chunk_ranges(gcs_proxy)


def test_a_source_failing_while_its_chunk_is_sent_is_503_and_the_chunk_is_not_sent_again(
    s3_proxy: FaultProxy, gcs_proxy: FaultProxy, dest_bucket: str, buckets: Buckets
) -> None:
    """S3 breaks for good in the middle of the second block, whose chunk is already going to
    GCS as it is read: the reads are retried, the send is not retried on top of them, the
    session is cancelled and nothing is published."""
    buckets.put_random("a.bin", LARGE)
    path = f"/{buckets.source}/a.bin"
    s3_proxy.add(Fault("GET", path, "truncate", at=CHUNK + 1000, nth=1))
    broken = s3_proxy.add(Fault("GET", path, "reset"))  # every later read
    settings = proxied_settings(
        s3_proxy.url, gcs_proxy.url, dest_bucket, upload_chunk_size=CHUNK, max_retries=2
    )

    response = buckets.replicate(settings, "a.bin")

    assert_error(response, 503, "unavailable")
    assert broken.fired == 2  # the two retries of the read that broke
    second = chunks_of(LARGE)[1]
    assert [r for r in chunk_ranges(gcs_proxy) if r == second] == [second]
    assert gcs_proxy.seen("DELETE", CHUNK_PUT), "the upload session was not cancelled"
    buckets.assert_nothing_written()


def test_lost_answer_to_the_final_chunk_is_not_a_failure(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    data = buckets.put_random("a.bin", LARGE)
    gcs_proxy.add(Fault("PUT", CHUNK_PUT, "reset_after_upload", nth=5))

    response = buckets.replicate(settings_for(), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert chunk_ranges(gcs_proxy) == chunks_of(LARGE)  # the status query found it complete


@pytest.mark.parametrize(
    ("method", "path", "fault"),
    [
        ("POST", SIMPLE_UPLOAD, SERVICE_UNAVAILABLE),
        ("POST", SIMPLE_UPLOAD, {"action": "reset"}),
        ("POST", SESSION, SERVICE_UNAVAILABLE),
        ("PUT", CHUNK_PUT, SERVICE_UNAVAILABLE),
        ("PUT", CHUNK_PUT, {"action": "reset"}),
        ("GET", OBJECT_METADATA, SERVICE_UNAVAILABLE),
    ],
    ids=["simple-503", "simple-reset", "session-503", "chunk-503", "chunk-reset", "head-503"],
)
def test_fault_on_every_attempt_is_503_and_writes_nothing(
    gcs_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    method: str,
    path: str,
    fault: dict[str, Any],
) -> None:
    buckets.put_random("a.bin", size_for(path))
    injected = gcs_proxy.add(Fault(method, path, **fault))

    response = buckets.replicate(settings_for(max_retries=2), "a.bin")

    assert_error(response, 503, "unavailable")
    assert injected.fired >= 3  # the first attempt and two retries, at least
    buckets.assert_nothing_written()
    if path == CHUNK_PUT:
        assert gcs_proxy.seen("DELETE", CHUNK_PUT), "the upload session was not cancelled"


def test_failed_replacement_keeps_the_previous_version(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    every_chunk = Fault("PUT", CHUNK_PUT, **SERVICE_UNAVAILABLE)

    second = replace_under_fault(
        buckets, settings_for(max_retries=2), LARGE, gcs_proxy, every_chunk
    )

    assert_error(second, 503, "unavailable")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", SIMPLE_UPLOAD, id="simple"),
        pytest.param("POST", SESSION, id="session"),
        pytest.param("GET", OBJECT_METADATA, id="head"),
        pytest.param("PUT", CHUNK_PUT, id="chunk"),
    ],
)
def test_retry_after_is_honoured(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets, method: str, path: str
) -> None:
    data = buckets.put_random("a.bin", size_for(path))
    retry_later = {"Retry-After": "1"}
    gcs_proxy.add(Fault(method, path, "status", status=429, headers=retry_later, times=1))

    response = buckets.replicate(settings_for(retry_delay=0.01, retry_max_delay=5), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    # The backoff alone would wait at most 0.01 s; GCS asked for a whole second.
    assert gaps(gcs_proxy.seen(method, path))[0] >= 0.9


# What fake-gcs-server itself answers to a resumable status query, without the proxy's help.


@pytest.fixture
def raw_gcs_proxy(gcs_server: emulators.Emulator) -> Iterator[FaultProxy]:
    with FaultProxy(gcs_server.url) as proxy:
        yield proxy


@pytest.mark.parametrize(
    ("nth", "action"),
    [(3, "reset"), (5, "reset_after_upload")],
    ids=["middle-chunk-reset", "final-chunk-answer-lost"],
)
def test_raw_emulator_never_leaves_a_partial_object(
    raw_gcs_proxy: FaultProxy,
    moto_server: emulators.Emulator,
    buckets: Buckets,
    nth: int,
    action: str,
) -> None:
    """fake-gcs-server finalises an upload with whatever it holds when asked for its status
    (the service then finds the size and checksums wrong, removes it and answers 502), and
    forgets a finished upload (404 to the status query: 503 after the retries, with the
    complete object in place). Real GCS answers 308 or the finished object; see
    test_fault_on_a_middle_chunk_resumes_where_gcs_left_off. Whatever the answer, the
    destination must never hold a partial object."""
    data = buckets.put_random("a.bin", LARGE)
    raw_gcs_proxy.add(Fault("PUT", CHUNK_PUT, action, nth=nth))
    settings = proxied_settings(
        moto_server.url, raw_gcs_proxy.url, buckets.dest, upload_chunk_size=CHUNK
    )

    response = buckets.replicate(settings, "a.bin")

    blobs = {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}
    if response.status_code == 200:
        buckets.assert_replicated(response, "a.bin", data)
    else:
        assert response.json()["error"] in ("unavailable", "integrity_error"), response.text
        assert blobs == set() or buckets.destination_bytes("a.bin") == data


def test_a_missing_object_whose_name_says_bucket_is_simply_absent(
    gcs_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """Real GCS answers a missing object with "No such object: <bucket>/<key>"; only "The
    specified bucket does not exist." means the bucket is missing."""
    key = "notes-about-the-bucket.txt"
    data = buckets.put(key, b"not copied yet")
    no_such_object = (
        b'{"error": {"code": 404, "message": "No such object: '
        + f"{buckets.dest}/{key}".encode()
        + b'", "errors": [{"reason": "notFound"}]}}'
    )
    lookup = gcs_proxy.add(
        Fault("GET", f"/o/{key}", "status", status=404, body=no_such_object, times=1)
    )

    response = buckets.replicate(settings_for(), key)

    assert lookup.fired == 1
    buckets.assert_replicated(response, key, data)
