"""What could not be replicated, and doing it again: the queue's dead-letter queue (DLQ), read
and redriven, joined with the last reason the worker noted for each key.

- `failures()`: every message in the DLQ, one line per S3 key it names (a body that is no
  event at all: one line, its reason the parser's), with the worker's last reason for the key
  when one was noted; then the keys noted as failing whose message is still on the queue,
  being retried. The DLQ is read by receiving its messages for `PEEK_SECONDS` and making
  them visible again at once: nothing is moved or deleted.
- `redrive()`: puts DLQ messages back on the queue. Everything, with nothing to filter, is
  SQS's own message move task where the endpoint offers it; otherwise (a filter, a cap, a dry
  run, or an endpoint without move tasks) each message is received, sent to the queue, then
  deleted from the DLQ, in that order, so a crash between the two duplicates a message
  (converging it twice changes nothing) rather than loses it. Messages received and not
  chosen are made visible again at the end. One redrive reads the DLQ for five minutes at
  most (`RedriveReport.more` says when messages remain: run it again).
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app import errors
from app.events.parse import parse
from app.ledger.failures import CAP, Failure, FailureNotes
from app.queues.sqs import Message, SqsQueue
from app.retry import RetryPolicy

PEEK_SECONDS = 30  # how long a message read from the DLQ stays invisible, at most
REDRIVE_SECONDS = 600  # the same for a redrive; it stops before they come back
NOT_KEPT = "not kept without LEDGER_URL: see the worker's log for this message id"
NOT_NOTED = "none noted (a failure before the notes were kept, or Redis did not answer)"


@dataclass(frozen=True)
class FailedKey:
    """One key that could not be replicated. `state`: "dead_letter" (its message is in the
    DLQ) or "retrying" (still on the queue). `s3_key` None: a body that names no key."""

    state: str
    s3_bucket: str | None
    s3_key: str | None
    when: float  # the last failure noted, else when the message was sent (epoch seconds)
    tries: int  # receives of its message, as the worker or SQS last counted them
    reason: str
    message_id: str


@dataclass(frozen=True)
class Moved:
    message_id: str
    keys: list[str]  # "s3://bucket/key" of each record, or the parser's complaint


@dataclass
class RedriveReport:
    moved: list[Moved]
    task: str | None = None  # SQS's move task handle, when it moves everything itself
    task_messages: int = 0  # the DLQ's depth when the task started
    more: bool = False  # stopped before the DLQ was read to its end (run it again)


class DeadLetters:
    def __init__(self, queue: SqsQueue, notes: FailureNotes, retry: RetryPolicy) -> None:
        self._queue = queue
        self._notes = notes
        self._retry = retry

    def dead_letter_queue(self) -> SqsQueue:
        """The queue's DLQ; `errors.InvalidRequest` when its redrive policy names none."""
        found = self._retry.call(self._queue.dead_letter_queue)
        if found is None:
            raise errors.InvalidRequest(
                f"{self._queue.url} has no redrive policy naming a dead-letter queue"
            )
        return found

    def failures(self, limit: int = CAP) -> list[FailedKey]:
        """At most `limit` failed keys: those of the DLQ's messages first, then the rest
        the worker noted (see the module's text)."""
        noted = {(f.s3_bucket, f.s3_key): f for f in self._notes.recent()}
        found: list[FailedKey] = []
        dlq = self.dead_letter_queue()
        with self._peeking(dlq) as messages:
            for message in messages:
                found += _failed_keys(message, noted, NOT_NOTED if self._notes.kept else NOT_KEPT)
                if len(found) >= limit:
                    return found[:limit]
        listed = {(f.s3_bucket, f.s3_key) for f in found}
        for (bucket, key), note in noted.items():
            if (bucket, key) not in listed:
                found.append(_from_note("retrying", note, note.message_id))
        return found[:limit]

    def redrive(
        self,
        include: str | None = None,
        max_messages: int | None = None,
        *,
        dry_run: bool = False,
        on_moved: Callable[[Moved], None] = lambda _: None,
    ) -> RedriveReport:
        """Put DLQ messages back on the queue: those with a key matching the glob `include`
        (all without one), `max_messages` at most; with `dry_run`, only say which."""
        dlq = self.dead_letter_queue()
        if include is None and max_messages is None and not dry_run:
            depth = self._retry.call(dlq.depth).visible
            task = self._retry.call(dlq.start_move_task, self._queue.arn())
            if task is not None:
                return RedriveReport([], task, depth)
        report = RedriveReport([])
        with self._peeking(dlq, REDRIVE_SECONDS) as messages:
            for message in messages:
                if max_messages is not None and len(report.moved) >= max_messages:
                    break
                keys = _keys(message)
                if include is not None and not any(
                    fnmatch.fnmatchcase(key.split("/", 3)[-1], include) for key in keys
                ):
                    continue
                if not dry_run:
                    refused = self._retry.call(self._queue.send_batch, [message.body])
                    if refused:
                        raise errors.TransientError(
                            f"SQS refused message {message.id}: {refused[0]}"
                        )
                    self._retry.call(dlq.delete, [message])  # sent first: never lost
                    messages.forget(message)
                moved = Moved(message.id, keys)
                report.moved.append(moved)
                on_moved(moved)
            report.more = messages.cut_short
        return report

    @contextlib.contextmanager
    def _peeking(self, dlq: SqsQueue, hidden: int = PEEK_SECONDS) -> Iterator[_Peek]:
        peek = _Peek(dlq, self._retry, hidden)
        try:
            yield peek
        finally:
            peek.release()


