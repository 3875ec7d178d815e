"""The in-process ledger: locks for the keys being worked on in this process, nothing else."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from app.ledger.base import Hold, LedgerEntry, State
from app.storage.base import ObjectInfo


@dataclass
class _Slot:
    lock: threading.Lock
    users: int = 0
    written: ObjectInfo | None = None


@dataclass
class _LocalHold:
    slot: _Slot
    waited: bool
    handed_over: ObjectInfo | None = None
    entry: LedgerEntry | None = None  # the in-process ledger keeps no entries

    def hand_over(self, written: ObjectInfo, sequencer: str | None = None) -> None:
        self.slot.written = written


class LocalLedger:
    """Locks for the keys being worked on in this process, and nothing else: a slot lives
    while somebody holds or waits for its key, so memory follows the work in flight. It keeps
    no entries: every decision looks at both clouds."""

    state: State = "local"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[tuple[str, str], _Slot] = {}

    def look_up(
        self, keys: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[list[LedgerEntry | None]]:
        return contextlib.nullcontext([None] * len(keys))

    def note(self, bucket: str, key: str, entry: LedgerEntry) -> None:
        pass

    def close(self) -> None:
        pass

    @contextlib.contextmanager
    def hold(self, bucket: str, key: str) -> Iterator[Hold]:
        name = (bucket, key)
        with self._guard:
            slot = self._slots.setdefault(name, _Slot(threading.Lock()))
            slot.users += 1
        try:
            waited = not slot.lock.acquire(blocking=False)
            if waited:
                slot.lock.acquire()
            try:
                held = _LocalHold(slot, waited, slot.written if waited else None)
                slot.written = None
                yield held
            finally:
                slot.lock.release()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[name]
