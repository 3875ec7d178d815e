"""`replicator serve`: the HTTP service in this process, as `uvicorn app.main:app` runs it.

Settings are loaded before the server starts, so a bad setting stops it with one line per
problem and exit status 2. After that, uvicorn's own rules apply: a cloud that does not answer
the start-up probe, or a port that is taken, stops it with exit status 3. SIGTERM and Ctrl-C
shut it down gracefully (requests in flight finish) with exit status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any, NoReturn

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # those LOG_LEVEL accepts


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service (one process) until SIGTERM or Ctrl-C.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=8000, help="the port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING or ERROR; overrides LOG_LEVEL (default: LOG_LEVEL, or INFO)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found installed: this one turns it into exit status 0 rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)

    from app import config, errors

    overrides = {"log_level": args.log_level} if args.log_level else {}
    try:
        settings = config.load_settings(**overrides)
    except errors.StartupError as exc:
        print(exc, file=sys.stderr)
        return 2

    import uvicorn

    from app import logging_config, main

    logging_config.setup_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        main.create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,  # uvicorn's lines go through the service's handler, like every other
        log_level=settings.log_level.lower(),
    )
    return 0


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)
