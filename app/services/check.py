"""Bulk check: compare one source prefix with one destination prefix without copying.

Each key is classified as rclone's `check --combined` does, from the two listings alone: the
same size, and the destination's record of its source (bucket, key, ETag) naming the source's
current version.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.retry import RetryPolicy
from app.services.identity import holds
from app.services.patterns import KeyFilter
from app.services.sync import Compared, Location, compare, unwritable
from app.services.tally import Snapshot, Tally
from app.storage.base import Destination, Source


class Mark(enum.StrEnum):
    """rclone check's `--combined` marks."""

    IDENTICAL = "="
    MISSING = "-"
    EXTRA = "+"
    DIFFERENT = "*"
    ERROR = "!"


COUNT_OF = {
    Mark.IDENTICAL: "identical",
    Mark.MISSING: "missing",
    Mark.EXTRA: "extra",
    Mark.DIFFERENT: "different",
    Mark.ERROR: "errors",
}

Report = Callable[[str, Mark, str], None]  # key below the prefix, its mark, why


def classify(pair: Compared, dst: Location) -> tuple[Mark, str]:
    """The mark of one compared key, and why when it is not identical. Identical: the same
    size, and the destination records this source version (bucket, key, ETag)."""
    if pair.left is None:
        return Mark.EXTRA, "only at the destination"
    if reason := unwritable(dst, pair.key):
        return Mark.ERROR, reason
    if pair.right is None:
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
        report: Report,
        tally: Tally | None = None,
        stop: threading.Event | None = None,
    ) -> Tally:
        """Report every key below the prefixes once, in key order, counting in `tally`; stop
        early when `stop` is set (`tally.stopped`). Raises app.errors exceptions when a
        listing fails."""
        tally = tally or Tally()
        stop = stop or threading.Event()
        pairs = compare(self._source, self._destination, src, dst, options.keys, self._retry)
        for pair in pairs:
            if stop.is_set():
                tally.mark(stopped=True)
                break
            mark, reason = classify(pair, dst)
            tally.add(listed=1, **{COUNT_OF[mark]: 1})
            report(pair.key, mark, reason)
        else:
            tally.mark(listing_done=True)
        tally.finish()
        return tally


def differs(snapshot: Snapshot) -> bool:
    """Whether any key was not identical (or could not be compared)."""
    return any(snapshot[COUNT_OF[mark]] for mark in Mark if mark != Mark.IDENTICAL)
