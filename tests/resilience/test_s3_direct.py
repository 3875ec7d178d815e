"""The direct GETs (app.storage.s3_direct) through the service: the setting that turns them
off, and what they do when S3 answers something other than the object. The first GET of a
bucket is boto3's; the proxy shows which client sent each one. What both paths must do alike
(keys, versions, a bucket in another region, ...) is in tests/storage/test_source_contract.py."""

from __future__ import annotations

import functools

import pytest

from app.dev import emulators
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy, Seen, s3_error, s3_sender
from tests.resilience.conftest import (
    SettingsFor,
    assert_error,
    proxied_settings,
    replicate,
    service,
)


@pytest.fixture
def settings_for(
    s3_proxy: FaultProxy, gcs_server: emulators.Emulator, dest_bucket: str
) -> SettingsFor:
    return functools.partial(proxied_settings, s3_proxy.url, gcs_server.url, dest_bucket)


def senders(gets: list[Seen]) -> list[str]:
    return [s3_sender(get) for get in gets]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, ["boto3", "direct", "direct"]),
        ("true", ["boto3", "direct", "direct"]),
        ("false", ["boto3", "boto3", "boto3"]),
    ],
    ids=["default", "on", "off"],
)
def test_s3_direct_gets_decides_who_sends_the_gets(
    monkeypatch: pytest.MonkeyPatch,
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    setting: str | None,
    expected: list[str],
) -> None:
    """S3_DIRECT_GETS, from the environment: off, boto3 sends every GET, not only the first."""
    if setting is None:
        monkeypatch.delenv("S3_DIRECT_GETS", raising=False)
    else:
        monkeypatch.setenv("S3_DIRECT_GETS", setting)
    data = {key: buckets.put_random(key, 3000) for key in ("a.bin", "b.bin", "c.bin")}

    with service(settings_for()) as client:
        for key in data:
            buckets.assert_replicated(replicate(client, buckets.source, key), key, data[key])

    assert senders(s3_proxy.seen("GET")) == expected


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (400, s3_error("AuthorizationHeaderMalformed"), {}),
        (400, s3_error("InvalidRequest"), {"x-amz-bucket-region": "eu-west-1"}),
    ],
    ids=["wrong-region-code", "wrong-region-header"],
)
def test_a_bucket_that_moved_is_handed_back_to_boto3_and_learned_again(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    status: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """S3 says so, one way or another, when a bucket is asked at the wrong endpoint: these
    answers do not name the region in a way boto3 follows, but they still hand the call to
    boto3. (A 301, which boto3 follows, is in the source contract.)"""
    data = {key: buckets.put_random(key, 5000) for key in ("a.bin", "b.bin", "c.bin")}
    moved = Fault("GET", "/b.bin", "status", status=status, body=body, headers=headers, times=1)
    s3_proxy.add(moved)

    with service(settings_for()) as client:
        for key in data:
            buckets.assert_replicated(replicate(client, buckets.source, key), key, data[key])

    gets = s3_proxy.seen("GET")
    assert [get.target.rsplit("/", 1)[1] for get in gets] == ["a.bin", "b.bin", "b.bin", "c.bin"]
    # boto3 learns the endpoint; the moved answer sends b.bin back to it; c.bin goes direct.
    assert senders(gets) == ["boto3", "direct", "boto3", "direct"]


@pytest.mark.parametrize(
    ("status", "code", "headers", "expected_status", "expected_error"),
    [
        (404, "NoSuchKey", {}, 404, "not_found"),
        (403, "AccessDenied", {}, 502, "access_denied"),
        # A 400 naming the region the request was signed for is not a move: it stands.
        (400, "InvalidRequest", {"x-amz-bucket-region": "us-east-1"}, 500, "internal_error"),
    ],
    ids=["gone-since-the-head", "denied", "bad-request"],
)
def test_error_answers_to_a_direct_get_are_translated_like_boto3s(
    s3_proxy: FaultProxy,
    settings_for: SettingsFor,
    buckets: Buckets,
    status: int,
    code: str,
    headers: dict[str, str],
    expected_status: int,
    expected_error: str,
) -> None:
    first = buckets.put_random("a.bin", 3000)
    buckets.put_random("b.bin", 3000)
    s3_proxy.add(
        Fault("GET", "/b.bin", "status", status=status, body=s3_error(code), headers=headers)
    )

    with service(settings_for(max_retries=1)) as client:
        buckets.assert_replicated(replicate(client, buckets.source, "a.bin"), "a.bin", first)
        response = replicate(client, buckets.source, "b.bin")

    assert_error(response, expected_status, expected_error)
    assert code in response.json()["detail"] or expected_status == 404
    assert senders(s3_proxy.seen("GET", "/b.bin")) == ["direct"]  # not retried, not re-sent
    assert buckets.gcs.bucket(buckets.dest).get_blob("b.bin") is None
