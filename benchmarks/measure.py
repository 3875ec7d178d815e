"""Timed runs: wall time, the amount of work done, and the CPU each process spent meanwhile.

CPU seconds come from /proc/PID/stat for the servers, from this process for the harness
itself, and from the waited-for children (rclone) for the external tool.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime and stime, fields 14 and 15


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _all_cpu(pids: Mapping[str, int]) -> dict[str, float]:
    readings = {name: cpu_seconds(pid) for name, pid in pids.items()}
    readings["harness"] = time.process_time()
    readings["rclone"] = _children_cpu()
    return readings


@dataclass
class Sample:
    """One timed run. `rate` is work per second in the comparison's unit."""

    seconds: float
    rate: float
    cpu: dict[str, float]


@dataclass
class Timing:
    """Filled in when the `timed` block ends."""

    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def sample(self, work: float) -> Sample:
        """The run as a Sample, once the caller has checked the work was really done."""
        return Sample(round(self.seconds, 4), work / self.seconds, self.cpu)


@contextlib.contextmanager
def timed(pids: Mapping[str, int]) -> Iterator[Timing]:
    """Wall time of the block and the CPU seconds each process (by name) spent in it."""
    timing = Timing()
    before = _all_cpu(pids)
    start = time.perf_counter()
    yield timing
    timing.seconds = time.perf_counter() - start
    after = _all_cpu(pids)
    spent = {name: round(after[name] - before[name], 3) for name in before}
    timing.cpu = {name: value for name, value in spent.items() if value > 0}


@dataclass
class Contender:
    """One side of a comparison: its runs, and what went wrong in the runs that failed."""

    label: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    median: float | None = None

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.median = statistics.median(s.rate for s in self.samples)

    def median_cpu(self) -> dict[str, float]:
        names = {name for s in self.samples for name in s.cpu}
        return {
            name: round(statistics.median(s.cpu.get(name, 0.0) for s in self.samples), 3)
            for name in sorted(names)
        }


@dataclass
class Comparison:
    """One scenario: the service and what it is measured against, in one unit."""

    title: str
    unit: str
    contenders: dict[str, Contender]
    details: dict[str, Any] = field(default_factory=dict)  # what else a scenario measured

    def ratio(self, name: str, other: str) -> float | None:
        """The ratio of medians, `name` over `other`; None when either side has no figure."""
        ours, theirs = self.contenders[name].median, self.contenders[other].median
        if ours is None or not theirs:
            return None
        return ours / theirs


def alternate(names: list[str], repetition: int) -> list[str]:
    """Run order for one repetition: as given on even ones, pairwise swapped on odd ones,
    so no contender always runs first (warm caches) or right after a heavy one."""
    if repetition % 2 == 0:
        return list(names)
    swapped: list[str] = []
    for i in range(0, len(names), 2):
        swapped.extend(reversed(names[i : i + 2]))
    return swapped


def attempt(
    contender: Contender,
    pids: Mapping[str, int],
    run: Callable[[], float],
    verify: Callable[[], None] = lambda: None,
) -> None:
    """Time `run`, which returns the work it did (in the comparison's unit times seconds),
    then `verify` (untimed) that the work was really done. A run that fails either way is
    recorded as an error, not as a figure, and the benchmark goes on."""
    try:
        with timed(pids) as timing:
            work = run()
        verify()
    except Exception as exc:
        contender.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        return
    contender.record(timing.sample(work))
