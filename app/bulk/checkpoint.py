"""Where a sync stopped, so that `--resume` goes on from there instead of from the start.

A `Checkpoint` keeps, for each key range the run lists (app.bulk.ranges), the last key
concluded: every key of the range up to it has been copied, skipped as already there, or was
only at the destination. Keys settle out of order (copies finish when they finish), so the
mark moves only over an unbroken run of concluded keys, and stops before a key whose copy
failed: a resumed run lists that key again and retries it. A range whose listing ended with
all its keys concluded is done, and a resumed run does not list it at all.

The file is JSON, rewritten whole (to a temporary file, flushed to disk, renamed over the old
one) at most every `every` seconds while the run goes and once at its end, so a run killed
at any point (SIGKILL included) loses at most that much work: what it had copied since is
listed again, found at the destination and skipped, without a GET.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.bulk.ranges import KeyRange

VERSION = 1
EVERY = 1.0  # seconds between writes while a run goes


class CheckpointError(ValueError):
    """The checkpoint file cannot be used for this run; the message says why."""


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
    def __init__(self, path: Path, run: dict[str, Any], every: float = EVERY) -> None:
        """`run` describes the run (locations, filters); a resume must describe the same."""
        self._path = path
        self._run = run
        self._every = every
        self._ranges: list[_Range] = []
        self._lock = threading.Lock()
        self._changed = False
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None

    @classmethod
    def resume(cls, path: Path, run: dict[str, Any], every: float = EVERY) -> Checkpoint:
        """The checkpoint in `path`, for the same `run`; CheckpointError saying why not."""
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no checkpoint to resume from") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a checkpoint: {exc}") from None
        if not isinstance(saved, dict) or saved.get("version") != VERSION:
            raise CheckpointError(f"{path}: not a checkpoint of this version")
        if saved.get("run") != run:
            raise CheckpointError(
                f"{path} is the checkpoint of another run ({saved.get('run')}), not of {run}"
            )
        checkpoint = cls(path, run, every)
        for entry in saved["ranges"]:
            concluded = entry["concluded"]
            checkpoint._ranges.append(
                _Range(KeyRange(entry["after"], entry["through"]), concluded, bool(entry["done"]))
            )
        return checkpoint

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

    def begin(self, ranges: tuple[KeyRange, ...]) -> tuple[KeyRange, ...]:
        """Start keeping the marks of a run that lists `ranges` (a fresh run's), or of what is
        left (a resumed run's); returns the ranges to list. Writes the file at once."""
        if self.resumed:
            listed = self.ranges()
            self._listed = [r for r in self._ranges if not r.done]
        else:
            self._ranges = [_Range(r) for r in ranges]
            self._listed = list(self._ranges)
            listed = ranges
        self._changed = True
        self._write()
        self._writer = threading.Thread(target=self._keep_writing, name="checkpoint", daemon=True)
        self._writer.start()
        return listed

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
        with self._lock:
            if not self._changed:
                return
            state = {
                "version": VERSION,
                "run": self._run,
                "ranges": [r.to_json() for r in self._ranges],
            }
            self._changed = False
        temporary = self._path.with_name(self._path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)
