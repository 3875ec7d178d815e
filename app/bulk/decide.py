"""What a sync (copying here, or queueing for the workers) does with each compared key.

`decisions` is the one loop both `Sync` and `Enqueue` walk: stop when asked, count what was
listed, pass over keys only at the destination (a sync may delete them), fail keys the
destination cannot hold, skip keys it already holds, and hand on the rest as work. What is
done with the work (a copy, an event on the queue, or a line of a dry run) is the caller's.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from app.bulk.compare import Compared, Location, unwritable
from app.bulk.tally import Tally
from app.policy import Overwrite
from app.replication.identity import reason_to_skip


class Outcome(enum.StrEnum):
    COPIED = "copied"
    QUEUED = "queued"
    SKIPPED = "skipped"
    GONE = "gone"  # listed (or in an inventory), deleted at the source since: not a failure
    DELETED = "deleted"
    FAILED = "failed"
    ARCHIVED = "archived"  # in an archive storage class: not read until restored
    WOULD_COPY = "would copy"
    WOULD_QUEUE = "would queue"
    WOULD_DELETE = "would delete"


Report = Callable[[str, Outcome, str], None]  # key below the prefix, what happened, detail


class Kind(enum.Enum):
    WORK = "work"  # the destination lacks the key or holds another version: copy or queue it
    EXTRA = "extra"  # only at the destination
    SKIP = "skip"  # already there
    FAIL = "fail"  # cannot be written where it should go


@dataclass(frozen=True)
class Decision:
    kind: Kind
    pair: Compared
    reason: str = ""  # why, for SKIP and FAIL


def decisions(
    pairs: Iterable[Compared],
    dst: Location,
    overwrite: Overwrite,
    tally: Tally,
    stop: threading.Event,
    misrouted: Callable[[Compared], str] = lambda _: "",
) -> Iterator[Decision]:
    """One decision per pair, counting `listed` and `found` (with their bytes) in `tally`. It
    ends early, marking the tally stopped, once `stop` is set; otherwise it marks the listing
    done. `misrouted` says why a key would not be written at `dst` (or "")."""
    for pair in pairs:
        if stop.is_set():
            tally.mark(stopped=True)
            return
        tally.add(listed=1)
        if pair.left is None:
            yield Decision(Kind.EXTRA, pair)
            continue
        if reason := unwritable(dst, pair.key) or misrouted(pair):
            yield Decision(Kind.FAIL, pair, f"invalid_request: {reason}")
            continue
        if reason := reason_to_skip(pair.right, pair.left, overwrite):
            yield Decision(Kind.SKIP, pair, reason)
            continue
        tally.add(found=1, found_bytes=pair.left.size)
        yield Decision(Kind.WORK, pair)
    tally.mark(listing_done=True)
