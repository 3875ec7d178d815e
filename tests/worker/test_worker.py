"""`replicator worker` end to end: a real worker process draining a real queue (moto's
server: S3, SQS, SNS and EventBridge in one process) into fake-gcs-server, with the fault
proxy in front of S3 (and of GCS where uploads are counted).

Tests that do not disturb each other share one worker (`shared`), each with keys or buckets
of its own; a test that needs other settings, faults or signals starts its own. Queues have
short visibility timeouts (2 s) so redelivery happens within a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import pytest
from google.cloud import storage

from app.dev import emulators, plumbing
from app.names import SOURCE_ETAG
from tests import http_calls
from tests.conftest import client_for, destination_bytes
from tests.events import samples
from tests.events.test_aws_plumbing import KEYS
from tests.faults import Fault, FaultProxy
from tests.service_process import (
    REPLICATOR,
    STOP_TIMEOUT,
    ServiceProcess,
    replicator,
    running_service,
    service_settings,
)

T = TypeVar("T")
WAIT = 60  # a safety net for a condition that never comes; never asserted on
VISIBILITY = 2  # seconds, for every queue here unless a test says otherwise


@dataclass
class Aws:
    s3: Any
    sqs: Any
    sns: Any
    events: Any
    url: str  # moto's

    def bucket(self, prefix: str = "src") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=name)
        return name

    def queue(self, **options: int) -> plumbing.Queue:
        options.setdefault("visibility_timeout", VISIBILITY)
        options.setdefault("max_receives", 2)
        return plumbing.queue_with_dead_letters(self.sqs, f"q-{uuid.uuid4().hex[:12]}", **options)

    def is_drained(self, url: str) -> bool:
        """No message waiting or in flight."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return all(found[name] == "0" for name in names)

    def send(self, queue: plumbing.Queue, body: dict[str, Any] | str) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return str(self.sqs.send_message(QueueUrl=queue.url, MessageBody=text)["MessageId"])

    def dead_letters(self, queue: plumbing.Queue) -> list[str]:
        """The bodies the dead-letter queue holds now (left there, visible again at once)."""
        answer = self.sqs.receive_message(
            QueueUrl=queue.dead_letter_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return [m["Body"] for m in answer.get("Messages", [])]


@pytest.fixture(scope="module")
def aws(moto_server: emulators.Emulator) -> Aws:
    clients = {name: client_for(name, moto_server.url) for name in ("s3", "sqs", "sns", "events")}
    return Aws(url=moto_server.url, **clients)


def gcs_bucket(gcs: storage.Client) -> str:
    name = f"dst-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return name


def worker_settings(
    aws: Aws, s3_url: str, gcs_url: str, bucket: str, queue: plumbing.Queue, **extra: str
) -> dict[str, str]:
    """A worker draining `queue` (at moto, never through a proxy) into `bucket`."""
    defaults = {
        "SQS_QUEUE_URL": queue.url,
        "SQS_ENDPOINT_URL": aws.url,
        "WORKER_RETRY_BACKOFF": "0.5",
        "SQS_WAIT_SECONDS": "1",  # the least: a stop waits for the long poll in progress
        "MAX_RETRIES": "1",
        "RETRY_DELAY": "0.01",
        "PROBE_TIMEOUT": "30",  # moto answers its first requests slowly on a busy machine
    }
    return service_settings(s3_url, gcs_url, bucket, **{**defaults, **extra})


def worker_command(_: int) -> list[str]:
    return [str(REPLICATOR), "worker"]


@contextlib.contextmanager
def running_worker(workdir: Path, settings: dict[str, str]) -> Iterator[ServiceProcess]:
    """`replicator worker` in `workdir`, its /health on a free WORKER_PORT answering 200."""
    with running_service(
        workdir, settings, worker_command, port_setting="WORKER_PORT", name="worker"
    ) as worker:
        yield worker


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Poll `condition` until it is truthy; fail the test with `what` if it never is."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)
    return result


def blob_of(gcs: storage.Client, bucket: str, key: str) -> storage.Blob | None:
    return gcs.bucket(bucket).get_blob(key)


def uploads(proxy: FaultProxy, bucket: str) -> int:
    """Object uploads (simple, or resumable sessions) into `bucket` sent through `proxy`."""
    return len(proxy.seen("POST", f"/upload/storage/v1/b/{bucket}/o"))


def s3_gets(proxy: FaultProxy, bucket: str, key: str) -> int:
    """GETs of the object itself (not of the bucket) that S3 was sent through `proxy`."""
    path = f"/{bucket}/{quote(key)}"
    return sum(r.target.split("?")[0] == path for r in proxy.seen("GET"))


def metric(worker: ServiceProcess, name: str) -> float:
    text = http_calls.get(f"{worker.url}/metrics").text
    match = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def event_body(bucket: str, key: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 notification for `key`, as S3 sends it to SQS (the key form-encoded)."""
    return samples.s3_notification(
        samples.s3_record(key=quote_plus(key), bucket=bucket, event_name=event_name)
    )


# --- one worker shared by the tests that do not disturb each other -------------------------


@dataclass
class Shared:
    worker: ServiceProcess
    queue: plumbing.Queue
    dest: str
    gcs_proxy: FaultProxy


@pytest.fixture(scope="module")
def shared(
    aws: Aws,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    gcs: storage.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    """A worker with DELETE_POLICY=propagate on a queue with a dead-letter queue after two
    receives, writing to GCS through a proxy that counts the uploads."""
    queue, dest = aws.queue(), gcs_bucket(gcs)
    with FaultProxy(gcs_server.url, resumable_status=True) as gcs_proxy:
        settings = worker_settings(
            aws, moto_server.url, gcs_proxy.url, dest, queue, DELETE_POLICY="propagate"
        )
        with running_worker(tmp_path_factory.mktemp("worker"), settings) as worker:
            yield Shared(worker, queue, dest, gcs_proxy)


SHAPES = ("direct", "sns-raw", "sns-enveloped", "eventbridge")


def wire(aws: Aws, shape: str, bucket: str, queue: plumbing.Queue) -> None:
    if shape == "direct":
        plumbing.notify_queue(aws.s3, bucket, queue)
    elif shape == "eventbridge":
        plumbing.notify_eventbridge(aws.s3, aws.events, bucket, queue)
    else:
        plumbing.notify_topic(aws.s3, aws.sns, bucket, queue, raw=shape == "sns-raw")


def test_every_shape_is_copied_then_deleted_with_propagate(
    aws: Aws, shared: Shared, gcs: storage.Client
) -> None:
    """Four buckets on one queue, one per way AWS delivers S3 events; awkward keys in each
    (under a prefix per bucket, as all four go to one destination bucket)."""
    puts: dict[tuple[str, str], tuple[bytes, str]] = {}  # (bucket, key) -> data, source ETag
    for shape in SHAPES:
        bucket = aws.bucket(shape)
        wire(aws, shape, bucket, shared.queue)
        for key in KEYS:
            key = f"{shape}/{key}"
            data = f"{bucket}/{key}".encode() * 100
            etag = aws.s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
            puts[bucket, key] = (data, etag)

    for (_, key), (data, etag) in puts.items():
        blob = wait_for(lambda key=key: blob_of(gcs, shared.dest, key), f"{key!r} is copied")
        assert blob.metadata[SOURCE_ETAG] == etag
        assert destination_bytes(gcs, shared.dest, key) == data

    for bucket, key in puts:
        aws.s3.delete_object(Bucket=bucket, Key=key)
    for _, key in puts:
        wait_for(lambda key=key: blob_of(gcs, shared.dest, key) is None, f"{key!r} is deleted")


def test_deletes_leave_the_copies_with_the_default_policy(
    aws: Aws,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    gcs: storage.Client,
    tmp_path: Path,
) -> None:
    queue, dest, bucket = aws.queue(), gcs_bucket(gcs), aws.bucket()
    plumbing.notify_queue(aws.s3, bucket, queue)
    settings = worker_settings(aws, moto_server.url, gcs_server.url, dest, queue)
    with running_worker(tmp_path, settings) as worker:
        for key in KEYS:
            aws.s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        for key in KEYS:
            wait_for(lambda key=key: blob_of(gcs, dest, key), f"{key!r} is copied")
        deleted_before = metric(worker, "replicator_messages_deleted")
        for key in KEYS:
            aws.s3.delete_object(Bucket=bucket, Key=key)
        wait_for(
            lambda: metric(worker, "replicator_messages_deleted") >= deleted_before + len(KEYS),
            "the delete events are converged",
        )
        assert aws.is_drained(queue.url)
    for key in KEYS:
        assert destination_bytes(gcs, dest, key) == key.encode()


def test_duplicate_events_write_each_object_once(
    aws: Aws, shared: Shared, gcs: storage.Client
) -> None:
    bucket = aws.bucket("dups")
    keys = [f"dups/{n} copy+{n}.bin" for n in range(5)]
    uploads_before = uploads(shared.gcs_proxy, shared.dest)  # the tests sharing it run in turn
    for key in keys:
        aws.s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(1000))
    for _ in range(3):  # each event three times at once
        for key in keys:
            aws.send(shared.queue, event_body(bucket, key))
    blobs = {
        key: wait_for(lambda key=key: blob_of(gcs, shared.dest, key), f"{key!r} is copied")
        for key in keys
    }
    for key in keys:  # and twice more, once those were converged
        aws.send(shared.queue, event_body(bucket, key))
        aws.send(shared.queue, event_body(bucket, key))
    wait_for(lambda: aws.is_drained(shared.queue.url), "the duplicates are converged")

    for key in keys:
        current = blob_of(gcs, shared.dest, key)
        assert current is not None
        assert current.generation == blobs[key].generation
    assert uploads(shared.gcs_proxy, shared.dest) - uploads_before == len(keys)


def test_poison_messages_go_to_the_dead_letter_queue(
    aws: Aws, shared: Shared, gcs: storage.Client
) -> None:
    bucket = aws.bucket("poison")
    good = ["poison/before.txt", "poison/after.txt"]
    for key in good:
        aws.s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    poison = ["{not json", json.dumps({"hello": "no shape the worker knows"})]
    aws.send(shared.queue, event_body(bucket, good[0]))
    poison_ids = [aws.send(shared.queue, body) for body in poison]
    aws.send(shared.queue, event_body(bucket, good[1]))

    for key in good:
        wait_for(lambda key=key: blob_of(gcs, shared.dest, key), f"{key!r} is copied")
        assert destination_bytes(gcs, shared.dest, key) == key.encode()
    dead: list[str] = []
    wait_for(
        lambda: dead.extend(aws.dead_letters(shared.queue)) or sorted(set(dead)) == sorted(poison),
        "both poison messages are in the dead-letter queue",
    )
    assert http_calls.get(f"{shared.worker.url}/health").status_code == 200
    log = shared.worker.log.read_text()
    for message_id in poison_ids:
        assert f"poison message {message_id}" in log


# --- workers of their own: faults, signals, two workers on one queue ----------------------


@dataclass
class Wire:
    """A bucket whose events go straight to a queue of its own, S3 reached through a proxy
    and GCS through another, and a destination bucket."""

    aws: Aws
    bucket: str
    queue: plumbing.Queue
    dest: str
    s3_proxy: FaultProxy
    gcs_proxy: FaultProxy

    def settings(self, **extra: str) -> dict[str, str]:
        return worker_settings(
            self.aws, self.s3_proxy.url, self.gcs_proxy.url, self.dest, self.queue, **extra
        )


@pytest.fixture(name="wire")
def wire_fixture(
    aws: Aws, gcs: storage.Client, s3_proxy: FaultProxy, gcs_proxy: FaultProxy
) -> Wire:
    queue, bucket = aws.queue(), aws.bucket()
    plumbing.notify_queue(aws.s3, bucket, queue)
    return Wire(aws, bucket, queue, gcs_bucket(gcs), s3_proxy, gcs_proxy)


def test_faults_on_the_source_bring_the_message_back(
    wire: Wire, gcs: storage.Client, tmp_path: Path
) -> None:
    """With no retries in the worker, a 503 and a reset on the GET fail the message's first
    receive (the batch plan and the one-by-one look each GET once); it comes back after the
    backoff (0.5 s, a whole second at SQS; the visibility timeout is 30 s) and lands once."""
    w = wire
    w.queue = w.aws.queue(visibility_timeout=30, max_receives=5)
    plumbing.notify_queue(w.aws.s3, w.bucket, w.queue)
    faults = {
        "busy.bin": Fault("GET", f"/{w.bucket}/busy.bin", "status", status=503, times=2),
        "reset.bin": Fault("GET", f"/{w.bucket}/reset.bin", "reset", times=2),
    }
    for fault in faults.values():
        w.s3_proxy.add(fault)
    settings = w.settings(MAX_RETRIES="0", WORKER_RETRY_BACKOFF="0.5")
    with running_worker(tmp_path, settings) as worker:
        data = {}
        for key in faults:
            data[key] = os.urandom(5000)
            w.aws.s3.put_object(Bucket=w.bucket, Key=key, Body=data[key])
        for key in faults:
            wait_for(lambda key=key: blob_of(gcs, w.dest, key), f"{key!r} is copied", timeout=20)
            assert destination_bytes(gcs, w.dest, key) == data[key]
        assert metric(worker, "replicator_messages_retried") >= len(faults)
    for key, fault in faults.items():
        assert fault.fired == 2
        gets = w.s3_proxy.seen("GET", f"/{w.bucket}/{key}")
        assert [g.fault for g in gets][-1] is None
        assert gets[-1].at - gets[-2].at >= 1.0  # the backoff, not the visibility timeout
    assert uploads(w.gcs_proxy, w.dest) == len(faults)
    assert "will be retried in 1 s" in worker.log.read_text()


def test_a_worker_killed_mid_copy_publishes_nothing_and_another_finishes(
    wire: Wire, gcs: storage.Client, tmp_path: Path
) -> None:
    """3 MiB in 1 MiB resumable chunks; the S3 GET stalls after 2 MiB, the worker is killed
    once GCS has a chunk of it."""
    w = wire
    key = "big/one.bin"
    stall = w.s3_proxy.add(
        Fault("GET", f"/{w.bucket}/big/one.bin", "stall", at=2 * 1024 * 1024, times=1)
    )
    settings = w.settings(UPLOAD_CHUNK_SIZE=str(1024 * 1024))
    data = os.urandom(3 * 1024 * 1024)
    with running_worker(tmp_path, settings) as first:
        w.aws.s3.put_object(Bucket=w.bucket, Key=key, Body=data)
        wait_for(lambda: stall.fired, "the GET stalls")
        wait_for(lambda: w.gcs_proxy.seen("PUT", "/upload/"), "a chunk reaches GCS")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=STOP_TIMEOUT)
    assert [b.name for b in gcs.list_blobs(w.dest)] == []

    with running_worker(tmp_path, settings):
        wait_for(lambda: blob_of(gcs, w.dest, key), "the second worker copies it", timeout=20)
        wait_for(lambda: w.aws.is_drained(w.queue.url), "the queue is drained")
    assert destination_bytes(gcs, w.dest, key) == data


def test_sigterm_finishes_the_copies_in_flight_then_exits_0(
    wire: Wire, gcs: storage.Client, tmp_path: Path
) -> None:
    w = wire
    keys = [f"slow/{n}.bin" for n in range(3)]
    delays = [
        w.s3_proxy.add(Fault("GET", f"/{w.bucket}/{key}", "delay", stall_for=3, times=1))
        for key in keys
    ]
    data = {key: os.urandom(100_000) for key in keys}
    for key in keys:  # queued before the worker starts, so its first receives take them all
        w.aws.s3.put_object(Bucket=w.bucket, Key=key, Body=data[key])
    with running_worker(tmp_path, w.settings()) as worker:
        wait_for(lambda: all(d.fired for d in delays), "every copy is in flight")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=STOP_TIMEOUT) == 0, worker.log.read_text()
    for key in keys:
        assert destination_bytes(gcs, w.dest, key) == data[key]
    assert w.aws.is_drained(w.queue.url)
    assert w.aws.dead_letters(w.queue) == []
    assert "Traceback" not in worker.log.read_text()


def test_a_copy_longer_than_the_visibility_timeout_is_started_once(
    wire: Wire, gcs: storage.Client, tmp_path: Path
) -> None:
    """Visibility 2 s, the GET held 6 s: the heartbeat keeps the message from the other
    worker on the queue. Every GET of the key is held, so a second start would show."""
    w = wire
    key = "slow/long copy.bin"
    w.s3_proxy.add(Fault("GET", f"/{w.bucket}/{quote(key)}", "delay", stall_for=6))
    data = os.urandom(100_000)
    # One receive loop each: the first worker's is busy with the copy, so only the second
    # worker can receive the message again (its own ledger would coalesce a second start).
    settings = w.settings(WORKER_CONCURRENCY="4")
    with running_worker(tmp_path, settings), running_worker(tmp_path, settings):
        w.aws.s3.put_object(Bucket=w.bucket, Key=key, Body=data)
        wait_for(lambda: blob_of(gcs, w.dest, key), f"{key!r} is copied")
        wait_for(lambda: w.aws.is_drained(w.queue.url), "the queue is drained")
    assert s3_gets(w.s3_proxy, w.bucket, key) == 1
    assert uploads(w.gcs_proxy, w.dest) == 1
    assert destination_bytes(gcs, w.dest, key) == data


# --- start-up ---------------------------------------------------------------------------


def test_without_a_queue_url_the_worker_exits_2_naming_it(tmp_path: Path) -> None:
    nowhere = f"http://{emulators.HOST}:{emulators.free_port()}"
    result = replicator("worker", cwd=tmp_path, **service_settings(nowhere, nowhere, "some-bucket"))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = output.splitlines()
    assert "SQS_QUEUE_URL" in line


@pytest.mark.parametrize("probe", ["true", "false"])
def test_a_queue_that_does_not_exist_exits_2_with_one_line(
    aws: Aws, gcs_server: emulators.Emulator, gcs: storage.Client, tmp_path: Path, probe: str
) -> None:
    missing = plumbing.Queue(f"{aws.url}/123456789012/nope-{uuid.uuid4().hex[:8]}", "", "")
    settings = worker_settings(
        aws, aws.url, gcs_server.url, gcs_bucket(gcs), missing, STARTUP_PROBE=probe
    )
    result = replicator("worker", cwd=tmp_path, **settings)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = output.splitlines()
    assert "SQS_QUEUE_URL" in line
    assert "does not exist" in line


def test_a_queue_without_a_redrive_policy_is_warned_about(
    aws: Aws, gcs_server: emulators.Emulator, gcs: storage.Client, tmp_path: Path
) -> None:
    url = aws.sqs.create_queue(QueueName=f"bare-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    bare = plumbing.Queue(url, "", "")
    settings = worker_settings(aws, aws.url, gcs_server.url, gcs_bucket(gcs), bare)
    with running_worker(tmp_path, settings) as worker:
        assert http_calls.get(f"{worker.url}/health").status_code == 200
        warnings = [line for line in worker.log.read_text().splitlines() if "redrive" in line]
        assert len(warnings) == 1
        assert "WARNING" in warnings[0]
        assert worker.process.poll() is None


def test_sns_verify_signatures_false_is_said_to_do_nothing_in_the_worker(
    aws: Aws, gcs_server: emulators.Emulator, gcs: storage.Client, tmp_path: Path
) -> None:
    settings = worker_settings(
        aws, aws.url, gcs_server.url, gcs_bucket(gcs), aws.queue(), SNS_VERIFY_SIGNATURES="false"
    )
    with running_worker(tmp_path, settings) as worker:
        missing = http_calls.get(f"{worker.url}/no-such-path")
        said = [line for line in worker.log.read_text().splitlines() if "SNS_VERIFY" in line]

    assert len(said) == 1, said
    assert "WARNING" in said[0]
    assert "the worker never checks SNS signatures" in said[0]
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "detail": "no such path: this server has /health, /ready, /metrics",
    }


def test_a_queue_that_refuses_receive_stops_the_worker_with_one_line(
    aws: Aws, gcs_server: emulators.Emulator, gcs: storage.Client, tmp_path: Path
) -> None:
    """Receive permission shows on the first receive (SQS has no dry run): a refusal there is
    a misconfiguration, answered like one at start-up, not retried for ever."""
    queue = plumbing.queue_with_dead_letters(aws.sqs, f"refusing-{uuid.uuid4().hex[:12]}")
    denied = json.dumps(
        {
            "__type": "com.amazon.coral.service#AccessDeniedException",
            "message": "User is not authorized to perform: sqs:ReceiveMessage",
        }
    ).encode()
    with FaultProxy(aws.url) as sqs_proxy:
        # The first ReceiveMessage (the worker's other requests go through).
        receive = sqs_proxy.add(
            Fault(
                "POST",
                "/",
                action="status",
                status=400,
                body=denied,
                headers={"Content-Type": "application/x-amz-json-1.0"},
                operation="ReceiveMessage",
                nth=1,
            )
        )
        settings = worker_settings(
            aws,
            aws.url,
            gcs_server.url,
            gcs_bucket(gcs),
            queue,
            SQS_ENDPOINT_URL=sqs_proxy.url,
            WORKER_CONCURRENCY="1",
            WORKER_PORT="0",
        )
        result = replicator("worker", cwd=tmp_path, **settings)
    output = result.stdout + result.stderr
    assert receive.fired == 1
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("replicator worker")]
    assert "SQS_QUEUE_URL" in line
    assert "denied" in line


# --- keys that cannot be copied as things stand (docs/guarantees.md, the worker's rule) -----


def test_an_archived_key_goes_to_the_dead_letter_queue_at_once_counted_by_reason(
    aws: Aws, shared: Shared, gcs: storage.Client
) -> None:
    bucket = aws.bucket("cold")
    aws.s3.put_object(Bucket=bucket, Key="cold.txt", Body=b"cold", StorageClass="DEEP_ARCHIVE")
    sample = 'replicator_messages_unreplicable_total{reason="archived"}'
    before = metric(shared.worker, re.escape(sample))
    body = event_body(bucket, "cold.txt")
    message_id = aws.send(shared.queue, body)
    dead: list[str] = []
    wait_for(
        lambda: dead.extend(aws.dead_letters(shared.queue)) or json.dumps(body) in dead,
        "the archived key's message is in the dead-letter queue",
    )
    assert metric(shared.worker, re.escape(sample)) >= before + 1
    log = shared.worker.log.read_text()
    said = [line for line in log.splitlines() if f"s3://{bucket}/cold.txt" in line]
    assert any("ERROR" in line and "DEEP_ARCHIVE" in line for line in said)
    # Never retried with a backoff: no wait makes an archived object readable.
    assert f"message {message_id} (received" not in log  # the backoff's "will be retried"
    assert blob_of(gcs, shared.dest, "cold.txt") is None


def test_without_a_dead_letter_queue_an_archived_key_is_deleted_logged_and_counted(
    aws: Aws, gcs_server: emulators.Emulator, gcs: storage.Client, tmp_path: Path
) -> None:
    url = aws.sqs.create_queue(
        QueueName=f"bare-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": "2"}
    )["QueueUrl"]
    bare = plumbing.Queue(url, "", "")
    bucket, dest = aws.bucket("cold"), gcs_bucket(gcs)
    aws.s3.put_object(Bucket=bucket, Key="cold.txt", Body=b"cold", StorageClass="GLACIER")
    settings = worker_settings(aws, aws.url, gcs_server.url, dest, bare)
    with running_worker(tmp_path, settings) as worker:
        aws.send(bare, event_body(bucket, "cold.txt"))
        sample = re.escape('replicator_messages_unreplicable_total{reason="archived"}')
        wait_for(lambda: metric(worker, sample) >= 1, "the archived key is counted")
        wait_for(lambda: aws.is_drained(url), "its message is deleted")
        assert metric(worker, "replicator_messages_retried") == 0
        assert "GLACIER" in worker.log.read_text()
    assert blob_of(gcs, dest, "cold.txt") is None
