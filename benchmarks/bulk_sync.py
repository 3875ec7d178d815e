"""Scenario 7 (`sync`): the command line's `replicator sync` and `replicator check` against
`rclone sync` and `rclone check` of the same objects. Each run is one process, timed from
launch to exit: start-up is included, since people run these by hand.

- the first sync of `count` small objects into an empty bucket, then a second one with
  nothing changed (rclone's HEADs every S3 object for its modification time);
- `check` of those objects, both tools against the bucket the replicator filled;
- at `large` objects: the merged listing's rate (`check`) and the no-change sync, with the
  peak RSS of each process at both sizes. The destination is filled once per invocation by
  one untimed `replicator sync`;
- start-up: `--help`, and `check` of an empty prefix.

Each set of objects is PUT once per invocation into an S3 bucket of its own (moto lists a
prefix by scanning the whole bucket) and reused by every repetition. Peak RSS is each
process's VmHWM, polled while it runs: its ru_maxrss (even from `os.wait4` of its own pid)
starts at the harness's RSS, which Linux carries into a child across fork and exec, and
RUSAGE_CHILDREN's is the largest of every child so far.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import Comparison, Contender, alternate, timed
from benchmarks.rclone import FLAGS, INSTALL_HINT, Rclone
from benchmarks.rclone import env as rclone_env
from benchmarks.small_batch import verify
from benchmarks.stack import REPO, Stack, s3_client, service_env

PREFIX = "sync/"
EMPTY_PREFIX = "empty/"
RCLONE_FLAGS = FLAGS["batch"]  # sync
RCLONE_CHECK_FLAGS = ("--checkers", "16", "--fast-list")
FILL_THREADS = 16  # more only adds contention: moto serves one request per core at a time
STARTUP_RUNS = 3  # per repetition, of each start-up command
REPLICATOR = str(Path(sys.executable).parent / "replicator")
POLL_SECONDS = 0.01  # VmHWM only grows: a late sample misses only the last 10 ms


class Unexpected(RuntimeError):
    """A process exited, but not having done what the run expected."""


@dataclass
class Exited:
    """One process, from launch to exit, measured on its own."""

    seconds: float
    status: int
    stdout: str
    stderr: str
    peak_rss_mib: float  # its VmHWM, the last reading before it exited
    cpu_seconds: float

    def expect_status(self, expected: int = 0) -> Exited:
        if self.status != expected:
            last = self.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise Unexpected(f"exit status {self.status}, expected {expected}: {last[0][:300]}")
        return self

    def summary(self) -> dict[str, Any]:
        """The JSON summary `--json` prints last on stdout."""
        self.expect_status()
        answer: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        return answer


def launch(command: list[str], env: Mapping[str, str], workdir: Path) -> Exited:
    with tempfile.TemporaryFile(dir=workdir) as out, tempfile.TemporaryFile(dir=workdir) as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        exited = threading.Event()
        peak = threading.Thread(target=_high_water_kib, args=(process.pid, exited, readings := []))
        peak.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        exited.set()
        peak.join()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Exited(
            seconds,
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            max(readings, default=0) / 1024,
            usage.ru_utime + usage.ru_stime,
        )


def _high_water_kib(pid: int, exited: threading.Event, readings: list[int]) -> None:
    """Append VmHWM of `pid` every POLL_SECONDS until it exits (a zombie has none)."""
    status = Path(f"/proc/{pid}/status")
    while not exited.is_set():
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                readings.append(int(line.split()[1]))
        exited.wait(POLL_SECONDS)


@dataclass
class Processes:
    """What the comparisons do not hold: per-process peaks, start-up times, the fill."""

    count: int
    large: int
    # "sync, nothing changed" or "check" -> "service" or "rclone" -> count -> runs
    peak_rss_mib: dict[str, dict[str, dict[int, list[float]]]] = field(default_factory=dict)
    startup_seconds: dict[str, list[float]] = field(default_factory=dict)
    fill_seconds: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def peak(self, run: str, contender: str, count: int, mib: float) -> None:
        runs = self.peak_rss_mib.setdefault(run, {}).setdefault(contender, {})
        runs.setdefault(count, []).append(round(mib, 1))


@dataclass
class Sets:
    """The S3 bucket holding each set of objects (under PREFIX), by object count."""

    buckets: dict[int, str]


def fill(stack: Stack, bucket: str, count: int, size: int) -> None:
    """`count` objects of `size` random bytes under PREFIX: PUTs from FILL_THREADS threads
    sharing one client (and its connection pool)."""
    s3 = s3_client(stack.moto.url, FILL_THREADS)
    s3.create_bucket(Bucket=bucket)

    def one(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}{i:06d}.bin", Body=os.urandom(size))

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(one, range(count)))


def run(
    stack: Stack, rclone: Rclone | None, count: int, large: int, size: int, repeat: int
) -> tuple[dict[str, Comparison], Processes]:
    env = service_env(stack)
    processes = Processes(count, large)
    sets = Sets({n: f"bench-sync-{n}" for n in (count, large)})
    for n, bucket in sets.buckets.items():
        started = time.monotonic()
        fill(stack, bucket, n, size)
        processes.fill_seconds[f"S3, {n:,} PUTs"] = round(time.monotonic() - started, 1)
    for bucket in ("bench-sync-large", "bench-sync-empty"):
        stack.gcs_client.create_bucket(bucket)
    started = time.monotonic()
    filled = launch(
        _replicator("sync", sets.buckets[large], "bench-sync-large"), env, stack.workdir
    )
    copied = filled.summary()["copied"]
    if copied != large:
        raise Unexpected(f"the untimed fill of {large:,} copied {copied}")
    processes.fill_seconds[f"GCS, replicator sync of {large:,}"] = round(
        time.monotonic() - started, 1
    )

    sync_label = "rclone sync " + " ".join(RCLONE_FLAGS)
    check_label = "rclone check " + " ".join(RCLONE_CHECK_FLAGS)
    comparisons = {
        "sync": _pair(f"sync of {count:,} x {size // 1024} KiB, empty destination", sync_label),
        "sync-again": _pair(f"second sync of {count:,}, nothing changed", sync_label),
        "sync-check": _pair(f"check of {count:,}, start-up included", check_label),
        "sync-check-large": _pair(f"check of {large:,}: the merged listing", check_label),
        "sync-again-large": Comparison(
            f"second sync of {large:,}, nothing changed",
            "objects/s",
            {"service": Contender("replicator sync")},
        ),
    }
    if rclone is None:
        for name, comparison in comparisons.items():
            if name != "sync-again-large":
                comparison.contenders["rclone"].errors.append(INSTALL_HINT)
    runner = _Runner(stack, env, rclone, processes)
    for repetition in range(repeat):
        _repetition(runner, comparisons, sets, count, large, size, repetition)
    return comparisons, processes


def _pair(title: str, rclone_label: str) -> Comparison:
    command = rclone_label.split()[1]
    return Comparison(
        title,
        "objects/s",
        {"service": Contender(f"replicator {command}"), "rclone": Contender(rclone_label)},
    )


def _replicator(command: str, bucket: str, destination: str, prefix: str = PREFIX) -> list[str]:
    return [
        REPLICATOR,
        command,
        f"s3://{bucket}/{prefix}",
        f"gs://{destination}/{prefix}",
        "--json",
    ]


@dataclass
class _Runner:
    stack: Stack
    env: dict[str, str]
    rclone: Rclone | None
    processes: Processes

    def command(self, name: str, verb: str, bucket: str, destination: str) -> list[str] | None:
        """The replicator's or rclone's VERB of bucket/PREFIX into destination/PREFIX; None
        for rclone when it is not installed."""
        if name == "service":
            return _replicator(verb, bucket, destination)
        if self.rclone is None:
            return None
        flags = RCLONE_FLAGS if verb == "sync" else RCLONE_CHECK_FLAGS
        return self.rclone.command(verb, f"{bucket}/{PREFIX}", f"{destination}/{PREFIX}", *flags)

    def timed(
        self,
        contender: Contender,
        name: str,
        command: list[str],
        work: int,
        check: Callable[[Exited], None],
    ) -> Exited | None:
        """One timed process; `check` (untimed) that it did the work. A failed run is recorded
        as an error, not as a figure."""
        env = self.env if name == "service" else rclone_env()
        try:
            with timed(self.stack.pids()) as timing:
                exited = launch(command, env, self.stack.workdir)
            check(exited)
        except Exception as exc:
            contender.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            return None
        # The waited-for child's CPU is in the "rclone" reading; the replicator is the service.
        if name == "service":
            timing.cpu["service"] = timing.cpu.pop("rclone", 0.0)
        contender.record(timing.sample(work))
        return exited


def _repetition(
    runner: _Runner,
    comparisons: dict[str, Comparison],
    sets: Sets,
    count: int,
    large: int,
    size: int,
    repetition: int,
) -> None:
    stack, processes = runner.stack, runner.processes
    source = sets.buckets[count]
    order = alternate(["service", "rclone"], repetition)
    buckets = {name: f"bench-sync-{name}-r{repetition}" for name in order}
    for bucket in buckets.values():
        stack.gcs_client.create_bucket(bucket)
    listed = functools.partial(verify, stack, prefix=PREFIX, count=count, size=size)

    def copied_all(bucket: str, exited: Exited) -> None:
        exited.expect_status()
        if "copied" in (summary := _summary_if_json(exited)) and summary["copied"] != count:
            raise Unexpected(f"copied {summary['copied']} of {count}: {summary}")
        listed(bucket)

    def nothing_copied(bucket: str, exited: Exited) -> None:
        exited.expect_status()
        summary = _summary_if_json(exited)
        if summary and (summary["copied"], summary["skipped"]) != (0, count):
            raise Unexpected(f"expected {count} skipped and nothing copied: {summary}")
        listed(bucket)

    for phase, check in (("sync", copied_all), ("sync-again", nothing_copied)):
        for name in order:
            if (command := runner.command(name, "sync", source, buckets[name])) is None:
                continue
            contender = comparisons[phase].contenders[name]
            checked = functools.partial(check, buckets[name])
            exited = runner.timed(contender, name, command, count, checked)
            if exited is not None and phase == "sync-again":
                processes.peak("sync, nothing changed", name, count, exited.peak_rss_mib)

    # Both check the bucket the replicator filled: rclone compares sizes and MD5s, which
    # any copy has; the replicator also wants its record of the source's ETag.
    targets = {
        "sync-check": (source, buckets["service"], count),
        "sync-check-large": (sets.buckets[large], "bench-sync-large", large),
    }
    for phase, (bucket, destination, n) in targets.items():
        for name in order:
            if (command := runner.command(name, "check", bucket, destination)) is None:
                continue
            contender = comparisons[phase].contenders[name]
            check = functools.partial(_all_identical, n)
            if (exited := runner.timed(contender, name, command, n, check)) is not None:
                processes.peak("check", name, n, exited.peak_rss_mib)

    again = comparisons["sync-again-large"].contenders["service"]
    command = _replicator("sync", sets.buckets[large], "bench-sync-large")
    check = functools.partial(_skipped_all, large)
    if (exited := runner.timed(again, "service", command, large, check)) is not None:
        processes.peak("sync, nothing changed", "service", large, exited.peak_rss_mib)
    _startup(runner, source, order)


def _summary_if_json(exited: Exited) -> dict[str, Any]:
    """The replicator's `--json` summary; {} for rclone, which prints none."""
    text = exited.stdout.strip()
    return exited.summary() if text.startswith("{") or "\n{" in text else {}


