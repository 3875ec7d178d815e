"""The last reason each key failed, kept where `replicator failures` can read it.

A worker that leaves a message for redelivery notes, for each S3 key of it that failed, why,
when, and how many times the message was received; a message converged after a redelivery
clears its keys' notes. With a shared ledger (LEDGER_URL) the notes live in its Redis: one
hash (source "bucket/key" -> the note as JSON) and one sorted set by time, trimmed to the
newest `cap` in the script that writes them, both expiring `ttl` seconds after the last note,
so they never grow without bound. Like the ledger, notes fail soft: Redis not answering
costs the note, never the copy.

Without a shared ledger there is nowhere another process could read, so nothing is kept
(`NoFailureNotes`): the dead-letter queue still names each failed message's keys, and the
worker's log line for the message (by its id) says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

CAP = 1000  # notes kept at most

# KEYS[1] the hash, KEYS[2] the index; ARGV[1] the cap, ARGV[2] the TTL in milliseconds, then
# (field, note, score) for each note.
_NOTE = """
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Failure:
    """Why s3://`s3_bucket`/`s3_key` was last left unconverged: `when` (seconds since the
    epoch), after `tries` receives of message `message_id`."""

    s3_bucket: str
    s3_key: str
    reason: str
    when: float
    tries: int
    message_id: str


class FailureNotes(Protocol):
    kept: bool  # False: nothing is noted (no shared ledger)

    def note(self, failures: Sequence[Failure]) -> None:
        """Keep these as the last reasons of their keys; never fails."""
        ...

    def clear(self, keys: Sequence[tuple[str, str]]) -> None:
        """Forget the notes of these (bucket, key): they converged; never fails."""
        ...

    def recent(self, limit: int = CAP) -> list[Failure]:
        """The newest notes first, `limit` at most; [] when the store does not answer."""
        ...


class NoFailureNotes:
    kept = False

    def note(self, failures: Sequence[Failure]) -> None:
        pass

    def clear(self, keys: Sequence[tuple[str, str]]) -> None:
        pass

    def recent(self, limit: int = CAP) -> list[Failure]:
        return []


class RedisFailureNotes:
    kept = True

    def __init__(self, client: Any, *, ttl: int, prefix: str = "replicator", cap: int = CAP):
        self._client = client
        self._hash = f"{prefix}:failures"
        self._index = f"{prefix}:failures:by-time"
        self._ttl_ms = ttl * 1000
        self._cap = cap
        self._note = client.register_script(_NOTE)

    @classmethod
    def from_url(cls, url: str, *, ttl: int, socket_timeout: float = 1.0) -> RedisFailureNotes:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        return cls(client, ttl=ttl)

    def note(self, failures: Sequence[Failure]) -> None:
        if not failures:
            return
        args: list[Any] = [self._cap, self._ttl_ms]
        for failure in failures:
            args += [_field(failure.s3_bucket, failure.s3_key), json.dumps(asdict(failure))]
            args.append(failure.when)
        self._soft(lambda: self._note(keys=[self._hash, self._index], args=args))

    def clear(self, keys: Sequence[tuple[str, str]]) -> None:
        if not keys:
            return
        fields = [_field(bucket, key) for bucket, key in keys]

        def clear() -> None:
            pipeline = self._client.pipeline(transaction=True)
            pipeline.hdel(self._hash, *fields)
            pipeline.zrem(self._index, *fields)
            pipeline.execute()

        self._soft(clear)

    def recent(self, limit: int = CAP) -> list[Failure]:
        def read() -> list[Failure]:
            fields = self._client.zrevrange(self._index, 0, max(0, limit - 1))
            if not fields:
                return []
            notes = self._client.hmget(self._hash, fields)
            return [Failure(**json.loads(note)) for note in notes if note]

        found: list[Failure] = self._soft(read) or []
        return found

    def close(self) -> None:
        self._client.close()

    def _soft(self, fn: Any) -> Any:
        import redis

        try:
            return fn()
        except (redis.RedisError, ValueError, TypeError) as exc:
            log.info("failure notes not kept or read: %s", type(exc).__name__)
            return None


def _field(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"
