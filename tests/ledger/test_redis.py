"""The shared ledger on a real Redis (valkey-server): leases across "replicas" (two ledgers on
one server), entries of what was settled, and a Redis that dies and comes back."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from app import errors
from app.config import Settings
from app.dev import emulators
from app.events.converge import SETTLED, EventAction
from app.events.parse import EventRecord, parse
from app.ledger.base import Announced, LedgerEntry
from app.ledger.redis import RedisLedger
from app.main import create_app
from app.names import SOURCE_BUCKET, SOURCE_ETAG, SOURCE_KEY
from app.policy import Overwrite
from app.replication.replicator import Action, ReplicationRequest
from app.storage.base import Checksums, ObjectInfo
from app.wiring import build
from tests.conftest import Buckets, RedisServer, make_settings
from tests.events.samples import converge, s3_notification, s3_record
from tests.faults import FaultProxy

Ledgers = list[RedisLedger]


@pytest.fixture
def ledgers(redis_server: RedisServer) -> Iterator[Any]:
    """`make(**options)`: a ledger on the session's Redis; ledgers made by one test share a key
    prefix of their own (they are replicas of one service), and are closed at the end."""
    made: Ledgers = []
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def make(url: str | None = None, **options: Any) -> RedisLedger:
        options = {"lock_ttl": 5.0, "entry_ttl": 60, "prefix": prefix, **options}
        made.append(RedisLedger.from_url(url or redis_server.url(), **options))
        return made[-1]

    yield make
    for ledger in made:
        ledger.close()


def metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def copied(key: str = "k", etag: str = "e1", generation: int = 7) -> ObjectInfo:
    metadata = {SOURCE_BUCKET: "src", SOURCE_KEY: key, SOURCE_ETAG: etag}
    return ObjectInfo("dst", key, 3, metadata=metadata, generation=generation, etag="x")


def test_two_replicas_never_hold_one_key_at_once(ledgers: Any) -> None:
    replicas = [ledgers(), ledgers()]
    inside: list[int] = []
    overlaps: list[int] = []
    gate = threading.Lock()

    def work(n: int) -> None:
        with replicas[n % 2].hold("dst", "k"):
            with gate:
                if inside:
                    overlaps.append(n)
                inside.append(n)
            time.sleep(0.01)
            with gate:
                inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert len(inside) == 0


def test_a_replica_is_handed_what_the_holder_it_waited_for_recorded(ledgers: Any) -> None:
    first, second = ledgers(), ledgers()
    holding, seen = threading.Event(), []

    def wait_then_hold() -> None:
        holding.wait()
        with second.hold("dst", "k") as held:
            seen.append((held.waited, held.handed_over))

    thread = threading.Thread(target=wait_then_hold)
    thread.start()
    with first.hold("dst", "k") as held:
        holding.set()
        time.sleep(0.2)  # the second replica is polling for the lease meanwhile
        held.hand_over(copied())
    thread.join()
    assert seen == [(True, copied())]


def test_a_stale_holder_cannot_delete_a_newer_lease(
    ledgers: Any, redis_server: RedisServer
) -> None:
    first, second = ledgers(), ledgers()
    raw = redis.Redis.from_url(redis_server.url())
    second_holds, second_may_go = threading.Event(), threading.Event()
    leases: list[bytes] = []

    def newer_holder() -> None:
        with second.hold("dst", "k"):
            second_holds.set()
            second_may_go.wait()

    with first.hold("dst", "k"):
        [lease_key] = list(raw.scan_iter(f"{first._prefix}:lease:dst/k"))
        raw.delete(lease_key)  # the first lease expired (a long pause, a Redis restart)
        thread = threading.Thread(target=newer_holder)
        thread.start()
        assert second_holds.wait(5)
        leases.append(raw.get(lease_key) or b"")
    # The first holder left: the second's lease is still there, with the second's token.
    assert raw.get(lease_key) == leases[0] != b""
    second_may_go.set()
    thread.join()
    assert raw.get(lease_key) is None


def test_renewal_keeps_a_lease_through_a_hold_longer_than_its_ttl(ledgers: Any) -> None:
    holder, other = ledgers(lock_ttl=1.0), ledgers(lock_ttl=1.0)
    with holder.hold("dst", "k"):
        time.sleep(2.5)  # two and a half TTLs: only renewal keeps the lease
        with pytest.raises(errors.KeyLeased):
            with other.hold("dst", "k", wait=False):
                pass
    with other.hold("dst", "k", wait=False) as held:
        assert held.waited is False


def entry_of(ledger: RedisLedger, bucket: str, key: str) -> LedgerEntry | None:
    with ledger.look_up([(bucket, key)]) as [entry]:
        return entry


def test_entries_round_trip_never_go_back_and_expire(ledgers: Any) -> None:
    ledger = ledgers(entry_ttl=1)
    assert entry_of(ledger, "dst", "k") is None
    written = ObjectInfo(
        "dst",
        "k",
        3,
        metadata={SOURCE_BUCKET: "src", SOURCE_KEY: "k", SOURCE_ETAG: "e1"},
        checksums=Checksums(md5="bWQ1", crc32c="Y3Jj"),
        generation=7,
    )
    ledger.note("dst", "k", LedgerEntry.of_copy(written, "0A"))
    assert entry_of(ledger, "dst", "k") == LedgerEntry("src", "k", written, "0A")

    ledger.note("dst", "k", LedgerEntry("src", "k", None, "09"))  # an older delete: refused
    assert entry_of(ledger, "dst", "k") == LedgerEntry("src", "k", written, "0A")
    ledger.note("dst", "k", LedgerEntry("src", "k", None, "0a01"))  # a newer one: a tombstone
    assert entry_of(ledger, "dst", "k") == LedgerEntry("src", "k", None, "0a01")

    time.sleep(1.2)  # LEDGER_TTL is one second here
    assert entry_of(ledger, "dst", "k") is None


def test_a_look_up_leases_the_keys_it_knows_nothing_of_until_its_block_ends(
    ledgers: Any,
) -> None:
    mine, other = ledgers(wait=False), ledgers(wait=False)
    other.note("dst", "old", LedgerEntry.of_copy(copied("old")))
    with mine.look_up([("dst", "new"), ("dst", "old"), ("dst", "unused")]) as found:
        assert found == [None, LedgerEntry.of_copy(copied("old")), None]
        for key in ("new", "unused"):
            with pytest.raises(errors.KeyLeased), other.hold("dst", key):
                pass
        with other.hold("dst", "old") as held:  # a key with an entry is not leased
            assert held.entry == LedgerEntry.of_copy(copied("old"))
        with mine.hold("dst", "new") as held:  # this process's lease, claimed: no wait
            assert (held.waited, held.entry) == (False, None)
            held.hand_over(copied("new"), "0B")
        with other.hold("dst", "new") as held:  # let go with the hold, entry written
            assert held.entry == LedgerEntry.of_copy(copied("new"), "0B")
    with other.hold("dst", "unused"):  # never claimed: let go with the block
        pass


def created_event(buckets: Buckets, key: str, sequencer: str) -> EventRecord:
    etag = buckets.s3.head_object(Bucket=buckets.source, Key=key)["ETag"].strip('"')
    fields = {"eTag": etag, "sequencer": sequencer}
    record = s3_record(key, "ObjectCreated:Put", buckets.source, **fields)
    del record["s3"]["object"]["versionId"]  # an unversioned bucket
    [parsed] = parse(json.dumps(s3_notification(record))).records
    return parsed


def test_an_event_already_settled_costs_no_request_to_either_cloud(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    buckets.put("a.txt", b"first")
    settings = make_settings(
        s3_proxy.url, gcs_proxy.url, buckets.dest, ledger_url=redis_server.url(1)
    )
    services = build(settings)
    try:
        event = created_event(buckets, "a.txt", "0055AED6DCD90281E5")
        assert converge(services.events, event).action == EventAction.REPLICATED
        before = len(s3_proxy.requests), len(gcs_proxy.requests)

        again = converge(services.events, event)  # a duplicate delivery
        older = created_event(buckets, "a.txt", "0055AED6DCD90281E4")  # a late, older event
        late = services.events.converge_all([older])[0]

        assert (again.action, again.reason) == (EventAction.SKIPPED, SETTLED)
        assert not isinstance(late, errors.TransientError)
        assert (late.action, late.reason) == (EventAction.SKIPPED, SETTLED)
        assert (len(s3_proxy.requests), len(gcs_proxy.requests)) == before
        assert buckets.destination_bytes("a.txt") == b"first"

        buckets.put("a.txt", b"second")  # a newer version: its event is not settled yet
        newer = converge(services.events, created_event(buckets, "a.txt", "0055AED6DCD90281F0"))
        assert newer.action == EventAction.REPLICATED
        assert buckets.destination_bytes("a.txt") == b"second"
    finally:
        services.close()


def test_a_replica_leasing_a_key_its_last_holder_just_settled_asks_neither_cloud(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """Between a worker's looks (the ledger knew nothing, the destination's listing had no
    such object) and its lease, another replica copied the object and let the lease go. The
    entry read as the lease is taken answers: no GET of the object, no second upload."""
    buckets.put("a.txt", b"first")
    url = redis_server.url(3)
    settings = make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest, ledger_url=url)
    first, second = (build(settings, wait_for_leases=False) for _ in range(2))
    event = created_event(buckets, "a.txt", "0A")
    announced = Announced(event.etag, event.version_id, event.sequencer)
    request = ReplicationRequest(
        buckets.source, "a.txt", buckets.dest, "a.txt", Overwrite.DIFFERENT, announced
    )

    def fetch() -> tuple[ObjectInfo, Any]:  # as the batch plan opens an object it listed
        return second.replicator.source.get(buckets.source, "a.txt", event.etag)

    try:
        assert converge(first.events, event).action == EventAction.REPLICATED
        before = len(s3_proxy.requests), len(gcs_proxy.requests)

        result = second.replicator.settle(request, None, None, fetch)

        assert (result.action, result.reason) == (Action.SKIPPED, "settled meanwhile (ledger)")
        assert (len(s3_proxy.requests), len(gcs_proxy.requests)) == before
        assert buckets.destination_bytes("a.txt") == b"first"
    finally:
        first.close()
        second.close()


def test_a_key_another_replica_holds_is_put_back_by_the_worker_and_waited_for_by_the_service(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """The worker's wiring does not wait for a lease: it answers KeyLeased without reading the
    object (in the batch plan and one by one). The service's waits, then copies."""
    data = buckets.put("a.txt", b"leased" * 1000)
    url = redis_server.url(2)
    settings = make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest, ledger_url=url)
    worker, service = build(settings, wait_for_leases=False), build(settings)
    other = RedisLedger.from_url(url, lock_ttl=5.0, entry_ttl=60)  # another replica
    request = ReplicationRequest(buckets.source, "a.txt", buckets.dest, "a.txt")
    results: list[Any] = []
    try:
        event = created_event(buckets, "a.txt", "01")
        [removed] = parse(
            json.dumps(s3_notification(s3_record("a.txt", "ObjectRemoved:Delete", buckets.source)))
        ).records
        with other.hold(buckets.dest, "a.txt"):
            [batched] = worker.events.converge_all([event])
            [alone] = worker.events.converge_all([removed])  # not batched: looked at alone
            assert s3_proxy.seen("GET", f"/{buckets.source}/a.txt") == []  # not read
            waiting = threading.Thread(
                target=lambda: results.append(service.replicator.replicate(request))
            )
            waiting.start()
            time.sleep(0.5)
            assert results == []  # still waiting for the lease
        waiting.join(timeout=10)

        assert isinstance(batched, errors.KeyLeased)
        assert isinstance(alone, errors.KeyLeased)
        assert len(s3_proxy.seen("GET", f"/{buckets.source}/a.txt")) == 1  # the service's
        [result] = results
        assert result.action == Action.REPLICATED
        assert buckets.destination_bytes("a.txt") == data
    finally:
        other.close()
        worker.close()
        service.close()


