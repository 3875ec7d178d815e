"""The service as a real process (`python -m uvicorn app.main:app`), for tests that need a
process of its own: start-up, signals, file descriptors, memory.

Each process starts in a directory of the test's choosing (so no `.env` is read there) with
the app's settings removed from the environment, and gets only the settings the test names.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.dev import emulators
from tests import http_calls

REPO = Path(__file__).resolve().parents[1]
REPLICATOR = Path(sys.executable).with_name("replicator")
RUN_TIMEOUT = 30  # a safety net for a command that hangs; never asserted on
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"TARGET_GCS_BUCKET"}
START_TIMEOUT = 60  # a safety net for a server that never comes up; never asserted on
STOP_TIMEOUT = 30  # likewise, for a server that does not stop


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def status(self, field: str) -> int:
        """A numeric field of /proc/PID/status (VmRSS, VmHWM: kB)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def service_settings(s3_url: str, gcs_url: str, bucket: str, **extra: str) -> dict[str, str]:
    """Settings for a service that copies from the S3 at `s3_url` to `bucket` at the GCS at
    `gcs_url`, with test credentials for S3; `extra` adds or replaces settings."""
    return {
        "S3_ENDPOINT_URL": s3_url,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "GCS_BUCKET_NAME": bucket,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        **extra,
    }


def service_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without the app's settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def service_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]


def replicator(
    *args: str, cwd: Path | None = None, timeout: float = RUN_TIMEOUT, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run the `replicator` console script to its end with only `settings` (killed after
    `timeout` seconds: a safety net, never a measure)."""
    return subprocess.run(
        [str(REPLICATOR), *args],
        cwd=cwd,
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def running_service(
    workdir: Path,
    settings: dict[str, str],
    command: Callable[[int], list[str]] = service_command,
    *,
    port_setting: str | None = None,
    name: str = "service",
) -> Iterator[ServiceProcess]:
    """Start the service (`command` for a free port) in `workdir`, wait until /health answers
    200, and terminate it at the end (unless the test has stopped it already). Fails the test
    if it never answers. With `port_setting`, the port is given in that setting instead of
    (or as well as) on the command line."""
    port = emulators.free_port()
    if port_setting is not None:
        settings = {**settings, port_setting: str(port)}
    log = workdir / f"{name}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(port),
            cwd=workdir,
            env=service_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(f"http://{emulators.HOST}:{port}", process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the {name} exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the {name} did not answer /health:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if http_calls.get(f"{service.url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
