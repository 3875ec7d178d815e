"""The ledger replicas share, in Redis: a lease per destination key, and an entry of what was
settled there.

- Lease: `SET lease token NX PX ttl` with a random token, in a script that also reads the
  key's entry (the holder sees what the last one noted). One thread per ledger renews
  every lease this process holds each third of the TTL (compare-and-PEXPIRE), so a copy of
  many minutes keeps its key; only the holder releases it (compare-and-DEL), in the script
  that writes what it noted. Each compare is in a script, one step in Redis. Threads of
  one process exclude each other first in a `LocalLedger`, so a process takes at most one
  lease per key and never polls for itself.
- Entry: a hash per key (the object written, or a tombstone; the source key; the latest S3
  sequencer; a stamp that changes with every write), kept `entry_ttl` seconds. A script
  refuses an entry whose sequencer is older than the one kept, so entries never go back.
- Look-up of many keys (`look_up`, a receive's events): one pipeline reads their entries,
  and leases for the block the keys with none (new objects: their copy is what comes
  next). A hold of such a key in this process claims that lease instead of taking one; the
  leases not claimed are let go when the block ends. A key copied then costs one round trip
  (its lease let go with the entry written) plus its share of the look-up; a key with an
  entry, two (its lease taken with the entry read, then let go).
- Redis failing or unreachable: every operation does what `LocalLedger` would (exclusion in
  this process only, no entries), logged once per outage and counted; at most one attempt
  every `retry_every` seconds finds out whether it answers again.

A lease lost (Redis restarted, a pause longer than the TTL) aborts nothing: every write is
fenced by a generation precondition, as without a shared ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from app import errors, metrics
from app.ledger.base import Hold, LedgerEntry, State
from app.ledger.local import LocalLedger
from app.storage.base import Checksums, ContentHeaders, ObjectInfo

log = logging.getLogger(__name__)
T = TypeVar("T")
_Fields = dict[bytes, bytes]  # an entry's hash as Redis answers it (not decoded)

SOCKET_TIMEOUT = 1.0  # seconds for each Redis call: an outage costs a decision this at most
RETRY_EVERY = 3.0  # seconds between attempts to reach a Redis that did not answer
FIRST_POLL, LAST_POLL = 0.05, 1.0  # seconds between looks at a key leased by another replica

# KEYS[1] the lease, KEYS[2] the entry; ARGV[1] the token; ARGV[2] the TTL in milliseconds.
# Returns {1 if taken else 0, the entry's hash as a flat list of fields and values}.
_TAKE = """
local taken = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then taken = 1 end
return {taken, redis.call('HGETALL', KEYS[2])}
"""
# KEYS[1] the entry, KEYS[2] the lease; ARGV as _TAKE. The entry's hash (flat), and the
# lease taken only when there is none; returns {1 if taken else 0, the hash}.
_LOOK_UP = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, fields}
end
return {0, fields}
"""
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
# KEYS[1] the entry, KEYS[2] (optional) a lease to let go once it is written; ARGV: source
# "bucket/key", written (JSON, "" for a tombstone), sequencer ("" when unknown: the kept one
# stays), stamp, TTL in milliseconds, the lease holder's token. Returns 1 if written.
# Sequencers of one source key compare as S3 documents: right-padded hexadecimal.
_NOTE = """
local kept = redis.call('HMGET', KEYS[1], 'source', 'sequencer')
local sequencer = ARGV[3]
local written = 1
if kept[1] == ARGV[1] and kept[2] and kept[2] ~= '' then
  if sequencer == '' then
    sequencer = kept[2]
  else
    local width = math.max(#kept[2], #sequencer)
    local old = string.lower(kept[2]) .. string.rep('0', width - #kept[2])
    local new = string.lower(sequencer) .. string.rep('0', width - #sequencer)
    if new < old then written = 0 end
  end
end
if written == 1 then
  redis.call('HSET', KEYS[1], 'source', ARGV[1], 'written', ARGV[2],
             'sequencer', sequencer, 'stamp', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[6] then
  redis.call('DEL', KEYS[2])
end
return written
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

    def call(self, fn: Callable[[], T], default: T, *, count: int = 1) -> T:
        """`count`: the decisions made without the ledger when it does not answer."""
        if self._down and not self._due():
            if count:
                metrics.LEDGER_FALLBACKS.inc(count)
            return default
        try:
            result = fn()
        except redis.RedisError as exc:
            self._failed(exc)
            if count:
                metrics.LEDGER_FALLBACKS.inc(count)
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
    waited: bool
    handed_over: ObjectInfo | None
    local: Hold  # this process's hold of the key, handed what is noted too
    found: dict[bytes, bytes]  # the key's entry when the lease was taken
    pending: LedgerEntry | None = None  # written with the lease let go

    @functools.cached_property
    def entry(self) -> LedgerEntry | None:
        return _decode(self.found) if self.found else None

    def hand_over(self, written: ObjectInfo, sequencer: str | None = None) -> None:
        self.local.hand_over(written)
        self.pending = LedgerEntry.of_copy(written, sequencer)


class RedisLedger:
    """The `Ledger` of app.ledger.base, shared through Redis (see the module's text)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_ttl: float,
        entry_ttl: int,
        retry_every: float = RETRY_EVERY,
        prefix: str = "replicator",
        wait: bool = True,
    ) -> None:
        """`wait`: what `hold` does with a key another replica leased, unless told (see it)."""
        self._client = client
        self._wait = wait
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._entry_ttl_ms = entry_ttl * 1000
        self._prefix = prefix
        self._link = _Link(retry_every)
        self._local = LocalLedger()
        self._take_script = client.register_script(_TAKE)
        self._look_up_script = client.register_script(_LOOK_UP)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._note = client.register_script(_NOTE)
        self._held: dict[str, str] = {}  # lease -> token, for the leases this process holds
        self._unclaimed: dict[str, str] = {}  # the same, for those leased by `look_up` only
        self._guard = threading.Lock()
        self._looking_up = threading.Lock()  # a hold that finds a key leased waits for it
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
        self._link.call(self._client.ping, None, count=0)
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
        built. `handed_over` is what the holder we waited for noted, if anything; what
        the hold notes is written as the lease is let go, in the same step."""
        lease = self._lease_key(bucket, key)
        entry_key = self._entry_key(bucket, key)
        with self._local.hold(bucket, key) as local:
            token = secrets.token_hex(16)
            claimed = self._claim(lease)
            if claimed is None:
                taken, found = self._take(lease, entry_key, token)
                if taken is False:  # perhaps by a look-up of this process, not yet claimable
                    with self._looking_up:
                        claimed = self._claim(lease)
            if claimed is not None:
                token, taken, found = claimed, True, {}  # nothing was noted when leased
            handed_over = local.handed_over
            waited = local.waited
            if taken is False:
                if not (self._wait if wait is None else wait):
                    raise errors.KeyLeased(f"gs://{bucket}/{key} is being settled by a replica")
                stamp = found.get(b"stamp")
                taken, found = self._wait_for(lease, entry_key, token)
                waited = True
                if handed_over is None and found.get(b"stamp", stamp) != stamp:
                    handed_over = _written(found)
            if taken:
                with self._guard:
                    self._held[lease] = token
            held = _SharedHold(waited, handed_over, local, found)
            try:
                yield held
            finally:
                if taken:
                    with self._guard:
                        self._held.pop(lease, None)
                if held.pending is not None:
                    self._write(entry_key, held.pending, lease if taken else None, token)
                elif taken:
                    self._link.call(lambda: self._release(keys=[lease], args=[token]), None)

    def _claim(self, lease: str) -> str | None:
        """The token of this process's unclaimed lease (see `look_up`), now the caller's."""
        with self._guard:
            return self._unclaimed.pop(lease, None)

    def _take(self, lease: str, entry_key: str, token: str) -> tuple[bool | None, _Fields]:
        """Whether the lease was taken (None: Redis did not answer), and the key's entry."""

        def take() -> tuple[bool | None, _Fields]:
            taken, flat = self._take_script(
                keys=[lease, entry_key], args=[token, self._lock_ttl_ms]
            )
            return bool(taken), dict(zip(flat[::2], flat[1::2], strict=True))

        unknown: tuple[bool | None, _Fields] = (None, {})
        return self._link.call(take, unknown)

    def _wait_for(self, lease: str, entry_key: str, token: str) -> tuple[bool, _Fields]:
        """Poll for the lease, with backoff, up to the lease TTL: whether it was taken, and
        the key's entry at the last look."""
        patience = self._lock_ttl_ms / 1000
        deadline = time.monotonic() + patience
        pause = FIRST_POLL
        found: _Fields = {}
        while time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            taken, found = self._take(lease, entry_key, token)
            if taken is not False:
                return bool(taken), found
            pause = min(pause * 2, LAST_POLL)
        log.info("%s still leased after %.1fs; going ahead unleased", lease, patience)
        return False, found

    def _renew_leases(self) -> None:
        """Every third of the TTL, extend the leases this process holds; a lease found
        taken by another is let go (the generation precondition fences what follows)."""
        while not self._closing.wait(self._lock_ttl_ms / 3000):
            with self._guard:
                held = list(self._held.items())
            for lease, token in held:

                def renew(lease: str = lease, token: str = token) -> bool:
                    return bool(self._renew(keys=[lease], args=[token, self._lock_ttl_ms]))

                if self._link.call(renew, True, count=0) is False:
                    log.warning("%s was lost while held; its write is fenced", lease)
                    with self._guard:
                        if self._held.get(lease) == token:
                            del self._held[lease]

    # --- entries ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def look_up(self, keys: Sequence[tuple[str, str]]) -> Iterator[list[LedgerEntry | None]]:
        """The entry of each key, in one pipeline that also leases, until the block ends, the
        keys nothing is noted for and this process does not hold (see the module's text)."""
        if not keys:
            yield []
            return
        leased: dict[str, str] = {}
        try:
            with self._looking_up:
                found = self._link.call(
                    lambda: self._read_and_lease(keys, leased),
                    [_Fields()] * len(keys),
                    count=len(keys),
                )
                with self._guard:
                    self._unclaimed.update(leased)
                    self._held.update(leased)
            yield [_decode(fields) if fields else None for fields in found]
        finally:
            self._let_go_unclaimed(leased)

    def _read_and_lease(
        self, keys: Sequence[tuple[str, str]], leased: dict[str, str]
    ) -> list[_Fields]:
        """The entries of `keys`, noting in `leased` the leases taken (lease -> token)."""
        with self._guard:
            held = set(self._held)
        commands: list[tuple[Any, ...]] = []
        tokens: list[tuple[str, str] | None] = []
        for bucket, key in keys:
            entry_key, lease = self._entry_key(bucket, key), self._lease_key(bucket, key)
            if lease in held:  # a hold of this process has it: asking would lease nothing
                commands.append(("HGETALL", entry_key))
                tokens.append(None)
            else:
                held.add(lease)  # once per key
                token = secrets.token_hex(16)
                sha = self._look_up_script.sha
                commands.append(("EVALSHA", sha, 2, entry_key, lease, token, self._lock_ttl_ms))
                tokens.append((lease, token))
        found = []
        for answer, taken in zip(self._pipelined(commands, _LOOK_UP), tokens, strict=True):
            if taken is None:
                found.append(cast(_Fields, answer))
                continue
            [was_taken, flat] = answer
            if was_taken:
                leased[taken[0]] = taken[1]
            found.append(dict(zip(flat[::2], flat[1::2], strict=True)))
        return found

    def _let_go_unclaimed(self, leased: dict[str, str]) -> None:
        """Let go of the leases `look_up` took that no hold claimed, in one pipeline."""
        with self._guard:
            unclaimed = [lease for lease in leased if self._unclaimed.get(lease) == leased[lease]]
            for lease in unclaimed:
                del self._unclaimed[lease]
                if self._held.get(lease) == leased[lease]:
                    del self._held[lease]
        if unclaimed:
            sha = self._release.sha
            commands = [("EVALSHA", sha, 1, lease, leased[lease]) for lease in unclaimed]
            self._link.call(lambda: self._pipelined(commands, _RELEASE), [], count=0)

    def _pipelined(self, commands: list[tuple[Any, ...]], script: str) -> list[Any]:
        """The answers to `commands`, sent in one pipeline; `script`, which they run by its
        SHA, is loaded first when Redis does not know it (a restarted Redis), then asked
        again. Raises the first error an answer is."""
        for attempt in range(2):
            pipeline = self._client.pipeline(transaction=False)
            for command in commands:
                pipeline.execute_command(*command)
            answers = pipeline.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(a, NoScriptError) for a in answers):
                self._client.script_load(script)
                continue
            break
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def note(self, bucket: str, key: str, entry: LedgerEntry) -> None:
        self._write(self._entry_key(bucket, key), entry)

    def _write(
        self, entry_key: str, entry: LedgerEntry, lease: str | None = None, token: str = ""
    ) -> None:
        """Write `entry`, then let `lease` go if this token holds it: one step in Redis."""
        written = json.dumps(_encode(entry.written)) if entry.written else ""
        args: list[str | int] = [
            f"{entry.s3_bucket}/{entry.s3_key}",
            written,
            entry.sequencer or "",
            secrets.token_hex(8),
            self._entry_ttl_ms,
            token,
        ]
        keys = [entry_key, lease] if lease else [entry_key]
        self._link.call(lambda: self._note(keys=keys, args=args), 0)

    def _lease_key(self, bucket: str, key: str) -> str:
        return f"{self._prefix}:lease:{bucket}/{key}"

    def _entry_key(self, bucket: str, key: str) -> str:
        return f"{self._prefix}:record:{bucket}/{key}"


