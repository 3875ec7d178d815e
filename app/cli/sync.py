"""`replicator sync SOURCE DESTINATION`: make a GCS prefix match an S3 prefix.

Exit status 0 when every key was settled, 1 when some failed (each named on stderr and in
the report) or `--max-delete` was exceeded, 2 for a usage or configuration error (one line),
130 when Ctrl-C stopped it (app.cli.interrupt).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from app.cli import bulk, interrupt, progress


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "sync",
        help="copy what GCS lacks from S3, verified",
        description=(
            "List both sides once and copy every object the destination lacks or holds in "
            "another version, with the service's verification, metadata and preconditions. "
            "Ctrl-C stops cleanly: copies in flight finish, nothing new starts, nothing is "
            "deleted; a second Ctrl-C quits at once (an unfinished upload is never published). "
            "Exit status 0 when every key was settled, 1 when some failed, 2 for a usage or "
            "configuration error, 130 when interrupted."
        ),
    )
    bulk.add_common(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be copied and deleted"
    )
    parser.add_argument(
        "--delete",
        action="store_true",
        help="also remove destination objects under the prefix that the source lacks "
        "(never after a failed copy)",
    )
    parser.add_argument(
        "--max-delete",
        type=bulk.count,
        metavar="N",
        help="with --delete: delete nothing, and fail, when more than N would go",
    )
    parser.add_argument(
        "--concurrency",
        type=bulk.positive,
        metavar="N",
        help="objects copied at once (default: BATCH_CONCURRENCY)",
    )
    parser.add_argument(
        "--skip-archived",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report keys in an archive storage class (GLACIER, DEEP_ARCHIVE, Intelligent-"
        "Tiering archive tiers) as `archived` and go on (default); --no-skip-archived: each "
        "is a failure naming its class. Restored objects are copied either way",
    )
    parser.add_argument("--report", metavar="FILE", help="one JSON line per key: what happened")
    bulk.add_checkpoint(parser, "concluded (copied, already there; queued with --enqueue)")
    parser.add_argument(
        "--enqueue",
        action="store_true",
        help="copy nothing here: put one S3 event (ObjectCreated:Put) per key to copy on "
        "SQS_QUEUE_URL, for `replicator worker` to copy; with --dry-run, queue nothing",
    )
    parser.set_defaults(run=run, skip_teardown=True)


def run(args: argparse.Namespace) -> int:
    try:
        bulk_run = bulk.start(args, args.report, "--report")
    except bulk.UsageError as exc:
        return bulk.fail("sync", exc)
    try:
        report = _reporter(args, bulk_run.output)
        return _enqueue(args, bulk_run, report) if args.enqueue else _copy(args, bulk_run, report)
    finally:
        bulk_run.close()


def _reporter(args: argparse.Namespace, report_file: IO[str] | None) -> Callable[..., None]:
    """What to do with each key's outcome (a sync's or an enqueue's): a JSON line in the
    --report file; failures on stderr; what a dry run would do on stdout (stderr with --json)."""
    write = threading.Lock()

    def report(key: str, outcome: enum.StrEnum, detail: str) -> None:
        with write:
            if report_file is not None:
                entry = {"key": key, "action": str(outcome), "detail": detail}
                print(json.dumps(entry, ensure_ascii=False), file=report_file)
            if outcome == "failed":
                print(f"failed: {key}: {detail}", file=sys.stderr)
            elif outcome.startswith("would "):
                # Looked up now: a live display redirects them while it runs.
                print(f"{outcome} {key}", file=sys.stderr if args.json else sys.stdout)

    return report


def _copy(args: argparse.Namespace, bulk_run: bulk.Started, report: Callable[..., None]) -> int:
    from app import errors
    from app.bulk.sync import SyncOptions, TooManyDeletes

    if args.checkpoint and (args.delete or args.dry_run):
        return bulk.fail("sync", "--checkpoint keeps copies only: not with --delete or --dry-run")
    try:
        checkpoint = bulk.checkpoint(args, bulk_run, command="sync")
    except bulk.UsageError as exc:
        return bulk.fail("sync", exc)
    services = bulk_run.services
    options = SyncOptions(
        keys=bulk_run.keys,
        overwrite=services.settings.overwrite,
        dry_run=args.dry_run,
        delete=args.delete,
        max_delete=args.max_delete,
        concurrency=args.concurrency or services.settings.batch_concurrency,
        skip_archived=args.skip_archived,
        list_concurrency=args.list_concurrency or services.settings.list_concurrency,
        list_split_min_keys=services.settings.list_split_min_keys,
        inventory=bulk_run.inventory,
    )
    try:
        with bulk.watched("sync", progress.sync_figures) as (tally, stop):
            services.sync.run(
                bulk_run.source, bulk_run.destination, options, report, tally, stop, checkpoint
            )
    except TooManyDeletes as exc:
        print(f"replicator sync: {exc.detail}", file=sys.stderr)
        return 1
    except errors.ReplicatorError as exc:
        return bulk.listing_failed("sync", exc)
    summary = {**_summary(tally.snapshot()), "dry_run": args.dry_run, "interrupted": stop.is_set()}
    if summary["failed"] and args.delete and not stop.is_set():
        print("replicator sync: some copies failed: nothing was deleted", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(_line(summary), file=sys.stderr)
    if stop.is_set():
        return interrupt.INTERRUPTED
    return 1 if summary["failed"] else 0


def _enqueue(args: argparse.Namespace, bulk_run: bulk.Started, report: Callable[..., None]) -> int:
    from app import errors
    from app.bulk.enqueue import EnqueueOptions

    services, src, dst = bulk_run.services, bulk_run.source, bulk_run.destination
    settings = services.settings
    if services.enqueue is None:
        return bulk.fail("sync", "--enqueue needs SQS_QUEUE_URL, the queue the workers drain")
    if args.delete:
        return bulk.fail("sync", "--enqueue queues copies only: it cannot --delete")
    if args.checkpoint and args.dry_run:
        return bulk.fail("sync", "--checkpoint keeps what was queued: not with --dry-run")
    if not settings.replication_rules and src.prefix != dst.prefix:
        return bulk.fail(
            "sync",
            f"--enqueue: without REPLICATION_RULES the workers keep each key's name, so the "
            f"destination prefix must be the source's ({src.prefix!r}, not {dst.prefix!r})",
        )
    try:
        checkpoint = bulk.checkpoint(args, bulk_run, command="enqueue")
    except bulk.UsageError as exc:
        return bulk.fail("sync", exc)
    options = EnqueueOptions(
        keys=bulk_run.keys,
        overwrite=settings.overwrite,
        dry_run=args.dry_run,
        rules=tuple(settings.replication_rules),
        list_concurrency=args.list_concurrency or settings.list_concurrency,
        list_split_min_keys=settings.list_split_min_keys,
        inventory=bulk_run.inventory,
    )
    try:
        with bulk.watched("sync", progress.enqueue_figures) as (tally, stop):
            queued = services.enqueue.run(src, dst, options, report, tally, stop, checkpoint)
    except errors.ReplicatorError as exc:
        return bulk.listing_failed("sync", exc)
    snapshot = tally.snapshot()
    summary = {
        "queued": snapshot["found"] if args.dry_run else queued,
        "skipped": snapshot["skipped"],
        "failed": snapshot["failed"],
        "duration_seconds": round(snapshot.elapsed, 3),
        "dry_run": args.dry_run,
        "interrupted": stop.is_set(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        line = (
            f"queued {summary['queued']}, skipped {summary['skipped']}, failed "
            f"{summary['failed']} in {summary['duration_seconds']:.1f}s"
            + (" (dry run: nothing queued)" if args.dry_run else "")
        )
        print(f"interrupted: {line}" if stop.is_set() else line, file=sys.stderr)
    if stop.is_set():
        return interrupt.INTERRUPTED
    return 1 if summary["failed"] else 0


def _summary(snapshot: Any) -> dict[str, Any]:
    counts = ("copied", "skipped", "gone", "deleted", "failed", "bytes")
    return {
        **{name: snapshot[name] for name in counts},
        # Only when there are some: most buckets have neither.
        **{name: snapshot[name] for name in ("archived", "unverified") if snapshot[name]},
        "duration_seconds": round(snapshot.elapsed, 3),
    }


def _line(summary: dict[str, Any]) -> str:
    """The summary for a person; a dry run says what it would have copied and deleted."""
    copied, deleted = (
        ("would copy", "would delete") if summary["dry_run"] else ("copied", "deleted")
    )
    line = (
        f"{copied} {summary['copied']}, skipped {summary['skipped']}, gone {summary['gone']}, "
        f"{deleted} {summary['deleted']}, failed {summary['failed']}, {summary['bytes']} bytes in "
        f"{summary['duration_seconds']:.1f}s" + (" (dry run)" if summary["dry_run"] else "")
    )
    if summary.get("archived"):
        line += f"; {summary['archived']} archived, not copied (restore them first)"
    if summary.get("unverified"):
        line += f"; {summary['unverified']} copied unverified (S3 stated no checksum)"
    if summary["interrupted"]:
        return f"interrupted: {line}: nothing more was started, nothing deleted"
    return line
