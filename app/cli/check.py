"""`replicator check SOURCE DESTINATION`: compare without copying, like `rclone check`.

One line per key, as rclone's `--combined`: `= key` identical, `- key` missing at the
destination, `+ key` only at the destination, `* key` different, `! key` could not be compared
(the reason of `*` and `!` on stderr). `--checksum` and `--download` look closer at the keys
identical by the listings (app.bulk.check). Exit status 0 only when nothing differs, 1
otherwise, 2 for a usage or configuration error, 130 when interrupted. With `--checkpoint
FILE`, `--resume` goes on where a stopped check left off, and its summary and `--combined`
file are those of a check never stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from app.cli import bulk, interrupt, progress


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "check",
        help="compare S3 with GCS without copying",
        description=(
            "List both sides once and print one line per key: '=' identical, '-' missing at "
            "the destination, '+' only at the destination, '*' different, '!' not comparable. "
            "Exit status 0 only when nothing differs."
        ),
    )
    bulk.add_common(parser)
    parser.add_argument(
        "--checksum",
        action="store_true",
        help="also compare the checksums both sides expose: the MD5 in the listings, or "
        "S3's full-object CRC32C from one HEAD per multipart object",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="also read both sides whole and compare the SHA-256 of their bytes",
    )
    parser.add_argument(
        "--concurrency",
        type=bulk.positive,
        metavar="N",
        help="keys looked at closer at once (default: BATCH_CONCURRENCY)",
    )
    parser.add_argument("--combined", metavar="FILE", help="write the lines to FILE")
    bulk.add_checkpoint(parser, "reported (with the counts and --combined's length)")
    parser.set_defaults(run=run, skip_teardown=True)


def _checkpoint(args: argparse.Namespace, bulk_run: bulk.Started) -> Any:
    """The Checkpoint of --checkpoint, keeping --combined's length; a resumed one cuts
    --combined back to the length it kept, so that no line is written twice."""
    if args.checkpoint == bulk.LEDGER and args.combined is None:
        raise bulk.UsageError(
            "--checkpoint ledger needs --combined FILE: the lines held for key order are kept "
            "beside it, on this machine"
        )
    run = {"command": "check", "combined": args.combined}
    run |= {"checksum": args.checksum, "download": args.download}
    checkpoint = bulk.checkpoint(args, bulk_run, **run)
    combined = bulk_run.output
    if checkpoint is None or combined is None:
        return checkpoint
    if checkpoint.resumed:
        combined.truncate(checkpoint.kept("combined") or 0)

    def length() -> int:
        combined.flush()
        return os.fstat(combined.fileno()).st_size

    checkpoint.keep("combined", length)
    return checkpoint


def _held_in(args: argparse.Namespace) -> Path:
    """Where the lines of ranges waiting for those before them are kept: beside the
    checkpoint's file, or (kept in the ledger) beside --combined."""
    beside = args.combined if args.checkpoint == bulk.LEDGER else args.checkpoint
    return Path(f"{beside}.held")


def run(args: argparse.Namespace) -> int:
    from app import errors
    from app.bulk.check import CheckOptions, Mark, differs

    try:
        bulk_run = bulk.start(args, args.combined, "--combined", append=args.resume)
    except bulk.UsageError as exc:
        return bulk.fail("check", exc)
    services, combined = bulk_run.services, bulk_run.output
    try:
        checkpoint = _checkpoint(args, bulk_run)
    except bulk.UsageError as exc:
        bulk_run.close()
        return bulk.fail("check", exc)

    def report(key: str, mark: Mark, reason: str) -> None:
        line = f"{mark} {key}"
        if combined is not None:
            print(line, file=combined)
        if not args.json:
            print(line)
        if mark in (Mark.DIFFERENT, Mark.ERROR):
            print(f"{line}: {reason}", file=sys.stderr)

    options = CheckOptions(
        keys=bulk_run.keys,
        checksum=args.checksum,
        download=args.download,
        concurrency=args.concurrency or services.settings.batch_concurrency,
        list_concurrency=args.list_concurrency or services.settings.list_concurrency,
        list_split_min_keys=services.settings.list_split_min_keys,
        inventory=bulk_run.inventory,
    )
    try:
        with bulk.watched("check", progress.check_figures) as (tally, stop):
            services.check.run(
                bulk_run.source,
                bulk_run.destination,
                options,
                report,
                tally,
                stop,
                checkpoint,
                _held_in(args) if checkpoint is not None else None,
            )
    except errors.ReplicatorError as exc:
        return bulk.listing_failed("check", exc)
    finally:
        bulk_run.close()
    snapshot = tally.snapshot()
    counts = ["identical", "missing", "extra", "different", "errors"]
    if snapshot["archived"]:
        counts.append("archived")  # reported apart from missing: restore them first
    if args.checksum:
        counts.append("unverified")  # identical by size and record: no checksum to compare
    summary = {name: snapshot[name] for name in counts}
    if args.json:
        duration = round(snapshot.elapsed, 3)
        print(json.dumps({**summary, "duration_seconds": duration, "interrupted": stop.is_set()}))
    else:
        line = ", ".join(f"{n} {name}" for name, n in summary.items())
        print(f"interrupted: {line}" if stop.is_set() else line, file=sys.stderr)
    if stop.is_set():
        return interrupt.INTERRUPTED
    return 1 if differs(snapshot) else 0
