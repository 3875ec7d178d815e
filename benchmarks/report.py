"""The figures side by side with the targets of issues 4, 12 and 20, as a table and as JSON."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.bulk_sync import Processes
from benchmarks.measure import Comparison, Contender
from benchmarks.memory import Memory


@dataclass
class Results:
    machine: dict[str, Any]
    options: dict[str, Any]
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # big ... worker
    memory: Memory | None = None
    sync: Processes | None = None  # the command line's peak RSS and start-up (scenario 7)
    failures: dict[str, str] = field(default_factory=dict)  # scenario -> what stopped it


@dataclass
class Target:
    what: str
    goal: str
    value: float | None
    met: bool | None  # None: not measured


@dataclass
class Row:
    scenario: str
    service: str
    other: str = ""
    other_figure: str = ""
    ratio: float | None = None
    target: Target | None = None


def _target(what: str, goal: str, value: float | None, met: Callable[[float], bool]) -> Target:
    return Target(what, goal, value, None if value is None else met(value))


def _figure(contender: Contender) -> str:
    if contender.median is None:
        return "[red]failed[/red]" if contender.errors else "-"
    rates = [s.rate for s in contender.samples]
    spread = f" [dim]({min(rates):,.1f}-{max(rates):,.1f})[/dim]" if len(rates) > 1 else ""
    return f"{contender.median:,.1f}{spread}"


def _comparison_rows(
    comparison: Comparison, goals: dict[str, tuple[str, Callable[[float], bool]]]
) -> list[Row]:
    service = comparison.contenders["service"]
    found: list[Row] = []
    for name, contender in comparison.contenders.items():
        if name == "service":
            continue
        ratio = comparison.ratio("service", name)
        target = None
        if name in goals:
            goal, met = goals[name]
            target = _target(f"{comparison.title}: service vs {contender.label}", goal, ratio, met)
        first = not found
        found.append(
            Row(
                f"{comparison.title}, {comparison.unit}" if first else "",
                _figure(service) if first else "",
                contender.label,
                _figure(contender),
                ratio,
                target,
            )
        )
    return found


def rows(results: Results) -> list[Row]:
    comparisons = results.comparisons
    table: list[Row] = []
    if "big" in comparisons:
        goals = {"rclone": (">= 1.5x", _ge(1.5)), "raw_upload": (">= 1.0x", _ge(1.0))}
        table += _comparison_rows(comparisons["big"], goals)
    if "small" in comparisons:
        table += _comparison_rows(comparisons["small"], {"rclone": (">= 1.5x", _ge(1.5))})
        table += _cpu_per_object_rows(comparisons["small"], "moto")
    if "seaweedfs" in comparisons:
        table += _comparison_rows(comparisons["seaweedfs"], {"rclone": (">= 2x", _ge(2.0))})
        table += _cpu_per_object_rows(comparisons["seaweedfs"], "seaweedfs", at_most=0.5)
    for name in sorted(n for n in comparisons if n.startswith("distance-")):
        if name.endswith("-small"):
            goals = {"rclone": (">= 1.5x", _ge(1.5)), "limit": (">= 0.8x", _ge(0.8))}
            table += _comparison_rows(comparisons[name], goals)
            table += _cpu_per_object_rows(comparisons[name], "seaweedfs")
        else:
            table += _comparison_rows(comparisons[name], {"rclone": (">= 1.5x", _ge(1.5))})
    if "skip" in comparisons:
        table += _comparison_rows(comparisons["skip"], {"head": (">= 0.8x", _ge(0.8))})
    if "worker" in comparisons:
        table += _worker_rows(results)
    if "replicas" in comparisons:
        table += _replicas_rows(comparisons["replicas"])
    if "replicas-cost" in comparisons:
        goals = {"local": (">= 0.9x", _ge(0.9))}
        table += _comparison_rows(comparisons["replicas-cost"], goals)
    if "sync" in comparisons:
        table += _sync_rows(results)
    memory = results.memory
    if memory is not None:
        for run in memory.runs:
            table.append(Row(f"peak RSS, {run.size_mib} MiB object", f"{run.peak_mib:.1f} MiB"))
        peak = memory.peak_mib
        table.append(
            Row(
                "peak RSS, largest object",
                "-" if peak is None else f"{peak:.1f} MiB",
                target=_target("peak RSS", "< 300 MiB", peak, lambda v: v < 300),
            )
        )
        growth = memory.growth_mib
        sizes = " -> ".join(f"{run.size_mib}" for run in memory.runs)
        table.append(
            Row(
                f"peak RSS growth, {sizes} MiB",
                "-" if growth is None else f"{growth:+.1f} MiB",
                target=_target("peak RSS growth", "< 48 MiB", growth, lambda v: v < 48),
            )
        )
    return table


def worker_limit(results: Results) -> float | None:
    """The rate moto allows one worker, 1 / (1/batch + 1/drain): the batch API's median for
    the same objects (scenario 2, this invocation) and the bare drain's. None without both."""
    worker, small = results.comparisons.get("worker"), results.comparisons.get("small")
    if worker is None or small is None:
        return None
    batch, drain = small.contenders["service"].median, worker.contenders["drain"].median
    if not batch or not drain:
        return None
    return 1 / (1 / batch + 1 / drain)


