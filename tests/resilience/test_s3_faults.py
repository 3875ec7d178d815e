"""Faults between the service and S3, produced on the wire by a proxy in front of moto.

Each case ends one of two ways: 200 with a byte-identical, verified destination, or, once
the retry budget is spent (or the bytes do not verify), an error and nothing damaged at GCS.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

from app.dev import emulators
from tests.conftest import Buckets, upload_in_parts
from tests.faults import S3_SLOW_DOWN, Fault, FaultProxy, s3_sender
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

SIZES = pytest.mark.parametrize(
    ("size", "chunk"), [(SMALL, 64 * CHUNK), (LARGE, CHUNK)], ids=["simple", "resumable"]
)
SLOW_DOWN: dict[str, Any] = {"action": "status", "status": 503, "body": S3_SLOW_DOWN}


@pytest.fixture(params=["boto3", "direct"])
def buckets(
    request: pytest.FixtureRequest, buckets: Buckets, s3_proxy: FaultProxy
) -> Iterator[Buckets]:
    """Every case twice: as the first GET of the bucket, which boto3 sends, and after it, when
    GETs replay its endpoint on their own connection pool (app.storage.s3_direct)."""
    buckets.warm_up = request.param == "direct"
    yield buckets
    gets = [get for get in s3_proxy.seen("GET") if "warm-up" not in get.target]
    by_boto3 = [s3_sender(get) == "boto3" for get in gets]
    if buckets.warm_up:
        assert not any(by_boto3), "the GETs were meant to bypass boto3"
    else:
        assert not gets or by_boto3[0], "the first GET of a bucket was meant to be boto3's"


@pytest.fixture
def settings_for(
    s3_proxy: FaultProxy, gcs_server: emulators.Emulator, dest_bucket: str
) -> SettingsFor:
    """Settings that reach S3 through the proxy and GCS directly."""
    return functools.partial(proxied_settings, s3_proxy.url, gcs_server.url, dest_bucket)


@SIZES
def test_truncated_body_is_resumed_where_it_broke(
    s3_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets, size: int, chunk: int
) -> None:
    data = buckets.put_random("cut.bin", size)
    cut = size // 2 + 123
    path = f"/{buckets.source}/cut.bin"
    fault = s3_proxy.add(Fault("GET", path, "truncate", at=cut, times=1))

    response = buckets.replicate(settings_for(upload_chunk_size=chunk), "cut.bin")

    buckets.assert_replicated(response, "cut.bin", data)
    assert fault.fired == 1
    gets = s3_proxy.seen("GET", path)
    assert [get.headers.get("range") for get in gets] == [None, f"bytes={cut}-"]
    etag = buckets.s3.head_object(Bucket=buckets.source, Key="cut.bin")["ETag"]
    assert [get.headers.get("if-match") for get in gets] == [etag, etag]  # the same version


@pytest.mark.parametrize(
    ("method", "fault", "times", "overrides"),
    [
        ("HEAD", {"action": "reset"}, 2, {}),
        ("HEAD", {**SLOW_DOWN, "headers": {"Retry-After": "0"}}, 2, {}),
        ("GET", {"action": "reset"}, 2, {}),
        ("GET", {**SLOW_DOWN, "headers": {"Retry-After": "0"}}, 2, {}),
        ("GET", {"action": "status", "status": 500}, 2, {}),
        # A stall past the read timeout, before the answer or in the middle of the body.
        ("HEAD", {"action": "stall", "stall_for": 10}, 1, {"read_timeout": 0.5}),
        ("GET", {"action": "stall", "stall_for": 10}, 1, {"read_timeout": 0.5}),
        ("GET", {"action": "stall", "stall_for": 10, "at": SMALL // 2}, 1, {"read_timeout": 0.5}),
    ],
    ids=[
        "head-reset",
        "head-slowdown",
        "get-reset",
        "get-slowdown",
        "get-500",
        "head-stall",
        "get-stall",
        "get-stall-mid-body",
    ],
)
def test_transient_faults_are_retried(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    method: str,
    fault: dict[str, Any],
    times: int,
    overrides: dict[str, Any],
) -> None:
    data = buckets.put_random("a.bin", SMALL)
    path = f"/{buckets.source}/a.bin"
    injected = s3_proxy.add(Fault(method, path, times=times, **fault))

    response = buckets.replicate(settings_for(max_retries=3, **overrides), "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert injected.fired == times
    assert len(s3_proxy.seen(method, path)) == times + 1  # the faults, then the attempt that worked


@pytest.mark.parametrize(
    ("method", "retry_after", "retry_max_delay", "shortest", "longest"),
    [
        # The backoff alone would wait at most 0.01 s; S3 asked for a whole second.
        pytest.param("GET", "1", 5, 0.9, math.inf, id="honoured"),
        # Not the 30 s S3 asked for.
        pytest.param("HEAD", "30", 0.2, 0, 10, id="capped-by-the-longest-delay"),
    ],
)
def test_retry_after(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    method: str,
    retry_after: str,
    retry_max_delay: float,
    shortest: float,
    longest: float,
) -> None:
    data = buckets.put_random("a.bin", 1000)
    path = f"/{buckets.source}/a.bin"
    s3_proxy.add(Fault(method, path, times=1, **SLOW_DOWN, headers={"Retry-After": retry_after}))

    settings = settings_for(retry_delay=0.01, retry_max_delay=retry_max_delay)
    response = buckets.replicate(settings, "a.bin")

    buckets.assert_replicated(response, "a.bin", data)
    assert shortest <= gaps(s3_proxy.seen(method, path))[0] < longest


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
    buckets: Buckets,
    method: str,
    fault: dict[str, Any],
) -> None:
    buckets.put_random("a.bin", SMALL)
    path = f"/{buckets.source}/a.bin"
    s3_proxy.add(Fault(method, path, **fault))

    response = buckets.replicate(settings_for(max_retries=2), "a.bin")

    assert_error(response, 503, "unavailable")
    assert len(s3_proxy.seen(method, path)) == 3  # the first attempt and two retries
    buckets.assert_nothing_written()


def test_backoff_grows_between_attempts(
    s3_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    """Full jitter draws each wait from [0, base * 2**n]; single gaps need not grow, but the
    late ones reach far past anything a fixed delay of `base` could produce."""
    buckets.put("a.bin", b"x")
    path = f"/{buckets.source}/a.bin"
    s3_proxy.add(Fault("HEAD", path, "reset"))

    response = buckets.replicate(settings_for(max_retries=8, retry_delay=0.01), "a.bin")

    assert response.status_code == 503
    waits = gaps(s3_proxy.seen("HEAD", path))
    assert len(waits) == 8
    # Caps run 0.01, 0.02, ... 1.28 s. That all of the last four stay under 0.05 s has a
    # probability of 0.3 * 0.16 * 0.08 * 0.04 (about 1.5e-4); a constant 0.01 s always would.
    assert max(waits[-4:]) > 0.05, waits


@SIZES
def test_flipped_byte_is_an_integrity_error_and_writes_nothing(
    s3_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets, size: int, chunk: int
) -> None:
    buckets.put_random("a.bin", size)
    fault = s3_proxy.add(Fault("GET", f"/{buckets.source}/a.bin", "flip", at=size // 3))

    response = buckets.replicate(settings_for(upload_chunk_size=chunk), "a.bin")

    assert_error(response, 502, "integrity_error")
    assert fault.fired >= 1
    buckets.assert_nothing_written()


@SIZES
def test_flipped_byte_keeps_the_previous_good_version(
    s3_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets, size: int, chunk: int
) -> None:
    flip = Fault("GET", f"/{buckets.source}/a.bin", "flip", at=size - 10)
    settings = settings_for(upload_chunk_size=chunk)

    second = replace_under_fault(buckets, settings, size, s3_proxy, flip)

    assert_error(second, 502, "integrity_error")


def test_flipped_byte_in_a_multipart_object_is_an_integrity_error(
    s3_proxy: FaultProxy, settings_for: SettingsFor, buckets: Buckets
) -> None:
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    upload_in_parts(buckets.s3, buckets.source, "multi.bin", parts)
    s3_proxy.add(Fault("GET", f"/{buckets.source}/multi.bin", "flip", at=1234))

    response = buckets.replicate(settings_for(), "multi.bin")

    assert_error(response, 502, "integrity_error")
    buckets.assert_nothing_written()
