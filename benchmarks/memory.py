"""Scenario 4: peak RSS of the service copying objects of two sizes, each in a fresh service
process, so each peak (VmHWM) belongs to one copy. A streaming copy's peak should hardly grow
with the object: the growth from the smaller to the larger is the figure to watch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from benchmarks.measure import MiB, timed
from benchmarks.stack import DESTINATION_BUCKET, SOURCE_BUCKET, Stack, service_running


@dataclass
class MemoryRun:
    size_mib: int
    started_mib: float  # VmHWM once the service answers, before the copy
    peak_mib: float  # VmHWM after the copy
    seconds: float
    cpu: dict[str, float]


@dataclass
class Memory:
    runs: list[MemoryRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def peak_mib(self) -> float | None:
        return max(run.peak_mib for run in self.runs) if self.runs else None

    @property
    def growth_mib(self) -> float | None:
        """Peak of the largest object's copy minus that of the smallest."""
        if len(self.runs) < 2:
            return None
        return self.runs[-1].peak_mib - self.runs[0].peak_mib


def _key(size: int) -> str:
    return f"memory/{size // MiB}MiB.bin"


def seed(stack: Stack, sizes: list[int]) -> None:
    for size in sizes:
        stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=_key(size), Body=os.urandom(size))


def run(stack: Stack, sizes: list[int]) -> Memory:
    """Smallest object first; one fresh service process per size."""
    seed(stack, sizes)
    memory = Memory()
    for size in sorted(sizes):
        key = _key(size)
        try:
            with service_running(stack, f"memory-{size // MiB}MiB") as service:
                started = service.peak_rss_mib()
                with timed(stack.pids(service)) as timing:
                    service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=key)
                stack.expect_size(DESTINATION_BUCKET, key, size)
                peak = service.peak_rss_mib()
        except Exception as exc:
            memory.errors.append(f"{size // MiB} MiB: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        finally:
            stack.discard(DESTINATION_BUCKET, key)
        memory.runs.append(
            MemoryRun(size // MiB, round(started, 1), round(peak, 1), timing.seconds, timing.cpu)
        )
    return memory
