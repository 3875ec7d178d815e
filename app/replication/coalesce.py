"""Request collapsing for lookups: callers asking the same question at the same time share
one answer, and that answer always comes from a call that started after they asked.

A storm of duplicate notifications for one object (S3 delivers events at least once; callers
retry) then costs one HEAD and one metadata read per round trip instead of one per request.
Because a caller only joins a call that has not started yet, it never gets an answer older
than its own request: no notification can be answered with a stale "already replicated".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app import metrics

T = TypeVar("T")


@dataclass
class _Round(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


@dataclass
class _Key(Generic[T]):
    running: threading.Lock = field(default_factory=threading.Lock)  # one call at a time
    waiting: _Round[T] | None = None  # the next call, which late arrivals join
    users: int = 0


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._keys: dict[Hashable, _Key[T]] = {}

    def call(self, key: Hashable, fn: Callable[[], T]) -> T:
        with self._guard:
            state = self._keys.setdefault(key, _Key())
            state.users += 1
            leader = state.waiting is None
            if leader:
                state.waiting = _Round()
            round_ = state.waiting
            assert round_ is not None
        try:
            if leader:
                with state.running:  # after the previous call for this key has finished
                    with self._guard:
                        state.waiting = None  # arrivals from now on wait for the next call
                    try:
                        round_.result = fn()
                    except BaseException as exc:
                        round_.error = exc
                    finally:
                        round_.done.set()
            else:
                metrics.LOOKUPS_SHARED.inc()
                round_.done.wait()
        finally:
            with self._guard:
                state.users -= 1
                if state.users == 0:
                    del self._keys[key]
        if round_.error is not None:
            raise round_.error
        return round_.result  # type: ignore[return-value]
