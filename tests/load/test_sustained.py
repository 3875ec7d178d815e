"""Sustained load on loopback: 64 clients mixing single and batch requests, a fixed number each
(so the test costs requests, not seconds, and stops by itself at any speed).

What it checks, none of it a rate (rates are `make bench`'s): every answer is a 200; after a
warm-up that fills the connection pools, open file descriptors (sockets included) rise only by
what the requests in flight hold and come back to idle, and RSS stays put, each within less
than a leak of one descriptor, or of 32 KiB, per measured request would add; the destination
holds the right bytes at the end.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from app.dev import emulators
from tests.conftest import Buckets
from tests.service_process import running_service, service_settings

CLIENTS = 64
WARM_UP_REQUESTS = 2  # per client: fills the connection pools before anything is measured
MEASURED_REQUESTS = 10  # per client: 640 requests measured
# Descriptors above idle while requests run: sockets to the clouds, about 45 seen here.
FD_IN_FLIGHT = 96
# Idle after the measured requests vs idle before: keep-alive connections pooled at a new
# peak of concurrency, a few seen here.
FD_GROWTH = 32
RSS_GROWTH_KB = 16 * 1024  # idle after vs idle before: allocator growth, under 1 MiB seen here
SAMPLE_SECONDS = 0.2
KEYS = [f"load/object-{i:03d}.bin" for i in range(60)]


def test_sustained_load_from_64_clients(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    payloads = {key: os.urandom(random.randint(1, 64 * 1024)) for key in KEYS}
    for key, data in payloads.items():
        buckets.put(key, data)
    settings = service_settings(moto_server.url, gcs_server.url, buckets.dest, LOG_LEVEL="WARNING")
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    # The clients wait (connections open) after the warm-up and at the end, for measurements.
    warmed_up = threading.Barrier(CLIENTS + 1)
    finished = threading.Barrier(CLIENTS + 1)

    def client(seed: int) -> None:
        try:
            send(random.Random(seed))
        except BaseException:
            warmed_up.abort()  # the test then fails at once, not at a timeout
            finished.abort()
            raise

    def send(rng: random.Random) -> None:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            for n in range(WARM_UP_REQUESTS + MEASURED_REQUESTS):
                if n == WARM_UP_REQUESTS:
                    warmed_up.wait()
                if rng.random() < 0.7:
                    body: dict[str, Any] = {"s3_bucket": buckets.source, "s3_key": rng.choice(KEYS)}
                    if rng.random() < 0.2:
                        body["overwrite"] = "always"  # keep real copies in the mix
                    response = http.post("/v1/replicate", json=body)
                else:
                    keys = rng.sample(KEYS, 8)
                    response = http.post(
                        "/v1/replicate/batch", json={"s3_bucket": buckets.source, "s3_keys": keys}
                    )
                with lock:
                    statuses[response.status_code] += 1
            finished.wait()

    with running_service(tmp_path, settings) as service:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        warmed_up.wait()
        rss_idle_before = service.status("VmRSS")
        fds_idle_before = service.open_fds()
        requests_before = sum(statuses.values())
        fds_busy = []
        while finished.n_waiting < CLIENTS and not finished.broken:
            fds_busy.append(service.open_fds())
            time.sleep(SAMPLE_SECONDS)
        fds_idle_after = service.open_fds()
        rss_idle_after = service.status("VmRSS")
        requests_measured = sum(statuses.values()) - requests_before
        finished.wait()
        for thread in threads:
            thread.join(timeout=120)

    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) == CLIENTS * (WARM_UP_REQUESTS + MEASURED_REQUESTS)
    # A leak grows with the requests served: one descriptor, or 32 KiB (the average object),
    # per request would be more than any of these allowances.
    assert max(FD_IN_FLIGHT, FD_GROWTH) < requests_measured
    assert RSS_GROWTH_KB < 32 * requests_measured
    assert max(fds_busy) - fds_idle_before <= FD_IN_FLIGHT, (fds_idle_before, fds_busy)
    assert fds_idle_after - fds_idle_before <= FD_GROWTH, (fds_idle_before, fds_idle_after)
    assert rss_idle_after - rss_idle_before < RSS_GROWTH_KB, (rss_idle_before, rss_idle_after)
    for key in KEYS[:5]:
        assert buckets.destination_bytes(key) == payloads[key]
