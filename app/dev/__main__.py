"""`make dev`: moto as S3 (and SQS) on :9000, fake-gcs-server as GCS on :4443, demo data, the
API on :8000, and a worker draining a queue that `source-bucket`'s notifications feed (its
/health and /metrics on :8001): an object put into the bucket appears in GCS by itself.

DEV_API_PORT, DEV_S3_PORT, DEV_GCS_PORT and DEV_WORKER_PORT move them. Ctrl-C (or SIGTERM)
stops everything and frees the ports. If an emulator or the worker dies, one line says which,
the rest stop, and the exit code is 1.

From a script, `make dev &` then `kill $!`: SIGTERM, which GNU make passes on to this process.
SIGINT sent to make's pid alone stops nothing: make keeps it to itself and waits for its
children (and a script's background job ignores SIGINT from the start); a terminal's Ctrl-C
works because it reaches the whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any

import boto3
import urllib3
import uvicorn

from app.dev import emulators, plumbing

SOURCE_BUCKET = "source-bucket"
# Objects written before the notifications were wired: what `replicator sync` is for.
ARCHIVE_BUCKET = "archive-2024"
ARCHIVE = {
    "reports/q1.csv": b"q,1,2024\n",
    "reports/q2.csv": b"q,2,2024\n",
    "reports/q3.csv": b"q,3,2024\n",
    "reports/tmp/scratch.csv": b"scratch\n",
}
QUEUE = f"{SOURCE_BUCKET}-events"
POLL_SECONDS = 0.2  # how often the watcher looks at the emulators


def seed(s3_url: str, gcs_url: str, destination_bucket: str) -> plumbing.Queue:
    """The demo buckets, hello.txt and an archive to backfill, then a queue (with a
    dead-letter queue) that the source bucket's object events feed from now on; returns the
    queue."""
    options: dict[str, Any] = {
        "endpoint_url": s3_url,
        "region_name": "us-east-1",
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    s3 = boto3.client("s3", **options)
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.put_object(
        Bucket=SOURCE_BUCKET,
        Key="hello.txt",
        Body=b"Hello from S3! This object was replicated by cross-cloud-replicator.\n",
        ContentType="text/plain",
        Metadata={"origin": "make-dev"},
    )
    s3.create_bucket(Bucket=ARCHIVE_BUCKET)
    for key, body in ARCHIVE.items():
        s3.put_object(Bucket=ARCHIVE_BUCKET, Key=key, Body=body, ContentType="text/csv")
    created = urllib3.request(
        "POST",
        f"{gcs_url}/storage/v1/b?project=local-emulator",
        json={"name": destination_bucket},
    )
    if created.status != 200:
        raise RuntimeError(f"fake-gcs-server did not create {destination_bucket}: {created.data!r}")
    # After hello.txt, so the walk-through's first copy of it is the API's to make.
    queue = plumbing.queue_with_dead_letters(boto3.client("sqs", **options), QUEUE)
    plumbing.notify_queue(s3, SOURCE_BUCKET, queue)
    return queue


def start_worker(queue: plumbing.Queue, s3_url: str, port: int) -> emulators.Emulator:
    """`replicator worker` on the queue, as its own process (its logs go to this terminal)."""
    env = {**os.environ, "SQS_QUEUE_URL": queue.url, "SQS_ENDPOINT_URL": s3_url}
    env.setdefault("SQS_WAIT_SECONDS", "5")  # Ctrl-C waits for the long poll in progress
    env["WORKER_PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"], env=env, start_new_session=True
    )
    return emulators.Emulator("replicator worker", port, process, stop_timeout=30)


class Watcher(threading.Thread):
    """Polls the emulators while the API serves. When one exits, says which in one line and
    asks the server to stop; `main` then stops the rest."""

    def __init__(self, running: dict[str, emulators.Emulator], server: uvicorn.Server) -> None:
        super().__init__(name="emulator-watcher", daemon=True)
        self.running = running  # label -> emulator
        self.server = server
        self.done = threading.Event()  # set by main once it stops them itself
        self.died: str | None = None

    def run(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            for label, emulator in self.running.items():
                code = emulator.process.poll()
                if code is not None:
                    self.died = label
                    print(
                        f"make dev: {label} on :{emulator.port} exited with code {code}; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.server.should_exit = True
                    return


def _ports() -> tuple[int, int, int, int]:
    """The API, S3, GCS and worker ports; ValueError naming the variable that is not a port."""
    ports = []
    for name, default in (
        ("DEV_API_PORT", 8000),
        ("DEV_S3_PORT", 9000),
        ("DEV_GCS_PORT", 4443),
        ("DEV_WORKER_PORT", 8001),
    ):
        value = os.environ.get(name, str(default))
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ValueError(f"{name}={value!r} is not a port number")
        ports.append(int(value))
    return ports[0], ports[1], ports[2], ports[3]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the emulators too, as Ctrl-C does


def _stopped_already(signum: int, frame: FrameType | None) -> None:
    """The signal uvicorn stopped for, raised again: everything else stops next anyway."""


def main() -> int:
    try:
        api_port, s3_port, gcs_port, worker_port = _ports()
    except ValueError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    for port, what in (
        (api_port, "the API"),
        (s3_port, "moto (S3)"),
        (gcs_port, "fake-gcs"),
        (worker_port, "the worker"),
    ):
        try:
            emulators.ensure_port_free(port, what)
        except emulators.PortInUse as exc:
            print(f"make dev: {exc}; stop whatever holds it and try again", file=sys.stderr)
            return 1
    destination_bucket = os.environ.setdefault("GCS_BUCKET_NAME", "destination-bucket")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    # Until the API serves, SIGTERM stops the start-up as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    running: dict[str, emulators.Emulator] = {}
    watcher: Watcher | None = None
    try:
        running["moto (S3)"] = s3 = emulators.start_moto(s3_port)
        running["fake-gcs-server (GCS)"] = gcs = emulators.start_fake_gcs(gcs_port)
        queue = seed(s3.url, gcs.url, destination_bucket)
        os.environ.update(S3_ENDPOINT_URL=s3.url, STORAGE_EMULATOR_HOST=gcs.url)
        os.environ.pop("LOCAL_GCS_PATH", None)
        os.environ.pop("SQS_QUEUE_URL", None)  # the API copies /v1/events itself
        running["replicator worker"] = start_worker(queue, s3.url, worker_port)
        print(
            f"S3 (moto) at {s3.url} with s3://{SOURCE_BUCKET}/hello.txt; "
            f"GCS (fake-gcs-server) at {gcs.url} with gs://{destination_bucket}\n"
            f"API at http://127.0.0.1:{api_port} (docs at /docs); a worker drains {queue.url}, "
            f"fed by s3://{SOURCE_BUCKET}'s events (metrics at :{worker_port}/metrics).\n"
            "Ctrl-C stops everything (from a script: SIGTERM to make's pid).",
            flush=True,
        )
        config = uvicorn.Config("app.main:app", host="127.0.0.1", port=api_port, log_level="info")
        server = uvicorn.Server(config)
        watcher = Watcher(running, server)
        watcher.start()
        # uvicorn handles SIGINT and SIGTERM while it serves, then raises the signal again once
        # it has stopped. Raised as an exception, it would cancel the server's lifespan from
        # inside the event loop (a traceback instead of a clean shutdown): here it does nothing,
        # and the rest is stopped below.
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, _stopped_already)
        server.run()
        if watcher.died is not None or not server.started:
            return 1  # the emulator's line, or uvicorn's own message, says why
    except emulators.PortInUse as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if watcher is not None:
            watcher.done.set()
            watcher.join()  # from here on, an emulator that exits is one we stopped
        for emulator in reversed(running.values()):
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
