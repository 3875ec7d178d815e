"""Bulk check: compare one source prefix with one destination prefix without copying.

Each key is classified as rclone's `check --combined` does, from the two listings alone: the
same size, and the destination's record of its source (bucket, key, ETag) naming the source's
current version. Keys identical so far may then be looked at closer, each on a bounded pool:
`checksum` compares what checksums both sides expose (app.bulk.fingerprints; from the
listings, or one S3 HEAD when they have none in common), `download` reads both objects and
compares the digests of their bytes. Reports stay in key order whatever finishes first.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app import errors
from app.bulk import fingerprints
from app.bulk.checkpoint import Checkpoint
from app.bulk.compare import (
    Compared,
    Location,
    compare_scope,
    key_ranges,
    require_key_order,
    unwritable,
)
from app.bulk.inventory import Inventory
from app.bulk.patterns import KeyFilter
from app.bulk.ranges import KeyRange, range_of
from app.bulk.tally import Snapshot, Tally
from app.logging_config import in_context
from app.replication.identity import holds
from app.retry import RetryPolicy
from app.storage.base import ARCHIVE_CLASSES, Destination, ObjectInfo, Source

log = logging.getLogger(__name__)


class Mark(enum.StrEnum):
    """rclone check's `--combined` marks."""

    IDENTICAL = "="
    MISSING = "-"
    EXTRA = "+"
    DIFFERENT = "*"
    ERROR = "!"
    ARCHIVED = "~"  # ours: at the source in an archive storage class, not at the destination


COUNT_OF = {
    Mark.IDENTICAL: "identical",
    Mark.MISSING: "missing",
    Mark.EXTRA: "extra",
    Mark.DIFFERENT: "different",
    Mark.ERROR: "errors",
    Mark.ARCHIVED: "archived",
}
MARKED = tuple(COUNT_OF.values())  # the counts of keys reported, one mark each

# The key below the prefix, its mark, and why: for `=`, NOT_COMPARABLE when --checksum found
# nothing to compare, else "".
CheckReport = Callable[[str, Mark, str], None]


def classify(pair: Compared, dst: Location) -> tuple[Mark, str]:
    """The mark of one compared key, and why when it is not identical. Identical: the same
    size, and the destination records this source version (bucket, key, ETag)."""
    if pair.left is None:
        return Mark.EXTRA, "only at the destination"
    if reason := unwritable(dst, pair.key):
        return Mark.ERROR, reason
    if pair.right is None:
        if pair.left.storage_class in ARCHIVE_CLASSES:
            return Mark.ARCHIVED, f"archived at the source ({pair.left.storage_class})"
        return Mark.MISSING, "missing at the destination"
    if pair.left.size != pair.right.size:
        return Mark.DIFFERENT, f"size {pair.left.size} at the source, {pair.right.size} here"
    if not holds(pair.right, pair.left):
        return Mark.DIFFERENT, "the destination does not record the source's current ETag"
    return Mark.IDENTICAL, ""


@dataclass(frozen=True)
class CheckOptions:
    keys: KeyFilter = KeyFilter()
    checksum: bool = False  # also compare every checksum both sides expose
    download: bool = False  # also read both sides and compare their bytes' digests
    concurrency: int = 16  # keys looked at closer at once
    list_concurrency: int = 1  # key ranges listed at once (app.bulk.ranges)
    list_split_min_keys: int = 0  # a source of no more keys is listed as one range
    inventory: Inventory | None = None  # the source's listing, when not listed


@dataclass(frozen=True)
class Verdict:
    """One key's mark, why when it is not plainly identical, and whether it is identical by
    size and record only because no checksum both sides expose could be compared."""

    mark: Mark
    reason: str = ""
    unverified: bool = False


NOT_COMPARABLE = "no checksum both sides expose: same size and source record only"


