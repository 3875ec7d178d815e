"""`make dev` as a real process (`python -m app.dev`, and `make dev` itself) on free ports:
how it stops.

It must stop everything when told to (Ctrl-C, SIGTERM; from a script, SIGTERM to make's pid),
and stop everything by itself, with one line saying why, when one of its emulators dies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.dev import emulators
from tests import http_calls
from tests.service_process import REPO, START_TIMEOUT, STOP_TIMEOUT, service_env


@dataclass
class MakeDev:
    process: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]  # API, S3, GCS, WORKER: free ones, never the defaults

    def output(self) -> str:
        return self.log.read_text()

    def children(self) -> dict[str, int]:
        """The emulators it started: "moto" / "fake-gcs-server" -> pid."""
        found = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                for name in ("moto", "fake-gcs-server"):
                    if name.encode() in command:
                        found[name] = int(pid)
        return found


@contextlib.contextmanager
def make_dev(workdir: Path) -> Iterator[MakeDev]:
    """`python -m app.dev` on three free ports, once its API answers /health."""
    ports = {name: emulators.free_port() for name in ("API", "S3", "GCS", "WORKER")}
    env = service_env({f"DEV_{name}_PORT": str(port) for name, port in ports.items()})
    log = workdir / "make-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.dev"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    dev = MakeDev(process, log, ports)
    children: dict[str, int] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"make dev exited with {process.returncode}:\n{dev.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"make dev's API did not answer /health:\n{dev.output()}")
            with contextlib.suppress(httpx.TransportError):
                url = f"http://{emulators.HOST}:{ports['API']}/health"
                if http_calls.get(url, timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        children = dev.children()
        assert set(children) == {"moto", "fake-gcs-server"}, children
        yield dev
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in children.values():  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def assert_all_stopped(dev: MakeDev, children: dict[str, int]) -> None:
    for name, port in dev.ports.items():
        emulators.ensure_port_free(port, name)  # PortInUse if anything still listens
    for pid in children.values():
        assert not Path(f"/proc/{pid}").exists(), f"emulator {pid} outlived make dev"


def test_an_emulator_that_dies_stops_make_dev_with_one_line(tmp_path: Path) -> None:
    with make_dev(tmp_path) as dev:
        children = dev.children()

        os.kill(children["fake-gcs-server"], signal.SIGKILL)
        exit_code = dev.process.wait(timeout=STOP_TIMEOUT)  # TimeoutExpired: still serving

        output = dev.output()
        assert exit_code == 1, output
        line = f"make dev: fake-gcs-server (GCS) on :{dev.ports['GCS']} exited with code -9"
        assert [x for x in output.splitlines() if "exited with code" in x] == [
            f"{line}; stopping"
        ], output
        assert "Traceback" not in output
        assert_all_stopped(dev, children)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_everything_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    with make_dev(tmp_path) as dev:
        children = dev.children()

        dev.process.send_signal(signum)
        exit_code = dev.process.wait(timeout=STOP_TIMEOUT)

        output = dev.output()
        assert exit_code == 0, output
        assert "exited with code" not in output
        assert "Traceback" not in output
        assert "Application shutdown complete" in output
        assert_all_stopped(dev, children)


def children_of(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_a_script_stops_make_dev_with_sigterm_to_makes_pid(tmp_path: Path) -> None:
    """What a script does: `make dev &`, then `kill $!` (SIGTERM). GNU make passes SIGTERM
    on to the recipe; Ctrl-C in a terminal reaches the whole process group anyway."""
    ports = {name: emulators.free_port() for name in ("API", "S3", "GCS", "WORKER")}
    env = service_env({f"DEV_{name}_PORT": str(port) for name, port in ports.items()})
    log = tmp_path / "make-dev.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-C", str(REPO), "dev"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as a background job of a script: not the test's group
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert make.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no /health:\n{log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                url = f"http://{emulators.HOST}:{ports['API']}/health"
                if http_calls.get(url, timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        started = descendants(make.pid)
        assert len(started) >= 4, started  # python -m app.dev, moto, fake-gcs-server, the worker

        make.send_signal(signal.SIGTERM)
        make.wait(timeout=STOP_TIMEOUT)

        output = log.read_text()
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output
        for name, port in ports.items():
            emulators.ensure_port_free(port, name)  # PortInUse if anything still listens
        for pid in started:
            assert not Path(f"/proc/{pid}").exists(), f"{pid} outlived make dev:\n{output}"
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
        for pid in started:  # whatever a failed test left behind
            if Path(f"/proc/{pid}").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
