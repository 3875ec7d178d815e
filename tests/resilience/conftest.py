"""Fault proxies between the service and each emulator, and an app that talks through them.

`s3_proxy` sits in front of moto, `gcs_proxy` in front of fake-gcs-server (answering resumable
status queries as real GCS does; see tests.faults.FaultProxy). Faults are scripted per test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import Buckets, make_settings
from tests.faults import Fault, FaultProxy, Seen

CHUNK = 256 * 1024  # the smallest upload chunk GCS allows: 1 MiB goes up in four chunks
SMALL = 200_000  # goes up in one simple (multipart) upload
LARGE = 4 * CHUNK + 1000  # a resumable upload: four full chunks and a short final one


def proxied_settings(s3_url: str, gcs_url: str, bucket: str, **overrides: Any) -> Settings:
    """Quick retries and no start-up probe, so the proxies see only the replication's requests."""
    values: dict[str, Any] = {"max_retries": 3, "retry_delay": 0.01, "startup_probe": False}
    return make_settings(s3_url, gcs_url, bucket, **{**values, **overrides})


SettingsFor = Callable[..., Settings]  # proxied_settings with the URLs and bucket filled in


@contextlib.contextmanager
def service(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def replicate(client: TestClient, bucket: str, key: str) -> Any:
    return client.post("/v1/replicate", json={"s3_bucket": bucket, "s3_key": key})


def gaps(attempts: list[Seen]) -> list[float]:
    """Seconds between consecutive attempts, as the proxy saw them arrive."""
    return [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def replace_under_fault(
    buckets: Buckets, settings: Settings, size: int, proxy: FaultProxy, fault: Fault
) -> Any:
    """Replicate a.bin, then a new version of it with `fault` added to `proxy`, through one
    service. Checks the first copy, and that the destination still holds it, unchanged, after
    the second attempt; returns the second response."""
    good = buckets.put_random("a.bin", size)
    with service(settings) as client:
        buckets.warm(client)
        first = replicate(client, buckets.source, "a.bin")
        buckets.assert_replicated(first, "a.bin", good)
        buckets.put_random("a.bin", size)
        proxy.add(fault)
        second = replicate(client, buckets.source, "a.bin")

    buckets.assert_holds("a.bin", good, first.json()["generation"])
    return second
