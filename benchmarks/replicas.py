"""Scenario 6: many replicas, one copy. Three `replicator worker` processes drain one queue
holding two deliveries of each object's S3 event (shuffled), with the Redis ledger
(LEDGER_URL, a real valkey-server) and without it (each process its own ledger). S3 is
reached through a proxy (tests/faults.py's FaultProxy) that counts the body bytes of S3's
answers to GET: bytes read from S3 per byte replicated is what the ledger saves in S3
egress and API calls. Writes are fenced by generation preconditions either way, so every
object lands once with its bytes, which is verified after each run.

The workers are started and answer /health before the clock; the events go in when it
starts, and it stops once the workers together have deleted every message. SQS_WAIT_SECONDS
is 2, so that three workers stop quickly after a run.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Iterator
from typing import Any

from app.dev import emulators, plumbing
from app.dev.valkey import RedisServer
from benchmarks import small_batch, worker_drain
from benchmarks.measure import Comparison, Contender, alternate, attempt
from benchmarks.stack import Service, ServiceError, Stack, worker_running
from tests.faults import FaultProxy

PREFIX = "replicas/"
REPLICAS = 3
DELIVERIES = 2  # of each object's event
READ_AT_MOST = 1.02  # bytes read from S3 per byte replicated, with the ledger: the target
# "service": the replicas with the Redis ledger, as they are meant to run.
CONTENDERS = {"service": "with the Redis ledger", "local": "without it (a ledger per process)"}


def run(
    stack: Stack, count: int, size: int, repeat: int, redis: RedisServer, template: dict[str, Any]
) -> Comparison:
    """Three workers draining two deliveries of each of `count` objects' events, with the
    ledger in `redis` and without it."""
    keys = [f"{PREFIX}{i:05d}.bin" for i in range(count)]
    etags = small_batch.put(stack, worker_drain.EVENTS_BUCKET, keys, size)
    comparison = Comparison(
        f"{REPLICAS} workers, {DELIVERIES * count} events for {count} x {size // 1024} KiB",
        "objects/s",
        {name: Contender(f"{REPLICAS} workers, {label}") for name, label in CONTENDERS.items()},
        {"replicas": REPLICAS, "deliveries": DELIVERIES, "read_ratio": {}, "s3_gets": {}},
    )
    for name in CONTENDERS:
        comparison.details["read_ratio"][name] = []
        comparison.details["s3_gets"][name] = []
    for repetition in range(repeat):
        for name in alternate(list(CONTENDERS), repetition):
            send = functools.partial(
                worker_drain._send_events, stack, template=template, etags=etags, size=size
            )
            ledger = {"LEDGER_URL": redis.url(repetition % 16)} if name == "service" else {}
            run_name = f"{name}-r{repetition}"
            _replicas_run(stack, comparison, name, run_name, keys, size, send, ledger)
    return comparison


def ledger_cost(
    stack: Stack, count: int, size: int, repeat: int, redis: RedisServer, template: dict[str, Any]
) -> Comparison:
    """The ledger's cost on one worker's small-object rate: scenario 5's run (the `messages`
    feed, one delivery each) with LEDGER_URL and without it."""
    seeded = worker_drain._seed(stack, count, size)
    comparison = Comparison(
        f"one worker, {count:,} x {size // 1024} KiB objects, ledger cost",
        "objects/s",
        {name: Contender(f"one worker, {label}") for name, label in CONTENDERS.items()},
        {"worker_concurrency": worker_drain.concurrency()},
    )
    for repetition in range(repeat):
        for name in alternate(list(CONTENDERS), repetition):
            run_name = f"cost-{name}-r{repetition}"
            queue = plumbing.queue_with_dead_letters(stack.sqs, f"bench-{run_name}")
            wave = functools.partial(
                worker_drain._send_events, stack, queue, template, seeded, size
            )
            feeder = worker_drain.Feeder(list(seeded), wave)
            ledger = {"LEDGER_URL": redis.url(repetition % 16)} if name == "service" else {}
            contender = comparison.contenders[name]
            worker_drain._worker_run(
                stack, contender, feeder, queue, run_name, worker_drain.PREFIX, size, ledger
            )
    return comparison


@contextlib.contextmanager
def redis_running() -> Iterator[RedisServer]:
    """A valkey-server for the ledger runs, stopped when the block ends."""
    redis = RedisServer(emulators.free_port()).start()
    try:
        yield redis
    finally:
        redis.stop()


def events_template(stack: Stack) -> dict[str, Any]:
    """The S3 notification record both runs send, as worker_drain reads it off moto."""
    stack.s3.create_bucket(Bucket=worker_drain.EVENTS_BUCKET)
    return worker_drain._notification_template(stack)


def _replicas_run(
    stack: Stack,
    comparison: Comparison,
    name: str,
    run_name: str,
    keys: list[str],
    size: int,
    send: functools.partial[None],
    ledger: dict[str, str],
) -> None:
    contender = comparison.contenders[name]
    queue = plumbing.queue_with_dead_letters(
        stack.sqs,
        f"bench-replicas-{run_name}",
        max_receives=20,  # a put back is a receive
    )
    bucket = f"bench-replicas-{run_name}"
    stack.gcs_client.create_bucket(bucket)
    events = [key for key in keys for _ in range(DELIVERIES)]
    random.Random(run_name).shuffle(events)
    with FaultProxy(stack.moto.url) as proxy, contextlib.ExitStack() as running:
        extra = {"S3_ENDPOINT_URL": proxy.url, "SQS_WAIT_SECONDS": "2", **ledger}
        try:
            workers = [
                running.enter_context(
                    worker_running(stack, f"{run_name}-{n}", queue.url, bucket, extra)
                )
                for n in range(REPLICAS)
            ]
        except ServiceError as exc:
            contender.errors.append(str(exc)[:300])
            return

        def deleted() -> float:
            return sum(_counter(worker, "replicator_messages_deleted") for worker in workers)

        def drain() -> float:
            for start in range(0, len(events), 100):
                send(queue=queue, keys=events[start : start + 100])
            deadline = time.monotonic() + worker_drain.DEADLINE
            while deleted() < len(events):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not drained in {worker_drain.DEADLINE:.0f}s")
                time.sleep(worker_drain.POLL)
            return len(keys)

        pids = {**stack.pids(), **{f"worker-{n}": w.process.pid for n, w in enumerate(workers)}}
        verify = functools.partial(small_batch.verify, stack, bucket, PREFIX, len(keys), size)
        before = len(contender.samples)
        attempt(contender, pids, drain, verify)
        if len(contender.samples) > before:
            ratio = proxy.body_bytes["GET"] / (len(keys) * size)
            comparison.details["read_ratio"][name].append(round(ratio, 4))
            comparison.details["s3_gets"][name].append(len(proxy.seen("GET", f"/{PREFIX}")))


def _counter(worker: Service, name: str) -> float:
    if worker.process.poll() is not None:
        raise ServiceError(f"a worker exited:\n{worker.log_tail()}")
    return worker_drain._counter(worker, name)