def test_work_goes_on_while_redis_is_down_and_the_ledger_comes_back_by_itself(
    buckets: Buckets,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_process = RedisServer(emulators.free_port()).start()
    settings = make_settings(
        moto_server.url, gcs_server.url, buckets.dest, ledger_url=redis_process.url()
    )
    services = build(settings)
    ledger = services.ledger
    assert isinstance(ledger, RedisLedger)
    ledger._link._retry_every = 0.2  # probe often, so the test need not wait long
    try:
        buckets.put("a.txt", b"before")
        event = created_event(buckets, "a.txt", "01")
        assert converge(services.events, event).action == EventAction.REPLICATED
        assert metric("replicator_ledger_up") == 1
        fallbacks = metric("replicator_ledger_fallbacks_total")

        redis_process.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="app.ledger.redis"):
            buckets.put("a.txt", b"during")
            during = converge(services.events, created_event(buckets, "a.txt", "02"))
            again = converge(services.events, created_event(buckets, "a.txt", "02"))
            assert ledger.state == "down"
            down_lines = [r.getMessage() for r in caplog.records]

        assert during.action == EventAction.REPLICATED
        assert again.action == EventAction.SKIPPED  # decided from the clouds
        assert again.reason != SETTLED
        assert buckets.destination_bytes("a.txt") == b"during"
        assert metric("replicator_ledger_up") == 0
        assert metric("replicator_ledger_fallbacks_total") > fallbacks
        assert [line for line in down_lines if "unreachable" in line] == [
            "ledger unreachable, deciding from the clouds until it answers (ConnectionError)"
        ]

        redis_process.start()  # the same port, empty: no persistence
        deadline = time.monotonic() + 5
        while ledger.state != "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ledger.state == "up"
        assert metric("replicator_ledger_up") == 1
        settled = converge(services.events, created_event(buckets, "a.txt", "03"))
        assert settled.action == EventAction.SKIPPED  # noted again in the new Redis:
        assert converge(services.events, created_event(buckets, "a.txt", "03")).reason == SETTLED
    finally:
        services.close()
        redis_process.stop()


