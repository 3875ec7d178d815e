"""`replicator redrive`: put the dead-letter queue's messages back on the queue.

Everything, when nothing filters it: SQS's message move task where the endpoint offers it
(the command says so and returns; SQS moves them). Otherwise, and with --include, --max or
--dry-run, each message is received, sent to the queue, then deleted from the dead-letter
queue: a crash in between duplicates a message, never loses one. One line per message moved.
Exit status 0 when done, 1 when SQS failed part way, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.cli import bulk, failures


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "redrive",
        help="put the dead-letter queue's messages back on the queue",
        description=(
            "Move messages from SQS_QUEUE_URL's dead-letter queue back to it, so the worker "
            "tries them again; prints each message moved."
        ),
    )
    parser.add_argument(
        "--include",
        metavar="GLOB",
        help="only messages with a key matching this glob (fnmatch: '*' matches '/' too)",
    )
    parser.add_argument("--max", type=bulk.positive, metavar="N", help="move N messages at most")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be moved; move nothing"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from app import errors
    from app.events.dead_letters import Moved

    try:
        dead_letters, services = failures.start("redrive")
    except bulk.UsageError as exc:
        return bulk.fail("redrive", exc)
    verb = "would move" if args.dry_run else "moved"

    def show(moved: Moved) -> None:
        print(f"{verb} {moved.message_id}: {', '.join(moved.keys) or '(no key)'}", flush=True)

    try:
        report = dead_letters.redrive(args.include, args.max, dry_run=args.dry_run, on_moved=show)
    except errors.InvalidRequest as exc:
        return bulk.fail("redrive", exc.detail)
    except errors.ReplicatorError as exc:
        print(f"replicator redrive: stopped: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        services.close()
    if report.task is not None:
        print(
            f"SQS is moving the dead-letter queue's {report.task_messages} messages back "
            f"(message move task {report.task})"
        )
    else:
        print(f"{len(report.moved)} messages {verb}", file=sys.stderr)
        if report.more:
            print("more wait in the dead-letter queue: run it again", file=sys.stderr)
    return 0
