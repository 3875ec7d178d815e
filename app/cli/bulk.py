"""What `replicator sync` and `replicator check` share: their arguments, and starting up.

Nothing here imports the app's heavy modules at import time; `start` does, when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from app.cli import interrupt, progress

if TYPE_CHECKING:
    from app.bulk.compare import Location
    from app.bulk.patterns import KeyFilter
    from app.bulk.tally import Snapshot, Tally
    from app.errors import ReplicatorError
    from app.wiring import Services


class UsageError(Exception):
    """A bad argument or setting: one line on stderr, exit status 2."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="s3://bucket[/prefix]")
    parser.add_argument("destination", metavar="DESTINATION", help="gs://bucket[/prefix]")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only keys (below the prefix) matching this glob; repeatable ('*' within a "
        "path segment, '**' across segments)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip keys matching this glob; repeatable; wins over --include",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number above 0")
    return int(value)


def count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(value)


@dataclass
class Started:
    """What a bulk command works with; `close` it at the end."""

    source: Location
    destination: Location
    keys: KeyFilter
    services: Services
    output: IO[str] | None  # the file of --report or --combined, when asked for

    def close(self) -> None:
        if self.output is not None:
            self.output.close()
        self.services.close()


def start(args: argparse.Namespace, output: str | None, option: str) -> Started:
    """The two locations, the key filter, the services built for them and the file `output`
    named by `option`, opened for writing; UsageError with one line for a bad location,
    setting or file."""
    from app import config, errors, logging_config, wiring
    from app.bulk.compare import Location
    from app.bulk.patterns import KeyFilter

    try:
        src = Location.parse(args.source, "s3")
        dst = Location.parse(args.destination, "gs")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        # The destination bucket comes from the command line, not GCS_BUCKET_NAME.
        settings = config.load_settings(gcs_bucket_name=dst.bucket)
    except errors.StartupError as exc:
        raise UsageError(str(exc)) from None
    logging_config.setup_logging(settings.log_format, "WARNING")
    keys = KeyFilter.from_globs(args.include, args.exclude)
    services = wiring.build(settings)
    try:
        return Started(src, dst, keys, services, open_output(output, option))
    except UsageError:
        services.close()
        raise


def open_output(path: str | None, option: str) -> IO[str] | None:
    """The file named by `option`, opened for writing (None: not asked for); UsageError when
    it cannot be."""
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")  # the command closes it
    except OSError as exc:
        raise UsageError(f"{option}: {exc}") from None


def fail(command: str, message: Any) -> int:
    """Print one line for a usage or configuration error; exit status 2."""
    print(f"replicator {command}: {message}", file=sys.stderr)
    return 2


def listing_failed(command: str, exc: ReplicatorError) -> int:
    """A missing bucket, refused credentials or a source that cannot be listed in order
    are configuration errors (2); anything else that stopped a listing fails the run (1)."""
    from app import errors

    if isinstance(exc, errors.BucketNotFound | errors.AccessDenied | errors.InvalidRequest):
        return fail(command, exc.detail)
    print(f"replicator {command}: listing failed: {exc.detail}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def watched(
    command: str, figures: Callable[[Snapshot], progress.Figures]
) -> Iterator[tuple[Tally, threading.Event]]:
    """A run's tally and stop event: within the block the progress display shows the tally
    through `figures`, and Ctrl-C sets the stop event (a second Ctrl-C quits at once)."""
    from app.bulk.tally import Tally

    tally, stop = Tally(), threading.Event()
    with interrupt.stop_on_ctrl_c(command, stop), progress.Progress(tally, figures, stop):
        yield tally, stop
