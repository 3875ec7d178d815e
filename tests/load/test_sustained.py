"""Sustained load on loopback: 64 clients for LOAD_SECONDS (30 by default) mixing single and
batch requests. Bounded in time and count, and it stops by itself.

What it checks: no 5xx; over the second half of the run (the first half warms the
connection pools), open file descriptors (sockets included) stay within a bounded swing
while many times that many requests are served, and RSS stays steady; correct bytes at the end.
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
SECONDS = float(os.environ.get("LOAD_SECONDS", "30"))
WARM_UP = SECONDS / 2
MAX_REQUESTS = 200_000
FD_SWING = 48  # connection churn seen here: about 30 descriptors up and down
KEYS = [f"load/object-{i:03d}.bin" for i in range(60)]


def test_64_clients_for_30_seconds(
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
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=service.url, timeout=60) as http:
            while not stop.is_set():
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
                    if sum(statuses.values()) >= MAX_REQUESTS:
                        stop.set()

    with running_service(tmp_path, settings) as service:
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP)
        rss_warm = service.status("VmRSS")
        requests_warm = sum(statuses.values())
        fds_seen = [service.open_fds()]
        while not stop.wait(1.0) and time.monotonic() - started < SECONDS:
            fds_seen.append(service.open_fds())
        rss_end = service.status("VmRSS")
        requests_measured = sum(statuses.values()) - requests_warm
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

    assert sum(statuses.values()) > CLIENTS
    assert set(statuses) == {200}, statuses
    # Keep-alive connections open and close, so the count swings; a leak would instead grow
    # with the requests served, which far outnumber the allowed swing.
    assert requests_measured > 10 * FD_SWING, requests_measured
    assert max(fds_seen) - min(fds_seen) <= FD_SWING, fds_seen
    assert rss_end - rss_warm < 64 * 1024, (rss_warm, rss_end)  # kB
    for key in KEYS[:5]:
        assert buckets.destination_bytes(key) == payloads[key]
