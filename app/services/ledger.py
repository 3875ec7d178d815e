"""Per-key exclusion and the hand-over of what was written, behind one small protocol.

The replication flow holds a destination key while it decides and copies, so concurrent
requests for one object queue instead of racing, and the next holder learns what the last one
wrote without asking GCS again. `LocalLedger` does this inside one process (the default); a
shared implementation (Redis) can replace it through the wiring without touching the flow.
Correctness never depends on a ledger: every write is fenced by a generation precondition.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from app.storage.base import ObjectInfo


class Hold(Protocol):
    """A held key. `waited`: another holder had the key first. `handed_over`: what that
    holder recorded as written, if anything (None: look at the destination)."""

    waited: bool
    handed_over: ObjectInfo | None

    def record(self, written: ObjectInfo) -> None:
        """What the destination holds now, for whoever holds the key next."""


class Ledger(Protocol):
    def hold(self, bucket: str, key: str) -> AbstractContextManager[Hold]:
        """Hold gs://bucket/key until the block ends, waiting for any other holder."""
        ...


@dataclass
class _Entry:
    lock: threading.Lock
    users: int = 0
    written: ObjectInfo | None = None


@dataclass
class _LocalHold:
    entry: _Entry
    waited: bool
    handed_over: ObjectInfo | None = None

    def record(self, written: ObjectInfo) -> None:
        self.entry.written = written


class LocalLedger:
    """Locks for the keys being worked on in this process, and nothing else: an entry lives
    while somebody holds or waits for its key, so memory follows the work in flight."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    @contextlib.contextmanager
    def hold(self, bucket: str, key: str) -> Iterator[Hold]:
        name = (bucket, key)
        with self._guard:
            entry = self._entries.setdefault(name, _Entry(threading.Lock()))
            entry.users += 1
        try:
            waited = not entry.lock.acquire(blocking=False)
            if waited:
                entry.lock.acquire()
            try:
                held = _LocalHold(entry, waited, entry.written if waited else None)
                entry.written = None
                yield held
            finally:
                entry.lock.release()
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[name]