class _Peek:
    """Every DLQ message once, each received for `hidden` seconds, read for half that at
    most (`cut_short` says whether it stopped there): those not `forget`-ten (deleted) are
    made visible again by `release`."""

    def __init__(self, dlq: SqsQueue, retry: RetryPolicy, hidden: int) -> None:
        self._dlq = dlq
        self._retry = retry
        self._hidden = hidden
        self._held: dict[str, Message] = {}
        self.cut_short = False

    def __iter__(self) -> Iterator[Message]:
        seen: set[str] = set()
        deadline = time.monotonic() + self._hidden / 2  # before the first come back
        while time.monotonic() < deadline:
            batch = self._retry.call(self._dlq.receive, 10, 1, self._hidden)
            new = [m for m in batch if m.id not in seen]
            seen.update(m.id for m in batch)
            self._held.update((m.id, m) for m in batch)
            if not new:
                return
            yield from new
        self.cut_short = True

    def forget(self, message: Message) -> None:
        self._held.pop(message.id, None)

    def release(self) -> None:
        for message in self._held.values():
            try:
                self._dlq.hide(message, 0)
            except errors.ReplicatorError:
                pass  # visible again once its time is up anyway


def _keys(message: Message) -> list[str]:
    try:
        records = parse(message.body).records
    except errors.InvalidRequest as exc:
        return [f"not an event: {exc.detail}"]
    return [f"s3://{r.bucket}/{r.key}" for r in records]


def _failed_keys(
    message: Message, noted: dict[tuple[str, str], Failure], unknown: str
) -> list[FailedKey]:
    sent = message.sent_at or 0.0
    try:
        records = parse(message.body).records
    except errors.InvalidRequest as exc:
        reason = f"poison: not an event the worker can converge ({exc.detail})"
        return [
            FailedKey("dead_letter", None, None, sent, message.receive_count, reason, message.id)
        ]
    found = []
    for record in records:
        note = noted.get((record.bucket, record.key))
        if note is not None:
            found.append(_from_note("dead_letter", note, message.id))
        else:
            found.append(
                FailedKey(
                    "dead_letter",
                    record.bucket,
                    record.key,
                    sent,
                    message.receive_count,
                    unknown,
                    message.id,
                )
            )
    return found


def _from_note(state: str, note: Failure, message_id: str) -> FailedKey:
    return FailedKey(
        state, note.s3_bucket, note.s3_key, note.when, note.tries, note.reason, message_id
    )
