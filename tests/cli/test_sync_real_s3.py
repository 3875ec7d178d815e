"""`replicator sync` and `replicator check` on buckets as real S3 has them: SSE-KMS objects
(with and without S3's checksums) behind the proxy that gives them the ETags S3 does
(tests/real_s3.py), archived objects, and directory buckets. What a user looks at: the
report lines, the summary, the exit status, the bytes at GCS.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.dev import emulators
from tests.conftest import Buckets
from tests.real_s3 import RealS3Proxy
from tests.replication.test_real_s3 import put_kms, uploader
from tests.service_process import replicator, service_settings


@pytest.fixture
def real_s3(moto_server: emulators.Emulator) -> Iterator[RealS3Proxy]:
    with RealS3Proxy(moto_server.url) as proxy:
        yield proxy


@pytest.fixture
def run(
    tmp_path: Path, real_s3: RealS3Proxy, gcs_server: emulators.Emulator, buckets: Buckets
) -> Any:
    def command(*args: str) -> subprocess.CompletedProcess[str]:
        settings = service_settings(real_s3.url, gcs_server.url, buckets.dest, RETRY_DELAY="0.01")
        return replicator(*args, cwd=tmp_path, **settings)

    return command


def report_of(path: Path) -> dict[str, tuple[str, str]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["key"]: (line["action"], line["detail"]) for line in lines}


def test_an_sse_kms_bucket_syncs_verified_where_s3_has_a_checksum(
    run: Any, real_s3: RealS3Proxy, buckets: Buckets, tmp_path: Path
) -> None:
    data = {"crc32.bin": os.urandom(3000), "crc64.bin": os.urandom(4000)}
    put_kms(real_s3, buckets.source, "crc32.bin", data["crc32.bin"])
    put_kms(real_s3, buckets.source, "crc64.bin", data["crc64.bin"], ChecksumAlgorithm="CRC64NVME")
    data["old.bin"] = os.urandom(500)
    uploader(real_s3.url, checksums=False).put_object(
        Bucket=buckets.source, Key="old.bin", Body=data["old.bin"], ServerSideEncryption="aws:kms"
    )
    buckets.s3.put_object(
        Bucket=buckets.source, Key="cold.txt", Body=b"cold", StorageClass="DEEP_ARCHIVE"
    )
    report = tmp_path / "report.jsonl"
    source, dest = f"s3://{buckets.source}", f"gs://{buckets.dest}"
    result = run("sync", source, dest, "--json", "--report", str(report))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["copied"], summary["failed"]) == (3, 0)
    assert (summary["archived"], summary["unverified"]) == (1, 1)
    lines = report_of(report)
    assert lines["crc32.bin"] == ("copied", "copied (verified against S3 CRC32 checksum)")
    assert lines["crc64.bin"] == ("copied", "copied (verified against S3 CRC64NVME checksum)")
    assert lines["old.bin"][0] == "copied"
    assert lines["old.bin"][1].startswith("copied, unverified")
    assert lines["cold.txt"] == ("archived", "DEEP_ARCHIVE")
    for key, content in data.items():
        assert buckets.destination_bytes(key) == content

    strict = run("sync", source, dest, "--no-skip-archived", "--json")
    assert strict.returncode == 1, strict.stderr
    assert "failed: cold.txt: archived:" in strict.stderr
    assert "DEEP_ARCHIVE" in strict.stderr

    check = run("check", source, dest, "--checksum", "--json")
    assert check.returncode == 0, check.stderr + check.stdout
    counts = json.loads(check.stdout)
    # An SSE-KMS ETag is not taken for a different MD5: a HEAD says it is no MD5 at all.
    assert (counts["identical"], counts["different"], counts["missing"]) == (3, 0, 0)
    assert counts["archived"] == 1
    # S3's CRC32 and CRC64NVME compared with those the copies recorded they were verified
    # against; only the object S3 has no checksum for is identical by size and record alone.
    assert counts["unverified"] == 1


def test_check_reports_an_archived_key_apart_from_missing_ones(
    run: Any, buckets: Buckets, tmp_path: Path
) -> None:
    buckets.s3.put_object(Bucket=buckets.source, Key="cold.txt", Body=b"c", StorageClass="GLACIER")
    buckets.put("new.txt", b"n")
    combined = tmp_path / "combined.txt"
    result = run(
        "check", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--combined", str(combined)
    )
    assert result.returncode == 1, result.stderr  # new.txt is missing; cold.txt is not
    assert sorted(combined.read_text().splitlines()) == ["- new.txt", "~ cold.txt"]
    assert "1 missing" in result.stderr
    assert "1 archived" in result.stderr


@pytest.mark.parametrize("command", ["sync", "check"])
def test_a_directory_bucket_is_refused_with_one_line(
    run: Any, buckets: Buckets, command: str
) -> None:
    result = run(command, "s3://logs--usw2-az1--x-s3/p", f"gs://{buckets.dest}")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "directory bucket" in line
    assert "key order" in line
