"""`replicator check SOURCE DESTINATION`: compare without copying, like `rclone check`.

One line per key, as rclone's `--combined`: `= key` identical, `- key` missing at the
destination, `+ key` only at the destination, `* key` different, `! key` could not be compared
(with the reason). Exit status 0 only when nothing differs, 1 otherwise, 2 for a usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from app.cli import bulk


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
    parser.add_argument("--combined", metavar="FILE", help="write the lines to FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from app import errors
    from app.services.sync import Mark, classify, compare

    try:
        bulk_run = bulk.start(args, args.combined, "--combined")
    except bulk.UsageError as exc:
        return bulk.fail("check", exc)
    services, dst, combined = bulk_run.services, bulk_run.destination, bulk_run.output
    started = time.monotonic()
    counts = dict.fromkeys(Mark, 0)
    try:
        pairs = compare(
            services.source,
            services.destination,
            bulk_run.source,
            dst,
            bulk_run.keys,
            services.retry,
        )
        for pair in pairs:
            mark, reason = classify(pair, dst)
            counts[mark] += 1
            line = f"{mark} {pair.key}"
            if combined is not None:
                print(line, file=combined)
            if not args.json:
                print(line)
            if mark == Mark.ERROR:
                print(f"{line}: {reason}", file=sys.stderr)
    except errors.ReplicatorError as exc:
        return bulk.listing_failed("check", exc)
    finally:
        bulk_run.close()
    summary = {
        "identical": counts[Mark.IDENTICAL],
        "missing": counts[Mark.MISSING],
        "extra": counts[Mark.EXTRA],
        "different": counts[Mark.DIFFERENT],
        "errors": counts[Mark.ERROR],
        "duration_seconds": round(time.monotonic() - started, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            ", ".join(f"{n} {name}" for name, n in summary.items() if name != "duration_seconds"),
            file=sys.stderr,
        )
    differs = sum(n for mark, n in counts.items() if mark != Mark.IDENTICAL)
    return 1 if differs else 0