def test_the_ledger_url_and_its_password_stay_out_of_logs_and_health(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = RedisServer(emulators.free_port(), password=password).start()
    wrong = RedisServer(server.port, password=f"not-{password}")
    try:
        for url, state in ((server.url(), "up"), (wrong.url(), "down")):
            configured = settings.model_copy(update={"ledger_url": SecretStr(url)})
            with caplog.at_level(logging.DEBUG), TestClient(create_app(configured)) as client:
                health = client.get("/health")
                ready = client.get("/ready")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "ledger": state}
            assert password not in health.text
            assert password not in caplog.text
            assert password not in repr(configured)
    finally:
        server.stop()


def round_trips(raw: redis.Redis) -> int:
    """Requests the server has read from its clients so far: one per round trip (a pipeline
    or a script is one)."""
    return int(raw.info("stats")["total_reads_processed"])


def test_a_new_object_s_event_costs_about_one_round_trip_to_redis(
    buckets: Buckets, moto_server: emulators.Emulator, gcs_server: emulators.Emulator
) -> None:
    """The ledger's cost on the worker's path, for what it mostly sees (receives of new
    objects): one look-up of the entries of a whole receive, which also leases the keys
    with none, then per key the lease let go with the entry written in the same step."""
    server = RedisServer(emulators.free_port()).start()  # its own: nobody else's requests
    settings = make_settings(moto_server.url, gcs_server.url, buckets.dest, ledger_url=server.url())
    worker = build(settings, wait_for_leases=False)
    raw = redis.Redis.from_url(server.url())
    count = 10  # a receive's worth
    spent = []
    try:
        # A receive that opens connections (the pool grows with the threads that overlap)
        # costs more: the first, which also loads the scripts, and maybe one more.
        for receive in range(6):
            keys = [f"new-{receive}-{n}.txt" for n in range(count)]
            for key in keys:
                buckets.put(key, key.encode())
            events = [created_event(buckets, key, f"{n + 1:02X}") for n, key in enumerate(keys)]
            before = round_trips(raw)
            outcomes = worker.events.converge_all(events)
            spent.append(round_trips(raw) - before - 1)  # less the INFO asking
            assert [getattr(o, "action", o) for o in outcomes] == [EventAction.REPLICATED] * count
            assert all(buckets.destination_bytes(key) == key.encode() for key in keys)
        print(f"round trips to Redis per receive of {count} new objects: {spent}")
        assert min(spent[1:]) == 1 + count
    finally:
        raw.close()
        worker.close()
        server.stop()
