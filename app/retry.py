"""The retry policy, in one place: what is retried, how often, how long to wait, and by whom.

What is worth retrying is data (`RETRYABLE_STATUSES`, `RETRYABLE_S3_CODES`): adapters look
an answer up in `transient_cause` when they translate it, and raise `TransientError` for it or
a final error. `RetryPolicy` only looks at that classification. The SDKs' own retry loops are
off (boto3 `total_max_attempts=1`, urllib3 `retries=False`) so this policy rules alone.

Who retries (one rule, kept everywhere):
- the services retry whole idempotent calls: head, get, list, a part upload, a delete, a
  probe of a bucket's settings, each through `RetryPolicy.call`;
- an adapter retries only the steps inside a multi-request protocol it owns, whose input
  cannot be replayed from outside: a resumable upload's session start and chunks (the stream
  is read once), a simple upload's one request (its bytes are read from the stream first), a
  compose round. It is handed the same `RetryPolicy` to do so.
Nothing is retried twice over: a call the services retry never retries inside.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from app import metrics
from app.errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Request timeout, too many requests, and every server error: what S3 and GCS document as
# worth retrying, whatever the request was.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
# S3 also says so in error codes, sometimes on other statuses (a 400 RequestTimeout).
RETRYABLE_S3_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
_THROTTLED_STATUSES = frozenset({429, 503})
_THROTTLED_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException"})


def transient_cause(status: int, code: str = "") -> str | None:
    """The `TransientError.cause` of an answer worth retrying, or None when it is final."""
    if status not in RETRYABLE_STATUSES and code not in RETRYABLE_S3_CODES:
        return None
    if status in _THROTTLED_STATUSES or code in _THROTTLED_CODES:
        return "throttled"
    if status == 408 or code == "RequestTimeout":
        return "timeout"
    return "server_error"


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` retries after the first attempt. The wait before retry n is random in
    [0, base_delay * 2**n] (exponential backoff with full jitter), at least what a server's
    Retry-After asked for, and never more than `max_delay`."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return self._retrying(fn, *args, **kwargs)

    @functools.cached_property
    def _retrying(self) -> tenacity.Retrying:
        # Built once: constructing it costs more than a duplicate notification's lookups.
        # Its per-call state is thread-local, so one instance serves every thread.
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            before_sleep=_record_retry,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = tenacity.wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)
        delay = backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        if hinted:
            delay = max(delay, float(hinted))
        return min(delay, self.max_delay)


def _record_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    metrics.RETRIES.labels(getattr(exc, "cause", "unknown")).inc()
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s (attempt %d; trying again in %.2fs)", exc, state.attempt_number, delay)
