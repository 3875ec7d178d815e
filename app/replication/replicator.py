"""The replication flow for one key: look up both sides, decide, copy, settle a race.

It does not care who asked (the HTTP routes, a batch, a queue worker): callers hand it a
`ReplicationRequest` whose inputs are known and get a `ReplicationResult` or an app.errors
exception. Three ways in, by what the caller knows already: `replicate` (nothing: both sides
are looked up), `settle_listed` (a listing's entry: one GET pinned to it, no HEAD) and
`settle` (both sides). Only `replicate` counts its outcome in the metrics; callers of the
others count theirs once, with `count`, when the key's outcome is final. The bytes move in
app.replication.copier; many keys at once in app.replication.batch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from app import errors, metrics
from app.ledger.base import Announced, Hold, Ledger
from app.logging_config import in_context
from app.policy import Overwrite
from app.replication.coalesce import Coalescer
from app.replication.copier import Copier
from app.replication.identity import holds, reason_to_skip
from app.retry import RetryPolicy
from app.storage.base import Body, Destination, ObjectInfo, Source


class Action(enum.StrEnum):
    REPLICATED = "replicated"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ReplicationRequest:
    s3_bucket: str
    s3_key: str
    gcs_bucket: str
    gcs_key: str
    overwrite: Overwrite = Overwrite.DIFFERENT
    # The S3 event that asked for this copy, if one did: its sequencer is noted with the
    # copy, and a version the ledger shows settled as the key is taken is not read again.
    event: Announced | None = None


@dataclass(frozen=True)
class ReplicationResult:
    """`noted`: the ledger was told what the destination holds now (with the request's
    event), while the key was held. `checked`: what S3 stated that a copy's bytes were
    checked against; `unverified`: a copy whose bytes S3 stated nothing checkable about (an
    SSE-KMS object without an S3 checksum; app.replication.digest)."""

    action: Action
    source: ObjectInfo
    destination: ObjectInfo
    reason: str
    noted: bool = False
    unverified: bool = False
    checked: tuple[str, ...] = ()


Fetch = Callable[[], tuple[ObjectInfo, Body]]
UNVERIFIED = (
    "S3 stated no checksum to check the bytes read against (an SSE-KMS ETag is not an MD5); "
    "GCS checked the upload against the checksums computed while reading"
)


class Replicator:
    def __init__(
        self,
        source: Source,
        destination: Destination,
        retry: RetryPolicy,
        copier: Copier,
        ledger: Ledger,
        lookups: Executor,
    ) -> None:
        """`lookups` runs the destination lookup beside the source's; `ledger` holds a key
        while it is decided and copied."""
        self.source = source
        self.destination = destination
        self._retry = retry
        self._copier = copier
        self._ledger = ledger
        self._lookups = lookups
        self._source_heads: Coalescer[ObjectInfo] = Coalescer()
        self._destination_heads: Coalescer[ObjectInfo | None] = Coalescer()

    def replicate(self, request: ReplicationRequest) -> ReplicationResult:
        """Copy, or skip, one object. Raises app.errors exceptions."""
        return counted(self.replicate_once, request)

    def replicate_once(self, request: ReplicationRequest) -> ReplicationResult:
        """`replicate`, uncounted: both sides are looked up at once, without a lock, so a
        duplicate notification costs one round trip however many arrive together."""
        pending = self._lookups.submit(in_context(self.head_destination), request)
        try:
            source = self._head_source(request)
        except BaseException:
            pending.cancel()
            raise
        return self.settle(request, source, pending.result())

    def settle_listed(
        self, request: ReplicationRequest, listed: ObjectInfo | None, current: ObjectInfo | None
    ) -> ReplicationResult:
        """Skip, or copy, an object as a listing showed it (`listed`; None when only the
        destination was listed, and holds nothing at the key), given `current`, what the
        destination holds. The copy's one GET describes and opens the object, pinned to the
        listed ETag: no HEAD. An object that changed since the listing (the pinned GET answers
        412), or a write another writer beat, is looked at again once, by `replicate_once`."""
        etag = listed.etag if listed else None

        def fetch() -> tuple[ObjectInfo, Body]:
            return self._retry.call(self.source.get, request.s3_bucket, request.s3_key, etag)

        try:
            return self.settle(request, listed, current, fetch)
        except errors.PreconditionFailed:
            return self.replicate_once(request)

    def settle(
        self,
        request: ReplicationRequest,
        source: ObjectInfo | None,
        current: ObjectInfo | None,
        fetch: Fetch | None = None,
    ) -> ReplicationResult:
        """Skip, or copy, given what is known of both sides. `fetch` opens the source when
        `source` is only a listing entry or unknown (None): the copy needs its description."""
        if source is not None and current is not None:
            if reason := reason_to_skip(current, source, request.overwrite):
                return ReplicationResult(Action.SKIPPED, source, current, reason)
        # Copies of one object queue behind each other. A lookup that went stale meanwhile
        # (another process, or a holder that finished before we asked) is caught by the
        # generation precondition of the write.
        with self._ledger.hold(request.gcs_bucket, request.gcs_key) as held:
            if settled := _settled_meanwhile(request, source, held):
                return settled
            sequencer = request.event.sequencer if request.event else None
            if held.waited:  # the holder we waited for may have just written it: look again
                current = held.handed_over or self.head_destination(request)
                if current is not None:
                    known = source or self._head_source(request)
                    if reason := reason_to_skip(current, known, request.overwrite):
                        held.hand_over(current, sequencer)
                        return ReplicationResult(Action.SKIPPED, known, current, reason, True)
            generation = (current.generation or 0) if current else 0
            body = None
            if fetch is not None:
                source, body = fetch()
            assert source is not None
            try:
                copied = self._copier.copy(
                    source, request.gcs_bucket, request.gcs_key, generation, body
                )
            except errors.PreconditionFailed:
                # Another writer got there first. If it wrote this very source, we are done.
                current = self.head_destination(request)
                if current is not None and holds(current, source):
                    held.hand_over(current, sequencer)
                    return ReplicationResult(
                        Action.SKIPPED, source, current, "written concurrently", True
                    )
                raise
            held.hand_over(copied.written, sequencer)
        if copied.verified:
            return ReplicationResult(
                Action.REPLICATED, source, copied.written, "copied", True, checked=copied.checked
            )
        reason = f"copied, unverified: {UNVERIFIED}"
        return ReplicationResult(
            Action.REPLICATED, source, copied.written, reason, True, unverified=True
        )

    def head_destination(self, request: ReplicationRequest) -> ObjectInfo | None:
        def head() -> ObjectInfo | None:
            return self._retry.call(self.destination.head, request.gcs_bucket, request.gcs_key)

        return self._destination_heads.call((request.gcs_bucket, request.gcs_key), head)

    def _head_source(self, request: ReplicationRequest) -> ObjectInfo:
        def head() -> ObjectInfo:
            return self._retry.call(self.source.head, request.s3_bucket, request.s3_key)

        return self._source_heads.call((request.s3_bucket, request.s3_key), head)


def _settled_meanwhile(
    request: ReplicationRequest, source: ObjectInfo | None, held: Hold
) -> ReplicationResult | None:
    """A skip, when the ledger showed the request's event settled as the key was taken: its
    last holder finished between our looks and our lease, so neither cloud is asked again."""
    entry = held.entry
    if request.event is None or request.overwrite == Overwrite.ALWAYS or entry is None:
        return None
    if entry.written is None or not entry.settles(request.s3_bucket, request.s3_key, request.event):
        return None
    described = source or ObjectInfo(
        request.s3_bucket,
        request.s3_key,
        entry.written.size,
        etag=entry.etag,
        version_id=entry.version_id,
    )
    return ReplicationResult(
        Action.SKIPPED, described, entry.written, "settled meanwhile (ledger)", True
    )


def counted(fn: Callable[..., ReplicationResult], *args: object) -> ReplicationResult:
    """Run one replication and `count` its outcome."""
    try:
        result = fn(*args)
    except errors.ReplicatorError as exc:
        count(exc)
        raise
    count(result)
    return result


def count(outcome: ReplicationResult | errors.ReplicatorError) -> None:
    """Count one key's final outcome in the metrics, once (a key leased by another replica is
    no failure: that replica settles it)."""
    if isinstance(outcome, errors.KeyLeased):
        return
    if isinstance(outcome, errors.ReplicatorError):
        metrics.OBJECTS_FAILED.labels(outcome.kind).inc()
    elif outcome.action == Action.SKIPPED:
        metrics.OBJECTS_SKIPPED.inc()
    else:
        metrics.OBJECTS_REPLICATED.inc()
        metrics.BYTES_REPLICATED.inc(outcome.destination.size)
