"""`replicator sync --enqueue`: S3 events on a real queue (moto's SQS), drained by a real
`replicator worker` into fake-gcs-server."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.bulk.enqueue import s3_event
from app.dev import emulators, plumbing
from app.events import parse
from app.storage.base import ObjectInfo
from tests.cli.test_sync_check import s3_etag
from tests.conftest import Buckets, client_for
from tests.service_process import replicator, service_settings
from tests.worker.test_worker import running_worker, wait_for

KEYS = ["a.txt", "d/with space+plus & 100%.txt", "ünï/ключ"]


@pytest.mark.parametrize("key", KEYS)
def test_the_worker_s_parser_reads_back_what_enqueue_writes(key: str) -> None:
    listed = ObjectInfo("src-bucket", key, 1234, etag="0cc175b9c0f1b6a831c399e269772661")
    versioned = ObjectInfo("src-bucket", key, 7, etag="abc-2", version_id="3HL4kqtJlcpXroDTDmJ")
    at = datetime.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
    for obj in (listed, versioned):
        [record] = parse.parse(json.dumps(s3_event(obj, "eu-west-1", at))).records
        assert (record.bucket, record.key, record.action) == ("src-bucket", key, "copy")
        assert (record.etag, record.size, record.version_id) == (
            obj.etag,
            obj.size,
            obj.version_id,
        )
        assert (record.event_time, record.region) == (at, "eu-west-1")


def received(sqs: Any, url: str, count: int) -> list[str]:
    """The bodies of `count` messages on the queue, received once and left there (visible
    again after a second)."""
    bodies: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(bodies) < count and time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=1
        )
        bodies.update({m["MessageId"]: m["Body"] for m in answer.get("Messages", [])})
    return list(bodies.values())


def test_enqueue_puts_one_event_per_key_to_copy_and_a_worker_copies_them(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    sqs = client_for("sqs", moto_server.url)
    queue = plumbing.queue_with_dead_letters(sqs, f"q-{uuid.uuid4().hex[:12]}")
    data = {key: buckets.put_random(key, 1000 + n) for n, key in enumerate(KEYS)}
    buckets.put("skip/not-this.txt", b"excluded")
    buckets.put("already", b"copied before")
    # The same settings for the command and the worker, as on one machine's environment.
    settings = service_settings(
        moto_server.url,
        gcs_server.url,
        buckets.dest,
        SQS_QUEUE_URL=queue.url,
        SQS_ENDPOINT_URL=moto_server.url,
        SQS_WAIT_SECONDS="1",
        RETRY_DELAY="0.01",
        PROBE_TIMEOUT="30",
    )
    source, destination = f"s3://{buckets.source}", f"gs://{buckets.dest}"
    before = replicator(
        "sync", source, destination, "--include", "already", cwd=tmp_path, **settings
    )
    assert before.returncode == 0, before.stderr
    sync = ["sync", source, destination, "--enqueue", "--exclude", "skip/**"]

    dry = replicator(*sync, "--dry-run", cwd=tmp_path, **settings)
    assert dry.returncode == 0, dry.stderr
    assert sorted(dry.stdout.splitlines()) == sorted(f"would queue {key}" for key in KEYS)
    waiting = sqs.get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert waiting["Attributes"]["ApproximateNumberOfMessages"] == "0"

    result = replicator(*sync, "--json", cwd=tmp_path, **settings)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["queued"], summary["skipped"], summary["failed"]) == (3, 1, 0)
    events = [parse.parse(body).records for body in received(sqs, queue.url, len(KEYS))]
    assert sorted((r.bucket, r.key, r.etag, r.size, r.action) for [r] in events) == sorted(
        (buckets.source, key, s3_etag(buckets, key), len(content), "copy")
        for key, content in data.items()
    )

    with running_worker(tmp_path, settings):
        for key, content in data.items():
            wait_for(lambda key=key: buckets.gcs.bucket(buckets.dest).get_blob(key), key)
            assert buckets.destination_bytes(key) == content
    listed = {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}
    assert listed == {*KEYS, "already"}


def test_enqueue_without_a_queue_exits_2_with_one_line(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    settings = service_settings(moto_server.url, gcs_server.url, buckets.dest)
    result = replicator(
        "sync",
        f"s3://{buckets.source}",
        f"gs://{buckets.dest}",
        "--enqueue",
        cwd=tmp_path,
        **settings,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line == "replicator sync: --enqueue needs SQS_QUEUE_URL, the queue the workers drain"
