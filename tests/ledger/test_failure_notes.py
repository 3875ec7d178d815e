"""The failure notes in a real Redis (valkey): newest first, bounded by the cap as they are
written, expiring, cleared once a key settles, and failing soft when Redis is gone."""

from __future__ import annotations

import redis

from app.dev import emulators
from app.ledger.failures import Failure, RedisFailureNotes
from tests.conftest import RedisServer

DB = 10


def note(n: int, key: str | None = None) -> Failure:
    return Failure("bucket", key or f"k{n}", f"failed: reason {n}", 1000.0 + n, 2, f"m{n}")


def test_notes_are_kept_newest_first_and_trimmed_to_the_cap(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url(DB))
    client.flushdb()
    notes = RedisFailureNotes(client, ttl=60, prefix="t", cap=5)
    notes.note([note(n) for n in range(4)])
    notes.note([note(n) for n in range(4, 9)])
    notes.note([note(9, key="k2")])  # a key noted again: its newest reason, once

    recent = notes.recent()
    assert [f.s3_key for f in recent] == ["k2", "k8", "k7", "k6", "k5"]
    assert recent[0] == note(9, key="k2")
    assert client.hlen("t:failures") == 5  # the hash is trimmed with the index
    assert 0 < client.pttl("t:failures") <= 60_000
    assert 0 < client.pttl("t:failures:by-time") <= 60_000
    assert [f.s3_key for f in notes.recent(limit=2)] == ["k2", "k8"]

    notes.clear([("bucket", "k8"), ("bucket", "never-noted")])
    assert [f.s3_key for f in notes.recent()] == ["k2", "k7", "k6", "k5"]
    assert client.hlen("t:failures") == 4
    client.close()


def test_notes_fail_soft_when_redis_is_gone() -> None:
    gone = RedisFailureNotes.from_url(f"redis://127.0.0.1:{emulators.free_port()}/0", ttl=60)
    gone.note([note(1)])  # nothing raised
    gone.clear([("bucket", "k1")])
    assert gone.recent() == []
