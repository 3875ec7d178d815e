"""`replicator failures`: what could not be replicated, and why.

One line per key: its state (`dead_letter`: its message is in the dead-letter queue;
`retrying`: still on the queue), when it last failed, how many times its message was
received, s3://bucket/key, and the last reason the worker noted (see app.events.dead_letters).
`--json` prints the same as one JSON list. Exit status 0 when nothing failed, 1 when something
did, 2 for a configuration error (no SQS_QUEUE_URL, no dead-letter queue).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.cli import bulk


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "failures",
        help="list what could not be replicated, and why",
        description=(
            "List the keys of the messages in SQS_QUEUE_URL's dead-letter queue and those "
            "the worker noted as failing: when, how many tries, and the last reason. Reads "
            "the dead-letter queue without moving anything. Exit status 0 when nothing "
            "failed, 1 when something did."
        ),
    )
    parser.add_argument(
        "--max", type=bulk.positive, default=1000, metavar="N", help="list N keys at most"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime

    from app import errors

    try:
        dead_letters, services = start("failures")
    except bulk.UsageError as exc:
        return bulk.fail("failures", exc)
    try:
        found = dead_letters.failures(args.max)
    except errors.InvalidRequest as exc:
        return bulk.fail("failures", exc.detail)
    except errors.ReplicatorError as exc:
        print(f"replicator failures: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        services.close()
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in found], indent=2))
    else:
        for failed in found:
            when = datetime.datetime.fromtimestamp(failed.when, datetime.UTC)
            where = f"s3://{failed.s3_bucket}/{failed.s3_key}" if failed.s3_key else "-"
            print(
                f"{failed.state:<11} {when:%Y-%m-%dT%H:%M:%SZ} {failed.tries:>3} tries  "
                f"{where}  {failed.reason}  (message {failed.message_id})"
            )
        print(f"{len(found)} failed", file=sys.stderr)
    return 1 if found else 0


def start(command: str) -> tuple[Any, Any]:
    """The dead letters and the services they come from; UsageError without a queue."""
    from app import config, errors, logging_config, wiring

    try:
        settings = config.load_settings()
    except errors.StartupError as exc:
        raise bulk.UsageError(str(exc)) from None
    logging_config.setup_logging(settings.log_format, "WARNING")
    if settings.sqs_queue_url is None:
        raise bulk.UsageError(
            f"configuration error: SQS_QUEUE_URL: required by `replicator {command}`"
        )
    services = wiring.build(settings)
    assert services.dead_letters is not None
    return services.dead_letters, services
