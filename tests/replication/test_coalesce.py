"""Shared lookups: concurrent callers share one call, and never one that began before them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.replication.coalesce import Coalescer


def test_callers_that_arrive_together_share_one_call() -> None:
    coalescer: Coalescer[int] = Coalescer()
    release = threading.Event()
    calls: list[int] = []

    def lookup() -> int:
        calls.append(1)
        release.wait(5)
        return len(calls)

    with ThreadPoolExecutor(10) as pool:
        first = pool.submit(coalescer.call, "k", lookup)  # starts the first call
        while not calls:
            time.sleep(0.001)
        waiting = [pool.submit(coalescer.call, "k", lookup) for _ in range(9)]
        time.sleep(0.05)  # let all nine arrive while the first call is running
        release.set()
        results = [first.result(), *(f.result() for f in waiting)]

    # The first caller got the first call; the nine that arrived during it share the second.
    assert len(calls) == 2
    assert results == [1] + [2] * 9


def test_a_caller_never_gets_an_answer_from_a_call_that_began_before_it() -> None:
    coalescer: Coalescer[float] = Coalescer()
    started: list[float] = []

    def lookup() -> float:
        started.append(time.monotonic())
        time.sleep(0.01)
        return started[-1]

    def ask() -> tuple[float, float]:
        arrived = time.monotonic()
        return arrived, coalescer.call("k", lookup)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: ask(), range(200)))

    assert all(call_started >= arrived for arrived, call_started in answers)
    assert len(started) < 200  # and they did share


def test_different_keys_do_not_wait_for_each_other() -> None:
    coalescer: Coalescer[str] = Coalescer()
    slow_started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        slow_started.set()
        release.wait(5)
        return "slow"

    with ThreadPoolExecutor(2) as pool:
        pending = pool.submit(coalescer.call, "a", slow)
        slow_started.wait(5)
        assert coalescer.call("b", lambda: "fast") == "fast"  # returns while "a" still runs
        release.set()
        assert pending.result() == "slow"


def test_an_error_reaches_every_caller_that_shared_the_call() -> None:
    coalescer: Coalescer[int] = Coalescer()
    release = threading.Event()

    def failing() -> int:
        release.wait(5)
        raise LookupError("gone")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(coalescer.call, "k", failing) for _ in range(4)]
        time.sleep(0.05)
        release.set()
        for future in futures:
            with pytest.raises(LookupError):
                future.result()
    assert coalescer.call("k", lambda: 7) == 7  # nothing is left behind for the key
