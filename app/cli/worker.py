"""`replicator worker`: drain SQS_QUEUE_URL's S3 events until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "worker",
        help="drain the SQS queue of S3 events",
        description=(
            "Consume S3 event notifications from SQS_QUEUE_URL (directly from S3, through SNS "
            "or EventBridge) and make GCS match the source for every key they name. Stops "
            "after the copies in flight on SIGTERM or Ctrl-C. Exit status 0 after a clean "
            "stop, 2 when it cannot start."
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from app.worker.main import run as run_worker

    return run_worker()