class Check:
    def __init__(self, source: Source, destination: Destination, retry: RetryPolicy) -> None:
        self._source = source
        self._destination = destination
        self._retry = retry

    def run(
        self,
        src: Location,
        dst: Location,
        options: CheckOptions,
        report: CheckReport,
        tally: Tally | None = None,
        stop: threading.Event | None = None,
        checkpoint: Checkpoint | None = None,
        held_in: Path | None = None,
    ) -> Tally:
        """Report every key below the prefixes once, in key order, from this thread, counting
        in `tally`; stop early when `stop` is set (`tally.stopped`: keys being looked at
        finish and are reported, those waiting are not). Raises app.errors exceptions when a
        listing fails, after reporting the keys listed before.

        With `checkpoint` (saved from this thread), each key reported is concluded in it with
        the counts, and the reports of ranges waiting for those before them are held in files
        in the directory `held_in`, whose lengths it keeps too: a resumed checkpoint's run
        lists only what was not reported, starts from its counts, and reports, in key order,
        exactly the lines the stopped run had not. A stopped run reports only up to its first
        key not looked at, in each range, and leaves the held files for the resumed one."""
        require_key_order(src)
        tally = tally or Tally()
        stop = stop or threading.Event()
        if checkpoint is not None and checkpoint.resumed:
            fresh: tuple[KeyRange, ...] = ()
            ended = list(checkpoint.done())
            counts = checkpoint.kept("counts") or {}
            tally.add(**counts, listed=sum(n for name, n in counts.items() if name in MARKED))
        else:
            fresh = key_ranges(self._source, src, options, self._retry)
            ended = [False] * len(fresh)
        held_lengths = checkpoint.kept("held") if checkpoint is not None else None
        with _Held(report, ended, held_in, held_lengths) as held:
            if checkpoint is not None:
                checkpoint.keep("counts", lambda: _kept_counts(tally))
                checkpoint.keep("held", held.lengths)
                ranges = checkpoint.begin(fresh, writer=False)
                positions = checkpoint.positions()
            else:
                ranges, positions = fresh, tuple(range(len(fresh)))

            def save() -> None:
                if checkpoint is not None:
                    checkpoint.save()
                    held.drop_replayed()

            def reporter(index: int) -> CheckReport:
                out = held.reporter(positions[index])
                if checkpoint is None:
                    return out

                def report_and_conclude(key: str, mark: Mark, reason: str) -> None:
                    out(key, mark, reason)
                    checkpoint.concluded(index, key)

                return report_and_conclude

            waiting = [_InOrder(reporter(i), tally) for i in range(len(ranges))]

            def range_ended(index: int) -> None:
                waiting[index].report_settled(keep=0)
                if checkpoint is not None:
                    checkpoint.range_listed(index)
                held.end(positions[index])
                save()

            with ThreadPoolExecutor(options.concurrency, thread_name_prefix="check") as pool:
                try:
                    _, pairs = compare_scope(
                        self._source,
                        self._destination,
                        src,
                        dst,
                        options,
                        self._retry,
                        ranges,
                        range_ended,
                    )
                    for pair in pairs:
                        if stop.is_set():
                            tally.mark(stopped=True)
                            break
                        tally.add(listed=1)
                        in_order = waiting[range_of(ranges, pair.key)]
                        in_order.add(pair.key, self._verdict(pair, dst, options, pool, tally))
                        in_order.report_settled(keep=options.concurrency * 2)
                        if checkpoint is not None and checkpoint.due():
                            save()
                    else:
                        tally.mark(listing_done=True)
                finally:
                    for index, in_order in enumerate(waiting):
                        if stop.is_set():
                            in_order.cancel()
                        in_order.report_settled(keep=0)
                        if checkpoint is None:  # else the held reports wait for the resume
                            held.end(index)
                    if checkpoint is not None:
                        checkpoint.close()
                        held.drop_replayed()
        tally.finish()
        return tally

    def _verdict(
        self,
        pair: Compared,
        dst: Location,
        options: CheckOptions,
        pool: ThreadPoolExecutor,
        tally: Tally,
    ) -> Future[Verdict]:
        """The key's verdict from the listings or, when it is identical so far and `options`
        asks for more, from a closer look on `pool`."""
        verdict = Verdict(*classify(pair, dst))
        if verdict.mark != Mark.IDENTICAL or not (options.checksum or options.download):
            settled: Future[Verdict] = Future()
            settled.set_result(verdict)
            return settled
        assert pair.left is not None
        assert pair.right is not None
        tally.add(found=1, found_bytes=pair.left.size)
        return pool.submit(in_context(self._look_closer), pair.left, pair.right, options)

    def _look_closer(self, listed: ObjectInfo, copy: ObjectInfo, options: CheckOptions) -> Verdict:
        """The checks `options` asks for, beyond the listings, of one key identical so far."""
        try:
            verdict = Verdict(Mark.IDENTICAL)
            if options.checksum:
                verdict = self._compare_checksums(listed, copy)
            if options.download and verdict.mark == Mark.IDENTICAL:
                verdict = self._compare_bytes(listed, copy)
            return verdict
        except errors.ReplicatorError as exc:
            return Verdict(Mark.ERROR, f"{exc.kind}: {exc.detail}")
        except Exception as exc:  # named in the report, never lost with its thread
            log.exception("checking %s failed", listed.key)
            return Verdict(Mark.ERROR, f"internal_error: {exc!r}")

    def _compare_checksums(self, listed: ObjectInfo, copy: ObjectInfo) -> Verdict:
        """From the listings when they hold a checksum in common (a single-part ETag is an
        MD5); otherwise, or when they differ, one HEAD of the source: for its additional
        checksums, and its encryption (an SSE-KMS object's ETag is no MD5, which a listing
        does not tell)."""
        agreement = fingerprints.compare_checksums(listed, copy)
        if (not agreement.compared or agreement.difference) and copy.checksums.crc32c:
            current = self._retry.call(self._source.head, listed.bucket, listed.key)
            if not holds(copy, current):
                return Verdict(
                    Mark.DIFFERENT, "the destination does not record the source's current version"
                )
            agreement = fingerprints.compare_checksums(current, copy)
        if agreement.difference:
            return Verdict(Mark.DIFFERENT, agreement.difference)
        if not agreement.compared:
            return Verdict(Mark.IDENTICAL, NOT_COMPARABLE, unverified=True)
        return Verdict(Mark.IDENTICAL)

    def _compare_bytes(self, listed: ObjectInfo, copy: ObjectInfo) -> Verdict:
        """Both objects read whole (the source pinned to the listed ETag, the destination to
        the listed generation), each read retried whole by the policy."""
        digest = fingerprints.read_digest
        ours = self._retry.call(
            digest,
            lambda: self._source.open(listed),
            listed.size,
            f"s3://{listed.bucket}/{listed.key}",
        )
        theirs = self._retry.call(
            digest,
            lambda: self._destination.open(copy),
            copy.size,
            f"gs://{copy.bucket}/{copy.key}",
        )
        if ours != theirs:
            return Verdict(
                Mark.DIFFERENT, f"bytes differ: SHA-256 source {ours}, destination {theirs}"
            )
        return Verdict(Mark.IDENTICAL)


