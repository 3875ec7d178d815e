"""Scenario 1: one large object. The service vs `rclone copy`, and two limits of the setup
measured in the same run: a raw resumable upload of the same bytes from memory to
fake-gcs-server (64 MiB chunks) and a raw streaming GET from moto. The service also copies
the same bytes uploaded in 8 MiB parts (the AWS CLI's default), whose multipart ETag it
checks against the part layout it learns from part 1."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable

from boto3.s3.transfer import TransferConfig

from benchmarks.measure import Comparison, Contender, MiB, alternate, attempt
from benchmarks.rclone import FLAGS, INSTALL_HINT, Rclone
from benchmarks.stack import DESTINATION_BUCKET, SOURCE_BUCKET, NotCopied, Service, Stack

KEY = "big/object.bin"
PARTS_KEY = "big/object-in-parts.bin"
PART_SIZE = 8 * MiB  # the AWS CLI's and boto3's default multipart chunk size
UPLOAD_CHUNK = 64 * MiB
GET_CHUNK = 1 * MiB


def seed(stack: Stack, size: int) -> bytes:
    """The object in S3 twice: in one PUT (its ETag is its MD5) and in 8 MiB parts; returns
    its bytes for the raw upload."""
    data = os.urandom(size)
    stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=KEY, Body=data)
    parts = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
    stack.s3.upload_fileobj(io.BytesIO(data), SOURCE_BUCKET, PARTS_KEY, Config=parts)
    return data


def run(
    stack: Stack,
    service: Service,
    rclone: Rclone | None,
    size: int,
    repeat: int,
    debian: Rclone | None = None,
    *,
    limits: bool = True,
    parts: bool = True,
) -> Comparison:
    """`limits`: also the raw upload and GET (from the harness, straight to the emulators);
    `parts`: also the copy of the object in 8 MiB parts."""
    data = seed(stack, size)
    comparison = Comparison(
        f"{size // MiB} MiB object",
        "MB/s",
        {
            "service": Contender("service (POST /v1/replicate)"),
            "rclone": Contender(f"rclone 1.75 copy {' '.join(FLAGS['big'])}"),
            "service_parts": Contender(f"service, in {PART_SIZE // MiB} MiB parts"),
            "raw_upload": Contender("limit: raw upload from memory"),
            "raw_get": Contender(f"limit: raw GET from {stack.s3_name}"),
        },
    )
    if debian is not None:
        comparison.contenders["rclone_debian"] = Contender("Debian's rclone, same flags")

    # Each returns the megabytes it moved; the destination is checked after the clock stops.
    def service_copy(key: str) -> float:
        service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=KEY, gcs_key=key)
        return size / 1e6

    def service_parts(key: str) -> float:
        service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=PARTS_KEY, gcs_key=key)
        return size / 1e6

    def rclone_copy(tool: Rclone | None, key: str) -> float:
        assert tool is not None
        destination = f"{DESTINATION_BUCKET}/{key.rsplit('/', 1)[0]}"
        tool.copy(f"{SOURCE_BUCKET}/{KEY}", destination, *FLAGS["big"])
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
        "rclone": functools.partial(rclone_copy, rclone),
        "service_parts": service_parts,
        "raw_upload": raw_upload,
        "raw_get": raw_get,
    }
    if debian is not None:
        runs["rclone_debian"] = functools.partial(rclone_copy, debian)
    for name in ("raw_upload", "raw_get") if not limits else ():
        del runs[name], comparison.contenders[name]
    if not parts:
        del runs["service_parts"], comparison.contenders["service_parts"]
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