def worker_ratio(results: Results) -> float | None:
    limit, worker = worker_limit(results), results.comparisons["worker"].contenders["service"]
    return None if limit is None or worker.median is None else worker.median / limit


def cpu_ms_per_object(contender: Contender, process: str) -> float | None:
    """The median over runs of `process`'s CPU per object (a run's work is rate x seconds)."""
    if not contender.samples:
        return None
    per_object = [s.cpu.get(process, 0.0) / (s.rate * s.seconds) for s in contender.samples]
    return 1000 * statistics.median(per_object)


def _cpu_per_object_rows(
    comparison: Comparison, s3_name: str, at_most: float | None = None
) -> list[Row]:
    """CPU per object (ms; times 1,000 for CPU seconds per million objects): each contender's
    own process, then the S3 server's and fake-gcs-server's while it ran. `at_most`: the
    target on the service's CPU against rclone's."""
    found: list[Row] = []
    ours = cpu_ms_per_object(comparison.contenders["service"], "service")
    for name, contender in comparison.contenders.items():
        if name not in ("service", "rclone", "rclone_debian"):
            continue  # limits: no process of their own
        process = "service" if name == "service" else "rclone"
        own = cpu_ms_per_object(contender, process)
        if own is None:
            continue
        servers = ", ".join(
            f"{server} {value:.2f}"
            for server in (s3_name, "fake-gcs", "delay")
            if (value := cpu_ms_per_object(contender, server))
        )
        ratio = None if name == "service" or ours is None or not own else ours / own
        target = None
        if at_most is not None and name == "rclone":
            met = _le(at_most)
            target = _target("CPU per object, service vs rclone", f"<= {at_most}x", ratio, met)
        found.append(
            Row(
                "CPU ms per object" if not found else "",
                f"{own:.2f} {contender.label.split(' (')[0]}",
                f"servers meanwhile: {servers}" if servers else "",
                "",
                ratio,
                target,
            )
        )
    return found


def _worker_rows(results: Results) -> list[Row]:
    worker = results.comparisons["worker"]
    found = _comparison_rows(worker, {})  # against the bare drain
    median = worker.contenders["service"].median
    small = results.comparisons.get("small")
    for contender in small.contenders.values() if small else []:
        ratio = None if median is None or not contender.median else median / contender.median
        label = f"{contender.label} (scenario 2)"
        found.append(Row("", "", label, _figure(contender), ratio))
    limit, ratio = worker_limit(results), worker_ratio(results)
    found.append(
        Row(
            "",
            "",
            "limit: 1 / (1/batch + 1/bare drain)",
            f"{limit:,.1f}" if limit else "needs `small` in the same run",
            ratio,
            _target("worker vs the emulators' limit", ">= 0.8x", ratio, _ge(0.8)),
        )
    )
    cpu = cpu_ms_per_object(worker.contenders["service"], "service")
    found.append(Row("worker CPU per object", "-" if cpu is None else f"{cpu:.2f} ms"))
    put_seconds = worker.details.get("put_seconds", {}).get("service")
    if put_seconds and worker.contenders["service"].samples:
        wall = statistics.median(s.seconds for s in worker.contenders["service"].samples)
        spent = f"{statistics.median(put_seconds):.1f} s of {wall:.1f} s"
        found.append(Row("S3 PUTs feeding the worker's queue", spent))
    return found


