"""Converging on S3 events: an event is a hint to look at one key again, never an order.

S3 delivers notifications at least once, duplicated, out of order and sometimes a minute
late, so nothing an event says about the object (ETag, size, version) is trusted. An event
for `bucket/key` means "look at this key again": look up the source now and make the
destination match it. The kind of event only decides what a missing source object means:
with `DELETE_POLICY=propagate` the copy goes; with `ignore` it stays. Whatever order events
arrive in, the destination ends up as the source is (or absent), because

- a copy goes through the replicator's flow (its key held in the ledger, its write fenced by a
  generation precondition), so a duplicate is `skipped` and an older version never replaces
  a newer one: the copy is of what the source holds now;
- a delete holds the destination key in the same ledger, looks the source up again there (a
  late delete after a re-create finds the object and keeps the copy), removes only an
  object recorded as copied from this source bucket and key, and only at the generation it
  looked at (`ifGenerationMatch`), so a newer copy written meanwhile by another process
  survives.

With a shared ledger (LEDGER_URL), every copy, skip and delete is noted there (the
destination object, or a tombstone, and the event's sequencer), and a copy event whose version
the ledger shows settled (the same ETag and version, or a sequencer at or before the
noted one) is answered `skipped` from the ledger alone, with no request to S3 or GCS. The
in-process ledger notes nothing, so every event is looked at in both clouds.

One pass per event: the copies of a receive go through the batch plan together
(`Batch.plan`); what the plan settles or fails is final, and only a key it hands back
(`LookAlone`: its source missing, or the destination changing under both looks) is looked at
on its own, here. Each key's outcome is counted once in the metrics, where it is final: a
copy event whose source is gone ends `skipped` or `deleted`, never also `failed`.

What is retried: every lookup, read, write and delete, by the one `RetryPolicy`, once per
pass. A precondition failure (the destination changed between look and write) or a source
object that went while it was being copied: look again, at most `LOOKS` times. Answers
`TransientError` when redelivering the event may help; other app.errors failures come back
as an outcome with `error` set, since no redelivery can fix them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from app import errors, metrics, rules
from app.events.parse import EventRecord
from app.ledger.base import Announced, Ledger, LedgerEntry
from app.names import SOURCE_BUCKET, SOURCE_KEY
from app.policy import DeletePolicy, Overwrite
from app.replication.batch import Batch, Failed, Settled
from app.replication.replicator import (
    Action,
    ReplicationRequest,
    ReplicationResult,
    Replicator,
    count,
)
from app.retry import RetryPolicy
from app.storage.base import ObjectInfo

log = logging.getLogger(__name__)

LOOKS = 3  # looks at one key per event, when the destination keeps changing under us
GONE = "already gone"
NOT_OURS = "not written by the replicator"
SETTLED = "already settled (ledger)"


class EventAction(enum.StrEnum):
    REPLICATED = "replicated"
    SKIPPED = "skipped"
    DELETED = "deleted"
    IGNORED = "ignored"


@dataclass(frozen=True)
class EventOutcome:
    """What converging on one event did. `s3_key` is the key the source has it under (for
    EventBridge, the form that was found); `error` is set when it failed for good, and
    `error_kind` then says how (an app.errors `kind`: "archived", "sse_c", ...)."""

    s3_bucket: str
    s3_key: str
    event: str
    action: EventAction
    reason: str
    error: str | None = None
    error_kind: str | None = None


class _LookAgain(Exception):
    """The destination or the source changed while we acted on what we saw."""


class Converger:
    def __init__(
        self,
        replicator: Replicator,
        batch: Batch,
        retry: RetryPolicy,
        ledger: Ledger,
        replication_rules: Sequence[rules.Rule],
        default_bucket: str,
        delete_policy: DeletePolicy,
        overwrite: Overwrite = Overwrite.DIFFERENT,
    ) -> None:
        """`ledger` must be the replicator's: a delete and a copy of one key exclude each
        other. No rules: every source bucket goes to `default_bucket` under the same key."""
        self._replicator = replicator
        self._batch = batch
        self._retry = retry
        self._ledger = ledger
        self._rules = tuple(replication_rules)
        self._default_bucket = default_bucket
        self._delete_policy = delete_policy
        self._overwrite = overwrite

    def converge_all(
        self, records: Sequence[EventRecord]
    ) -> list[EventOutcome | errors.TransientError]:
        """Every record, in order, on the batch's workers; a TransientError in place of an
        outcome when delivering that record again may help. Copies from one source bucket
        into one destination bucket go through the batch plan together (one listing of the
        destination, one GET per object, as POST /v1/replicate/batch: a queue's worth of new
        objects costs no HEADs); the rest, and the copies the plan hands back (`LookAlone`:
        their source gone, say), are converged one by one. What the plan settled or failed
        is not looked at again. The ledger is asked about every record in one look. A key
        another replica holds comes back as `errors.KeyLeased` when the ledger was built not
        to wait for leases."""
        routes = [self._route(record) if record.action == "copy" else [] for record in records]
        with self._looked_up(records, routes) as known:
            return self._converge_known(records, routes, known)

    def _converge_known(
        self,
        records: Sequence[EventRecord],
        routes: list[list[ReplicationRequest]],
        known: list[LedgerEntry | None],
    ) -> list[EventOutcome | errors.TransientError]:
        """`converge_all`, once the ledger was asked about each record (`known`)."""
        outcomes: dict[int, EventOutcome | errors.TransientError] = {}
        groups: dict[tuple[str, str], list[tuple[int, ReplicationRequest]]] = {}
        for n, (record, routed) in enumerate(zip(records, routes, strict=True)):
            if self._settled_by_ledger(record, routed, known[n]):
                outcomes[n] = _outcome(record, routed[0].s3_key, EventAction.SKIPPED, SETTLED)
            elif len(routed) == 1:
                group = groups.setdefault((routed[0].s3_bucket, routed[0].gcs_bucket), [])
                group.append((n, routed[0]))
        for group in groups.values():
            planned = self._batch.plan([request for _, request in group])
            for (n, request), key in zip(group, planned, strict=True):
                if isinstance(key, Settled):
                    self._note_copy(request, key.result, records[n])
                    action = EventAction(key.result.action.value)
                    outcomes[n] = _outcome(records[n], request.s3_key, action, key.result.reason)
                elif isinstance(key, Failed):  # final, counted: no second look
                    outcomes[n] = _failure(records[n], request.s3_key, key.error)
                # else LookAlone: looked at on its own below, with the records not batched

        rest = [n for n in range(len(records)) if n not in outcomes]
        alone = self._batch.map(self._converge_one, [records[n] for n in rest])
        outcomes.update(zip(rest, alone, strict=True))
        return [outcomes[n] for n in range(len(records))]

    def _converge_one(self, record: EventRecord) -> EventOutcome | errors.TransientError:
        """Make the destination match the source for the event's key, whatever the event
        (the ledger was asked about it already)."""
        if record.action == "ignore":
            return _outcome(record, record.key, EventAction.IGNORED, record.reason)
        requests = self._route(record)
        if not requests:
            reason = f"no replication rule for s3://{record.bucket}/{record.key}"
            return _outcome(record, record.key, EventAction.IGNORED, reason)
        return self._converge_or_fail(record, requests)

    def _converge_or_fail(
        self, record: EventRecord, requests: list[ReplicationRequest]
    ) -> EventOutcome | errors.TransientError:
        """`_converge`, looked at again while the destination keeps changing; what failed
        for good as an outcome (counted)."""
        try:
            for _ in range(LOOKS):
                try:
                    return self._converge(record, requests)
                except _LookAgain:
                    continue
            raise errors.TransientError(
                f"gs://{requests[0].gcs_bucket}/{requests[0].gcs_key} changed {LOOKS} times "
                "while this event was converged; deliver it again later"
            )
        except errors.ReplicatorError as exc:
            count(exc)
            return _failure(record, requests[0].s3_key, exc)

    def _converge(self, record: EventRecord, requests: list[ReplicationRequest]) -> EventOutcome:
        """One look at both sides, and the action that makes the destination match."""
        for request in requests:  # EventBridge: the decoded key first, then the key as sent
            source = self._head_source(request)
            if source is not None:
                return self._copy(record, request, source)
        if self._delete_policy == DeletePolicy.IGNORE:
            if record.action == "copy":
                reason = "no longer at the source"
            else:
                reason = "no longer at the source; DELETE_POLICY is ignore"
                _log_delete(requests[0], "kept", "the copy stays (DELETE_POLICY=ignore)")
            return _outcome(record, requests[0].s3_key, EventAction.SKIPPED, reason)
        return self._delete(record, requests)

    def _copy(
        self, record: EventRecord, request: ReplicationRequest, source: ObjectInfo
    ) -> EventOutcome:
        current = self._replicator.head_destination(request)
        try:
            result = self._replicator.settle(request, source, current)
        except errors.PreconditionFailed:
            raise _LookAgain from None  # written by another process meanwhile
        except errors.BucketNotFound:
            raise
        except errors.ObjectNotFound:
            if self._head_source(request) is None:
                raise _LookAgain from None  # the source object went while it was copied
            raise
        count(result)
        self._note_copy(request, result, record)
        action = (
            EventAction.REPLICATED if result.action == Action.REPLICATED else EventAction.SKIPPED
        )
        reason = result.reason
        if record.action == "delete":
            reason = f"the source has it again (re-created): {reason}"
            _log_delete(request, "recreated", f"the source has it again: {result.reason}")
        return _outcome(record, request.s3_key, action, reason)

    def _delete(self, record: EventRecord, requests: list[ReplicationRequest]) -> EventOutcome:
        """Remove the copy the service wrote of an object the source no longer has. For
        EventBridge, the copy of whichever key form the destination holds."""
        reasons = []
        for request in requests:
            reason = self._remove_copy(request)
            if reason is None:
                tombstone = LedgerEntry(request.s3_bucket, request.s3_key, None, record.sequencer)
                self._ledger.note(request.gcs_bucket, request.gcs_key, tombstone)
                _log_delete(request, "deleted", "the copy is deleted (DELETE_POLICY=propagate)")
                return _outcome(
                    record, request.s3_key, EventAction.DELETED, "no longer at the source"
                )
            reasons.append(reason)
        reason = NOT_OURS if NOT_OURS in reasons else reasons[0]
        if reason == NOT_OURS:
            _log_delete(requests[0], "not_ours", f"kept: {NOT_OURS}")
        else:
            _log_delete(requests[0], "gone", "no copy to delete")
        return _outcome(record, requests[0].s3_key, EventAction.SKIPPED, reason)

    def _remove_copy(self, request: ReplicationRequest) -> str | None:
        """Delete the destination object if it is our copy of this source key, at the
        generation looked at; None when deleted, else why not. Both sides are looked up
        while the key is held, and not shared with lookups that began before."""
        with self._ledger.hold(request.gcs_bucket, request.gcs_key):
            if self._head_source(request) is not None:
                raise _LookAgain  # re-created since we looked
            destination = self._replicator.destination
            current = self._retry.call(destination.head, request.gcs_bucket, request.gcs_key)
            if current is None:
                return GONE
            if not _copied_from(current, request):
                return NOT_OURS
            try:
                self._retry.call(
                    destination.delete,
                    request.gcs_bucket,
                    request.gcs_key,
                    if_generation_match=current.generation,
                )
            except errors.PreconditionFailed:
                raise _LookAgain from None  # a newer generation: decide on that one
            except errors.BucketNotFound:
                raise
            except errors.ObjectNotFound:
                return GONE  # removed meanwhile, or by our own attempt whose answer was lost
        return None

    @contextlib.contextmanager
    def _looked_up(
        self, records: Sequence[EventRecord], routes: Sequence[list[ReplicationRequest]]
    ) -> Iterator[list[LedgerEntry | None]]:
        """What the ledger noted for the destination key of each event it could answer
        (see `_answerable`; None for the others), in one look; the keys it knows nothing of
        may stay leased to this process until the block ends (see `Ledger.look_up`)."""
        asked = {
            n: request
            for n, (record, requests) in enumerate(zip(records, routes, strict=True))
            if (request := _answerable(record, requests)) is not None
        }
        with self._ledger.look_up([(r.gcs_bucket, r.gcs_key) for r in asked.values()]) as found:
            known = dict(zip(asked, found, strict=True))
            yield [known.get(n) for n in range(len(records))]

    def _settled_by_ledger(
        self, record: EventRecord, requests: list[ReplicationRequest], known: LedgerEntry | None
    ) -> bool:
        """Whether `known`, the entry of this event's destination key, shows the version
        the event announces settled already (see `LedgerEntry.settles`)."""
        request = _answerable(record, requests)
        if request is None or request.event is None or known is None:
            return False
        settled = known.settles(request.s3_bucket, request.s3_key, request.event)
        if settled:
            metrics.LEDGER_SETTLED.inc()
        return settled

    def _note_copy(
        self, request: ReplicationRequest, result: ReplicationResult, record: EventRecord
    ) -> None:
        """Note in the ledger what the destination holds now, and the event it answered,
        unless the replicator did already while it held the key."""
        if result.noted:
            return
        written = LedgerEntry.of_copy(result.destination, record.sequencer)
        self._ledger.note(request.gcs_bucket, request.gcs_key, written)

    def destination_of(self, record: EventRecord) -> str:
        """The GCS bucket the rules send the event's key to ("" for none): a configured
        name, so a bounded metrics label."""
        routed = self._route(record)
        return routed[0].gcs_bucket if routed else ""

    def _route(self, record: EventRecord) -> list[ReplicationRequest]:
        """One request per name the object may have at the source that a rule routes."""
        requests = []
        announced = Announced(record.etag, record.version_id, record.sequencer)
        for key in record.key_candidates:
            if self._rules:
                target = rules.route(self._rules, record.bucket, key)
            else:
                target = (self._default_bucket, key)
            if target is not None:
                gcs_bucket, gcs_key = target
                requests.append(
                    ReplicationRequest(
                        record.bucket, key, gcs_bucket, gcs_key, self._overwrite, announced
                    )
                )
        return requests

    def _head_source(self, request: ReplicationRequest) -> ObjectInfo | None:
        """The source object now, or None when the bucket has no such key (a missing bucket
        raises: that is a misconfiguration, not a deletion)."""
        try:
            return self._retry.call(self._replicator.source.head, request.s3_bucket, request.s3_key)
        except errors.BucketNotFound:
            raise
        except errors.ObjectNotFound:
            return None


def _answerable(
    record: EventRecord, requests: list[ReplicationRequest]
) -> ReplicationRequest | None:
    """The request whose ledger record may answer this event: a copy event with an ETag,
    routed to one destination key, and not under OVERWRITE=always (which copies whatever
    the destination holds)."""
    if record.action != "copy" or record.etag is None or len(requests) != 1:
        return None
    if requests[0].overwrite == Overwrite.ALWAYS:
        return None
    return requests[0]


def _failure(
    record: EventRecord, key: str, exc: errors.ReplicatorError
) -> EventOutcome | errors.TransientError:
    """What a failure of this pass means for the event: delivering it again may help (a
    TransientError, or a key another replica holds), or it cannot (an outcome with `error`)."""
    if isinstance(exc, errors.TransientError):
        return exc
    if isinstance(exc, errors.UploadSessionLost):
        lost = errors.TransientError(exc.detail, cause="stream_broken")
        lost.__cause__ = exc
        return lost
    failed = _outcome(record, key, EventAction.SKIPPED, f"failed: {exc.kind}", exc.detail)
    return dataclasses.replace(failed, error_kind=exc.kind)


def _copied_from(current: ObjectInfo, request: ReplicationRequest) -> bool:
    """Whether the destination object records that it was copied from this source key."""
    recorded = current.metadata
    return (
        recorded.get(SOURCE_BUCKET) == request.s3_bucket
        and recorded.get(SOURCE_KEY) == request.s3_key
    )


def _log_delete(request: ReplicationRequest, outcome: str, what: str) -> None:
    """One log line and one count (DELETE_EVENTS, by `outcome`) per source delete settled."""
    metrics.DELETE_EVENTS.labels(outcome).inc()
    log.info(
        "deleted at the source: s3://%s/%s; gs://%s/%s: %s",
        request.s3_bucket,
        request.s3_key,
        request.gcs_bucket,
        request.gcs_key,
        what,
    )


def _outcome(
    record: EventRecord, key: str, action: EventAction, reason: str, error: str | None = None
) -> EventOutcome:
    return EventOutcome(record.bucket, key, record.event_name, action, reason, error)
