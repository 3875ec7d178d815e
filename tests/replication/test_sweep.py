"""Parts that a killed composite copy left behind are removed at start-up, and nothing else."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
from google.cloud import storage

from app.replication.composite import PARTS_PREFIX, sweep_stale_parts
from app.retry import RetryPolicy
from app.storage import gcs
from app.wiring import build
from tests.conftest import make_settings

RETRY = RetryPolicy(1, 0.01, 0.05)


def plant(gcs_client: storage.Client, bucket: str, *names: str) -> None:
    for name in names:
        gcs_client.bucket(bucket).blob(name).upload_from_string(b"part bytes")


def names(gcs_client: storage.Client, bucket: str) -> list[str]:
    return sorted(blob.name for blob in gcs_client.list_blobs(bucket))


def destination(gcs_url: str) -> gcs.GCSDestination:
    return gcs.build_destination(
        emulator_host=gcs_url,
        retry=RETRY,
        chunk_size=256 * 1024,
        timeout=(2, 5),
        max_pool_connections=2,
    )


def test_parts_older_than_the_limit_go_and_everything_else_stays(
    gcs_server: Any, gcs: storage.Client, dest_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = [f"{PARTS_PREFIX}run1/00000", f"{PARTS_PREFIX}run1/00001", f"{PARTS_PREFIX}run2/00000"]
    kept = ["replicator-tmp/other-tool/x", "user/data.bin", "replicator-tmp/parallel-composite"]
    plant(gcs, dest_bucket, *parts, *kept)
    target = destination(gcs_server.url)

    # Just written: younger than a day, so a copy may still be using them.
    assert sweep_stale_parts(target, RETRY, dest_bucket, datetime.timedelta(days=1)) == 0
    assert names(gcs, dest_bucket) == sorted(parts + kept)

    with caplog.at_level("INFO", logger="app.replication.composite"):
        assert sweep_stale_parts(target, RETRY, dest_bucket, datetime.timedelta(0)) == 3
    assert names(gcs, dest_bucket) == sorted(kept)
    assert "removed 3 parts older than 0:00:00 left in" in caplog.text  # the limit applied


def test_the_sweep_goes_on_until_the_services_close(
    gcs_server: Any, moto_server: Any, gcs: storage.Client, dest_bucket: str
) -> None:
    """The service and the worker run `keep_sweeping` on a thread: it sweeps at once (the
    parts' age is compared with PARALLEL_COMPOSITE_STALE_AFTER), then waits, and `close` ends it."""
    plant(gcs, dest_bucket, f"{PARTS_PREFIX}run1/00000")
    services = build(make_settings(moto_server.url, gcs_server.url, dest_bucket))
    sweeping = threading.Thread(target=services.keep_sweeping)
    sweeping.start()
    try:
        sweeping.join(timeout=1.0)
        assert sweeping.is_alive()  # waiting for the next sweep
    finally:
        services.close()
    sweeping.join(timeout=5.0)
    assert not sweeping.is_alive()
    assert names(gcs, dest_bucket) == [f"{PARTS_PREFIX}run1/00000"]  # younger than a day


def test_a_missing_bucket_is_logged_not_raised(
    gcs_server: Any, moto_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services = build(make_settings(moto_server.url, gcs_server.url, "no-such-bucket-here"))
    try:
        services.sweep_stale_parts()  # returns: start-up goes on
    finally:
        services.close()
    assert "sweeping stale parts in gs://no-such-bucket-here stopped" in caplog.text
