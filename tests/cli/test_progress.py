"""What a person sees while `replicator sync` and `check` run, and what Ctrl-C does.

The live display is tested on a real pseudo-terminal, as a person's terminal would show it;
Ctrl-C is a real SIGINT to the real process while an upload is held in flight by the fault
proxy, and what the tests look at afterwards is the bucket at GCS.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.dev import emulators
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy
from tests.service_process import (
    REPLICATOR,
    RUN_TIMEOUT,
    replicator,
    service_env,
    service_settings,
)

COLUMNS = 120
TERMINAL_OUTPUT = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")
CHUNK_PUT = "upload_id="  # every PUT to a resumable upload session
MiB = 1024 * 1024
WAIT = 60  # a safety net for a condition that never comes; never asserted on


def on_terminal(args: list[str], cwd: Path, settings: dict[str, str]) -> tuple[int, str]:
    """Run `replicator` with stdin, stdout and stderr on a pseudo-terminal COLUMNS wide; its
    exit status and the lines the terminal shows at the end."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    env = service_env({**settings, "COLUMNS": str(COLUMNS), "TERM": "xterm-256color"})
    process = subprocess.Popen(
        [str(REPLICATOR), *args], cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([leader], [], [], 0.5)
            if not readable:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process and its terminal are gone
                break
            if not chunk:
                break
            received += chunk
        status = process.wait(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return status, screen(received.decode(errors="replace"))


def screen(output: str) -> list[str]:
    """The lines a terminal shows after `output`, as its carriage returns, line feeds, cursor
    moves up and line erasures leave them (what a live display draws with); blank lines and
    trailing spaces dropped, colours and other sequences ignored."""
    rows, row, column = [""], 0, 0
    for match in TERMINAL_OUTPUT.finditer(output):
        text, (argument, command) = match.group(0), match.groups()
        if text == "\r":
            column = 0
        elif text == "\n":
            row, column = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif command == "A":
            row = max(0, row - int(argument or 1))
        elif command == "K":
            rows[row] = ""
        elif command is None:
            line = rows[row].ljust(column)
            rows[row] = line[:column] + text + line[column + len(text) :]
            column += len(text)
    return [line.rstrip() for line in rows if line.strip()]


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def settings_for(moto: str, gcs: str, buckets: Buckets, **extra: str) -> dict[str, str]:
    return service_settings(moto, gcs, buckets.dest, RETRY_DELAY="0.01", **extra)


def test_a_terminal_shows_the_counts_and_keeps_each_key_line_whole(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    buckets.put_random("a", 3000)
    buckets.put_random("b/c", 1000)
    settings = settings_for(moto_server.url, gcs_server.url, buckets)
    source, destination = f"s3://{buckets.source}", f"gs://{buckets.dest}"

    status, lines = on_terminal(["sync", source, destination], tmp_path, settings)
    assert status == 0, lines
    [frame, summary] = lines  # the final frame stays, above the summary
    assert "2/2 objects, 3.9 KiB/3.9 KiB" in frame
    assert summary.startswith("copied 2, skipped 0, gone 0, deleted 0, failed 0, 4000 bytes in ")

    status, lines = on_terminal(["check", source, destination], tmp_path, settings)
    assert status == 0, lines
    [first, second, frame, summary] = lines  # each key's line printed above the display
    assert (first, second) == ("= a", "= b/c")
    assert "2 keys compared (2 identical, 0 missing, 0 extra, 0 different, 0 errors)" in frame
    assert summary == "2 identical, 0 missing, 0 extra, 0 different, 0 errors"


def test_off_a_terminal_a_progress_line_comes_every_interval(
    tmp_path: Path, s3_proxy: FaultProxy, gcs_server: emulators.Emulator, buckets: Buckets
) -> None:
    buckets.put("slow", b"its GET is held for 2 s")
    settings = settings_for(
        s3_proxy.url, gcs_server.url, buckets, REPLICATOR_PROGRESS_SECONDS="0.5"
    )
    s3_proxy.add(Fault("GET", f"/{buckets.source}/slow", "delay", stall_for=2, times=1))
    source, destination = f"s3://{buckets.source}", f"gs://{buckets.dest}"
    sync = replicator("sync", source, destination, cwd=tmp_path, **settings)
    assert sync.returncode == 0, sync.stderr
    progress = [line for line in sync.stderr.splitlines() if line.startswith("... ")]
    assert progress, sync.stderr
    assert "0/1 objects" in progress[0]
    assert sync.stderr.splitlines()[-1].startswith("copied 1, ")

    listing = f"/{buckets.source}?list-type=2"  # the source's listing page, held for 2 s
    s3_proxy.add(Fault("GET", listing, "delay", stall_for=2, times=1))
    check = replicator("check", source, destination, cwd=tmp_path, **settings)
    assert check.returncode == 0, check.stderr
    assert any(line.startswith("... 0 keys compared") for line in check.stderr.splitlines()), (
        check.stderr
    )


Held = tuple[subprocess.Popen[str], dict[str, bytes], Fault]


@pytest.fixture
def hold_upload(
    tmp_path: Path, moto_server: emulators.Emulator, gcs_proxy: FaultProxy, buckets: Buckets
) -> Callable[[float], Held]:
    """Start `replicator sync` of four 8 MiB objects, one copy at a time in 1 MiB chunks, and
    wait until the first object's second chunk is held by the proxy for `seconds`: a copy is
    in flight, one chunk of it at GCS, unpublished."""

    def start(seconds: float) -> Held:
        data = {f"big-{n}": buckets.put_random(f"big-{n}", 8 * MiB) for n in range(4)}
        held = gcs_proxy.add(Fault("PUT", CHUNK_PUT, "delay", stall_for=seconds, nth=2))
        settings = settings_for(moto_server.url, gcs_proxy.url, buckets, UPLOAD_CHUNK_SIZE=str(MiB))
        process = subprocess.Popen(
            [str(REPLICATOR), "sync", f"s3://{buckets.source}", f"gs://{buckets.dest}"]
            + ["--concurrency", "1"],
            cwd=tmp_path,
            env=service_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + WAIT
        while held.matched < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.fired == 1, process.communicate(timeout=WAIT)
        return process, data, held

    return start


def visible(buckets: Buckets) -> dict[str, str]:
    """Every object the destination bucket lists, by name: its MD5."""
    return {blob.name: blob.md5_hash for blob in buckets.gcs.list_blobs(buckets.dest)}


def test_ctrl_c_lets_the_copy_in_flight_finish_and_starts_nothing_more(
    hold_upload: Callable[[float], Held], buckets: Buckets
) -> None:
    process, data, _ = hold_upload(3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130, err
    objects = visible(buckets)
    assert "big-0" in objects  # the copy in flight finished
    assert len(objects) < len(data)  # and not every copy was started
    assert objects == {name: md5(data[name]) for name in objects}  # each one whole
    assert err.splitlines()[-1].startswith(
        f"interrupted: copied {len(objects)}, skipped 0, gone 0, deleted 0, failed 0, "
    )


def test_a_second_ctrl_c_quits_at_once_and_publishes_nothing_partial(
    hold_upload: Callable[[float], Held], buckets: Buckets
) -> None:
    process, _, held = hold_upload(30)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    # Well before the proxy lets the held chunk go (30 s): the process did not wait for it.
    _, err = process.communicate(timeout=15)
    assert process.returncode == 130, err
    assert "quit at once" in err
    assert held.fired == 1
    assert visible(buckets) == {}  # the first object's upload never finished
