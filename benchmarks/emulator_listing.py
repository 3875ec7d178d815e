"""What one ListObjectsV2 request costs moto as its bucket grows:
`.venv/bin/python -m benchmarks.emulator_listing [KEYS ...]` (2,000 and 20,000 by default).

moto answers every listing by scanning and sorting the whole bucket, however few keys it
returns; real S3 answers a page in one round trip whatever the bucket holds. This is why
listing in many key ranges (probes of one key, and each range's pages) costs moto more than
one stream does, and why the listing scenarios on moto say more about moto than about the
replicator (benchmarks/RESULTS.md). Prints the median of five requests of each kind.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from app.dev import emulators


def _timed(call: Callable[[], object], times: int = 5) -> float:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1000


def _measure(s3: Any, count: int) -> str:
    bucket = f"listing-{count}"
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        keys = (f"p/{i % 16:x}/{i:09d}" for i in range(count))
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))
    one = _timed(lambda: s3.list_objects_v2(Bucket=bucket, MaxKeys=1, StartAfter="p/8"))
    page = _timed(lambda: s3.list_objects_v2(Bucket=bucket, MaxKeys=1000))
    return (
        f"{count:,} keys: a one-key listing after a midpoint {one:.1f} ms, "
        f"a page of 1,000 keys {page:.1f} ms"
    )


def main(argv: list[str]) -> int:
    counts = [int(arg) for arg in argv] or [2000, 20000]
    port = emulators.free_port()
    moto = subprocess.Popen(
        [str(sys.executable), "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for count in counts:
            print(_measure(s3, count), flush=True)
    finally:
        moto.terminate()
        moto.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
