"""Fault proxies between the service and each emulator, and an app that talks through them.

`s3_proxy` sits in front of moto, `gcs_proxy` in front of fake-gcs-server (answering resumable
status queries as real GCS does; see tests.faults.FaultProxy). Faults are scripted per test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.cloud import storage

from app.config import Settings
from app.dev import emulators
from app.main import create_app
from tests.conftest import destination_bytes, digests, make_settings
from tests.faults import FaultProxy, Seen

CHUNK = 256 * 1024  # the smallest upload chunk GCS allows: 1 MiB goes up in four chunks


@pytest.fixture
def s3_proxy(moto_server: emulators.Emulator) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as proxy:
        yield proxy


@pytest.fixture
def gcs_proxy(gcs_server: emulators.Emulator) -> Iterator[FaultProxy]:
    with FaultProxy(gcs_server.url, resumable_status=True) as proxy:
        yield proxy


def proxied_settings(s3_url: str, gcs_url: str, bucket: str, **overrides: Any) -> Settings:
    """Quick retries and no start-up probe, so the proxies see only the replication's requests."""
    values: dict[str, Any] = {"max_retries": 3, "retry_delay": 0.01, "startup_probe": False}
    return make_settings(s3_url, gcs_url, bucket, **{**values, **overrides})


@contextlib.contextmanager
def service(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def replicate(client: TestClient, bucket: str, key: str) -> Any:
    return client.post("/v1/replicate", json={"s3_bucket": bucket, "s3_key": key})


def gaps(attempts: list[Seen]) -> list[float]:
    """Seconds between consecutive attempts, as the proxy saw them arrive."""
    return [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]


def assert_replicated(
    response: Any, gcs: storage.Client, bucket: str, key: str, data: bytes
) -> None:
    """200 "replicated", and the destination holds exactly `data`, with matching checksums."""
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "replicated"
    assert {"md5": response.json()["md5"], "crc32c": response.json()["crc32c"]} == digests(data)
    assert destination_bytes(gcs, bucket, key) == data
    blob = gcs.bucket(bucket).get_blob(key)
    assert blob is not None
    assert {"md5": blob.md5_hash, "crc32c": blob.crc32c} == digests(data)


def assert_nothing_written(gcs: storage.Client, bucket: str) -> None:
    assert [blob.name for blob in gcs.list_blobs(bucket)] == []
