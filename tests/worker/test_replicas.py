"""Many replicas, one copy: three `replicator worker` processes on one queue, every S3 event
delivered three times in shuffled order, S3 reached through a proxy that counts the GETs.

With LEDGER_URL (a real valkey-server), a key one worker is copying is not read by another:
its message goes back on the queue for a moment, and the ledger's record answers it then.
Without it, each process decides from the clouds alone: the writes are still fenced (every
object lands once, with the right bytes), but concurrent duplicates may each read the object;
that ratio is printed, not asserted (it depends on the machine's timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import redis
from google.cloud import storage

from tests import http_calls
from tests.conftest import RedisServer, destination_bytes
from tests.events import samples
from tests.faults import Fault, FaultProxy
from tests.service_process import STOP_TIMEOUT
from tests.worker import test_worker
from tests.worker.test_worker import (
    Aws,
    blob_of,
    gcs_bucket,
    running_worker,
    s3_gets,
    uploads,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.slow
aws = test_worker.aws  # the module's clients of moto's server

OBJECTS = 30
SIZE = 256 * 1024
DELIVERIES = 3  # of each event
REPLICAS = 3
READ_AT_MOST = 1.05  # bytes read from S3 per byte replicated, with the shared ledger


def created_body(bucket: str, key: str, etag: str, n: int, size: int = SIZE) -> str:
    """The S3 notification for `key` (unversioned bucket), as S3 sends it to SQS."""
    record = samples.s3_record(
        key=quote_plus(key), bucket=bucket, eTag=etag, size=size, sequencer=f"{n + 1:016X}"
    )
    del record["s3"]["object"]["versionId"]
    return json.dumps(samples.s3_notification(record))


def bytes_read(proxy: FaultProxy, bucket: str, key: str) -> int:
    """Bytes of `key` that S3 sent through `proxy` (it forwards whole responses): the whole
    object for a plain GET, the range asked for otherwise."""
    total = 0
    for request in proxy.seen("GET", f"/{bucket}/"):
        if request.target.split("?")[0] != f"/{bucket}/{quote(key)}":
            continue
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if asked is None:
            total += SIZE
        else:
            last = int(asked.group(2)) if asked.group(2) else SIZE - 1
            total += min(last, SIZE - 1) - int(asked.group(1)) + 1
    return total


@pytest.mark.parametrize("shared", [True, False], ids=["ledger", "no-ledger"])
def test_three_workers_read_and_write_each_object_once(
    shared: bool,
    aws: Aws,
    gcs: storage.Client,
    s3_proxy: FaultProxy,
    gcs_proxy: FaultProxy,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # A visibility timeout longer than any copy here, and receives to spare: a message put
    # back while its key is leased counts a receive.
    queue = aws.queue(visibility_timeout=30, max_receives=10)
    bucket, dest = aws.bucket("replicas"), gcs_bucket(gcs)
    data: dict[str, bytes] = {}
    bodies: list[str] = []
    for n in range(OBJECTS):
        key = f"replicas/{n:02d} object.bin"
        data[key] = os.urandom(SIZE)
        etag = aws.s3.put_object(Bucket=bucket, Key=key, Body=data[key])["ETag"].strip('"')
        bodies += [created_body(bucket, key, etag, n)] * DELIVERIES
    random.Random(7).shuffle(bodies)

    extra = {"LEDGER_URL": redis_server.url(3), "LEDGER_LOCK_TTL": "10"} if shared else {}
    settings = worker_settings(
        aws, s3_proxy.url, gcs_proxy.url, dest, queue, WORKER_CONCURRENCY="8", **extra
    )
    with contextlib.ExitStack() as replicas:
        workers = [replicas.enter_context(running_worker(tmp_path, settings)) for _ in "abc"]
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(bodies[start : start + 10])
            ]
            answer = aws.sqs.send_message_batch(QueueUrl=queue.url, Entries=entries)
            assert not answer.get("Failed")
        for key in data:
            wait_for(lambda key=key: blob_of(gcs, dest, key), f"{key!r} is copied")
        wait_for(lambda: aws.is_drained(queue.url), "every delivery is converged")
        ready = http_calls.get(f"{workers[0].url}/ready")
        logs = [worker.log.read_text() for worker in workers]

    for key, expected in data.items():
        assert destination_bytes(gcs, dest, key) == expected
    assert aws.dead_letters(queue) == []
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["ledger"] == ("up" if shared else "local")
    assert not any("Traceback" in log for log in logs)

    read = sum(bytes_read(s3_proxy, bucket, key) for key in data)
    assert read >= OBJECTS * SIZE  # every object was read (and counted) at least once
    ratio = read / (OBJECTS * SIZE)
    gets = sum(s3_gets(s3_proxy, bucket, key) for key in data)
    put_back = sum(log.count("put back for") for log in logs)
    print(
        f"\n{'with' if shared else 'without'} the shared ledger: {gets} GETs of {OBJECTS} "
        f"objects, {ratio:.3f}x the bytes replicated read from S3, "
        f"{uploads(gcs_proxy, dest)} uploads, {put_back} messages put back"
    )
    if shared:
        assert ratio <= READ_AT_MOST
        assert uploads(gcs_proxy, dest) == OBJECTS  # every object written once
        lines = [line for log in logs for line in log.splitlines() if "put back for" in line]
        assert not [line for line in lines if "WARNING" in line]  # not a failure


def test_a_worker_killed_holding_the_lease_leaves_the_copy_to_another_once_it_expires(
    aws: Aws,
    gcs: storage.Client,
    s3_proxy: FaultProxy,
    gcs_proxy: FaultProxy,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """LEDGER_LOCK_TTL=2: the first worker takes the key's lease, its S3 GET stalls after
    2 MiB of 3 (1 MiB upload chunks, so GCS holds part of it), and it is killed with SIGKILL.
    The second worker, already running, cannot take the key until the lease has expired (no
    one renews it) and the message is visible again; then it copies the whole object."""
    queue = aws.queue(max_receives=10)  # visibility 2 s; a put back counts a receive
    bucket, dest = aws.bucket("killed"), gcs_bucket(gcs)
    key = "killed/leased object.bin"
    data = os.urandom(3 * 1024 * 1024)
    etag = aws.s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    stall = s3_proxy.add(
        Fault("GET", f"/{bucket}/{quote(key)}", "stall", at=2 * 1024 * 1024, times=1)
    )
    settings = worker_settings(
        aws,
        s3_proxy.url,
        gcs_proxy.url,
        dest,
        queue,
        LEDGER_URL=redis_server.url(4),
        LEDGER_LOCK_TTL="2",
        UPLOAD_CHUNK_SIZE=str(1024 * 1024),
    )
    with running_worker(tmp_path, settings) as first:
        aws.send(queue, created_body(bucket, key, etag, 0, size=len(data)))
        wait_for(lambda: stall.fired, "the first worker's GET stalls")
        wait_for(lambda: gcs_proxy.seen("PUT", "/upload/"), "a chunk of it reaches GCS")
        with running_worker(tmp_path, settings) as second:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=STOP_TIMEOUT)
            # The lease, renewed each 2/3 s until the kill, still has over a second to run.
            assert [b.name for b in gcs.list_blobs(dest)] == []
            wait_for(lambda: blob_of(gcs, dest, key), "the second worker copies it", timeout=20)
            wait_for(lambda: aws.is_drained(queue.url), "the queue is drained")
            log = second.log.read_text()

    assert destination_bytes(gcs, dest, key) == data
    assert [b.name for b in gcs.list_blobs(dest)] == [key]  # nothing partial beside it
    assert s3_gets(s3_proxy, bucket, key) == 2  # the stalled GET, then the whole copy
    assert aws.dead_letters(queue) == []
    assert "Traceback" not in log
    print(f"\nthe second worker put the message back {log.count('put back for')} times")


def test_a_delivery_put_back_waits_twice_as_long_at_each_receive_while_the_key_is_held(
    aws: Aws,
    gcs: storage.Client,
    s3_proxy: FaultProxy,
    gcs_proxy: FaultProxy,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Another replica holds the key's lease (set here in Redis, as its holder would). Each
    put-back is a receive towards maxReceiveCount, so the worker waits 1, 2, 4 s
    (LEDGER_LOCK_TTL=10: a tenth of it, doubled at each receive) without reading the object;
    once the lease is gone it copies it."""
    queue = aws.queue(max_receives=10)
    bucket, dest = aws.bucket("held"), gcs_bucket(gcs)
    key = "held/object.bin"
    data = os.urandom(SIZE)
    etag = aws.s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    holder = redis.Redis.from_url(redis_server.url(5))
    lease = f"replicator:lease:{dest}/{key}"
    holder.set(lease, "another replica's token", px=120_000)
    settings = worker_settings(
        aws, s3_proxy.url, gcs_proxy.url, dest, queue, LEDGER_URL=redis_server.url(5),
        LEDGER_LOCK_TTL="10",
    )  # fmt: skip
    with running_worker(tmp_path, settings) as worker:
        aws.send(queue, created_body(bucket, key, etag, 0, size=len(data)))
        wait_for(lambda: worker.log.read_text().count("put back for") >= 3, "three put-backs", 30)
        assert s3_gets(s3_proxy, bucket, key) == 0  # never read while another holds it
        holder.delete(lease)
        wait_for(lambda: blob_of(gcs, dest, key), "the copy once the lease is gone", 30)
        delays = [int(s) for s in re.findall(r"put back for (\d+) s", worker.log.read_text())]

    assert delays[:3] == [1, 2, 4]
    assert destination_bytes(gcs, dest, key) == data
    assert s3_gets(s3_proxy, bucket, key) == 1
