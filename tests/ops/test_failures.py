"""`replicator failures`, GET /v1/failures and `replicator redrive`, end to end: a real worker
with a shared ledger (valkey) drains a queue whose S3 refuses one key (403 on the wire, as S3
answers), beside a poison message and a good key. What failed is listed with its real reason;
once the refusal is lifted, a redrive of that key alone puts it back and the worker copies it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from google.cloud import storage

from app.dev import emulators
from app.main import create_app
from tests.conftest import RedisServer, destination_bytes, make_settings
from tests.faults import Fault, FaultProxy
from tests.service_process import replicator
from tests.worker import test_worker
from tests.worker.test_worker import (
    Aws,
    blob_of,
    event_body,
    gcs_bucket,
    running_worker,
    wait_for,
    worker_settings,
)

aws = test_worker.aws
DB = 9  # the session Redis's database for these notes (the ledger tests use others)
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


@pytest.fixture
def ledger_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url(DB))
    client.flushdb()
    yield redis_server.url(DB)
    client.close()


def dead_letter_count(aws: Aws, queue: Any) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = aws.sqs.get_queue_attributes(QueueUrl=queue.dead_letter_url, AttributeNames=names)
    return sum(int(found["Attributes"][name]) for name in names)


def test_failures_are_listed_with_their_reason_and_a_redrive_copies_them(
    aws: Aws,
    moto_server: emulators.Emulator,
    gcs: storage.Client,
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
    ledger_url: str,
    tmp_path: Path,
) -> None:
    queue, bucket, dest = aws.queue(max_receives=2), aws.bucket("fail"), gcs_bucket(gcs)
    refused = s3_proxy.add(
        Fault(path=f"/{bucket}/denied/", action="status", status=403, body=DENIED)
    )
    data = {key: os.urandom(2048) for key in ("denied/report 1.csv", "fine/ok.bin")}
    for key, body in data.items():
        aws.s3.put_object(Bucket=bucket, Key=key, Body=body)
    settings = worker_settings(
        aws, s3_proxy.url, gcs_server.url, dest, queue, LEDGER_URL=ledger_url
    )
    poison_id = aws.send(queue, "{not an event")
    with running_worker(tmp_path, settings):
        for key in data:
            aws.send(queue, event_body(bucket, key))
        wait_for(lambda: blob_of(gcs, dest, "fine/ok.bin"), "the good key is copied")
        wait_for(lambda: dead_letter_count(aws, queue) == 2, "two messages are dead letters")

        listed = replicator("failures", "--json", cwd=tmp_path, **settings)
        assert listed.returncode == 1, listed.stderr  # something failed
        found = {(f["s3_key"] or "-"): f for f in json.loads(listed.stdout)}
        assert set(found) == {"denied/report 1.csv", "-"}
        denied = found["denied/report 1.csv"]
        assert denied["state"] == "dead_letter"
        assert denied["s3_bucket"] == bucket
        assert denied["tries"] == 2  # the queue's maxReceiveCount
        assert denied["reason"].startswith("failed: access_denied:"), denied
        assert found["-"]["reason"].startswith("poison:")
        assert found["-"]["message_id"] == poison_id
        assert dead_letter_count(aws, queue) == 2  # listing moved nothing

        api = make_settings(
            moto_server.url,
            gcs_server.url,
            dest,
            sqs_queue_url=queue.url,
            sqs_endpoint_url=aws.url,
            ledger_url=ledger_url,
            api_keys="k1",
        )
        with TestClient(create_app(api)) as client:
            assert client.get("/v1/failures").status_code == 401
            answer = client.get("/v1/failures", headers={"Authorization": "Bearer k1"})
        assert answer.status_code == 200, answer.text
        assert {f["s3_key"] for f in answer.json()["failures"]} == {"denied/report 1.csv", None}

        s3_proxy.faults.remove(refused)  # the bucket policy is fixed
        dry = replicator("redrive", "--include", "denied/*", "--dry-run", cwd=tmp_path, **settings)
        assert dry.returncode == 0, dry.stderr
        assert f"would move {denied['message_id']}: s3://{bucket}/denied/report 1.csv" in dry.stdout
        assert "1 messages would move" in dry.stderr
        assert dead_letter_count(aws, queue) == 2

        moved = replicator("redrive", "--include", "denied/*", cwd=tmp_path, **settings)
        assert moved.returncode == 0, moved.stderr
        assert f"moved {denied['message_id']}: s3://{bucket}/denied/report 1.csv" in moved.stdout
        assert poison_id not in moved.stdout
        key = "denied/report 1.csv"
        wait_for(lambda: blob_of(gcs, dest, key), "the redriven key is copied")
        assert dead_letter_count(aws, queue) == 1  # the poison message stays

        after = replicator("failures", "--json", cwd=tmp_path, **settings)
    assert [f["message_id"] for f in json.loads(after.stdout)] == [poison_id]
    for key, body in data.items():
        assert destination_bytes(gcs, dest, key) == body


def test_without_a_ledger_the_dead_letters_are_listed_and_the_log_named(
    aws: Aws, moto_server: emulators.Emulator, gcs_server: emulators.Emulator, tmp_path: Path
) -> None:
    queue = aws.queue()
    body = event_body("some-bucket", "a/b.txt")
    aws.sqs.send_message(QueueUrl=queue.dead_letter_url, MessageBody=json.dumps(body))
    settings = worker_settings(aws, moto_server.url, gcs_server.url, "dst-unused", queue)
    listed = replicator("failures", cwd=tmp_path, **settings)
    assert listed.returncode == 1
    [line] = listed.stdout.splitlines()
    assert line.startswith("dead_letter ")
    assert "s3://some-bucket/a/b.txt" in line
    assert "see the worker's log for this message id" in line
    assert "1 failed" in listed.stderr


def test_redrive_without_a_dead_letter_queue_is_a_configuration_error(
    aws: Aws, moto_server: emulators.Emulator, gcs_server: emulators.Emulator, tmp_path: Path
) -> None:
    url = aws.sqs.create_queue(QueueName=f"plain-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    settings = worker_settings(
        aws, moto_server.url, gcs_server.url, "dst-unused", test_worker.plumbing.Queue(url, "", "")
    )
    result = replicator("redrive", cwd=tmp_path, **settings)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"replicator redrive: {url} has no redrive policy naming a dead-letter queue"
    )


@pytest.mark.parametrize("offered", [True, False], ids=["move-task", "no-move-task"])
def test_redrive_of_everything_uses_a_message_move_task_where_sqs_offers_one(
    offered: bool,
    aws: Aws,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    tmp_path: Path,
) -> None:
    """moto has no message move tasks, so SQS's answers are given on the wire: a task handle
    (AWS's documented answer), or the JSON protocol's unknown operation (an endpoint without
    them), where the command moves each message itself."""
    queue = aws.queue()
    body = json.dumps(event_body("some-bucket", "x.txt"))
    aws.sqs.send_message(QueueUrl=queue.dead_letter_url, MessageBody=body)
    if offered:
        answer = Fault(
            "POST",
            operation="StartMessageMoveTask",
            action="status",
            status=200,
            body=b'{"TaskHandle":"eyJ0YXNrSWQiOiJkYjA2"}',
            headers={"Content-Type": "application/x-amz-json-1.0"},
        )
    else:
        unknown = b'{"__type":"com.amazon.coral.service#UnknownOperationException"}'
        answer = Fault(
            "POST",
            operation="StartMessageMoveTask",
            action="status",
            status=400,
            body=unknown,
            headers={"Content-Type": "application/x-amz-json-1.0"},
        )
    with FaultProxy(aws.url) as sqs_proxy:
        sqs_proxy.add(answer)
        settings = worker_settings(
            aws,
            moto_server.url,
            gcs_server.url,
            "dst-unused",
            queue,
            SQS_ENDPOINT_URL=sqs_proxy.url,
        )
        result = replicator("redrive", cwd=tmp_path, **settings)
    assert result.returncode == 0, result.stderr
    assert answer.fired == 1
    if offered:
        assert result.stdout.strip() == (
            "SQS is moving the dead-letter queue's 1 messages back "
            "(message move task eyJ0YXNrSWQiOiJkYjA2)"
        )
        return
    assert "moved " in result.stdout
    assert "s3://some-bucket/x.txt" in result.stdout
    received = aws.sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in received] == [body]
    assert dead_letter_count(aws, queue) == 0
