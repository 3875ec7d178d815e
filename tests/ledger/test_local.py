"""The in-process ledger: one holder per key at a time, the hand-over of what it wrote, and
a look again for a key handed over a moment ago."""

from __future__ import annotations

import threading
import time
from typing import Any

from app.ledger.local import RECENT_SECONDS, LocalLedger
from app.replication.replicator import Action, ReplicationRequest
from app.storage.base import ObjectInfo
from app.wiring import build
from tests.conftest import Buckets, make_settings
from tests.faults import FaultProxy


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

    # Nobody to wait for, but the key was handed over a moment ago: look again.
    with ledger.hold("b", "k") as held:
        assert (held.waited, held.handed_over) == (True, None)
    with ledger.hold("b", "other") as held:  # never handed over
        assert (held.waited, held.handed_over) == (False, None)
    ledger._recent[("b", "k")] -= RECENT_SECONDS  # as if it were longer ago
    with ledger.hold("b", "k") as held:
        assert (held.waited, held.handed_over) == (False, None)


def test_a_duplicate_that_looked_before_the_copy_landed_reads_and_writes_nothing(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy
) -> None:
    """A duplicate event looked at the destination (nothing there) just before the first copy
    landed, and takes the key just after that copy let it go. It looks at the destination
    again: no GET of the object, no second upload (before, GCS refused that upload with a 412
    after S3 had sent the object again)."""
    buckets.put("a.txt", b"first")
    services = build(make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest))
    request = ReplicationRequest(buckets.source, "a.txt", buckets.dest, "a.txt")

    def fetch() -> tuple[ObjectInfo, Any]:  # as the batch plan opens an object it listed
        return services.replicator.source.get(buckets.source, "a.txt", None)

    try:
        first = services.replicator.settle(request, None, None, fetch)
        assert first.action == Action.REPLICATED
        before = len(s3_proxy.seen("GET")), len(gcs_proxy.seen("POST"))

        duplicate = services.replicator.settle(request, None, None, fetch)  # stale looks

        assert duplicate.action == Action.SKIPPED
        assert (len(s3_proxy.seen("GET")), len(gcs_proxy.seen("POST"))) == before
        assert buckets.destination_bytes("a.txt") == b"first"
    finally:
        services.close()
