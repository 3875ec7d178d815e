"""Many keys of one source bucket into one destination bucket: the plan, then each key.

The plan asks S3 only what GCS cannot answer. The destination is listed first (a bounded
listing merged with the requested keys): a key it does not hold is copied on its GET alone
(the GET that copies it also describes it). The keys it holds are compared with one listing
of the source. A key the listings do not reach is looked up on its own. Each key then goes
through the replicator's flow, on a fixed set of workers.

`Batch.plan` answers one `KeyOutcome` per key, counted once in the metrics when final:
`Settled` (copied or skipped), `Failed` (for good, in this pass: each call was retried by the
one retry policy), or `LookAlone` when the plan cannot decide, the source having no such
object (or not any more) or the destination changing under two looks; then the caller looks
at the key on its own (an event's delete policy decides what a missing source means), and
counts what that look ends in. `Batch.run`, for callers with no such look, takes a
`LookAlone` as the key's failure.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from app import errors
from app.logging_config import in_context
from app.replication.listing import merge
from app.replication.replicator import ReplicationRequest, ReplicationResult, Replicator, count
from app.retry import RetryPolicy
from app.storage.base import ObjectInfo

log = logging.getLogger(__name__)
LISTED_PER_KEY = 3  # a batch lists at most this many objects per requested key, then asks
Lister = Callable[[str, str, str | None], Iterator[ObjectInfo]]
T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Settled:
    """Copied or skipped (counted)."""

    result: ReplicationResult


@dataclass(frozen=True)
class Failed:
    """Failed for good in this pass (counted, unless another replica holds the key)."""

    error: errors.ReplicatorError


@dataclass(frozen=True)
class LookAlone:
    """Not decided by the plan (not counted): `why` is `errors.ObjectNotFound` (the source
    has no such object, or lost it while it was copied) or `errors.PreconditionFailed` (the
    destination changed under both looks)."""

    why: errors.ReplicatorError


KeyOutcome = Settled | Failed | LookAlone


@dataclass(frozen=True)
class Listing:
    """What one bounded listing learned about a set of keys: the objects it saw, and the last
    key up to which it is complete (an absent key at or before it does not exist)."""

    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    complete_through: str = ""

    def knows(self, key: str) -> bool:
        return key <= self.complete_through

    def absent(self, key: str) -> bool:
        return self.knows(key) and key not in self.objects


def survey(objects_under: Lister, bucket: str, keys: Sequence[str], budget: int) -> Listing:
    """Which of `keys` exist, from one listing of the range they span, read until it passes
    the last key or has read `budget` objects (then it is complete only as far as it got)."""
    wanted = sorted(set(keys))
    first, last = wanted[0], wanted[-1]
    prefix = os.path.commonprefix([first, last])
    listed = _Bounded(objects_under(bucket, prefix, first[:-1] or None), last, budget)
    found = {
        pair.key: pair.right
        for pair in merge(wanted, listed, str, _key)
        if pair.left is not None and pair.right is not None
    }
    return Listing(found, listed.through)


class Batch:
    def __init__(self, replicator: Replicator, retry: RetryPolicy, pool: Executor, workers: int):
        """`workers` threads of `pool` (shared by every batch) copy the keys of one batch."""
        self._replicator = replicator
        self._retry = retry
        self._pool = pool
        self._workers = workers

    def run(
        self, requests: Sequence[ReplicationRequest]
    ) -> list[ReplicationResult | errors.ReplicatorError]:
        """`plan`, each key's result or error in request order; a key the plan would have
        looked at alone fails with its reason (counted)."""
        results: list[ReplicationResult | errors.ReplicatorError] = []
        for outcome in self.plan(requests):
            if isinstance(outcome, Settled):
                results.append(outcome.result)
            elif isinstance(outcome, Failed):
                results.append(outcome.error)
            else:
                count(outcome.why)
                results.append(outcome.why)
        return results

    def plan(self, requests: Sequence[ReplicationRequest]) -> list[KeyOutcome]:
        """Copy, or skip, each request (one source bucket, one destination bucket), one
        outcome per key in request order (see the module); a missing bucket answers for
        every key after it is found."""
        first = requests[0]
        replicator = self._replicator
        destination = self._survey(
            replicator.destination.iter_objects, first.gcs_bucket, [r.gcs_key for r in requests]
        )
        compare = [
            r.s3_key
            for r in requests
            if not (isinstance(destination, Listing) and destination.absent(r.gcs_key))
        ]
        source = (
            self._survey(replicator.source.iter_objects, first.s3_bucket, compare)
            if compare
            else None
        )
        missing: errors.BucketNotFound | None = None  # either bucket: every key would say so

        def one(request: ReplicationRequest) -> KeyOutcome:
            nonlocal missing
            if missing is not None:
                count(missing)
                return Failed(missing)
            try:
                result = self._one(request, source, destination)
            except errors.BucketNotFound as exc:
                missing = exc
                count(exc)
                return Failed(exc)
            except (errors.ObjectNotFound, errors.PreconditionFailed) as exc:
                return LookAlone(exc)
            except errors.ReplicatorError as exc:
                count(exc)
                return Failed(exc)
            count(result)
            return Settled(result)

        return self.map(one, requests)

    def map(self, fn: Callable[[T], U], items: Sequence[T]) -> list[U]:
        """`fn` of every item, in order, on this batch's workers."""
        return each(self._pool, self._workers, fn, items)

    def _one(
        self,
        request: ReplicationRequest,
        sources: Listing | errors.ReplicatorError | None,
        destinations: Listing | errors.ReplicatorError,
    ) -> ReplicationResult:
        """`sources` is None when the source was not listed (nothing to compare with)."""
        replicator = self._replicator
        if isinstance(sources, errors.BucketNotFound):
            raise sources
        if isinstance(destinations, errors.BucketNotFound):
            raise destinations
        if isinstance(destinations, Listing) and destinations.absent(request.gcs_key):
            listed, current = None, None
        elif isinstance(sources, Listing) and sources.knows(request.s3_key):
            listed = sources.objects.get(request.s3_key)
            if listed is None:
                raise errors.ObjectNotFound(
                    f"s3://{request.s3_bucket}/{request.s3_key} does not exist"
                )
            if isinstance(destinations, Listing) and destinations.knows(request.gcs_key):
                current = destinations.objects.get(request.gcs_key)
            else:
                current = replicator.head_destination(request)
        else:
            return replicator.replicate_once(request)
        return replicator.settle_listed(request, listed, current)

    def _survey(
        self, objects_under: Lister, bucket: str, keys: list[str]
    ) -> Listing | errors.ReplicatorError:
        """A listing, or the error that stopped it: callers fall back to looking up each key
        (a role may read objects but not list them), except when the bucket is missing."""
        budget = LISTED_PER_KEY * 1000 * (1 + len(keys) // 1000)
        try:
            return self._retry.call(survey, objects_under, bucket, keys, budget)
        except errors.ReplicatorError as exc:
            if not isinstance(exc, errors.BucketNotFound):
                log.warning("listing %s failed, looking up keys one by one: %s", bucket, exc)
            return exc


class _Bounded:
    """The objects of a listing up to `last`, at most `budget` of them; `through` is the last
    key up to which the listing is complete once iteration ended."""

    def __init__(self, objects: Iterator[ObjectInfo], last: str, budget: int) -> None:
        self._objects = objects
        self._last = last
        self._budget = budget
        self.through = last

    def __iter__(self) -> Iterator[ObjectInfo]:
        for seen, obj in enumerate(self._objects, start=1):
            if obj.key > self._last:
                return
            yield obj
            if seen >= self._budget:
                self.through = obj.key
                return


def _key(obj: ObjectInfo) -> str:
    return obj.key


def each(pool: Executor, workers: int, fn: Callable[[T], U], items: Sequence[T]) -> list[U]:
    """`fn` of every item, in order, on `workers` threads of `pool` that take the next item
    as they finish one (a future per item cost ~6% of the service's CPU for small objects)."""
    results: dict[int, U] = {}
    order = iter(range(len(items)))
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                n = next(order, None)
            if n is None:
                return
            results[n] = fn(items[n])

    for running in [pool.submit(in_context(work)) for _ in range(min(workers, len(items)))]:
        running.result()
    return [results[n] for n in range(len(items))]
