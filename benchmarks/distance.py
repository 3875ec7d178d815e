"""Scenario `distance`: the copies at 20 and 50 ms per round trip (benchmarks.delay in front
of both servers), where speed comes from requests in flight, not CPU: many 256 KiB objects
in one batch against `rclone copy` at the same concurrency (16), and one large object (also
in 8 MiB parts at 20 ms). SeaweedFS is the S3, so the source's CPU is not the limit.

The in-flight limit of the batch: 16 copies in flight, each two round trips long (a batch
copies a key the destination's listing lacks with its GET, then one upload: counted on the
wire), allow 16 / (2 x RTT) per second. Beside it, the limit of this machine's CPU: its cores
over the CPU every process (service, SeaweedFS, fake-gcs-server, the delay proxy) spent per
object in the service's runs. One copy alone (POST /v1/replicate: a HEAD and the
destination's lookup at once, the GET, the upload) is timed too, as a check on the proxy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Iterator

from app.dev import emulators
from benchmarks import big_object, small_batch
from benchmarks.delay import delaying
from benchmarks.measure import Comparison, Contender, Sample
from benchmarks.rclone import Rclone
from benchmarks.stack import (
    DESTINATION_BUCKET,
    FAKE_GCS_MEMORY_LIMIT,
    SOURCE_BUCKET,
    Service,
    Stack,
    gcs_client_for,
    service_running,
)

RTTS_MS = (20, 50)
IN_FLIGHT = 16  # BATCH_CONCURRENCY's default, and rclone's --transfers here
ROUND_TRIPS = 2  # per batch copy: the GET, then the upload
ALONE_RUNS = 3


def run(
    base: Stack,
    tool: Rclone | None,
    count: int,
    size: int,
    big_size: int,
    repeat: int,
) -> dict[str, Comparison]:
    """`base`: a stack whose S3 is SeaweedFS. Comparisons by name: distance-RTT-small and
    distance-RTT-big for each RTT."""
    found: dict[str, Comparison] = {}
    for rtt in RTTS_MS:
        with _distant(base, rtt) as stack, service_running(stack, f"distance-{rtt}") as service:
            peer = tool.at(stack.moto.url, stack.gcs.url, f"distance-{rtt}") if tool else None
            small = small_batch.run(stack, service, peer, count, size, repeat)
            small.title = f"{count:,} x {size // 1024} KiB at {rtt} ms per round trip"
            alone = _alone(stack, service, count, repeat)
            per_copy = ROUND_TRIPS * rtt / 1000
            limit = Contender(f"limit: {IN_FLIGHT} in flight / {ROUND_TRIPS} round trips")
            limit.record(Sample(per_copy, IN_FLIGHT / per_copy, {}))
            small.contenders["limit"] = limit
            if cpu := _cpu_per_object(small.contenders["service"]):
                cores = len(os.sched_getaffinity(0))
                machine = Contender(f"limit: {cores} cores / all processes' CPU per object")
                machine.record(Sample(cpu, cores / cpu, {}))
                small.contenders["limit_cpu"] = machine
            small.details["copy_alone_seconds"] = alone
            small.details["copy_alone_round_trips"] = round(alone / (rtt / 1000), 1)
            found[f"distance-{rtt}-small"] = small
            big = big_object.run(
                stack, service, peer, big_size, repeat, limits=False, parts=rtt == RTTS_MS[0]
            )
            big.title = f"{big_size // big_object.MiB} MiB object at {rtt} ms per round trip"
            found[f"distance-{rtt}-big"] = big
    return found


@contextlib.contextmanager
def _distant(base: Stack, rtt: int) -> Iterator[Stack]:
    """`base`'s S3 and a fresh fake-gcs-server (its resumable uploads sent to the proxy too),
    both `rtt` ms away behind one delay proxy process."""
    s3_port, gcs_port = emulators.free_port(), emulators.free_port()
    external = f"http://{emulators.HOST}:{gcs_port}"
    gcs = emulators.start_fake_gcs(memory_limit=FAKE_GCS_MEMORY_LIMIT, external_url=external)
    with (
        emulators.running(gcs),
        delaying(rtt, {s3_port: base.moto.port, gcs_port: gcs.port}) as proxy,
    ):
        stack = dataclasses.replace(
            base,
            moto=emulators.Emulator("S3 via the delay", s3_port, base.moto.process),
            gcs=emulators.Emulator("GCS via the delay", gcs_port, gcs.process),
            gcs_client=gcs_client_for(gcs.url),
            others={"delay": proxy.pid},
        )
        stack.gcs_client.create_bucket(DESTINATION_BUCKET)
        yield stack


def _cpu_per_object(service: Contender) -> float | None:
    """CPU seconds per object of every process together, in the service's runs (median)."""
    if not service.samples:
        return None
    return statistics.median(sum(s.cpu.values()) / (s.rate * s.seconds) for s in service.samples)


def _alone(stack: Stack, service: Service, count: int, repeat: int) -> float:
    """Seconds for one small object's copy with nothing else in flight (median)."""
    seconds = []
    for n in range(max(ALONE_RUNS, repeat)):
        started = time.perf_counter()
        key = f"{small_batch.PREFIX}{n % count:05d}.bin"
        service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=key, gcs_key=f"alone/{n}")
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)
