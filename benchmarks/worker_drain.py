"""Scenario 5: S3 event notifications on an SQS queue, drained by one `replicator worker`
process until every object is at GCS, and a bare drain of the same queue.

Each run has a fresh queue (with a dead-letter queue). The harness feeds it in waves of WAVE,
each once the queue holds fewer than LOW_WATER messages: moto's SQS walks the whole queue on
every receive and delete, so a deep queue would measure moto, not the worker. Two ways to
feed it (BENCH_WORKER_FEED):

- `messages` (the default): the objects are put once, before any run, and each wave sends
  their notifications with SendMessageBatch: the body moto itself sent for a PUT, with each
  object's key, size and ETag. Feeding costs 10 calls a wave, so the runs measure the drain.
- `puts`: each run PUTs the objects under a prefix of its own into EVENTS_BUCKET, whose
  notifications moto sends to the run's queue. On moto the PUTs take most of a run's wall
  time (the JSON's `put_seconds`), so the runs measure the feeding as much as the drain.

The worker (with a fresh GCS bucket) is started and answers /health before the clock; the
clock stops when its `replicator_objects_replicated_total` reaches the count, then the bucket
is listed (count and sizes). The bare drain: the same feeding into a fresh queue, drained by
the harness with the calls the worker makes on the queue and nothing else (receive 10 with a
long poll, DeleteMessageBatch) from as many loops as the worker runs.

The worker cannot beat what moto serves: the batch API's rate for objects like these
(scenario 2) and the bare drain's rate together bound it at 1 / (1/batch + 1/drain).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.dev import plumbing
from app.queues.sqs import MAX_MESSAGES, SqsQueue
from app.worker.loop import receive_loops
from benchmarks import small_batch
from benchmarks.measure import Comparison, Contender, alternate, attempt
from benchmarks.stack import Service, ServiceError, Stack, worker_running

EVENTS_BUCKET = "bench-events"  # a bucket of its own: its notifications feed the queues
FEEDS = ("messages", "puts")
PREFIX = "seeded/"  # where the `messages` feed's objects are put, once
WAVE = 100  # messages (or objects) fed at once
LOW_WATER = 50  # the next wave goes in once the queue holds fewer messages than this
POLL = 0.1  # seconds between looks at the consumer's progress
DEADLINE = 600.0  # seconds a run may take before it counts as failed
# Sent after the run to end the long polls at once (a worker stopping gives it back).
WAKE = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": EVENTS_BUCKET})


def concurrency() -> int:
    """WORKER_CONCURRENCY as the worker will read it from the harness's environment."""
    default = Settings.model_fields["worker_concurrency"].default
    return int(os.environ.get("WORKER_CONCURRENCY") or default)


def feed() -> str:
    chosen = os.environ.get("BENCH_WORKER_FEED") or FEEDS[0]
    if chosen not in FEEDS:
        raise ValueError(f"BENCH_WORKER_FEED takes {' or '.join(FEEDS)}, not {chosen!r}")
    return chosen


def run(stack: Stack, count: int, size: int, repeat: int) -> Comparison:
    loops = receive_loops(concurrency())
    by_puts = feed() == "puts"
    stack.s3.create_bucket(Bucket=EVENTS_BUCKET)
    template = _notification_template(stack)
    seeded = {} if by_puts else _seed(stack, count, size)
    comparison = Comparison(
        f"{count:,} x {size // 1024} KiB objects through S3 events and SQS",
        "objects/s",
        {
            "service": Contender(f"one worker, WORKER_CONCURRENCY={concurrency()}"),
            "drain": Contender(f"bare drain: receive + delete, {loops} loops (messages/s)"),
        },
        {"feed": feed(), "worker_concurrency": concurrency(), "receive_loops": loops},
    )
    put_seconds: dict[str, list[float]] = {name: [] for name in comparison.contenders}
    if by_puts:
        comparison.details["put_seconds"] = put_seconds
    for repetition in range(repeat):
        for name in alternate(list(comparison.contenders), repetition):
            run_name = f"{name}-r{repetition}"
            queue = plumbing.queue_with_dead_letters(stack.sqs, f"bench-{run_name}")
            wave: Callable[[list[str]], object]
            if by_puts:
                prefix = f"{run_name}/"
                keys = [f"{prefix}{i:05d}.bin" for i in range(count)]
                _notify(stack, queue)
                wave = functools.partial(small_batch.put, stack, EVENTS_BUCKET, size=size)
            else:
                prefix, keys = PREFIX, list(seeded)
                wave = functools.partial(_send_events, stack, queue, template, seeded, size)
            feeder = Feeder(keys, wave)
            contender = comparison.contenders[name]
            if name == "service":
                _worker_run(stack, contender, feeder, queue, f"worker-{run_name}", prefix, size)
            else:
                _bare_drain_run(stack, contender, feeder, queue, loops)
            if feeder.wave_seconds and by_puts:
                put_seconds[name].append(round(feeder.wave_seconds, 3))
    return comparison


