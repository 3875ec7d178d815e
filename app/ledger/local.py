"""The in-process ledger: locks for the keys being worked on in this process, nothing else."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from app.ledger.base import Hold, Record, State
from app.storage.base import ObjectInfo


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
    recorded: Record | None = None  # the in-process ledger keeps no records

    def record(self, written: ObjectInfo, sequencer: str | None = None) -> None:
        self.entry.written = written


class LocalLedger:
    """Locks for the keys being worked on in this process, and nothing else: an entry lives
    while somebody holds or waits for its key, so memory follows the work in flight. It keeps
    no records: every decision looks at both clouds."""

    state: State = "local"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def settled(self, bucket: str, key: str) -> Record | None:
        return None

    def look_up(
        self, keys: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[list[Record | None]]:
        return contextlib.nullcontext([None] * len(keys))

    def record(self, bucket: str, key: str, record: Record) -> None:
        pass

    def close(self) -> None:
        pass

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
