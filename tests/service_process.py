"""The service as a real process (`python -m uvicorn app.main:app`), for tests that need a
process of its own: signals, file descriptors, memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.dev import emulators

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60  # a safety net for a server that never comes up; never asserted on


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


def service_env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in settings}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


@contextlib.contextmanager
def running_service(workdir: Path, settings: dict[str, str]) -> Iterator[ServiceProcess]:
    """Start the service in `workdir` (no .env there) and wait until /health answers."""
    port = emulators.free_port()
    log = workdir / f"service-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
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
                raise RuntimeError(f"the service exited ({process.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(service.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