def _seed(stack: Stack, count: int, size: int) -> dict[str, str]:
    """The objects the `messages` feed names, put with no notifications on: key -> ETag."""
    stack.s3.put_bucket_notification_configuration(
        Bucket=EVENTS_BUCKET, NotificationConfiguration={}
    )
    keys = [f"{PREFIX}{i:05d}.bin" for i in range(count)]
    return small_batch.put(stack, EVENTS_BUCKET, keys, size)


def _notify(stack: Stack, queue: plumbing.Queue) -> None:
    """EVENTS_BUCKET's notifications to `queue` from now on, without the s3:TestEvent that
    pointing them at it sends."""
    plumbing.notify_queue(stack.s3, EVENTS_BUCKET, queue)
    stack.sqs.purge_queue(QueueUrl=queue.url)


def _notification_template(stack: Stack) -> dict[str, Any]:
    """The record moto sends for a PUT into EVENTS_BUCKET, read off a queue of its own (a new
    one each time: moto, as SQS, refuses a second purge of a queue within 60 s)."""
    queue = plumbing.queue_with_dead_letters(stack.sqs, f"bench-template-{uuid.uuid4().hex[:8]}")
    _notify(stack, queue)
    stack.s3.put_object(Bucket=EVENTS_BUCKET, Key="template.bin", Body=b"template")
    answer = stack.sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=5)
    records: list[dict[str, Any]] = json.loads(answer["Messages"][0]["Body"])["Records"]
    return records[0]


