"""Checkpoints of bulk runs (app.bulk.checkpoint) kept in the shared ledger's Redis.

With `--checkpoint ledger`, a sync, check or enqueue keeps its marks under one Redis key
named for the run (`name`: a digest of what describes it), so that `--resume` on any machine
that reaches the same LEDGER_URL goes on from there: the pod restarted elsewhere, the laptop
that started a backfill replaced by a job. Each save is one SET of the whole state (a kill
leaves the old state or the new one, as the file's rename does), with the ledger's TTL: a
checkpoint no run has written for LEDGER_TTL seconds is forgotten.

Unlike the ledger's leases, a checkpoint does not fail soft on load: a resume that cannot
read where to go on from must say so (`CheckpointUnreadable`). A save that fails is logged and
the run goes on; the next save, a second later, writes the whole state again.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class CheckpointUnreadable(Exception):
    """The ledger did not answer a checkpoint's read; the message says why."""


class RedisCheckpoints:
    def __init__(self, client: Any, *, ttl: int, prefix: str = "replicator") -> None:
        self._client = client
        self._ttl = ttl
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, ttl: int, socket_timeout: float = 2.0) -> RedisCheckpoints:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        return cls(client, ttl=ttl)

    def store(self, name: str) -> RedisCheckpoint:
        """Where the checkpoint of the run named `name` is kept."""
        return RedisCheckpoint(self._client, f"{self._prefix}:checkpoint:{name}", self._ttl)

    def close(self) -> None:
        self._client.close()


class RedisCheckpoint:
    """One run's checkpoint: app.bulk.checkpoint's Store, in Redis."""

    def __init__(self, client: Any, key: str, ttl: int) -> None:
        self._client = client
        self.key = key
        self._ttl = ttl

    def __str__(self) -> str:
        return f"the ledger's {self.key}"

    def load(self) -> str | None:
        import redis

        try:
            text = self._client.get(self.key)
        except redis.RedisError as exc:
            raise CheckpointUnreadable(f"{self}: LEDGER_URL did not answer: {exc}") from None
        return None if text is None else bytes(text).decode("utf-8")

    def save(self, text: str) -> None:
        import redis

        try:
            self._client.set(self.key, text.encode("utf-8"), ex=self._ttl)
        except redis.RedisError as exc:
            log.warning("checkpoint not saved in the ledger (the next save tries again): %s", exc)
