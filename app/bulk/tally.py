"""What a sync or a check has done so far, shared by the threads doing it and those watching.

One `Tally` is updated by the copy threads and read by a progress display, a job's status or a
summary at the end, so every read takes a consistent snapshot under the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

COUNTS = (
    "listed",  # keys found on either side (after include/exclude)
    "found",  # of those, keys the run has work for (to copy, or to compare by request)
    "found_bytes",  # their source bytes
    "copied",
    "skipped",
    "gone",  # listed, but deleted at the source before it could be copied: not a failure
    "deleted",
    "failed",
    "bytes",  # bytes copied (or, in a dry run, that would be)
    "identical",
    "missing",
    "extra",
    "different",
    "errors",  # keys a check could not compare
    # check: of the identical keys, those --checksum found no checksum to compare;
    # sync: of the copied keys, those S3 stated no checksum for (SSE-KMS without one)
    "unverified",
    "archived",  # keys in an archive storage class: restore them first
)


@dataclass
class Tally:
    """Counts of one run (the names in COUNTS); in a dry run `copied`, `bytes` and `deleted`
    count what would be. `listing_done` is set once both listings have ended (a progress
    display may then tell an ETA); `stopped` when the run was asked to stop before the end."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    listing_done: bool = False
    stopped: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to the named counts, e.g. `tally.add(copied=1, bytes=4096)`."""
        with self.lock:
            for name, n in counts.items():
                self.counts[name] += n

    def mark(self, **flags: bool) -> None:
        with self.lock:
            for name, value in flags.items():
                setattr(self, name, value)

    def finish(self) -> None:
        with self.lock:
            self.finished = time.monotonic()

    def snapshot(self) -> Snapshot:
        with self.lock:
            end = self.finished if self.finished is not None else time.monotonic()
            return Snapshot(dict(self.counts), self.listing_done, self.stopped, end - self.started)


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    listing_done: bool
    stopped: bool
    elapsed: float

    def __getitem__(self, name: str) -> int:
        return self.counts[name]
