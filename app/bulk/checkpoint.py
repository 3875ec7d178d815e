"""Where a sync, a check or an enqueue stopped, so that `--resume` goes on from there instead
of from the start.

A `Checkpoint` keeps, for each key range the run lists (app.bulk.ranges), the last key
concluded: every key of the range up to it has been copied, skipped as already there, or was
only at the destination (a check: reported; an enqueue: sent to the queue). Keys settle out
of order (copies finish when they finish), so the mark moves only over an unbroken run of
concluded keys, and stops before a key whose copy failed: a resumed run lists that key again
and retries it. A range whose listing ended with
all its keys concluded is done, and a resumed run does not list it at all.

The state is JSON, kept in a `Store`: a file (`FileStore`: rewritten whole to a temporary
file, flushed to disk, renamed over the old one) or the ledger (app.ledger.redis). It is
written at most every `every` seconds while the run goes, when the run asks (`save`) and once
at its end, so a run killed at any point (SIGKILL included) loses at most that much work: what
it had copied since is listed again, found at the destination and skipped, without a GET.
A run may keep more in it than the marks: `keep(name, read)` saves `read()` with each write,
and `kept(name)` gives a resumed run what was saved (a check's counts and file lengths).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.bulk.ranges import KeyRange

VERSION = 1
EVERY = 1.0  # seconds between writes while a run goes


class CheckpointError(ValueError):
    """The checkpoint cannot be used for this run; the message says why."""


class Store(Protocol):
    """Where a checkpoint's state is kept; str() names it in messages."""

    def load(self) -> str | None:
        """The state saved last, or None when there is none."""
        ...

    def save(self, text: str) -> None: ...


