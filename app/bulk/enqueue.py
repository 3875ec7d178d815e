"""Backfill through the queue: one S3 event on SQS for every key a sync would copy.

`Enqueue` lists both sides as `Sync` does and decides the same way what the destination
lacks or holds in another version; instead of copying, it puts an S3 event notification for
each such key on the queue the workers drain (`ObjectCreated:Put`, eventVersion 2.1, the key
form-encoded as S3 encodes it), ten to a SendMessageBatch. The workers then copy them as they
copy S3's own events, so the work outlives the process that listed it. Nothing is deleted.

A batch whose request fails is retried whole by the retry policy, so a message may go twice;
the worker settles a repeated event as a skip. With a checkpoint, each key is concluded once
its batch was sent (or it needs nothing), and the checkpoint is saved after every batch: a run
killed at any point sends again, when resumed, at most the one batch (MAX_MESSAGES keys) sent
before its last save.
"""

from __future__ import annotations

import datetime
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus

from app import errors, rules
from app.bulk.checkpoint import Checkpoint
from app.bulk.compare import Compared, Location, checkpointed_ranges, compare_scope
from app.bulk.decide import Kind, Outcome, Report, decisions
from app.bulk.inventory import Inventory
from app.bulk.patterns import KeyFilter
from app.bulk.ranges import range_of
from app.bulk.tally import Tally
from app.policy import Overwrite
from app.queues.sqs import MAX_MESSAGES
from app.retry import RetryPolicy
from app.storage.base import Destination, ObjectInfo, Source

EVENT_NAME = "ObjectCreated:Put"
EVENT_VERSION = "2.1"
CONFIGURATION_ID = "replicator-sync-enqueue"  # says in each event who sent it


class Queue(Protocol):
    def send_batch(self, bodies: Sequence[str]) -> dict[int, str]: ...


def s3_event(obj: ObjectInfo, region: str, at: datetime.datetime) -> dict[str, Any]:
    """The S3 event notification S3 would send for a put of `obj` (listed at S3) at `at`."""
    described: dict[str, Any] = {"key": quote_plus(obj.key), "size": obj.size}
    if obj.etag is not None:
        described["eTag"] = obj.etag
    if obj.version_id is not None:
        described["versionId"] = obj.version_id
    record = {
        "eventVersion": EVENT_VERSION,
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": at.astimezone(datetime.UTC).isoformat(timespec="milliseconds"),
        "eventName": EVENT_NAME,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": CONFIGURATION_ID,
            "bucket": {"name": obj.bucket, "arn": f"arn:aws:s3:::{obj.bucket}"},
            "object": described,
        },
    }
    return {"Records": [record]}


@dataclass(frozen=True)
class EnqueueOptions:
    keys: KeyFilter = KeyFilter()
    overwrite: Overwrite = Overwrite.DIFFERENT
    dry_run: bool = False
    # The workers' REPLICATION_RULES: a key they would write elsewhere than the destination
    # is not queued. With none they keep each key's name, in their own GCS_BUCKET_NAME.
    rules: tuple[rules.Rule, ...] = ()
    list_concurrency: int = 1  # key ranges listed at once (app.bulk.ranges)
    list_split_min_keys: int = 0  # a source of no more keys is listed as one range
    inventory: Inventory | None = None  # the source's listing, when not listed


class Enqueue:
    def __init__(
        self,
        source: Source,
        destination: Destination,
        queue: Queue,
        retry: RetryPolicy,
        region: str,
    ) -> None:
        self._source = source
        self._destination = destination
        self._queue = queue
        self._retry = retry
        self._region = region

    def run(
        self,
        src: Location,
        dst: Location,
        options: EnqueueOptions,
        report: Report,
        tally: Tally,
        stop: threading.Event | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        """Queue an event for every key below `src` that `dst` lacks or holds in another
        version; returns how many were queued. Counts listed, found (to queue), skipped and
        failed keys in `tally`. When `stop` is set, nothing more is listed; what was gathered
        is still sent. With `checkpoint`, the keys concluded are marked in it, and a resumed
        checkpoint's run lists only what it had not concluded. Raises app.errors exceptions
        when a listing fails (after sending what it had gathered)."""
        stop = stop or threading.Event()
        gathered: list[tuple[str, str]] = []  # (key below the prefix, message body)
        queued = 0
        ranges = checkpointed_ranges(self._source, src, options, self._retry, checkpoint)

        def conclude(key: str, ok: bool = True) -> None:
            if checkpoint is not None:
                checkpoint.concluded(range_of(ranges, key), key, ok)

        def send() -> None:
            nonlocal queued
            bodies = [body for _, body in gathered]
            try:
                refused = self._retry.call(self._queue.send_batch, bodies)
            except errors.ReplicatorError as exc:
                refused = dict.fromkeys(range(len(bodies)), f"{exc.kind}: {exc.detail}")
            for n, (key, _) in enumerate(gathered):
                conclude(key, ok=n not in refused)
                if n in refused:
                    tally.add(failed=1)
                    report(key, Outcome.FAILED, f"SQS refused it: {refused[n]}")
                else:
                    queued += 1
                    report(key, Outcome.QUEUED, "")
            gathered.clear()
            if checkpoint is not None:
                checkpoint.save()

        range_ended = checkpoint.range_listed if checkpoint is not None else lambda _: None
        _, pairs = compare_scope(
            self._source, self._destination, src, dst, options, self._retry, ranges, range_ended
        )
        try:
            routed = functools.partial(misrouted, src=src, dst=dst, options=options)
            for decision in decisions(pairs, dst, options.overwrite, tally, stop, routed):
                pair = decision.pair
                if decision.kind == Kind.EXTRA:
                    conclude(pair.key)
                elif decision.kind == Kind.FAIL:
                    conclude(pair.key, ok=False)
                    tally.add(failed=1)
                    report(pair.key, Outcome.FAILED, decision.reason)
                elif decision.kind == Kind.SKIP:
                    conclude(pair.key)
                    tally.add(skipped=1)
                    report(pair.key, Outcome.SKIPPED, decision.reason)
                elif decision.kind == Kind.WORK and options.dry_run:
                    report(pair.key, Outcome.WOULD_QUEUE, "")
                elif decision.kind == Kind.WORK:
                    assert pair.left is not None
                    now = datetime.datetime.now(datetime.UTC)
                    event = s3_event(pair.left, self._region, now)
                    if checkpoint is not None:
                        checkpoint.listed(range_of(ranges, pair.key), pair.key)
                    gathered.append((pair.key, json.dumps(event)))
                    if len(gathered) == MAX_MESSAGES:
                        send()
        finally:
            if gathered:
                send()
            if checkpoint is not None:
                checkpoint.close()
            tally.finish()
        return queued


def misrouted(pair: Compared, src: Location, dst: Location, options: EnqueueOptions) -> str:
    """Why the workers would not write `pair`'s key where `dst` says, by `options.rules`, or
    "" (always "" without rules: the caller checks that the prefixes match)."""
    if not options.rules:
        return ""
    target = rules.route(options.rules, src.bucket, src.prefix + pair.key)
    if target is None:
        return "no REPLICATION_RULES rule routes it"
    if target != (dst.bucket, dst.prefix + pair.key):
        return f"REPLICATION_RULES routes it to gs://{target[0]}/{target[1]}"
    return ""
