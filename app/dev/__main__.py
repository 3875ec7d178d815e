"""`make dev`: moto as S3 on :9000, fake-gcs-server as GCS on :4443, demo data, the API on :8000.

DEV_API_PORT, DEV_S3_PORT and DEV_GCS_PORT move them. Ctrl-C (or SIGTERM) stops all three and
frees the ports. If an emulator dies, one line says which, the rest stop, and the exit code is 1.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import boto3
import urllib3
import uvicorn

from app.dev import emulators

SOURCE_BUCKET = "source-bucket"
POLL_SECONDS = 0.2  # how often the watcher looks at the emulators


def seed(s3_url: str, gcs_url: str, destination_bucket: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.put_object(
        Bucket=SOURCE_BUCKET,
        Key="hello.txt",
        Body=b"Hello from S3! This object was replicated by cross-cloud-replicator.\n",
        ContentType="text/plain",
        Metadata={"origin": "make-dev"},
    )
    created = urllib3.request(
        "POST",
        f"{gcs_url}/storage/v1/b?project=local-emulator",
        json={"name": destination_bucket},
    )
    if created.status != 200:
        raise RuntimeError(f"fake-gcs-server did not create {destination_bucket}: {created.data!r}")


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


def _ports() -> tuple[int, int, int]:
    """The API, S3 and GCS ports; ValueError naming the variable that is not a port."""
    ports = []
    for name, default in (("DEV_API_PORT", 8000), ("DEV_S3_PORT", 9000), ("DEV_GCS_PORT", 4443)):
        value = os.environ.get(name, str(default))
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ValueError(f"{name}={value!r} is not a port number")
        ports.append(int(value))
    return ports[0], ports[1], ports[2]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the emulators too, as Ctrl-C does


def main() -> int:
    try:
        api_port, s3_port, gcs_port = _ports()
    except ValueError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    for port, what in ((api_port, "the API"), (s3_port, "moto (S3)"), (gcs_port, "fake-gcs")):
        try:
            emulators.ensure_port_free(port, what)
        except emulators.PortInUse as exc:
            print(f"make dev: {exc}; stop whatever holds it and try again", file=sys.stderr)
            return 1
    destination_bucket = os.environ.setdefault("GCS_BUCKET_NAME", "destination-bucket")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    # uvicorn handles SIGINT and SIGTERM while it serves, then raises the signal again once
    # it has stopped: this handler turns that SIGTERM into the same clean exit as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    running: dict[str, emulators.Emulator] = {}
    watcher: Watcher | None = None
    try:
        running["moto (S3)"] = s3 = emulators.start_moto(s3_port)
        running["fake-gcs-server (GCS)"] = gcs = emulators.start_fake_gcs(gcs_port)
        seed(s3.url, gcs.url, destination_bucket)
        os.environ.update(S3_ENDPOINT_URL=s3.url, STORAGE_EMULATOR_HOST=gcs.url)
        os.environ.pop("LOCAL_GCS_PATH", None)
        print(
            f"S3 (moto) at {s3.url} with s3://{SOURCE_BUCKET}/hello.txt; "
            f"GCS (fake-gcs-server) at {gcs.url} with gs://{destination_bucket}\n"
            f"API at http://127.0.0.1:{api_port} (docs at /docs). Ctrl-C stops everything.",
            flush=True,
        )
        config = uvicorn.Config("app.main:app", host="127.0.0.1", port=api_port, log_level="info")
        server = uvicorn.Server(config)
        watcher = Watcher(running, server)
        watcher.start()
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