class FileStore:
    """A file, replaced whole at each save: a kill leaves the old state or the new one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None

    def save(self, text: str) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


@dataclass
class _Range:
    key_range: KeyRange
    concluded: str | None = None  # every key of the range up to this one is concluded
    done: bool = False
    stuck: bool = False  # a key failed: the mark stays before it
    listed_all: bool = False
    pending: collections.OrderedDict[str, bool] = field(default_factory=collections.OrderedDict)

    def to_json(self) -> dict[str, Any]:
        return {
            "after": self.key_range.after,
            "through": self.key_range.through,
            "concluded": self.concluded,
            "done": self.done,
        }


class Checkpoint:
    def __init__(self, store: Store, run: dict[str, Any], every: float = EVERY) -> None:
        """`run` describes the run (command, locations, filters); a resume must describe the
        same."""
        self.store = store
        self._run = run
        self._every = every
        self._ranges: list[_Range] = []
        self._listed: list[_Range] = []
        self._lock = threading.Lock()
        self._saving = threading.Lock()  # one save at a time: the writer's, or the run's
        self._changed = False
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None
        self._keep: dict[str, Callable[[], Any]] = {}
        self._kept: dict[str, Any] = {}
        self._last = time.monotonic()

    @classmethod
    def resume(cls, store: Store, run: dict[str, Any], every: float = EVERY) -> Checkpoint:
        """The checkpoint in `store`, for the same `run`; CheckpointError saying why not."""
        text = store.load()
        if text is None:
            raise CheckpointError(f"{store}: no checkpoint to resume from")
        try:
            saved = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{store}: not a checkpoint: {exc}") from None
        if not isinstance(saved, dict) or saved.get("version") != VERSION:
            raise CheckpointError(f"{store}: not a checkpoint of this version")
        if saved.get("run") != run:
            raise CheckpointError(
                f"{store} is the checkpoint of another run ({saved.get('run')}), not of {run}"
            )
        checkpoint = cls(store, run, every)
        for entry in saved["ranges"]:
            concluded = entry["concluded"]
            checkpoint._ranges.append(
                _Range(KeyRange(entry["after"], entry["through"]), concluded, bool(entry["done"]))
            )
        checkpoint._kept = saved.get("kept", {})
        return checkpoint

    def keep(self, name: str, read: Callable[[], Any]) -> None:
        """Save `read()` (JSON) under `name` with every write, from the writing thread: a run
        that keeps something must write from its own thread only (`begin(writer=False)`)."""
        self._keep[name] = read

    def kept(self, name: str) -> Any:
        """What a resumed checkpoint's run kept under `name`; None for a fresh one."""
        return self._kept.get(name)

    def done(self) -> tuple[bool, ...]:
        """For each range of the run, whether it is done (all False before `begin`, fresh)."""
        return tuple(r.done for r in self._ranges)

    def positions(self) -> tuple[int, ...]:
        """For each range listed (as `begin` returned them), its place among the run's."""
        return tuple(next(i for i, r in enumerate(self._ranges) if r is e) for e in self._listed)

    @property
    def resumed(self) -> bool:
        return bool(self._ranges)

    def ranges(self) -> tuple[KeyRange, ...]:
        """The ranges a resumed run still lists: those not done, from after their mark."""
        return tuple(
            KeyRange(r.concluded or r.key_range.after, r.key_range.through)
            for r in self._ranges
            if not r.done
        )

    def begin(self, ranges: tuple[KeyRange, ...], writer: bool = True) -> tuple[KeyRange, ...]:
        """Start keeping the marks of a run that lists `ranges` (a fresh run's), or of what is
        left (a resumed run's); returns the ranges to list. Saves at once, then every `every`
        seconds from a thread of its own, or (not `writer`) when the run calls `save`."""
        if self.resumed:
            listed = self.ranges()
            self._listed = [r for r in self._ranges if not r.done]
        else:
            self._ranges = [_Range(r) for r in ranges]
            self._listed = list(self._ranges)
            listed = ranges
        self.save()
        if writer:
            self._writer = threading.Thread(
                target=self._keep_writing, name="checkpoint", daemon=True
            )
            self._writer.start()
        self._last = time.monotonic()
        return listed

    def due(self) -> bool:
        """Whether `every` seconds have gone since the last save."""
        return time.monotonic() - self._last >= self._every

    def save(self) -> None:
        """Save the marks and what the run keeps, now."""
        with self._lock:
            self._changed = True
        self._write()

    def listed(self, index: int, key: str) -> None:
        """Key `key` of listed range `index` is on its way, to settle later, in any order. A
        key concluded as soon as it is listed (skipped, say) need not be announced."""
        with self._lock:
            entry = self._listed[index]
            if not entry.stuck:
                entry.pending[key] = False

    def concluded(self, index: int, key: str, ok: bool = True) -> None:
        """Key `key` of listed range `index` is concluded; not `ok`: it failed, and a resumed
        run must try it again."""
        with self._lock:
            entry = self._listed[index]
            if entry.stuck:
                return
            if not ok:
                entry.stuck = True
                entry.pending.clear()
                return
            if key not in entry.pending and not entry.pending:  # concluded as it was listed
                entry.concluded = key
                self._changed = True
                return
            entry.pending[key] = True
            while entry.pending:
                first, done = next(iter(entry.pending.items()))
                if not done:
                    break
                entry.pending.popitem(last=False)
                entry.concluded = first
                self._changed = True
            self._mark_done(entry)

    def range_listed(self, index: int) -> None:
        """Listed range `index` has given its last key."""
        with self._lock:
            entry = self._listed[index]
            entry.listed_all = True
            self._mark_done(entry)

    def _mark_done(self, entry: _Range) -> None:
        if entry.listed_all and not entry.pending and not entry.stuck and not entry.done:
            entry.done = True
            self._changed = True

    def close(self) -> None:
        """Stop writing every so often, and write the marks as they are now."""
        self._closed.set()
        if self._writer is not None:
            self._writer.join()
        self._write()

    def _keep_writing(self) -> None:
        while not self._closed.wait(self._every):
            self._write()

    def _write(self) -> None:
        with self._saving:
            with self._lock:
                if not self._changed and not self._keep:
                    return
                state = {
                    "version": VERSION,
                    "run": self._run,
                    "ranges": [r.to_json() for r in self._ranges],
                    "kept": {name: read() for name, read in self._keep.items()},
                }
                self._changed = False
            self.store.save(json.dumps(state))
            self._last = time.monotonic()
