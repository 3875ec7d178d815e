"""`replicator check --checksum` and `--download`, run as processes against the real emulators.

The objects they must catch were changed at GCS behind the replicator's back, keeping the
size and the record of their source, so the listings alone call them identical.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import google_crc32c

from app.replication import identity
from app.storage.base import ObjectInfo
from tests.cli.test_sync_check import put_dest, summary
from tests.conftest import Buckets, digests, upload_in_parts
from tests.faults import Fault, FaultProxy

MiB = 1024 * 1024


def replace_keeping_the_record(buckets: Buckets, key: str, data: bytes) -> None:
    """Other bytes at the destination, with the metadata the replicator wrote there."""
    blob = buckets.gcs.bucket(buckets.dest).get_blob(key)
    assert blob is not None
    put_dest(buckets, key, data, **blob.metadata)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_copy_replaced_behind_its_back_is_caught_by_checksum_and_by_download(
    run: Any, buckets: Buckets
) -> None:
    # A big first key, so later keys' reads end first: lines must stay in key order anyway.
    keys = {"a-big": 4 * MiB, **{f"k{n}": 1000 + n for n in range(6)}, "replaced": 100}
    original = {key: buckets.put_random(key, size) for key, size in keys.items()}
    source, dest = f"s3://{buckets.source}", f"gs://{buckets.dest}"
    assert run("sync", source, dest).returncode == 0
    other = os.urandom(100)
    replace_keeping_the_record(buckets, "replaced", other)
    in_order = sorted(keys)

    plain = run("check", source, dest)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [f"= {key}" for key in in_order]

    expected = [f"* {key}" if key == "replaced" else f"= {key}" for key in in_order]
    by_checksum = run("check", source, dest, "--checksum")
    assert by_checksum.returncode == 1, by_checksum.stderr
    assert by_checksum.stdout.splitlines() == expected
    md5 = hashlib.md5(original["replaced"]).hexdigest()
    assert (
        f"* replaced: MD5 differs: source {md5}, destination {hashlib.md5(other).hexdigest()}"
        in by_checksum.stderr.splitlines()
    )

    by_bytes = run("check", source, dest, "--download", "--concurrency", "4")
    assert by_bytes.returncode == 1, by_bytes.stderr
    assert by_bytes.stdout.splitlines() == expected
    assert (
        f"* replaced: bytes differ: SHA-256 source {sha256(original['replaced'])}, "
        f"destination {sha256(other)}" in by_bytes.stderr.splitlines()
    )
    as_json = run("check", source, dest, "--download", "--checksum", "--json")
    assert as_json.returncode == 1, as_json.stderr
    assert summary(as_json) == {
        "identical": 7,
        "missing": 0,
        "extra": 0,
        "different": 1,
        "errors": 0,
        "unverified": 0,
        "interrupted": False,
    }


def test_multipart_objects_are_compared_by_a_full_object_crc32c_or_said_unverified(
    run: Any, buckets: Buckets
) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    upload_in_parts(buckets.s3, buckets.source, "plain", parts)  # no checksum GCS has
    assert run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}").returncode == 0
    upload_with_crc32c(buckets, "with-crc32c", parts)
    other = os.urandom(sum(map(len, parts)))
    put_as_copy_of(buckets, "with-crc32c", other)  # other bytes, recording this source

    plain = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == ["= plain", "= with-crc32c"]
    result = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--checksum")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["= plain", "* with-crc32c"]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("* ")]
    assert line.startswith("* with-crc32c: CRC32C differs: source ")
    assert line.endswith(f", destination {digests(other)['crc32c']}")
    assert result.stderr.splitlines()[-1] == (
        "1 identical, 0 missing, 0 extra, 1 different, 0 errors, 1 unverified"
    )


def upload_with_crc32c(buckets: Buckets, key: str, parts: list[bytes]) -> None:
    """A multipart upload whose S3 CRC32C covers the full object (ChecksumType FULL_OBJECT).

    moto computes that checksum with CRC32 unless the optional `crc32c` package is installed,
    so only a CRC32C that differs is asserted on: it differs whichever moto computes."""
    s3 = buckets.s3
    upload = s3.create_multipart_upload(
        Bucket=buckets.source, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT"
    )
    done = []
    for number, part in enumerate(parts, start=1):
        crc32c = base64.b64encode(google_crc32c.Checksum(part).digest()).decode()
        answer = s3.upload_part(
            Bucket=buckets.source,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            ChecksumCRC32C=crc32c,
        )
        done.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumCRC32C": crc32c})
    s3.complete_multipart_upload(
        Bucket=buckets.source,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
        ChecksumType="FULL_OBJECT",
    )
    head = s3.head_object(Bucket=buckets.source, Key=key, ChecksumMode="ENABLED")
    assert (head["ChecksumType"], str(head["ETag"]).endswith('-2"')) == ("FULL_OBJECT", True)


def put_as_copy_of(buckets: Buckets, key: str, data: bytes) -> None:
    """`data` at the destination, with the record the replicator writes for the source's
    current version of `key`."""
    head = buckets.s3.head_object(Bucket=buckets.source, Key=key)
    source = ObjectInfo(
        bucket=buckets.source,
        key=key,
        size=int(head["ContentLength"]),
        etag=str(head["ETag"]).strip('"'),
        version_id=head.get("VersionId"),
    )
    put_dest(buckets, key, data, **identity.destination_metadata(source))


def test_a_broken_read_is_read_again_and_one_that_keeps_failing_is_an_error(
    run: Any, buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy
) -> None:
    for key in ("broken", "flaky"):
        buckets.put_random(key, 100_000)
    assert run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}").returncode == 0
    s3_proxy.add(Fault("GET", f"/{buckets.source}/broken", "status", status=503))
    cut = Fault("GET", "/o/flaky?alt=media", "truncate", at=50_000, times=1)
    gcs_proxy.add(cut)

    result = run(
        "check",
        f"s3://{buckets.source}",
        f"gs://{buckets.dest}",
        "--download",
        s3_url=s3_proxy.url,
        STORAGE_EMULATOR_HOST=gcs_proxy.url,
        MAX_RETRIES="1",
    )

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["! broken", "= flaky"]
    [error] = [line for line in result.stderr.splitlines() if line.startswith("! ")]
    assert error.startswith("! broken: unavailable: S3 answered 503")
    assert cut.fired == 1  # the cut read of flaky was read again, whole
