"""Logging: rich lines on a terminal (plain lines otherwise), JSON lines with LOG_FORMAT=json.

Every record carries the id of the request it belongs to (`request_id`), set by the request
middleware and carried into worker threads with the context; a record of a job over HTTP also
carries the job's id (`job_id`), set on the job's thread and carried the same way.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
T = TypeVar("T")


def in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` bound to the caller's context (its request and job ids), for work handed to other
    threads; each call runs in its own copy, so calls may run concurrently."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(fn, *args, **kwargs)

    return run


class _ContextFilter(logging.Filter):
    """Puts the ids on the record: `request_id`, `job_id` ("" outside a job) and `ids`, both
    as plain lines show them ("<request id>" or "<request id> job <job id>")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = rid = request_id.get()
        record.job_id = job = job_id.get()
        record.ids = f"{rid} job {job}" if job else rid
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if job := getattr(record, "job_id", ""):
            entry["job_id"] = job
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_format: str = "rich", level: str = "INFO") -> None:
    """Send every log line, uvicorn's included, through one handler. Safe to call again."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        # Imported here: off a terminal (the CLI in a script, a container) rich is not used,
        # and importing it costs 20 ms of every command's start-up.
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("[%(ids)s] %(message)s", datefmt="[%X]"))
    else:
        # A log file or a container: plain lines, which cost a fraction of rich's rendering.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(ids)s] %(message)s"))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "replicator"]:
        root.removeHandler(old)
    handler.set_name("replicator")
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The request middleware logs each request with its id; uvicorn's own line would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for noisy in ("botocore", "boto3", "urllib3", "google", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # botocore logs a traceback for each failed credential refresh, then raises it when the
    # credentials are due (the caller reports it in one line) or keeps the current ones.
    logging.getLogger("botocore.credentials").setLevel(logging.ERROR)
