"""Scenario 2: many small objects under one prefix. One `POST /v1/replicate/batch` vs
`rclone copy` of the same prefix (at the service's concurrency, 16), each into a bucket of
its own per run; Debian's rclone too, when installed. The CPU each process spent per object
is in the report: the cost per million objects."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from benchmarks.measure import Comparison, Contender, alternate, attempt
from benchmarks.rclone import FLAGS, INSTALL_HINT, Rclone
from benchmarks.stack import SOURCE_BUCKET, NotCopied, Service, ServiceError, Stack

PREFIX = "small/"
RCLONE_FLAGS = FLAGS["batch"]


def seed(stack: Stack, count: int, size: int) -> list[str]:
    keys = [f"{PREFIX}{i:05d}.bin" for i in range(count)]
    put(stack, SOURCE_BUCKET, keys, size)
    return keys


def put(stack: Stack, bucket: str, keys: list[str], size: int) -> dict[str, str]:
    """Random bytes of `size` under each key, from 16 threads; returns their ETags."""

    def one(key: str) -> str:
        return str(stack.s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))["ETag"])

    with ThreadPoolExecutor(16) as pool:
        return dict(zip(keys, pool.map(one, keys), strict=True))


def verify(stack: Stack, bucket: str, prefix: str, count: int, size: int) -> None:
    """NotCopied unless gs://bucket/prefix holds `count` objects, every one of `size` bytes."""
    sizes = [blob.size for blob in stack.gcs_client.list_blobs(bucket, prefix=prefix)]
    if len(sizes) != count or set(sizes) != {size}:
        raise NotCopied(f"gs://{bucket}/{prefix} holds {len(sizes)} objects of {set(sizes)}")


def run(
    stack: Stack,
    service: Service,
    rclone: Rclone | None,
    count: int,
    size: int,
    repeat: int,
    debian: Rclone | None = None,
) -> Comparison:
    keys = seed(stack, count, size)
    comparison = Comparison(
        f"{len(keys):,} x {size // 1024} KiB objects from {stack.s3_name}",
        "objects/s",
        {
            "service": Contender("service (one POST /v1/replicate/batch)"),
            "rclone": Contender(f"rclone 1.75 copy {' '.join(RCLONE_FLAGS)}"),
        },
    )
    if debian is not None:
        comparison.contenders["rclone_debian"] = Contender("Debian's rclone, same flags")

    # Each returns the number of objects it copied; `verify` lists the bucket afterwards.
    def service_batch(bucket: str) -> float:
        body = {"s3_bucket": SOURCE_BUCKET, "s3_keys": keys, "gcs_bucket": bucket}
        summary = service.post("/v1/replicate/batch", body)["summary"]
        if summary["replicated"] != len(keys):
            raise ServiceError(f"the batch replicated {summary['replicated']}: {summary}")
        return len(keys)

    def rclone_copy(tool: Rclone | None, bucket: str) -> float:
        assert tool is not None
        tool.copy(f"{SOURCE_BUCKET}/{PREFIX}", f"{bucket}/{PREFIX}", *RCLONE_FLAGS)
        return len(keys)

    runs: dict[str, Callable[[str], float]] = {
        "service": service_batch,
        "rclone": functools.partial(rclone_copy, rclone),
        "rclone_debian": functools.partial(rclone_copy, debian),
    }
    if debian is None:
        del runs["rclone_debian"]
    if rclone is None:
        del runs["rclone"]
        comparison.contenders["rclone"].errors.append(INSTALL_HINT)
    for repetition in range(repeat):
        for name in alternate(list(runs), repetition):
            bucket = f"bench-small-{stack.s3_name}-{name.replace('_', '-')}-r{repetition}"
            stack.gcs_client.create_bucket(bucket)
            attempt(
                comparison.contenders[name],
                stack.pids(service),
                functools.partial(runs[name], bucket),
                functools.partial(verify, stack, bucket, PREFIX, len(keys), size),
            )
    return comparison
