"""The GCS adapter on the wire, through the fault proxy in front of fake-gcs-server: which
calls it retries itself (the steps of its own upload and compose protocols) and which it
attempts once, leaving the retry to the services (app.retry); and how it pages a listing."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app import errors
from app.retry import RetryPolicy
from app.storage import gcs
from app.storage.base import ContentHeaders
from app.storage.gcs import transport
from tests.conftest import destination_bytes
from tests.faults import Fault, FaultProxy
from tests.storage.test_contract import BytesStream

CHUNK = 256 * 1024
RETRIES = 2
GCS_503 = b'{"error": {"code": 503, "message": "Backend Error"}}'
SESSION_PUT = "upload_id="  # every PUT to a resumable session: chunks and status queries


def destination(proxy: FaultProxy, *, page_size: int = 1000) -> gcs.GCSDestination:
    http = transport.Http(AnonymousCredentials(), proxy.url, max_pool_connections=4)
    return gcs.GCSDestination(
        http,
        RetryPolicy(RETRIES, 0.01, 0.05),
        chunk_size=CHUNK,
        timeout=(2, 5),
        page_size=page_size,
    )


def unavailable(method: str, path: str, **when: Any) -> Fault:
    return Fault(method, path, "status", status=503, body=GCS_503, **when)


def crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


# --- the services retry these whole calls: the adapter makes one attempt --------------------

ONE_ATTEMPT: dict[str, tuple[str, str, Callable[[gcs.GCSDestination, str], Any]]] = {
    "head": ("GET", "/o/a.bin", lambda d, b: d.head(b, "a.bin")),
    "delete": ("DELETE", "/o/a.bin", lambda d, b: d.delete(b, "a.bin")),
    "iter_objects": ("GET", "/o?", lambda d, b: list(d.iter_objects(b))),
    "composable": ("GET", "/b/{bucket}?", lambda d, b: d.composable(b)),
    "write_part": (
        "POST",
        "uploadType=multipart",
        lambda d, b: d.write_part(b, "p", b"x", crc32c(b"x")),
    ),
}


@pytest.mark.parametrize("call", ONE_ATTEMPT.values(), ids=ONE_ATTEMPT.keys())
def test_calls_the_services_retry_are_attempted_once(
    gcs_proxy: FaultProxy,
    gcs: storage.Client,
    dest_bucket: str,
    call: tuple[str, str, Callable[[gcs.GCSDestination, str], Any]],
) -> None:
    gcs.bucket(dest_bucket).blob("a.bin").upload_from_string(b"kept")
    method, path, invoke = call
    path = path.format(bucket=dest_bucket)
    gcs_proxy.add(unavailable(method, path))

    with pytest.raises(errors.TransientError):
        invoke(destination(gcs_proxy), dest_bucket)

    assert len(gcs_proxy.seen(method, path)) == 1
    assert destination_bytes(gcs, dest_bucket, "a.bin") == b"kept"


# --- the adapter retries the steps of its own protocols -----------------------------------


@pytest.mark.parametrize("failures", [RETRIES, RETRIES + 1], ids=["then-succeeds", "every-try"])
def test_a_resumable_chunk_is_retried_retries_plus_one_times(
    gcs_proxy: FaultProxy, gcs: storage.Client, dest_bucket: str, failures: int
) -> None:
    """A chunk that fails is sent again after asking GCS what it kept (a PUT to the session
    too): the step makes RETRIES + 1 attempts, then gives up and cancels the session."""
    data = os.urandom(3 * CHUNK + 10)
    injected = gcs_proxy.add(unavailable("PUT", SESSION_PUT, times=failures))
    target = destination(gcs_proxy)

    def write() -> Any:
        stream = BytesStream(data)
        return target.write(dest_bucket, "big.bin", stream, len(data), ContentHeaders(), {}, 0)

    if failures > RETRIES:
        with pytest.raises(errors.TransientError):
            write()
        assert len(gcs_proxy.seen("PUT", SESSION_PUT)) == RETRIES + 1
        assert gcs_proxy.seen("DELETE", SESSION_PUT), "the upload session was not cancelled"
        assert list(gcs.list_blobs(dest_bucket)) == []
        return
    written = write()
    assert injected.fired == RETRIES
    assert [blob.name for blob in gcs.list_blobs(dest_bucket)] == ["big.bin"]
    assert destination_bytes(gcs, dest_bucket, "big.bin") == data
    assert written.size == len(data)
    assert len(gcs_proxy.seen("POST", "uploadType=resumable")) == 1  # one session, one object


@pytest.mark.parametrize("failures", [RETRIES, RETRIES + 1], ids=["then-succeeds", "every-try"])
def test_a_compose_round_is_retried_retries_plus_one_times(
    gcs_proxy: FaultProxy, gcs: storage.Client, dest_bucket: str, failures: int
) -> None:
    target = destination(gcs_proxy)
    parts = [os.urandom(1000) for _ in range(3)]
    for number, part in enumerate(parts):
        target.write_part(dest_bucket, f"tmp/{number}", part, crc32c(part))
    injected = gcs_proxy.add(unavailable("POST", "/compose", times=failures))

    def compose() -> Any:
        names = [f"tmp/{n}" for n in range(3)]
        return target.compose(dest_bucket, "whole.bin", names, ContentHeaders(), {}, 0)

    if failures > RETRIES:
        with pytest.raises(errors.TransientError):
            compose()
        assert gcs.bucket(dest_bucket).get_blob("whole.bin") is None
    else:
        written = compose()
        assert destination_bytes(gcs, dest_bucket, "whole.bin") == b"".join(parts)
        assert written.size == 3000
    assert len(gcs_proxy.seen("POST", "/compose")) == RETRIES + 1
    assert injected.fired == min(failures, RETRIES + 1)


def test_intermediate_compose_objects_are_deleted_despite_a_failed_delete(
    gcs_proxy: FaultProxy, gcs: storage.Client, dest_bucket: str
) -> None:
    """Beyond 32 parts the adapter composes in rounds; the intermediate object it made is
    its own to delete, so that delete is retried here."""
    target = destination(gcs_proxy)
    names = [f"tmp/{n:02}" for n in range(33)]
    for name in names:
        target.write_part(dest_bucket, name, name.encode(), crc32c(name.encode()))
    injected = gcs_proxy.add(unavailable("DELETE", "%2B", times=RETRIES))  # "tmp/31+"

    target.compose(dest_bucket, "whole.bin", names, ContentHeaders(), {}, 0)

    assert injected.fired == RETRIES
    assert sorted(blob.name for blob in gcs.list_blobs(dest_bucket)) == [*names, "whole.bin"]
    assert destination_bytes(gcs, dest_bucket, "whole.bin") == "".join(names).encode()


# --- lookups and listings -----------------------------------------------------------------


def test_only_the_first_missing_object_of_a_bucket_asks_the_bucket(
    gcs_proxy: FaultProxy, dest_bucket: str
) -> None:
    """GCS answers a missing bucket and a missing object with the same 404 and reason, so
    the adapter asks the bucket, once; later lookups of missing objects cost one request."""
    target = destination(gcs_proxy)

    assert [target.head(dest_bucket, key) for key in ("a", "b", "c")] == [None, None, None]
    with pytest.raises(errors.BucketNotFound):
        target.head("no-such-bucket-x", "a")

    assert len(gcs_proxy.seen("GET", f"/storage/v1/b/{dest_bucket}?")) == 1
    assert len(gcs_proxy.seen("GET", f"/storage/v1/b/{dest_bucket}/o/")) == 3


def test_iter_objects_fetches_one_page_at_a_time(
    gcs_proxy: FaultProxy, gcs: storage.Client, dest_bucket: str
) -> None:
    keys = [f"k{n:02}" for n in range(25)]
    for key in keys:
        gcs.bucket(dest_bucket).blob(key).upload_from_string(key.encode())
    listing = destination(gcs_proxy, page_size=10).iter_objects(dest_bucket, "k", "k00")

    first = next(listing)
    pages = gcs_proxy.seen("GET", f"/b/{dest_bucket}/o?")
    assert first.key == "k01"
    assert len(pages) == 1  # nothing fetched ahead of what was asked for
    query = ("maxResults=10", "projection=noAcl", "startOffset=k00", "prefix=k")
    assert all(part in pages[0].target for part in query), pages[0].target

    assert [first.key, *(info.key for info in listing)] == keys[1:]
    pages = gcs_proxy.seen("GET", f"/b/{dest_bucket}/o?")
    assert len(pages) == 3
    assert ["pageToken=" in page.target for page in pages] == [False, True, True]
