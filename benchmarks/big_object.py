"""Scenario 1: one large object. The service vs `rclone copy`, and two limits of the setup
measured in the same run: a raw resumable upload of the same bytes from memory to
fake-gcs-server (64 MiB chunks) and a raw streaming GET from moto."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable

from benchmarks.measure import Comparison, Contender, MiB, alternate, attempt
from benchmarks.rclone import INSTALL_HINT, Rclone
from benchmarks.stack import DESTINATION_BUCKET, SOURCE_BUCKET, NotCopied, Service, Stack

KEY = "big/object.bin"
UPLOAD_CHUNK = 64 * MiB
GET_CHUNK = 1 * MiB


def seed(stack: Stack, size: int) -> bytes:
    """The object in S3 (one PUT, so its ETag is its MD5), and its bytes for the raw upload."""
    data = os.urandom(size)
    stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=KEY, Body=data)
    return data


def run(
    stack: Stack, service: Service, rclone: Rclone | None, size: int, repeat: int
) -> Comparison:
    data = seed(stack, size)
    comparison = Comparison(
        f"{size // MiB} MiB object",
        "MB/s",
        {
            "service": Contender("service (POST /v1/replicate)"),
            "rclone": Contender("rclone copy"),
            "raw_upload": Contender("limit: raw upload from memory"),
            "raw_get": Contender("limit: raw GET from moto"),
        },
    )

    # Each returns the megabytes it moved; the destination is checked after the clock stops.
    def service_copy(key: str) -> float:
        service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=KEY, gcs_key=key)
        return size / 1e6

    def rclone_copy(key: str) -> float:
        assert rclone is not None
        rclone.copy(f"{SOURCE_BUCKET}/{KEY}", f"{DESTINATION_BUCKET}/{key.rsplit('/', 1)[0]}")
        return size / 1e6

    def raw_upload(key: str) -> float:
        blob = stack.gcs_client.bucket(DESTINATION_BUCKET).blob(key, chunk_size=UPLOAD_CHUNK)
        blob.upload_from_file(io.BytesIO(data), size=size, checksum=None)
        return size / 1e6

    def raw_get(key: str) -> float:
        body = stack.s3.get_object(Bucket=SOURCE_BUCKET, Key=KEY)["Body"]
        got = sum(len(piece) for piece in iter(lambda: body.read(GET_CHUNK), b""))
        if got != size:
            raise NotCopied(f"read {got} bytes of {size}")
        return got / 1e6

    runs: dict[str, Callable[[str], float]] = {
        "service": service_copy,
        "rclone": rclone_copy,
        "raw_upload": raw_upload,
        "raw_get": raw_get,
    }
    if rclone is None:
        del runs["rclone"]
        comparison.contenders["rclone"].errors.append(INSTALL_HINT)
    # The first copies into a fresh fake-gcs-server are up to 2-3x slower (its heap grows,
    # for a round or two): one unmeasured round of every contender keeps that out of the
    # figures. A contender that fails shows in its measured runs.
    for name, copy in runs.items():
        with contextlib.suppress(Exception):
            copy(f"big/warm-up-{name}/object.bin")
        stack.discard(DESTINATION_BUCKET, f"big/warm-up-{name}/object.bin")
    for repetition in range(repeat):
        for name in alternate(list(runs), repetition):
            # rclone names the object after its source; the others get this key directly.
            key = f"big/{name}-r{repetition}/object.bin"
            verify = functools.partial(stack.expect_size, DESTINATION_BUCKET, key, size)
            attempt(
                comparison.contenders[name],
                stack.pids(service),
                functools.partial(runs[name], key),
                verify if name != "raw_get" else lambda: None,  # raw_get counts its own bytes
            )
            stack.discard(DESTINATION_BUCKET, key)
    return comparison
