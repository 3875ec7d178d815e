"""The in-process ledger: one holder per key at a time, and the hand-over of what it wrote."""

from __future__ import annotations

import threading
import time

from app.ledger.local import LocalLedger
from app.storage.base import ObjectInfo


def test_one_holder_at_a_time_per_key_and_other_keys_do_not_wait() -> None:
    ledger = LocalLedger()
    inside: list[str] = []
    overlap: list[str] = []
    gate = threading.Lock()

    def work(key: str) -> None:
        with ledger.hold("b", key):
            with gate:
                if key in inside:
                    overlap.append(key)
                inside.append(key)
            time.sleep(0.005)
            with gate:
                inside.remove(key)

    threads = [threading.Thread(target=work, args=(f"k{n % 3}",)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == []
    assert ledger._slots == {}  # nothing is kept once nobody holds or waits


def test_the_next_holder_is_handed_what_the_last_one_recorded() -> None:
    ledger = LocalLedger()
    written = ObjectInfo(bucket="b", key="k", size=3, generation=7)
    first_holds = threading.Event()
    release = threading.Event()
    seen: list[tuple[bool, ObjectInfo | None]] = []

    def first() -> None:
        with ledger.hold("b", "k") as held:
            first_holds.set()
            release.wait(5)
            held.hand_over(written)

    def second() -> None:
        with ledger.hold("b", "k") as held:
            seen.append((held.waited, held.handed_over))

    one = threading.Thread(target=first)
    one.start()
    assert first_holds.wait(5)
    two = threading.Thread(target=second)
    two.start()
    time.sleep(0.05)  # the second is waiting now
    release.set()
    one.join()
    two.join()
    assert seen == [(True, written)]

    with ledger.hold("b", "k") as held:  # nobody to wait for: nothing handed over
        assert (held.waited, held.handed_over) == (False, None)