def _replicas_rows(comparison: Comparison) -> list[Row]:
    """Wall-time rates with and without the Redis ledger, then bytes read from S3 per byte
    replicated for each (the median of the runs)."""
    table = _comparison_rows(comparison, {})  # no goal on the rate: the ledger saves reads
    ratios = comparison.details.get("read_ratio", {})
    for name, contender in comparison.contenders.items():
        runs = ratios.get(name) or []
        value = statistics.median(runs) if runs else None
        target = None
        if name == "service":
            target = _target(
                "bytes read from S3 per byte replicated", "<= 1.02", value, lambda v: v <= 1.02
            )
        figure = "-" if value is None else f"{value:.3f}x"
        table.append(
            Row(f"S3 bytes read per byte replicated, {contender.label}", figure, target=target)
        )
    return table


def _sync_rows(results: Results) -> list[Row]:
    """The command line against rclone: rates, then each process's peak RSS at both sizes
    (the growth is the figure to watch), then start-up in seconds."""
    comparisons = results.comparisons
    goals = {
        "sync": (">= 1.3x", _ge(1.3)),
        "sync-again": (">= 3x", _ge(3.0)),
        "sync-check": None,  # retired (issue 20): Python's start-up against rclone's bounds it
        "sync-check-large": (">= 1.0x", _ge(1.0)),
    }
    table: list[Row] = []
    for name, goal in goals.items():
        if name in comparisons:
            table += _comparison_rows(comparisons[name], {"rclone": goal} if goal else {})
    if "sync-again-large" in comparisons:
        again = comparisons["sync-again-large"]
        table.append(Row(f"{again.title}, {again.unit}", _figure(again.contenders["service"])))
    processes = results.sync
    if processes is None:
        return table
    sizes = (processes.count, processes.large)
    for run, by_contender in processes.peak_rss_mib.items():
        ours, theirs = (_peaks(by_contender.get(name, {}), sizes) for name in ("service", "rclone"))
        small, large = ours
        growth = None if small is None or large is None else large - small
        table.append(
            Row(
                f"peak RSS, replicator {run}, {sizes[0]:,} -> {sizes[1]:,} objects",
                " -> ".join(_mib(peak) for peak in ours),
                f"rclone {run.split(',')[0]}" if any(theirs) else "",
                " -> ".join(_mib(peak) for peak in theirs) if any(theirs) else "",
                target=_target(f"peak RSS growth, {run}", "< 5 MiB growth", growth, _lt(5)),
            )
        )
    startup = {name: statistics.median(runs) for name, runs in processes.startup_seconds.items()}
    for name, seconds in startup.items():
        if not name.startswith("replicator"):
            continue
        their_name = name.replace("replicator", "rclone")
        theirs = startup.get(their_name)
        table.append(
            Row(
                f"start-up: {name}, s (ratio: theirs / ours)",
                f"{seconds:.2f}",
                their_name if theirs else "",
                f"{theirs:.2f}" if theirs else "",
                theirs / seconds if theirs else None,
            )
        )
    return table


def _peaks(runs: dict[int, list[float]], sizes: tuple[int, int]) -> list[float | None]:
    return [statistics.median(runs[n]) if runs.get(n) else None for n in sizes]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MiB"


def _lt(threshold: float) -> Callable[[float], bool]:
    return lambda value: value < threshold


def _le(threshold: float) -> Callable[[float], bool]:
    return lambda value: value <= threshold


def _ge(threshold: float) -> Callable[[float], bool]:
    return lambda value: value >= threshold


def _status(target: Target | None) -> str:
    if target is None:
        return ""
    if target.met is None:
        return "[yellow]not measured[/yellow]"
    return "[green]met[/green]" if target.met else "[red]not met[/red]"


def print_report(console: Console, results: Results) -> None:
    repeat = results.options["repeat"]
    table = Table(title=f"cross-cloud-replicator vs rclone and the raw limits (median of {repeat})")
    for column in ("Scenario", "Service", "Compared with", "Their figure", "Ratio"):
        table.add_column(column, justify="right" if column in ("Ratio",) else "left")
    table.add_column("Target")
    table.add_column("Status")
    for row in rows(results):
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        goal = row.target.goal if row.target else ""
        cells = (row.scenario, row.service, row.other, row.other_figure, ratio, goal)
        table.add_row(*cells, _status(row.target))
    console.print(table)
    console.print(_cpu_table(results))
    _print_problems(console, results)


