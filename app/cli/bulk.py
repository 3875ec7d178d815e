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
    from app.bulk.inventory import Inventory
    from app.bulk.patterns import KeyFilter
    from app.bulk.tally import Snapshot, Tally
    from app.errors import ReplicatorError
    from app.wiring import Services


class UsageError(Exception):
    """A bad argument or setting: one line on stderr, exit status 2."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="s3://bucket[/prefix]; with --inventory it may be left out (the inventory's bucket)",
    )
    parser.add_argument(
        "destination", metavar="DESTINATION", nargs="?", help="gs://bucket[/prefix]"
    )
    parser.add_argument(
        "--inventory",
        metavar="MANIFEST",
        help="take the source's keys from an S3 Inventory report (CSV) instead of listing "
        "the bucket: s3://inventory-bucket/.../YYYY-MM-DDTHH-MMZ/manifest.json",
    )
    parser.add_argument(
        "--modified-since",
        metavar="TIME",
        type=_moment,
        help="with --inventory: only objects last modified at or after TIME (ISO 8601, UTC "
        "unless it says otherwise, e.g. 2026-01-31 or 2026-01-31T12:00:00Z)",
    )
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
    parser.add_argument(
        "--list-concurrency",
        type=positive,
        metavar="N",
        help="key ranges listed at once on each side (default: LIST_CONCURRENCY, 16; a source "
        "of no more than LIST_SPLIT_MIN_KEYS keys is listed as one range)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")


def add_checkpoint(parser: argparse.ArgumentParser, concluded: str) -> None:
    """--checkpoint and --resume; `concluded` says what concluded means for the command."""
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help=f"keep in FILE, per key range, the last key {concluded} (written every second), "
        "so that --resume can go on from there after an interruption or a kill; 'ledger': "
        "keep it in LEDGER_URL's Redis, under a name derived from the run's locations and "
        "filters, so that the same command with --resume finds it from any machine",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --checkpoint: go on from where the run that wrote FILE stopped, listing "
        "and comparing nothing it had concluded",
    )


LEDGER = "ledger"  # --checkpoint ledger: kept in LEDGER_URL's Redis, named for the run


def checkpoint(args: argparse.Namespace, started: Started, **run: Any) -> Any:
    """The Checkpoint of --checkpoint (resumed with --resume) for a run described by `run`
    (the command, what else changes its outcome) and the locations and filters, or None;
    UsageError saying why it cannot be used. `--checkpoint ledger` keeps it in the shared
    ledger under a name derived from that description, so the same command line finds it
    again from any machine."""
    import hashlib
    import json
    from pathlib import Path

    from app.bulk.checkpoint import Checkpoint, CheckpointError, FileStore, Store
    from app.ledger.checkpoints import CheckpointUnreadable

    if args.checkpoint is None:
        if args.resume:
            raise UsageError("--resume needs --checkpoint FILE (or ledger), where to resume from")
        return None
    described = {
        **run,
        "source": str(started.source),
        "destination": str(started.destination),
        "include": args.include,
        "exclude": args.exclude,
        "inventory": args.inventory,
    }
    store: Store
    if args.checkpoint == LEDGER:
        checkpoints = started.services.ledger_checkpoints()
        if checkpoints is None:
            raise UsageError("--checkpoint ledger needs LEDGER_URL, the ledger to keep it in")
        text = json.dumps(described, sort_keys=True)
        store = checkpoints.store(hashlib.sha256(text.encode()).hexdigest()[:32])
    else:
        store = FileStore(Path(args.checkpoint))
    if not args.resume:
        return Checkpoint(store, described)
    try:
        return Checkpoint.resume(store, described)
    except (CheckpointError, CheckpointUnreadable) as exc:
        raise UsageError(str(exc)) from None


def _moment(value: str) -> Any:
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


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
    inventory: Inventory | None = None  # the source's keys, with --inventory

    def close(self) -> None:
        if self.output is not None:
            self.output.close()
        if self.inventory is not None:
            self.inventory.close()
        self.services.close()


def start(
    args: argparse.Namespace, output: str | None, option: str, append: bool = False
) -> Started:
    """The two locations, the key filter, the services built for them and the file `output`
    named by `option`, opened for writing (`append`: at its end); UsageError with one line
    for a bad location, setting or file."""
    from app import config, errors, logging_config, wiring
    from app.bulk.compare import Location
    from app.bulk.inventory import parse_url
    from app.bulk.patterns import KeyFilter

    source, destination = args.source, args.destination
    if destination is None:
        if not args.inventory:
            raise UsageError("DESTINATION is missing")
        source, destination = None, source
    if args.modified_since is not None and not args.inventory:
        raise UsageError("--modified-since needs --inventory (whose rows say when)")
    try:
        src = Location.parse(source, "s3") if source is not None else None
        dst = Location.parse(destination, "gs")
        if args.inventory:
            parse_url(args.inventory)
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
        if settings.startup_probe:
            reach(services, dst)
        inventory = None
        if args.inventory:
            src, inventory = _inventory(args, src, services)
        assert src is not None
        return Started(src, dst, keys, services, open_output(output, option, append), inventory)
    except UsageError:
        services.close()
        raise


def _inventory(
    args: argparse.Namespace, src: Location | None, services: Services
) -> tuple[Location, Inventory]:
    """The source location (the inventory's bucket when not given) and the inventory of
    --inventory, read and sorted; UsageError saying why it cannot be used."""
    from app import errors
    from app.bulk.compare import Location
    from app.bulk.inventory import Inventory, read_manifest

    try:
        manifest = read_manifest(services.source, args.inventory, services.retry)
        if src is None:
            src = Location("s3", manifest.source_bucket)
        elif src.bucket != manifest.source_bucket:
            raise UsageError(
                f"{args.inventory} is an inventory of s3://{manifest.source_bucket}, not of {src}"
            )
        loaded = Inventory.load(
            services.source, manifest, src.prefix, services.retry, args.modified_since
        )
    except errors.ReplicatorError as exc:
        raise UsageError(f"--inventory: {exc.detail}") from None
    return src, loaded


def reach(services: Services, destination: Location) -> None:
    """A quick look at both sides before any work, as the service's start-up probe (short
    timeouts, no retries): UsageError with one line, naming the setting that points at the
    side that does not answer, instead of a listing retried and failed."""
    from app import errors

    settings = services.settings
    try:
        services.probe.reach_source()
    except errors.StartupError as exc:
        setting = "S3_ENDPOINT_URL" if settings.s3_endpoint_url else "AWS_REGION"
        raise UsageError(f"{setting}: {exc}") from None
    try:
        services.probe.reach_destination(destination.bucket)
    except errors.StartupError as exc:
        if isinstance(exc.__cause__, errors.BucketNotFound):  # named on the command line
            raise UsageError(f"gs://{destination.bucket} does not exist") from None
        if settings.storage_emulator_host and settings.local_gcs_path is None:
            raise UsageError(f"STORAGE_EMULATOR_HOST: {exc}") from None
        raise UsageError(str(exc)) from None  # LOCAL_GCS_PATH's lines name it


def open_output(path: str | None, option: str, append: bool = False) -> IO[str] | None:
    """The file named by `option`, opened for writing (`append`: at its end; None: not asked
    for); UsageError when it cannot be."""
    if path is None:
        return None
    try:
        return open(path, "a" if append else "w", encoding="utf-8")  # the command closes it
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