def _skipped_all(count: int, exited: Exited) -> None:
    summary = exited.summary()
    if (summary["copied"], summary["skipped"]) != (0, count):
        raise Unexpected(f"expected {count} skipped and nothing copied: {summary}")


def _all_identical(count: int, exited: Exited) -> None:
    """0 differences: the replicator's summary, or rclone's "N matching files" on stderr."""
    exited.expect_status()
    if summary := _summary_if_json(exited):
        identical = summary["identical"]
    else:
        found = re.search(r"(\d+) matching files", exited.stderr)
        identical = int(found.group(1)) if found else -1
    if identical != count:
        raise Unexpected(f"{identical} identical, expected {count}")


def _startup(runner: _Runner, source: str, order: list[str]) -> None:
    """`--help`, and `check` of an empty prefix, STARTUP_RUNS times each per contender."""
    rclone = runner.rclone
    commands: dict[str, tuple[list[str], Mapping[str, str]]] = {
        "replicator --help": ([REPLICATOR, "--help"], runner.env),
        "replicator check, empty prefix": (
            _replicator("check", source, "bench-sync-empty", EMPTY_PREFIX),
            runner.env,
        ),
    }
    if rclone is not None:
        empty = (f"{source}/{EMPTY_PREFIX}", f"bench-sync-empty/{EMPTY_PREFIX}")
        commands["rclone --help"] = ([rclone.binary, "--help"], rclone_env())
        commands["rclone check, empty prefix"] = (rclone.command("check", *empty), rclone_env())
    names = [name for name in commands if name.startswith("replicator")]
    pairs = [(name, name.replace("replicator", "rclone")) for name in names]
    for _ in range(STARTUP_RUNS):
        for ours, theirs in pairs:
            for name in (ours, theirs) if order[0] == "service" else (theirs, ours):
                if name not in commands:
                    continue
                command, env = commands[name]
                try:
                    exited = launch(command, env, runner.stack.workdir).expect_status()
                except Exception as exc:
                    runner.processes.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                runner.processes.startup_seconds.setdefault(name, []).append(
                    round(exited.seconds, 3)
                )
