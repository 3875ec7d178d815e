"""What `replicator sync` and `replicator check` show while they run.

On a terminal (stderr is a TTY) a live display, drawn by rich (imported only when a display
starts, so `replicator --help` stays quick): a bar and the counts so far, redrawn a few times
a second, with the per-key lines printed above it. Off a terminal, one plain line on stderr
every `INTERVAL` seconds (`REPLICATOR_PROGRESS_SECONDS` overrides it). Either way a line says
so at once when Ctrl-C asks the run to stop.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.bulk.tally import Snapshot, Tally

INTERVAL = 5.0  # seconds between plain progress lines off a terminal
TICK = 0.2  # how soon a plain display notices a stop
STOPPING = "stopping: copies in flight finish, nothing new starts (Ctrl-C again: quit at once)"


@dataclass(frozen=True)
class Figures:
    """One moment of a run, as a display shows it: a line of counts, and how far along the
    bar is (`total` None: not known yet)."""

    text: str
    done: float
    total: float | None


def sync_figures(snapshot: Snapshot) -> Figures:
    """Objects and bytes copied of those found to copy so far, rate, failures, and once the
    listing has ended an ETA."""
    found, done = snapshot["found"], snapshot["copied"] + snapshot["failed"]
    more = "" if snapshot.listing_done else "+"
    rate = snapshot["bytes"] / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    parts = [
        f"{done}/{found}{more} objects",
        f"{size(snapshot['bytes'])}/{size(snapshot['found_bytes'])}{more}",
        f"{size(rate)}/s",
        f"{snapshot['skipped']} skipped",
        f"{snapshot['failed']} failed",
    ]
    if snapshot["deleted"]:
        parts.append(f"{snapshot['deleted']} deleted")
    if not snapshot.listing_done:
        parts.append("listing")
    elif done < found and rate > 0:
        parts.append(f"ETA {duration((snapshot['found_bytes'] - snapshot['bytes']) / rate)}")
    total = float(snapshot["found_bytes"]) if snapshot.listing_done else None
    if total == 0:  # nothing to copy, or only empty objects: count objects instead
        return Figures(", ".join(parts), done, found)
    return Figures(", ".join(parts), snapshot["bytes"], total)


def check_figures(snapshot: Snapshot) -> Figures:
    """Keys compared so far of those listed, by mark (the marks add up to the keys compared:
    a key listed is compared once its mark is known, after its download with --download),
    and the rate."""
    marks = ("identical", "missing", "extra", "different", "errors")
    compared = sum(snapshot[name] for name in marks)
    more = "" if snapshot.listing_done else "+"
    rate = compared / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    counts = ", ".join(f"{snapshot[name]} {name}" for name in marks)
    text = f"{compared}/{snapshot['listed']}{more} keys compared ({counts}), {rate:.0f} keys/s"
    if not snapshot.listing_done:
        text += ", listing"
    total = snapshot["listed"] if snapshot.listing_done else None
    return Figures(text, compared, total)


def enqueue_figures(snapshot: Snapshot) -> Figures:
    """Keys listed, and of those to be copied, how many the run has found so far."""
    text = (
        f"{snapshot['listed']} keys listed, {snapshot['found']} to queue, "
        f"{snapshot['skipped']} skipped, {snapshot['failed']} failed"
    )
    if not snapshot.listing_done:
        text += ", listing"
    return Figures(text, snapshot["listed"], snapshot["listed"] if snapshot.listing_done else None)


def size(n: float) -> str:
    """Bytes for a person: 512 B, 1.5 KiB, 12.0 MiB ..."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def interval() -> float:
    """INTERVAL, or REPLICATOR_PROGRESS_SECONDS when that is a number above 0."""
    try:
        value = float(os.environ.get("REPLICATOR_PROGRESS_SECONDS", ""))
    except ValueError:
        return INTERVAL
    return value if value > 0 else INTERVAL


class Progress:
    """Show `tally` through `figures` from `with Progress(...)` to its end; `stop` is the
    run's stop event (set by Ctrl-C). Inside, print the per-key lines with plain `print` to
    `sys.stdout` / `sys.stderr` as they are at the time of printing: on a terminal those are
    redirected above the live display."""

    def __init__(
        self, tally: Tally, figures: Callable[[Snapshot], Figures], stop: threading.Event
    ) -> None:
        self._tally = tally
        self._figures = figures
        self._stop = stop
        self._ended = threading.Event()
        self._live: Any = None
        self._thread: threading.Thread | None = None
        self.live = sys.stderr.isatty()

    def __enter__(self) -> Progress:
        if self.live:
            self._live = self._start_live()
        else:
            self._thread = threading.Thread(target=self._plain, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ended.set()
        if self._live is not None:
            self._live.stop()  # draws the final frame, which stays on the screen
        if self._thread is not None:
            self._thread.join()

    def _start_live(self) -> Any:
        from rich.console import Console
        from rich.live import Live

        live = Live(
            get_renderable=self._frame,
            console=Console(stderr=True),
            refresh_per_second=4,
            redirect_stderr=True,
            # Only when stdout is this terminal too: a file or a pipe keeps its own lines.
            redirect_stdout=sys.stdout.isatty(),
        )
        live.start()
        return live

    def _frame(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        figures = self._figures(self._tally.snapshot())
        grid = Table.grid(padding=(0, 1))
        bar = ProgressBar(total=figures.total, completed=figures.done, width=24)
        grid.add_row(bar, Text(figures.text))
        if self._stop.is_set() and not self._ended.is_set():
            grid.add_row("", Text(STOPPING, style="bold"))
        return grid

    def _plain(self) -> None:
        every = interval()
        waited, said_stopping = 0.0, False
        while not self._ended.wait(TICK):
            waited += TICK
            if self._stop.is_set() and not said_stopping:
                print(f"... {STOPPING}", file=sys.stderr, flush=True)
                said_stopping = True
            if waited >= every:
                waited = 0.0
                text = self._figures(self._tally.snapshot()).text
                print(f"... {text}", file=sys.stderr, flush=True)
