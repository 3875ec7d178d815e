"""Per-key exclusion and the hand-over of what was written, behind one small protocol.

The replication flow holds a destination key while it decides and copies, so concurrent
requests for one object queue instead of racing, and the next holder learns what the last one
wrote without asking GCS again. `app.ledger.local.LocalLedger` does this inside one process
(the default); `app.ledger.redis.RedisLedger` does it across replicas, and also keeps a
`LedgerEntry` of what was settled per key, so a duplicate event is answered without a request
to either cloud. Correctness never depends on a ledger: every write is fenced by a generation
precondition, and a ledger that knows nothing (`look_up` answers None) only costs the lookups
it would have saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from app.events.sequencer import is_newer
from app.names import SOURCE_BUCKET, SOURCE_ETAG, SOURCE_KEY, SOURCE_VERSION
from app.storage.base import ObjectInfo

State = Literal["local", "up", "down"]  # in-process only; shared and answering; shared, not


@dataclass(frozen=True)
class Announced:
    """What an S3 event says of the version it announces. Never trusted to describe the
    object; only to recognise a version a `LedgerEntry` shows settled already."""

    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """What was last settled at a destination key: the object written there, or None for a
    tombstone (a propagated delete); which source key it stands for; and the S3 sequencer of
    the latest event settled for it, when events carried one."""

    s3_bucket: str
    s3_key: str
    written: ObjectInfo | None
    sequencer: str | None = None

    @classmethod
    def of_copy(cls, written: ObjectInfo, sequencer: str | None = None) -> LedgerEntry:
        """The entry of `written`, whose metadata names the source it was copied from."""
        return cls(
            written.metadata.get(SOURCE_BUCKET, ""),
            written.metadata.get(SOURCE_KEY, ""),
            written,
            sequencer,
        )

    @property
    def etag(self) -> str | None:
        return self.written.metadata.get(SOURCE_ETAG) if self.written else None

    @property
    def version_id(self) -> str | None:
        return (self.written.metadata.get(SOURCE_VERSION) or None) if self.written else None

    def settles(self, s3_bucket: str, s3_key: str, event: Announced) -> bool:
        """Whether this entry shows the version `event` announces for s3://bucket/key settled:
        the same source key, and the same ETag (and version, when the event has one) or a
        sequencer at or after the event's. An event without an ETag (a delete) never is."""
        if event.etag is None or (self.s3_bucket, self.s3_key) != (s3_bucket, s3_key):
            return False
        same_version = self.etag == event.etag and event.version_id in (None, self.version_id)
        return same_version or _not_after(event.sequencer, self.sequencer)


class Hold(Protocol):
    """A held key. `waited`: another holder had the key first. `handed_over`: what that
    holder handed over as written, if anything (None: look at the destination). `entry`:
    what a shared ledger noted for the key when it was taken (None: nothing, or a ledger
    without entries)."""

    waited: bool
    handed_over: ObjectInfo | None

    @property
    def entry(self) -> LedgerEntry | None: ...

    def hand_over(self, written: ObjectInfo, sequencer: str | None = None) -> None:
        """What the destination holds now, for whoever holds the key next, with the S3
        sequencer of the event settled, if one was (a shared ledger writes it as the key is
        let go, in the same step)."""


class Ledger(Protocol):
    def hold(self, bucket: str, key: str) -> AbstractContextManager[Hold]:
        """Hold gs://bucket/key until the block ends, waiting for any other holder (a shared
        ledger built not to wait raises `errors.KeyLeased` for another replica's lease)."""
        ...

    def look_up(
        self, keys: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[list[LedgerEntry | None]]:
        """What was last settled at each gs://bucket/key, in order, in one look (None where
        the ledger does not know). A shared ledger also leases for the block the keys it
        knows nothing of (new objects, copied next): a hold of one of them in the block need
        not take its lease."""
        ...

    def note(self, bucket: str, key: str, entry: LedgerEntry) -> None:
        """Note what was settled at gs://bucket/key; never fails (a ledger is an optimisation)."""
        ...

    @property
    def state(self) -> State: ...

    def close(self) -> None:
        """Let go of connections; the ledger is not used again."""
        ...


def _not_after(sequencer: str | None, recorded: str | None) -> bool:
    """Whether the event with `sequencer` happened at or before the one `recorded` (same key)."""
    if not sequencer or not recorded:
        return False
    try:
        return not is_newer(sequencer, recorded)
    except ValueError:  # not a sequencer: the clouds decide
        return False
