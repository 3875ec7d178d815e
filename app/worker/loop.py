"""The worker's loop: receive, converge every record of each message, then delete or retry.

- Long polls (`SQS_WAIT_SECONDS`, 20 by default) for up to 10 messages, from
  ceil(WORKER_CONCURRENCY / 10) loops at once. A receive asks for no more messages than there
  are free places (`WORKER_CONCURRENCY` messages in flight at most), and hands what it got to
  a converging thread before receiving again, so messages that arrive one at a time are worked
  on together too. What one receive brings is converged together (the batch plan for copies).
- A message is deleted once every record in it is converged; a failure that redelivery may
  fix leaves it on the queue, invisible for a backoff that doubles with each receive. A key
  another replica holds (`errors.KeyLeased`, with a shared ledger) is no failure: its message
  is put back for `put_back` seconds (the holder is copying it), and the object not read.
- A body that can never be converged (no known shape, invalid JSON) is poison: logged with its
  id and receive count and left alone, so the queue's redrive policy moves it to the
  dead-letter queue after `maxReceiveCount` receives. It never stops the worker.
- A key that cannot be copied as things stand (errors.Unreplicable: archived, encrypted with
  a customer's key (SSE-C), a destination under retention) is not retried with a backoff:
  no wait helps until someone acts. The rule: with a dead-letter queue, its message is made
  visible again at once, so it reaches the dead-letter queue after `maxReceiveCount` quick
  receives, where an operator finds the key (and redrives it once the object is restored);
  without one, it is deleted, since it would otherwise come back until it expires. Either
  way it is logged at ERROR with the key and its reason, and counted in
  `replicator_messages_unreplicable{reason}` (and `replicator_objects_failed{reason}`).
- Why each key of a message left for redelivery failed is noted (`notes`: in the shared
  ledger's Redis), and cleared once a delivery converges it: `replicator failures` reads it.
  So is why a key that cannot be copied was sent on to the dead-letter queue.
- While a message is being converged, a heartbeat keeps it invisible (ChangeMessageVisibility),
  so a copy longer than the visibility timeout is never started by a second worker.
- `stop()`: no more receives; what is in flight finishes; a message received after the stop
  was asked for is made visible again at once. A receive cannot be interrupted, so an idle
  worker stops within `SQS_WAIT_SECONDS`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from app import errors, metrics
from app.events.converge import Converger, EventAction, EventOutcome
from app.events.parse import EventRecord, parse
from app.ledger.failures import Failure, FailureNotes, NoFailureNotes
from app.queues.sqs import MAX_MESSAGES, Message, SqsQueue
from app.retry import RetryPolicy

log = logging.getLogger(__name__)
MAX_BACKOFF = 15 * 60  # seconds a failed message stays invisible at most


def receive_loops(concurrency: int) -> int:
    """How many receive loops keep `concurrency` keys in flight, 10 messages a receive."""
    return max(1, -(-concurrency // MAX_MESSAGES))


class Worker:
    def __init__(
        self,
        queue: SqsQueue,
        events: Converger,
        retry: RetryPolicy,
        *,
        concurrency: int,
        visibility_timeout: int,
        backoff: float,
        wait: int,
        put_back: float = 1.0,
        put_back_max: float | None = None,
        dead_letter_queue: bool = True,
        notes: FailureNotes | None = None,
    ) -> None:
        """`dead_letter_queue`: the queue has a redrive policy (see the module's rule for
        keys that cannot be copied). `notes`: where the last reason each key failed is kept
        (`replicator failures`)."""
        self._queue = queue
        self._notes = notes or NoFailureNotes()
        self._events = events
        self._retry = retry
        self._receivers = receive_loops(concurrency)
        self._places = threading.Semaphore(concurrency)  # messages in flight, at most
        self._converging = ThreadPoolExecutor(concurrency, thread_name_prefix="converge")
        self._wait = wait
        self._visibility = max(1, visibility_timeout)
        self._backoff = backoff
        self._put_back = put_back
        self._put_back_max = max(put_back, put_back_max or put_back)
        self._dead_letter_queue = dead_letter_queue
        self._stopping = threading.Event()
        self.refused: errors.AccessDenied | None = None  # the queue refused ReceiveMessage
        self._in_flight: dict[str, tuple[Message, float]] = {}  # id -> (message, hidden until)
        self._guard = threading.Lock()

    def run(self) -> None:
        """Receive and converge until `stop()`; returns once what is in flight is done."""
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        heartbeat.start()
        loops = [
            threading.Thread(target=self._receive_loop, name=f"receive-{n}")
            for n in range(self._receivers)
        ]
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()
        self._converging.shutdown(wait=True)

    def stop(self) -> None:
        self._stopping.set()

    # --- receiving --------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while not self._stopping.is_set():
            places = self._take_places()
            if not places:
                continue
            try:
                messages = self._queue.receive(max_messages=places, wait=self._wait)
            except errors.AccessDenied as exc:
                # No receive permission (the first receive is where it shows): no retry can
                # fix a policy, so the worker stops and says so, as at start-up.
                self._give_back(places)
                self.refused = exc
                self.stop()
                return
            except errors.ReplicatorError as exc:
                self._give_back(places)
                log.warning("receiving from %s failed: %s", self._queue.url, exc)
                self._stopping.wait(min(self._backoff or 1.0, 5.0))
                continue
            self._give_back(places - len(messages))
            if not messages:
                continue
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            if self._stopping.is_set():  # received while stopping: give them back now
                self._release(messages)
                self._give_back(len(messages))
                return
            self._converging.submit(self._converge_and_free, messages)

    def _take_places(self) -> int:
        """Wait (a second at a time, to notice a stop) for one free place, then take up to a
        receive's worth of those free now."""
        if not self._places.acquire(timeout=1.0):
            return 0
        taken = 1
        while taken < MAX_MESSAGES and self._places.acquire(blocking=False):
            taken += 1
        return taken

    def _give_back(self, places: int) -> None:
        for _ in range(places):
            self._places.release()

    def _converge_and_free(self, messages: list[Message]) -> None:
        try:
            self._converge(messages)
        except Exception:  # a bug: the messages come back after their visibility timeout
            log.exception("converging %d messages failed unexpectedly", len(messages))
        finally:
            self._give_back(len(messages))

    def _converge(self, messages: list[Message]) -> None:
        records: list[EventRecord] = []
        owners: list[Message] = []
        done: list[Message] = []
        for message in messages:
            try:
                parsed = parse(message.body)
            except errors.InvalidRequest as exc:
                metrics.MESSAGES_POISONED.inc()
                log.error(
                    "poison message %s (received %d times) left for the dead-letter queue: %s",
                    message.id,
                    message.receive_count,
                    exc.detail,
                )
                continue
            if not parsed.records:  # a test event, an SNS confirmation: nothing to do
                done.append(message)
            records += parsed.records
            owners += [message] * len(parsed.records)
        failed: dict[str, str] = {}  # message id -> the first problem of its records
        leased: dict[str, str] = {}  # the same, for records whose key another replica holds
        stuck: dict[str, str] = {}  # the same, for keys that cannot be copied as they stand
        notes: list[Failure] = []  # why each record of a message left for redelivery failed
        with self._tracked([m for m in messages if m in owners]):
            outcomes = self._events.converge_all(records) if records else []
        now = time.time()
        for record, owner, outcome in zip(records, owners, outcomes, strict=True):
            problem = _problem(outcome)
            if isinstance(outcome, errors.KeyLeased):
                leased.setdefault(owner.id, problem)
            elif isinstance(outcome, EventOutcome) and _unreplicable(outcome):
                stuck.setdefault(owner.id, problem)
                self._count_unreplicable(owner, outcome)
                if self._dead_letter_queue:  # noted as it goes on to the dead-letter queue
                    notes.append(
                        Failure(
                            record.bucket, record.key, problem, now, owner.receive_count, owner.id
                        )
                    )
            elif problem:
                failed.setdefault(owner.id, problem)
                notes.append(
                    Failure(record.bucket, record.key, problem, now, owner.receive_count, owner.id)
                )
            elif isinstance(outcome, EventOutcome) and record.event_time is not None:
                if outcome.action != EventAction.IGNORED:
                    lag = max(0.0, now - record.event_time.timestamp())
                    route = self._events.destination_of(record) or "none"
                    metrics.EVENT_LAG_SECONDS.labels(route).observe(lag)
        undone = failed.keys() | leased.keys()
        if self._dead_letter_queue:  # else deleted: it would come back until it expired
            undone |= stuck.keys()
        done += [m for m in dict.fromkeys(owners) if m.id not in undone]
        self._delete(done)
        self._notes.note(notes)
        if self._notes.kept:  # one round trip a receive: a key converged has failed no more
            deleted = {m.id for m in done}
            self._notes.clear(
                [(r.bucket, r.key) for r, m in zip(records, owners, strict=True) if m.id in deleted]
            )
        for message in dict.fromkeys(owners):
            if message.id in failed:
                self._retry_later(message, failed[message.id])
            elif message.id in leased:
                self._put_back_for_a_while(message, leased[message.id])
            elif message.id in stuck and self._dead_letter_queue:
                self._release([message])  # on to the dead-letter queue, without waiting

    @staticmethod
    def _count_unreplicable(message: Message, outcome: EventOutcome) -> None:
        reason = outcome.error_kind or "unreplicable"
        metrics.MESSAGES_UNREPLICABLE.labels(reason).inc()
        log.error(
            "s3://%s/%s cannot be copied as it stands (%s), message %s received %d times: %s",
            outcome.s3_bucket,
            outcome.s3_key,
            reason,
            message.id,
            message.receive_count,
            outcome.error,
        )

    def _delete(self, messages: list[Message]) -> None:
        if not messages:
            return
        try:
            left = self._retry.call(self._queue.delete, messages)
        except errors.ReplicatorError as exc:
            log.warning(
                "deleting %d converged messages failed (they will come back): %s",
                len(messages),
                exc,
            )
            return
        for message in left:
            log.warning("SQS did not delete converged message %s; it will come back", message.id)
        metrics.MESSAGES_DELETED.inc(len(messages) - len(left))

    def _retry_later(self, message: Message, problem: str) -> None:
        # SQS counts whole seconds: round up, so that a backoff under a second is not none.
        delay = math.ceil(min(self._backoff * 2 ** (message.receive_count - 1), MAX_BACKOFF))
        metrics.MESSAGES_RETRIED.inc()
        log.warning(
            "message %s (received %d times) will be retried in %d s: %s",
            message.id,
            message.receive_count,
            delay,
            problem,
        )
        try:
            self._queue.hide(message, delay)
        except errors.ReplicatorError as exc:
            log.warning("could not delay message %s: %s", message.id, exc)

    def _put_back_for_a_while(self, message: Message, problem: str) -> None:
        """Hide a message whose key another replica is copying: when it comes back, the
        ledger's record answers it. Each put-back counts as a receive towards the queue's
        maxReceiveCount, as any redelivery does, so the delay doubles with each receive (from
        `put_back`, up to `put_back_max`, the lease's TTL): with the defaults (3 s, 30 s) five
        receives wait out 75 s of another replica's copy rather than 15 s."""
        grown = self._put_back * 2 ** (message.receive_count - 1)
        delay = math.ceil(min(grown, self._put_back_max))
        metrics.MESSAGES_PUT_BACK.inc()
        log.info("message %s put back for %d s: %s", message.id, delay, problem)
        try:
            self._queue.hide(message, delay)
        except errors.ReplicatorError as exc:
            log.warning("could not put back message %s: %s", message.id, exc)

    def _release(self, messages: list[Message]) -> None:
        for message in messages:
            try:
                self._queue.hide(message, 0)
            except errors.ReplicatorError as exc:
                log.warning("could not release message %s: %s", message.id, exc)

    # --- keeping messages invisible while they are converged --------------------------------

    @contextmanager
    def _tracked(self, messages: list[Message]) -> Iterator[None]:
        now = time.monotonic()
        with self._guard:
            for message in messages:
                self._in_flight[message.id] = (message, now + self._visibility)
        try:
            yield
        finally:
            with self._guard:
                for message in messages:
                    self._in_flight.pop(message.id, None)

    def _heartbeat(self) -> None:
        """Every third of the visibility timeout, extend the messages that would otherwise
        become visible within the next half of it."""
        period = max(0.5, self._visibility / 3)
        while True:
            time.sleep(period)
            now = time.monotonic()
            with self._guard:
                due = [m for m, until in self._in_flight.values() if until - now < period * 1.5]
                for message in due:
                    self._in_flight[message.id] = (message, now + self._visibility)
            for message in due:
                try:
                    self._queue.hide(message, self._visibility)
                except errors.ReplicatorError as exc:
                    log.warning("heartbeat for message %s failed: %s", message.id, exc)


def _unreplicable(outcome: EventOutcome) -> bool:
    return outcome.error is not None and outcome.error_kind in errors.UNREPLICABLE_KINDS


def _problem(outcome: EventOutcome | errors.TransientError) -> str:
    """Why the record is not converged, or "" when it is."""
    if isinstance(outcome, errors.TransientError):
        return f"{outcome.kind}: {outcome.detail}"
    if outcome.error is not None and outcome.action != EventAction.IGNORED:
        return f"{outcome.reason}: {outcome.error}"
    return ""
