"""The HTTP event intake: one body from S3 (directly or through SNS) or EventBridge, taken
whole, and what became of it.

`EventIntake.take(body)` decides, in this order:

1. the body must be a JSON object (else `errors.UnrecognisedEvent`, 422);
2. an SNS message must verify (`SnsVerifier.verify`) before anything inside it is parsed or
   any cloud is touched (else `errors.Forbidden`, 403); a raw SNS delivery (the S3 event
   itself) carries no signature and is taken like any other caller's body;
3. the body must have one of the shapes `app.events.parse` knows (else 422);
4. a SubscriptionConfirmation is confirmed (a GET of its SubscribeURL), an
   UnsubscribeConfirmation is logged, an S3 test event is acknowledged: nothing is converged
   or queued for them;
5. records are put on the queue as the body came, when there is one (`Queued`), or else
   converged now (`Converged`, one outcome per record, in order).

Raises `errors.TransientError` (503) when delivering the same body again may succeed: a
record could not be converged now (the records converged meanwhile stay so, and a
redelivery finds them `skipped`), the queue refused the body, or SNS could not be reached
to confirm a subscription.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app import errors
from app.events import parse
from app.events.converge import Converger, EventOutcome
from app.events.sns import SnsVerifier
from app.queues.sqs import SqsQueue
from app.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Converged:
    """Every record of the body converged, in order; none for a body that carries no records
    (a test event, an SNS confirmation)."""

    outcomes: tuple[EventOutcome, ...] = ()


@dataclass(frozen=True)
class Queued:
    """The body is on the queue, as it came, for the worker to converge."""

    message_id: str


class EventIntake:
    def __init__(
        self,
        verifier: SnsVerifier | None,
        converger: Converger,
        queue: SqsQueue | None,
        retry: RetryPolicy,
    ) -> None:
        """`verifier` None takes SNS messages without checking them (emulators only), and
        confirms no subscription. With a `queue`, records are queued, never converged here."""
        self._verifier = verifier
        self._converger = converger
        self._queue = queue
        self._retry = retry

    def take(self, body: bytes) -> Converged | Queued:
        """Verify, recognise, then confirm, queue or converge `body` (see the module)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.UnrecognisedEvent(f"the body is not UTF-8: {exc}") from None
        document = parse.load(text)
        if self._verifier is not None and parse.is_sns_message(document):
            self._verifier.verify(document)
        parsed = parse.parse(document)
        if parsed.kind == "subscription_confirmation":
            self._confirm(parsed)
            return Converged()
        if parsed.kind == "unsubscribe_confirmation":
            assert parsed.sns is not None
            log.info("SNS unsubscribed this endpoint from %s; nothing to do", parsed.sns.topic_arn)
            return Converged()
        if parsed.kind == "test_event":
            return Converged()
        if self._queue is not None:
            return Queued(self._enqueue(self._queue, text))
        return Converged(self._converge(parsed.records))

    def _confirm(self, parsed: parse.Parsed) -> None:
        assert parsed.sns is not None
        topic = parsed.sns.topic_arn
        if self._verifier is None:
            # Unverified, the SubscribeURL could point anywhere: it is for a person to visit.
            log.warning(
                "not confirming the subscription to %s: SNS_VERIFY_SIGNATURES=false; "
                "visit its SubscribeURL to confirm it: %s",
                topic,
                parsed.sns.subscribe_url,
            )
            return
        self._verifier.confirm_subscription(parsed.document)
        log.info("confirmed the SNS subscription to %s", topic)

    def _enqueue(self, queue: SqsQueue, text: str) -> str:
        try:
            return self._retry.call(queue.send, text)
        except errors.ReplicatorError as exc:
            # Whatever SQS said, the sender keeps the event and delivers it again.
            raise errors.TransientError(f"the event could not be queued: {exc.detail}") from exc

    def _converge(self, records: tuple[parse.EventRecord, ...]) -> tuple[EventOutcome, ...]:
        outcomes = self._converger.converge_all(records)
        pending = [o for o in outcomes if isinstance(o, errors.TransientError)]
        if pending:
            first = pending[0]
            raise errors.TransientError(
                f"{len(pending)} of {len(outcomes)} records could not be settled now "
                f"(first: {first.detail}); deliver the event again",
                cause=first.cause,
                retry_after=first.retry_after,
            )
        return tuple(o for o in outcomes if isinstance(o, EventOutcome))
