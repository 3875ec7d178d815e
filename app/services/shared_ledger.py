"""The ledger replicas share, in Redis: a lease per destination key, and a record of what was
settled there.

- Lease: `SET lease token NX PX ttl` with a random token. One thread per ledger renews every
  lease this process holds each third of the TTL (compare-and-PEXPIRE), so a copy of many
  minutes keeps its key; only the holder releases it (compare-and-DEL). Each compare is a
  script, one step in Redis. Threads of one process exclude each other first in a
  `LocalLedger`, so a process takes at most one lease per key and never polls for itself.
- Record: a hash per key (the object written, or a tombstone; the source key; the latest S3
  sequencer; a stamp that changes with every write), kept `record_ttl` seconds. A script
  refuses a record whose sequencer is older than the one kept, so records never go back.
- Redis failing or unreachable: every operation does what `LocalLedger` would (exclusion in
  this process only, no records), logged once per outage and counted; at most one attempt
  every `retry_every` seconds finds out whether it answers again.

A lease lost (Redis restarted, a pause longer than the TTL) aborts nothing: every write is
fenced by a generation precondition, as without a shared ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import errors, metrics
from app.services.ledger import Hold, LocalLedger, Record, State
from app.storage.base import Checksums, ContentHeaders, ObjectInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

SOCKET_TIMEOUT = 1.0  # seconds for each Redis call: an outage costs a decision this at most
RETRY_EVERY = 3.0  # seconds between attempts to reach a Redis that did not answer
FIRST_POLL, LAST_POLL = 0.05, 1.0  # seconds between looks at a key leased by another replica

# KEYS[1] the lease; ARGV[1] the holder's token; ARGV[2] the new TTL in milliseconds.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] the lease; ARGV[1] the holder's token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1] the record; ARGV: source "bucket/key", written (JSON, "" for a tombstone),
# sequencer ("" when unknown: the kept one stays), stamp, TTL in milliseconds.
# Sequencers of one source key compare as S3 documents: right-padded hexadecimal.
_RECORD = """
local kept = redis.call('HMGET', KEYS[1], 'source', 'sequencer')
local sequencer = ARGV[3]
if kept[1] == ARGV[1] and kept[2] and kept[2] ~= '' then
  if sequencer == '' then
    sequencer = kept[2]
  else
    local width = math.max(#kept[2], #sequencer)
    local old = string.lower(kept[2]) .. string.rep('0', width - #kept[2])
    local new = string.lower(sequencer) .. string.rep('0', width - #sequencer)
    if new < old then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'source', ARGV[1], 'written', ARGV[2],
           'sequencer', sequencer, 'stamp', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class _Link:
    """Calls to Redis that fail soft: a failure marks it down (logged once, `ledger_up` 0)
    and answers the caller's default; while down, calls answer the default at once except
    one every `retry_every` seconds, which finds out whether Redis is back."""

    def __init__(self, retry_every: float) -> None:
        self._retry_every = retry_every
        self._guard = threading.Lock()
        self._down = False
        self._next_try = 0.0

    @property
    def up(self) -> bool:
        return not self._down

    def call(self, fn: Callable[[], T], default: T, *, count: bool = True) -> T:
        if self._down and not self._due():
            if count:
                metrics.LEDGER_FALLBACKS.inc()
            return default
        try:
            result = fn()
        except redis.RedisError as exc:
            self._failed(exc)
            if count:
                metrics.LEDGER_FALLBACKS.inc()
            return default
        self._answered()
        return result

    def _due(self) -> bool:
        with self._guard:
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self._retry_every
            return True

    def _failed(self, exc: redis.RedisError) -> None:
        with self._guard:
            was_up, self._down = not self._down, True
            self._next_try = time.monotonic() + self._retry_every
        metrics.LEDGER_UP.set(0)
        if was_up:
            log.warning(
                "ledger unreachable, deciding from the clouds until it answers (%s)",
                type(exc).__name__,
            )

    def _answered(self) -> None:
        with self._guard:
            was_down, self._down = self._down, False
        if was_down:
            metrics.LEDGER_UP.set(1)
            log.warning("ledger answers again")


@dataclasses.dataclass
class _SharedHold:
    ledger: RedisLedger
    bucket: str
    key: str
    waited: bool
    handed_over: ObjectInfo | None
    local: Hold  # this process's hold of the key, handed what is recorded too

    def record(self, written: ObjectInfo) -> None:
        self.local.record(written)
        self.ledger.record(self.bucket, self.key, Record.of_copy(written))


class RedisLedger:
    """The `Ledger` of app.services.ledger, shared through Redis (see the module's text)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_ttl: float,
        record_ttl: int,
        retry_every: float = RETRY_EVERY,
        prefix: str = "replicator",
        wait: bool = True,
    ) -> None:
        """`wait`: what `hold` does with a key another replica leased, unless told (see it)."""
        self._client = client
        self._wait = wait
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._record_ttl_ms = record_ttl * 1000
        self._prefix = prefix
        self._link = _Link(retry_every)
        self._local = LocalLedger()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._record = client.register_script(_RECORD)
        self._held: dict[str, str] = {}  # lease -> token, for the leases this process holds
        self._guard = threading.Lock()
        self._closing = threading.Event()
        self._renewer = threading.Thread(target=self._renew_leases, name="lease", daemon=True)
        self._renewer.start()
        metrics.LEDGER_UP.set(1)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = SOCKET_TIMEOUT, **kwargs: Any
    ) -> RedisLedger:
        """A ledger on the Redis at `url` (redis:// or rediss://); talks to nobody yet. Each
        call waits `socket_timeout` at most and is tried twice (the second on a fresh
        connection, for one that Redis closed while idle)."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(client, **kwargs)

    @property
    def state(self) -> State:
        """ "up" or "down"; while down, asks Redis again when an attempt is due."""
        self._link.call(self._client.ping, None, count=False)
        return "up" if self._link.up else "down"

    def close(self) -> None:
        """Stop renewing; the leases still held expire by themselves."""
        self._closing.set()
        self._renewer.join()
        self._client.close()

    # --- leases -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, bucket: str, key: str, *, wait: bool | None = None) -> Iterator[_SharedHold]:
        """Hold gs://bucket/key in this process, then across replicas. Another replica's
        lease is waited for up to the lease TTL (then the key is worked on unleased, fenced
        as always); with `wait=False`, `errors.KeyLeased` is raised instead (a queue worker
        puts its message back rather than tie up a thread). `wait=None`: as the ledger was
        built. `handed_over` is what the holder we waited for recorded, if anything."""
        lease = f"{self._prefix}:lease:{bucket}/{key}"
        with self._local.hold(bucket, key) as local:
            token = secrets.token_hex(16)
            taken = self._take(lease, token)
            handed_over = local.handed_over
            waited = local.waited
            if taken is False:
                if not (self._wait if wait is None else wait):
                    raise errors.KeyLeased(f"gs://{bucket}/{key} is being settled by a replica")
                stamp = self._stamp(bucket, key)
                taken = self._wait_for(lease, token)
                waited = True
                if handed_over is None:
                    handed_over = self._handed_over(bucket, key, stamp)
            if taken:
                with self._guard:
                    self._held[lease] = token
            try:
                yield _SharedHold(self, bucket, key, waited, handed_over, local)
            finally:
                if taken:
                    with self._guard:
                        self._held.pop(lease, None)
                    self._link.call(lambda: self._release(keys=[lease], args=[token]), None)

    def _take(self, lease: str, token: str) -> bool | None:
        """True: taken; False: another replica holds it; None: Redis did not answer."""

        def take() -> bool:
            return bool(self._client.set(lease, token, nx=True, px=self._lock_ttl_ms))

        return self._link.call(take, None)

    def _wait_for(self, lease: str, token: str) -> bool:
        """Poll for the lease, with backoff, up to the lease TTL; whether it was taken."""
        patience = self._lock_ttl_ms / 1000
        deadline = time.monotonic() + patience
        pause = FIRST_POLL
        while time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            taken = self._take(lease, token)
            if taken is not False:
                return bool(taken)
            pause = min(pause * 2, LAST_POLL)
        log.info("%s still leased after %.1fs; going ahead unleased", lease, patience)
        return False

    def _renew_leases(self) -> None:
        """Every third of the TTL, extend the leases this process holds; a lease found
        taken by another is let go (the generation precondition fences what follows)."""
        while not self._closing.wait(self._lock_ttl_ms / 3000):
            with self._guard:
                held = list(self._held.items())
            for lease, token in held:

                def renew(lease: str = lease, token: str = token) -> bool:
                    return bool(self._renew(keys=[lease], args=[token, self._lock_ttl_ms]))

                if self._link.call(renew, True, count=False) is False:
                    log.warning("%s was lost while held; its write is fenced", lease)
                    with self._guard:
                        if self._held.get(lease) == token:
                            del self._held[lease]

    # --- records ----------------------------------------------------------------------------

    def settled(self, bucket: str, key: str) -> Record | None:
        fields = self._fields(bucket, key)
        return _decode(fields) if fields else None

    def record(self, bucket: str, key: str, record: Record) -> None:
        written = json.dumps(_encode(record.written)) if record.written else ""
        args: list[str | int] = [
            f"{record.s3_bucket}/{record.s3_key}",
            written,
            record.sequencer or "",
            secrets.token_hex(8),
            self._record_ttl_ms,
        ]
        self._link.call(lambda: self._record(keys=[self._record_key(bucket, key)], args=args), 0)

    def _fields(self, bucket: str, key: str) -> dict[bytes, bytes]:
        """The record's hash, empty when there is none or Redis does not answer."""

        def read() -> dict[bytes, bytes]:
            fields = self._client.hgetall(self._record_key(bucket, key))
            return cast(dict[bytes, bytes], fields)  # bytes: responses are not decoded

        return self._link.call(read, {})

    def _stamp(self, bucket: str, key: str) -> bytes | None:
        return self._fields(bucket, key).get(b"stamp")

    def _handed_over(self, bucket: str, key: str, stamp_before: bytes | None) -> ObjectInfo | None:
        """The object recorded while we waited, or None (look at the destination)."""
        fields = self._fields(bucket, key)
        if not fields or fields.get(b"stamp") == stamp_before:
            return None
        record = _decode(fields)
        return record.written if record else None

    def _record_key(self, bucket: str, key: str) -> str:
        return f"{self._prefix}:record:{bucket}/{key}"


def _encode(info: ObjectInfo) -> dict[str, Any]:
    fields = dataclasses.asdict(info)
    fields["updated"] = info.updated.isoformat() if info.updated else None
    return fields


def _decode(fields: dict[bytes, bytes]) -> Record | None:
    """The record in a hash read back, or None for one that is not readable (dropped)."""
    try:
        s3_bucket, _, s3_key = fields[b"source"].decode().partition("/")
        text = fields[b"written"].decode()
        written = None
        if text:
            values = json.loads(text)
            values["headers"] = ContentHeaders(**values["headers"])
            values["checksums"] = Checksums(**values["checksums"])
            if values["updated"]:
                values["updated"] = datetime.datetime.fromisoformat(values["updated"])
            written = ObjectInfo(**values)
        sequencer = fields.get(b"sequencer", b"").decode() or None
    except (KeyError, ValueError, TypeError):
        return None
    return Record(s3_bucket, s3_key, written, sequencer)