class _InOrder:
    """Verdicts reported in the order their keys were listed, whichever settles first."""

    def __init__(self, report: CheckReport, tally: Tally) -> None:
        self._report = report
        self._tally = tally
        self._keys: collections.deque[tuple[str, Future[Verdict]]] = collections.deque()

    def add(self, key: str, verdict: Future[Verdict]) -> None:
        self._keys.append((key, verdict))

    def report_settled(self, keep: int) -> None:
        """Report the keys at the head whose verdicts are settled, then more, waiting for
        them, until at most `keep` are left waiting."""
        while self._keys and (len(self._keys) > keep or self._keys[0][1].done()):
            key, future = self._keys.popleft()
            if future.cancelled():  # stopped: neither it nor any key after it is reported
                self._keys.clear()
                return
            verdict = future.result()
            self._tally.add(**{COUNT_OF[verdict.mark]: 1}, unverified=int(verdict.unverified))
            self._report(key, verdict.mark, verdict.reason)

    def cancel(self) -> None:
        """Drop the keys whose closer look has not started; they are not reported, nor the
        keys after them (a checkpoint's mark covers an unbroken run of reported keys)."""
        for _, future in self._keys:
            future.cancel()


class _Held:
    """Reports of concurrent key ranges, printed in key order: those of the first range not
    yet ended go straight to `report`; the others wait in a file, one JSON line each, until
    every range before theirs has ended, so memory stays bounded. The files are temporary,
    or (`directory`) named by range, to outlive a stopped run: `lengths` says how long each
    is, and a resumed run's `_Held` cuts them back to the `lengths` its checkpoint kept."""

    def __init__(
        self,
        report: CheckReport,
        ended: list[bool],
        directory: Path | None = None,
        lengths: dict[str, int] | None = None,
    ) -> None:
        self._report = report
        self._files: list[IO[str] | None] = [None] * len(ended)
        self._ended = ended
        self._current = next((i for i, e in enumerate(ended) if not e), len(ended))
        self._directory = directory
        self._replayed: list[Path] = []  # to remove once a checkpoint no longer names them
        if directory is not None:
            directory.mkdir(exist_ok=True)
            for path in directory.iterdir():
                length = (lengths or {}).get(path.name)
                if length is None:
                    path.unlink()
                    continue
                with open(path, "r+b") as file:
                    file.truncate(length)
                self._files[int(path.name)] = open(path, "a+", encoding="utf-8")

    def reporter(self, index: int) -> CheckReport:
        def report(key: str, mark: Mark, reason: str) -> None:
            if index == self._current:
                self._report(key, mark, reason)
                return
            file = self._files[index]
            if file is None:
                file = self._files[index] = self._open(index)
            file.write(json.dumps([key, str(mark), reason]) + "\n")

        return report

    def _open(self, index: int) -> IO[str]:
        if self._directory is None:
            return tempfile.TemporaryFile("w+", encoding="utf-8")
        return open(self._directory / str(index), "a+", encoding="utf-8")

    def end(self, index: int) -> None:
        """Range `index` has reported its last key: once it is the current one, the next
        ranges' waiting reports follow, in order."""
        self._ended[index] = True
        while self._current < len(self._ended) and self._ended[self._current]:
            self._current += 1
            if self._current < len(self._files):
                self._replay(self._current)

    def lengths(self) -> dict[str, int]:
        """The length of each range's file of waiting reports, written through to disk."""
        lengths = {}
        for index, file in enumerate(self._files):
            if file is not None:
                file.flush()
                lengths[str(index)] = os.fstat(file.fileno()).st_size
        return lengths

    def drop_replayed(self) -> None:
        """Remove the files replayed: call once a checkpoint that no longer names them is saved."""
        for path in self._replayed:
            path.unlink(missing_ok=True)
        self._replayed.clear()

    def _replay(self, index: int) -> None:
        file, self._files[index] = self._files[index], None
        if file is None:
            return
        with file:
            file.seek(0)
            for line in file:
                key, mark, reason = json.loads(line)
                self._report(key, Mark(mark), reason)
        if self._directory is not None:
            self._replayed.append(self._directory / str(index))

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *_: object) -> None:
        for file in self._files:
            if file is not None:
                file.close()
        if self._directory is not None and all(self._ended):
            shutil.rmtree(self._directory, ignore_errors=True)


def _kept_counts(tally: Tally) -> dict[str, int]:
    """The counts a check's checkpoint keeps: the marks reported, and `unverified`."""
    snapshot = tally.snapshot()
    return {name: snapshot[name] for name in (*MARKED, "unverified")}


def differs(snapshot: Snapshot) -> bool:
    """Whether any key was not identical (or could not be compared). Archived keys are
    reported and counted apart, not as differences: sync skips them by default too."""
    ignored = (Mark.IDENTICAL, Mark.ARCHIVED)
    return any(snapshot[COUNT_OF[mark]] for mark in Mark if mark not in ignored)
