"""The in-process ledger: locks for the keys being worked on in this process, and when each
key was last handed over."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from app.ledger.base import Hold, LedgerEntry, State
from app.storage.base import ObjectInfo

# A duplicate event can look at the destination before the first copy lands, then take the
# key just after that copy let it go: unless told, it would read S3 and upload again, only for
# GCS to refuse the write (a 412: the first copy's generation). So when each key was last
# handed over is kept this long, for at most this many keys (under 1 MiB).
RECENT_SECONDS = 30.0
RECENT_KEYS = 4096


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
    """Locks for the keys being worked on in this process: a slot lives while somebody holds
    or waits for its key. A holder that takes a key another handed over less than
    RECENT_SECONDS ago is told it `waited`, with nothing handed over, so it looks at the
    destination again before it copies. It keeps no entries: every decision looks at both
    clouds."""

    state: State = "local"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[tuple[str, str], _Slot] = {}
        # key -> when it was last handed over (time.monotonic()), oldest first
        self._recent: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    def look_up(
        self, keys: Sequence[tuple[str, str]]
    ) -> AbstractContextManager[list[LedgerEntry | None]]:
        return contextlib.nullcontext([None] * len(keys))

    def note(self, bucket: str, key: str, entry: LedgerEntry) -> None:
        pass

    def close(self) -> None:
        pass

    def _handed_over_lately(self, name: tuple[str, str]) -> bool:
        with self._guard:
            when = self._recent.get(name)
        return when is not None and time.monotonic() - when < RECENT_SECONDS

    def _remember(self, name: tuple[str, str]) -> None:
        with self._guard:
            self._recent.pop(name, None)
            self._recent[name] = time.monotonic()
            while len(self._recent) > RECENT_KEYS:
                self._recent.popitem(last=False)

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
            lately = not waited and self._handed_over_lately(name)
            held = _LocalHold(slot, waited or lately, slot.written if waited else None)
            slot.written = None
            try:
                yield held
            finally:
                if slot.written is not None:  # handed over by this holder (reset as it took it)
                    self._remember(name)
                slot.lock.release()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[name]