def _cpu_table(results: Results) -> Table:
    """Where the CPU went: the medians per run, by process, to see who the bottleneck is."""
    processes = ("service", "moto", "seaweedfs", "fake-gcs", "delay", "harness", "rclone")
    table = Table(title="CPU seconds per run (median), by process")
    table.add_column("Run")
    for column in ("wall s", *processes):
        table.add_column(column, justify="right")
    for comparison in results.comparisons.values():
        for contender in comparison.contenders.values():
            if not any(s.cpu for s in contender.samples):
                continue  # not run, or a limit computed from the others
            wall = statistics.median(s.seconds for s in contender.samples)
            cpu = contender.median_cpu()
            workers = [value for name, value in cpu.items() if name.startswith("worker-")]
            cpu.setdefault("service", sum(workers))  # the replicas' workers, together
            cells = [_seconds(cpu.get(p, 0.0)) for p in processes]
            table.add_row(f"{comparison.title}: {contender.label}", f"{wall:.2f}", *cells)
    for run in results.memory.runs if results.memory else []:
        cells = [_seconds(run.cpu.get(p, 0.0)) for p in processes]
        table.add_row(f"copy of {run.size_mib} MiB, fresh service", f"{run.seconds:.2f}", *cells)
    return table


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value >= 0.005 else ""


def _print_problems(console: Console, results: Results) -> None:
    problems = [f"{name}: {error}" for name, error in results.failures.items()]
    for comparison in results.comparisons.values():
        for contender in comparison.contenders.values():
            problems += [f"{comparison.title}, {contender.label}: {e}" for e in contender.errors]
    if results.memory:
        problems += [f"peak RSS: {error}" for error in results.memory.errors]
    if results.sync:
        problems += [f"sync, start-up: {error}" for error in results.sync.errors]
    for problem in problems:
        console.print(f"[red]failed run[/red] {problem}", highlight=False)


def markdown(results: Results, command: str) -> str:
    """The figures table in Markdown, headed by what it was measured on: the README's
    performance table comes from this, for one invocation on one commit."""
    machine = results.machine
    load = f"{machine['load_average']} -> {machine.get('load_average_after', '?')}"
    lines = [
        f"`{command}` at {machine['commit']}; {machine['nproc']} CPUs ({machine['cpu']}), "
        f"load {load}; {machine['rclone']}; medians of {results.options['repeat']}.",
        "",
        "| Scenario | Service | Compared with | Their figure | Ratio | Target | Status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows(results):
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        goal = row.target.goal if row.target else ""
        cells = (row.scenario, row.service, row.other, row.other_figure, ratio, goal)
        status = _plain(_status(row.target))
        lines.append("| " + " | ".join(_plain(cell) for cell in (*cells, status)) + " |")
    return "\n".join(lines) + "\n"


def _plain(cell: str) -> str:
    """A cell without rich's markup ([dim] ... [/dim]) or the table's pipes."""
    return re.sub(r"\[/?[a-z ]+\]", "", cell).replace("|", "\\|")


def write_json(results: Results, directory: Path, stamp: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"bench-{stamp}.json"
    payload = dataclasses.asdict(results)
    for name, comparison in results.comparisons.items():
        payload["comparisons"][name]["ratios_of_medians"] = {
            other: comparison.ratio("service", other)
            for other in comparison.contenders
            if other != "service"
        }
    if "worker" in results.comparisons:
        worker = payload["comparisons"]["worker"]
        worker["limit"] = worker_limit(results)
        worker["ratio_to_limit"] = worker_ratio(results)
        service = results.comparisons["worker"].contenders["service"]
        worker["cpu_ms_per_object"] = cpu_ms_per_object(service, "service")
    if results.memory is not None:
        payload["memory"]["peak_mib"] = results.memory.peak_mib
        payload["memory"]["growth_mib"] = results.memory.growth_mib
    payload["targets"] = [dataclasses.asdict(row.target) for row in rows(results) if row.target]
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
