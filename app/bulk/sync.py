"""Bulk sync: one source prefix against one destination prefix, both listed once.

Both sides are listed page by page and merged in key order (app.replication.listing), so memory
does not grow with the number of objects. `Sync` copies what the destination lacks or holds
in another version through the replicator's flow (`Replicator.settle_listed`: one GET per copy,
pinned to the listed ETag, the same verification, metadata and generation preconditions), on
a bounded pool fed from the merged stream; with `delete`, it then removes destination objects
the source lacks, at the listed generation, only when every copy succeeded and no more than
`max_delete` would go.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from app import errors
from app.bulk.checkpoint import Checkpoint
from app.bulk.compare import (
    Compared,
    Location,
    checkpointed_ranges,
    compare_scope,
    require_key_order,
)
from app.bulk.decide import Kind, Outcome, Report, decisions
from app.bulk.inventory import Inventory
from app.bulk.patterns import KeyFilter
from app.bulk.ranges import KeyRange, range_of
from app.bulk.tally import Tally
from app.ledger.base import Ledger
from app.logging_config import in_context
from app.policy import Overwrite
from app.replication.replicator import (
    Action,
    ReplicationRequest,
    Replicator,
    counted,
)
from app.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOptions:
    keys: KeyFilter = KeyFilter()
    overwrite: Overwrite = Overwrite.DIFFERENT
    dry_run: bool = False
    delete: bool = False
    max_delete: int | None = None
    concurrency: int = 16
    # Archived keys (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive tiers) are reported
    # and counted as `archived`, not failed: a lifecycle rule archived them on purpose, and
    # a sync that failed on each of them for ever would hide the failures that matter. Off,
    # each is a failure naming its storage class (and the sync exits non-zero).
    skip_archived: bool = True
    list_concurrency: int = 1  # key ranges listed at once (app.bulk.ranges)
    list_split_min_keys: int = 0  # a source of no more keys is listed as one range
    inventory: Inventory | None = None  # the source's listing, when not listed


class Sync:
    def __init__(self, replicator: Replicator, retry: RetryPolicy, ledger: Ledger) -> None:
        """`ledger` must be the replicator's: a delete and a copy of one key exclude each other."""
        self._replicator = replicator
        self._retry = retry
        self._ledger = ledger

    def run(
        self,
        src: Location,
        dst: Location,
        options: SyncOptions,
        report: Report,
        tally: Tally | None = None,
        stop: threading.Event | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Tally:
        """Make `dst` match `src`, counting in `tally` (another thread may watch it). Each
        key is reported once, from whichever thread settled it. When `stop` is set, no copy
        starts any more, the copies in flight finish and nothing is deleted (`tally.stopped`).
        With `checkpoint`, the keys concluded are marked in it, and a resumed checkpoint's run
        lists only what it had not concluded. Raises app.errors exceptions when a listing fails
        (copies started finish; nothing more starts), InvalidRequest for a source that does
        not list in key order, TooManyDeletes."""
        require_key_order(src)
        tally = tally or Tally()
        stop = stop or threading.Event()
        too_many = False
        slots = threading.BoundedSemaphore(options.concurrency * 2)
        source, destination = self._replicator.source, self._replicator.destination

        ranges: tuple[KeyRange, ...] = ()

        def conclude(key: str, outcome: Outcome, detail: str, size: int = 0) -> None:
            if checkpoint is not None:
                checkpoint.concluded(range_of(ranges, key), key, ok=outcome != Outcome.FAILED)
            if outcome in (Outcome.COPIED, Outcome.WOULD_COPY):
                tally.add(copied=1, bytes=size)
            elif outcome == Outcome.SKIPPED:
                tally.add(skipped=1)
            elif outcome == Outcome.FAILED:
                tally.add(failed=1)
            elif outcome == Outcome.ARCHIVED:
                tally.add(archived=1)
            report(key, outcome, detail)

        def copy(pair: Compared) -> None:
            try:
                key, listed = pair.key, pair.left
                assert listed is not None
                if stop.is_set():  # queued before the stop: not started, not reported
                    tally.add(found=-1, found_bytes=-listed.size)
                    return
                request = self._request(src, dst, key, options.overwrite)
                try:
                    result = counted(self._replicator.settle_listed, request, listed, pair.right)
                except errors.ObjectNotFound as exc:
                    if isinstance(exc, errors.BucketNotFound):
                        conclude(key, Outcome.FAILED, f"{exc.kind}: {exc.detail}")
                        return
                    # Deleted at the source since it was listed (or since the inventory).
                    tally.add(found=-1, found_bytes=-listed.size, gone=1)
                    conclude(key, Outcome.GONE, exc.detail)
                    return
                except errors.Archived as exc:
                    if not options.skip_archived:
                        conclude(key, Outcome.FAILED, f"{exc.kind}: {exc.detail}")
                        return
                    tally.add(found=-1, found_bytes=-listed.size)
                    conclude(key, Outcome.ARCHIVED, exc.storage_class)
                    return
                except errors.ReplicatorError as exc:
                    conclude(key, Outcome.FAILED, f"{exc.kind}: {exc.detail}")
                    return
                except Exception as exc:  # named in the report, never lost with its thread
                    log.exception("copying %s failed", key)
                    conclude(key, Outcome.FAILED, f"internal_error: {exc!r}")
                    return
                if result.action == Action.REPLICATED:
                    tally.add(unverified=int(result.unverified))
                    detail = result.reason
                    if result.checked:
                        detail += f" (verified against {', '.join(result.checked)})"
                    conclude(key, Outcome.COPIED, detail, result.destination.size)
                else:  # it changed, or another replica copied it: no longer work to do
                    tally.add(found=-1, found_bytes=-listed.size)
                    conclude(key, Outcome.SKIPPED, result.reason)
            finally:
                slots.release()

        # Extras (to delete) spool to disk, at most max_delete + 1 of them.
        pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="sync")
        with _Spool() as doomed, pool:
            try:
                ranges = checkpointed_ranges(source, src, options, self._retry, checkpoint)
                range_ended = checkpoint.range_listed if checkpoint else lambda _: None
                _, pairs = compare_scope(
                    source, destination, src, dst, options, self._retry, ranges, range_ended
                )
                for decision in decisions(pairs, dst, options.overwrite, tally, stop):
                    pair = decision.pair
                    if decision.kind == Kind.EXTRA:
                        if checkpoint is not None:
                            checkpoint.concluded(range_of(ranges, pair.key), pair.key)
                        if options.delete and not too_many:
                            generation = pair.right.generation if pair.right else None
                            doomed.add(pair.key, generation)
                            too_many = options.max_delete is not None and (
                                doomed.count > options.max_delete
                            )
                    elif decision.kind == Kind.FAIL:
                        conclude(pair.key, Outcome.FAILED, decision.reason)
                    elif decision.kind == Kind.SKIP:
                        conclude(pair.key, Outcome.SKIPPED, decision.reason)
                    elif options.dry_run:
                        conclude(
                            pair.key, Outcome.WOULD_COPY, "", pair.left.size if pair.left else 0
                        )
                    elif _slot(slots, stop):
                        if checkpoint is not None:
                            checkpoint.listed(range_of(ranges, pair.key), pair.key)
                        pool.submit(in_context(copy), pair)  # `copy` reports its own failures
                    else:
                        tally.mark(stopped=True)
                        break
            finally:
                # Every copy settled before any delete. Waiting on the pool rather than on a
                # list of futures: pruning such a list at each submit was 14% of the CPU of
                # a sync of 2,000 small objects (py-spy --gil).
                pool.shutdown(wait=True)
                if checkpoint is not None:
                    checkpoint.close()
            if options.delete and not tally.stopped:  # every copy has finished
                self._delete(dst, doomed, too_many, options, tally, report, stop)
        tally.finish()
        return tally

    def _delete(
        self,
        dst: Location,
        doomed: _Spool,
        too_many: bool,
        options: SyncOptions,
        tally: Tally,
        report: Report,
        stop: threading.Event,
    ) -> None:
        if too_many:
            raise TooManyDeletes(
                f"more than --max-delete {options.max_delete} destination objects are not at "
                "the source: nothing was deleted"
            )
        if tally.snapshot()["failed"]:
            return  # never delete after a failed copy: the listing may not be the whole truth
        destination = self._replicator.destination
        for key, generation in doomed:
            if stop.is_set():
                tally.mark(stopped=True)
                return
            if options.dry_run:
                report(key, Outcome.WOULD_DELETE, "")
                tally.add(deleted=1)
                continue
            name = dst.prefix + key
            try:
                with self._ledger.hold(dst.bucket, name):
                    self._retry.call(
                        destination.delete, dst.bucket, name, if_generation_match=generation
                    )
            except errors.ObjectNotFound:
                report(key, Outcome.SKIPPED, "already gone")
                tally.add(skipped=1)
                continue
            except errors.ReplicatorError as exc:
                report(key, Outcome.FAILED, f"{exc.kind}: {exc.detail}")
                tally.add(failed=1)
                continue
            report(key, Outcome.DELETED, "not at the source")
            tally.add(deleted=1)

    @staticmethod
    def _request(
        src: Location, dst: Location, key: str, overwrite: Overwrite
    ) -> ReplicationRequest:
        return ReplicationRequest(
            src.bucket, src.prefix + key, dst.bucket, dst.prefix + key, overwrite
        )


def _slot(slots: threading.BoundedSemaphore, stop: threading.Event) -> bool:
    """Take one of `slots`, or give up (False) once `stop` is set: a stop does not wait for
    a copy to finish and free one."""
    while not slots.acquire(timeout=0.2):
        if stop.is_set():
            return False
    return True


class _Spool:
    """Delete candidates (key, generation) in a temporary file, one JSON line each, so memory
    does not grow with the number of destination objects the source lacks."""

    def __init__(self) -> None:
        self._file: IO[str] | None = None
        self.count = 0

    def add(self, key: str, generation: int | None) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._file.write(json.dumps([key, generation]) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[tuple[str, int | None]]:
        if self._file is None:
            return
        self._file.seek(0)
        for line in self._file:
            key, generation = json.loads(line)
            yield key, generation

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *_: object) -> None:
        if self._file is not None:
            self._file.close()


class TooManyDeletes(errors.ReplicatorError):
    kind = "too_many_deletes"
