"""The retry policy, in one place: what is retried, how often, and how long to wait.

Adapters translate provider errors into `TransientError` (retryable) or a final error; this
module only looks at that classification. The SDKs' own retry loops are turned off
(boto3 `total_max_attempts=1`, google-cloud-storage `retry=None`) so this policy rules alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from app.errors import TransientError
from app.services import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    name = getattr(state.fn, "__qualname__", "call")
    log.warning("retrying %s in %.2fs after attempt %d: %s", name, delay, state.attempt_number, exc)
