"""Ctrl-C for `replicator sync` and `replicator check`: the first stops cleanly, the second
at once.

The first SIGINT sets the run's stop event: nothing new starts, copies in flight finish, no
delete runs, and the command prints what was done and exits `INTERRUPTED`. The second ends
the process there and then (`os._exit`): an upload cut short is never published, because GCS
publishes an object only when its last chunk (or the compose of its parts) lands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

INTERRUPTED = 130  # the shell's convention: 128 + SIGINT
SHOW_CURSOR = "\x1b[?25h"  # a live display hides it


@contextlib.contextmanager
def stop_on_ctrl_c(command: str, stop: threading.Event) -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM sets `stop` and the second exits with
    INTERRUPTED: a SIGTERM (a container stopping, a job scheduler) stops as Ctrl-C does."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()  # the progress display says so; printing here could re-enter a print
            return
        # Straight to the file descriptor: no lock or buffer a thread may hold is involved.
        cursor = SHOW_CURSOR if os.isatty(2) else ""
        os.write(2, f"{cursor}\nreplicator {command}: quit at once\n".encode())
        os._exit(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, interrupted)
    previous_term = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
