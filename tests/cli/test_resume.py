"""`replicator sync --checkpoint FILE` stopped (Ctrl-C, SIGTERM, SIGKILL) at a random point,
then `--resume`d: the destination ends as an uninterrupted run leaves it, and nothing the first
run copied is fetched again (every GET counted at a proxy in front of S3).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.dev import emulators
from tests.conftest import Buckets, s3_client_for
from tests.faults import Fault, FaultProxy, Seen
from tests.service_process import REPLICATOR, replicator, service_env, service_settings

KEYS = [f"f/{n % 5}/{n:05d}" for n in range(1_100)]  # more than a page: several key ranges


@pytest.fixture(scope="module")
def source(moto_server: emulators.Emulator) -> str:
    """One source bucket for the module (filling it is the slow part), never written to."""
    s3 = s3_client_for(moto_server.url)
    name = f"src-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=name, Key=key, Body=key.encode()), KEYS))
    return name


def object_get(request: Seen, bucket: str) -> str | None:
    """The key of an object GET in `bucket`, else None."""
    path, _, query = request.target.partition("?")
    if request.method == "GET" and path.startswith(f"/{bucket}/") and "list-type" not in query:
        return path[len(bucket) + 2 :]
    return None


def gets(proxy: FaultProxy, bucket: str) -> Counter[str]:
    """Object GETs the proxy saw, by key."""
    keys = (object_get(request, bucket) for request in proxy.requests)
    return Counter(key for key in keys if key is not None)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sync_resumes_exactly(
    how: signal.Signals,
    tmp_path: Path,
    source: str,
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    checkpoint = tmp_path / "sync.checkpoint"
    settings = service_settings(
        s3_proxy.url, gcs_server.url, buckets.dest, RETRY_DELAY="0.01", LIST_SPLIT_MIN_KEYS="1000"
    )
    command = ["sync", f"s3://{source}", f"gs://{buckets.dest}", "--checkpoint", str(checkpoint)]
    common = ["--concurrency", "4", "--list-concurrency", "4", "--json"]
    s3_proxy.add(Fault(method="GET", path=f"/{source}/f/", action="delay", stall_for=0.01))
    stop_after = random.randrange(50, 800)  # GETs before the signal: a random point

    first = subprocess.Popen(
        [str(REPLICATOR), *command, *common],
        cwd=tmp_path,
        env=service_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # a safety net on a loaded machine, never a measure
    looked, fetched = 0, 0  # requests looked at so far, and the object GETs among them
    while fetched < stop_after and first.poll() is None:  # counted as they come, not re-read
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.02)
        new = s3_proxy.requests[looked:]
        looked += len(new)
        fetched += sum(object_get(request, source) is not None for request in new)
    first.send_signal(how)
    out, err = first.communicate(timeout=30)
    assert first.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130), err
    before = gets(s3_proxy, source)
    there = {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}
    assert there < set(KEYS)  # stopped part of the way
    if how != signal.SIGKILL:
        assert json.loads(out)["interrupted"] is True
        assert set(before) == there  # what was fetched was finished and published

    s3_proxy.faults.clear()
    s3_proxy.requests.clear()
    resumed = replicator(*command, "--resume", *common, cwd=tmp_path, timeout=300, **settings)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["failed"] == 0
    assert summary["copied"] == len(set(KEYS) - there)

    after = gets(s3_proxy, source)
    assert not set(after) & there  # nothing the first run published is fetched again
    assert all(n == 1 for n in after.values())
    assert set(after) | there == set(KEYS)
    assert summary["skipped"] < len(there) or len(there) < 50  # concluded keys are not listed
    assert {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)} == set(KEYS)
    for key in random.sample(KEYS, 20):
        assert buckets.destination_bytes(key) == key.encode()