_TIMES = ("updated", "modified")  # ObjectInfo's datetimes, as ISO 8601 text in JSON


def _encode(info: ObjectInfo) -> dict[str, Any]:
    """`info` as JSON values, field by field (`dataclasses.asdict` deep-copies every value:
    four times the cost, ~0.2 ms an entry on a busy benchmark machine)."""
    fields = _values(info)
    fields["headers"] = _values(info.headers)
    fields["checksums"] = _values(info.checksums)
    fields["metadata"] = dict(info.metadata)
    fields["s3_checksums"] = dict(info.s3_checksums)
    for name in _TIMES:
        moment = getattr(info, name)
        fields[name] = moment.isoformat() if moment else None
    return fields


def _values(instance: Any) -> dict[str, Any]:
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


def _written(fields: _Fields) -> ObjectInfo | None:
    entry = _decode(fields)
    return entry.written if entry else None


def _decode(fields: dict[bytes, bytes]) -> LedgerEntry | None:
    """The entry in a hash read back, or None for one that is not readable (dropped)."""
    try:
        s3_bucket, _, s3_key = fields[b"source"].decode().partition("/")
        text = fields[b"written"].decode()
        written = None
        if text:
            values = json.loads(text)
            values["headers"] = ContentHeaders(**values["headers"])
            values["checksums"] = Checksums(**values["checksums"])
            for name in _TIMES:
                if values.get(name):
                    values[name] = datetime.datetime.fromisoformat(values[name])
            written = ObjectInfo(**values)
        sequencer = fields.get(b"sequencer", b"").decode() or None
    except (KeyError, ValueError, TypeError):
        return None
    return LedgerEntry(s3_bucket, s3_key, written, sequencer)