def _send_events(
    stack: Stack,
    queue: plumbing.Queue,
    template: dict[str, Any],
    etags: dict[str, str],
    size: int,
    keys: list[str],
) -> None:
    """One S3 notification per key (the keys need no URL-encoding), 10 a SendMessageBatch."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    bodies = []
    for key in keys:
        record = copy.deepcopy(template)
        record["eventTime"] = now
        record["s3"]["object"].update(key=key, size=size, eTag=etags[key].strip('"'))
        bodies.append(json.dumps({"Records": [record]}))
    for start in range(0, len(bodies), MAX_MESSAGES):
        entries = [
            {"Id": str(n), "MessageBody": body}
            for n, body in enumerate(bodies[start : start + MAX_MESSAGES])
        ]
        answer = stack.sqs.send_message_batch(QueueUrl=queue.url, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {answer['Failed'][:1]}")


class Feeder:
    """Feeds `keys` in waves, each once the queue is shallow, then waits for the consumer.

    How shallow comes from the consumer's own count of the messages it deleted: asking moto
    (GetQueueAttributes) walks the whole queue, three times, and 10 asks a second cost moto
    more CPU than the receives they were watching."""

    def __init__(self, keys: list[str], wave: Callable[[list[str]], object]) -> None:
        self.keys = keys
        self._wave = wave
        self.wave_seconds = 0.0  # time spent feeding, within the run's wall time

    def feed_until(self, deleted: Callable[[], float], done: Callable[[], bool]) -> float:
        """Feed every key, a wave once fewer than LOW_WATER fed messages are not yet
        `deleted()`, then wait for `done()`; both raise when the consumer failed. Returns
        the number of keys."""
        deadline = time.monotonic() + DEADLINE
        for fed in range(0, len(self.keys), WAVE):
            while fed - deleted() >= LOW_WATER:
                _pause(deadline)
            started = time.perf_counter()
            self._wave(self.keys[fed : fed + WAVE])
            self.wave_seconds += time.perf_counter() - started
        while not done():
            _pause(deadline)
        return len(self.keys)


def _pause(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"the run took more than {DEADLINE:.0f}s")
    time.sleep(POLL)


def _wake(stack: Stack, queue: plumbing.Queue, loops: int) -> None:
    """One message per receive loop, so that no loop waits out its long poll."""
    for _ in range(loops):
        stack.sqs.send_message(QueueUrl=queue.url, MessageBody=WAKE)


def _worker_run(
    stack: Stack,
    contender: Contender,
    feeder: Feeder,
    queue: plumbing.Queue,
    name: str,
    prefix: str,
    size: int,
    extra: dict[str, str] | None = None,
) -> None:
    """One timed run of one worker (with `extra` settings) draining what `feeder` sends."""
    count = len(feeder.keys)
    bucket = f"bench-{name}"
    stack.gcs_client.create_bucket(bucket)
    try:
        with worker_running(stack, name, queue.url, bucket, extra) as worker:

            def counter(name: str) -> float:
                if worker.process.poll() is not None:
                    raise ServiceError(f"the worker exited:\n{worker.log_tail()}")
                return _counter(worker, name)

            def done() -> bool:
                return counter("replicator_objects_replicated") >= count

            deleted = functools.partial(counter, "replicator_messages_deleted")
            pids = {**stack.pids(), "service": worker.process.pid}
            verify = functools.partial(small_batch.verify, stack, bucket, prefix, count, size)
            attempt(contender, pids, functools.partial(feeder.feed_until, deleted, done), verify)
            worker.process.terminate()
            time.sleep(0.2)  # for the signal to land: a message before it would be converged
            _wake(stack, queue, receive_loops(concurrency()))
    except ServiceError as exc:  # it did not start
        contender.errors.append(str(exc)[:300])


def _counter(worker: Service, name: str) -> float:
    """One of the worker's counters (`name` without `_total`), from its /metrics."""
    for family in text_string_to_metric_families(worker.http.get("/metrics").text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def _bare_drain_run(
    stack: Stack, contender: Contender, feeder: Feeder, queue: plumbing.Queue, loops: int
) -> None:
    wake = functools.partial(_wake, stack, queue, loops)
    with _draining(SqsQueue(stack.sqs, queue.url), loops, wake) as deleted:

        def done() -> bool:
            return deleted() >= len(feeder.keys)

        attempt(contender, stack.pids(), functools.partial(feeder.feed_until, deleted, done))


@contextlib.contextmanager
def _draining(
    queue: SqsQueue, loops: int, wake: Callable[[], None]
) -> Iterator[Callable[[], float]]:
    """`loops` threads receiving and deleting, as the worker's receive loops do without the
    copies; yields `deleted()`, the messages deleted so far, which raises what stopped a
    loop. When the block ends the loops stop, `wake()` ending their long polls."""
    deleted = 0
    guard = threading.Lock()
    stop = threading.Event()
    failures: list[Exception] = []

    def receive_and_delete() -> None:
        nonlocal deleted
        try:
            while not stop.is_set():
                messages = queue.receive()
                if stop.is_set() or not messages:
                    continue
                left = queue.delete(messages)
                with guard:
                    deleted += len(messages) - len(left)
        except Exception as exc:
            failures.append(exc)

    def count() -> float:
        if failures:
            raise failures[0]
        return deleted

    threads = [threading.Thread(target=receive_and_delete) for _ in range(loops)]
    for thread in threads:
        thread.start()
    try:
        yield count
    finally:
        stop.set()
        wake()
        for thread in threads:
            thread.join()
