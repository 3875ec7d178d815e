"""What real S3 does that moto does not, produced on the wire (tests/real_s3.py), through
POST /v1/replicate and /v1/replicate/batch: SSE-KMS ETags that are not MD5s, S3's own
checksums (CRC64NVME, full-object multipart), SSE-C objects, archived objects, KMS and
requester-pays refusals. Each test checks what a user would: the status and body, the bytes
and checksums at GCS, the metric's value, and that nothing unverifiable is called verified.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from fastapi.testclient import TestClient

from app.dev import emulators
from app.main import create_app
from tests.conftest import Buckets, digests, make_settings
from tests.faults import Fault, s3_sender
from tests.real_s3 import RealS3Proxy, kms_etag

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MiB = 1024 * 1024


@pytest.fixture
def real_s3(moto_server: emulators.Emulator) -> Iterator[RealS3Proxy]:
    with RealS3Proxy(moto_server.url) as proxy:
        yield proxy


def uploader(url: str, *, checksums: bool = True) -> Any:
    """boto3 as a user's upload would be: through the proxy (which notes what is encrypted
    how), sending CRC32 checksums by default as current SDKs do, or none at all (`checksums`
    False: as older SDKs did, which left SSE-KMS objects with nothing to verify against)."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(
            request_checksum_calculation="when_supported" if checksums else "when_required"
        ),
    )


def put_kms(proxy: RealS3Proxy, bucket: str, key: str, data: bytes, **extra: str) -> None:
    """PUT an SSE-KMS object through the proxy, with KMS_KEY, as a current SDK does (CRC32)."""
    uploader(proxy.url).put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=KMS_KEY,
        **extra,
    )


@pytest.fixture
def service(real_s3: RealS3Proxy, gcs_server: emulators.Emulator, buckets: Buckets) -> Any:
    def start(**overrides: Any) -> TestClient:
        settings = make_settings(real_s3.url, gcs_server.url, buckets.dest, **overrides)
        return TestClient(create_app(settings))

    return start


def replicate(client: TestClient, bucket: str, key: str) -> Any:
    return client.post("/v1/replicate", json={"s3_bucket": bucket, "s3_key": key})


def metric(client: TestClient, line: str) -> float:
    """The value of one sample of /metrics (0 when it has none yet)."""
    for sample in client.get("/metrics").text.splitlines():
        if sample.startswith(line + " "):
            return float(sample.rsplit(" ", 1)[1])
    return 0.0


def test_an_sse_kms_object_with_crc64nvme_is_verified_against_it(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    data = os.urandom(70_000)
    put_kms(real_s3, buckets.source, "kms.bin", data, ChecksumAlgorithm="CRC64NVME")
    head = uploader(real_s3.url).head_object(Bucket=buckets.source, Key="kms.bin")
    assert head["ETag"] != f'"{digests(data)["md5"]}"'  # as S3 shows it: not an MD5
    with service() as client:
        response = replicate(client, buckets.source, "kms.bin")
        buckets.assert_replicated(response, "kms.bin", data)
        assert response.json()["unverified"] is False
        # An SSE-KMS ETag is never checked as an MD5: S3's checksums are.
        assert response.json()["verified_against"] == ["S3 CRC64NVME checksum"]


def test_an_sse_kms_object_without_a_checksum_is_copied_and_marked_unverified(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    data = os.urandom(20_000)
    uploader(real_s3.url, checksums=False).put_object(
        Bucket=buckets.source, Key="old.bin", Body=data, ServerSideEncryption="aws:kms"
    )
    with service() as client:
        sample = 'replicator_objects_unverified_total{reason="sse_kms"}'
        before = metric(client, sample)
        response = replicate(client, buckets.source, "old.bin")
        buckets.assert_replicated(response, "old.bin", data)  # GCS checked our MD5 and CRC32C
        assert response.json()["unverified"] is True
        assert response.json()["verified_against"] == []
        assert "unverified" in response.json()["message"]
        assert metric(client, sample) == before + 1
        batch = client.post(
            "/v1/replicate/batch",
            json={"s3_bucket": buckets.source, "s3_keys": ["old.bin"], "overwrite": "always"},
        )
        assert batch.json()["results"][0]["unverified"] is True


def test_a_damaged_read_of_an_sse_kms_object_is_caught_by_its_s3_checksum(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    """The ETag cannot catch it (not an MD5); S3's CRC32 does, and nothing is published."""
    data = os.urandom(50_000)
    uploader(real_s3.url).put_object(
        Bucket=buckets.source, Key="flip.bin", Body=data, ServerSideEncryption="aws:kms"
    )
    real_s3.add(Fault(method="GET", path="/flip.bin", action="flip", at=1234))
    with service() as client:
        response = replicate(client, buckets.source, "flip.bin")
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "integrity_error"
    assert "S3 CRC32 checksum" in response.json()["detail"]
    buckets.assert_nothing_written()


def test_a_multipart_sse_kms_object_with_a_full_object_crc64nvme_is_verified_whole(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    s3 = uploader(real_s3.url)
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    upload = s3.create_multipart_upload(
        Bucket=buckets.source,
        Key="mp.bin",
        ServerSideEncryption="aws:kms",
        ChecksumAlgorithm="CRC64NVME",
        ChecksumType="FULL_OBJECT",
    )
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=buckets.source,
            Key="mp.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="CRC64NVME",
        )
        done.append({"ETag": answer["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=buckets.source,
        Key="mp.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
    )
    with service() as client:
        response = replicate(client, buckets.source, "mp.bin")
    buckets.assert_replicated(response, "mp.bin", b"".join(parts))
    assert response.json()["verified_against"] == ["S3 CRC64NVME checksum"]
    # A full-object checksum needs no part layout: no HEAD ?partNumber= was asked.
    assert real_s3.seen("HEAD", "partNumber") == []


def test_the_direct_gets_if_match_holds_the_etag_s3_shows_for_sse_kms_objects(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    """S3 compares If-Match with the ETag it shows for the object, whatever that ETag is
    made of, so pinning GETs to an SSE-KMS object's opaque ETag is correct on real S3: the
    proxy, like S3, accepts the ETag it showed (and moto never sees it)."""
    for key in ("a.bin", "b.bin"):
        put_kms(real_s3, buckets.source, key, os.urandom(5000))
    with service() as client:
        for key in ("a.bin", "b.bin"):
            assert replicate(client, buckets.source, key).status_code == 200
    [get] = real_s3.seen("GET", "/b.bin")
    moto_etag = buckets.s3.head_object(Bucket=buckets.source, Key="b.bin")["ETag"]
    assert s3_sender(get) == "direct"
    assert get.headers["if-match"] == kms_etag(moto_etag)


def test_an_sse_c_object_is_one_clear_error_never_retried(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    uploader(real_s3.url).put_object(
        Bucket=buckets.source,
        Key="secret.bin",
        Body=b"only with the key",
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=os.urandom(32),
    )
    with service() as client:
        response = replicate(client, buckets.source, "secret.bin")
        failed = metric(client, 'replicator_objects_failed_total{reason="sse_c"}')
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "sse_c"
    assert response.json()["detail"].startswith("encrypted with a customer-provided key")
    # Not retried by the policy (2 retries here): boto3's region redirector alone asks a
    # HEAD that answered a bare 400 once more, in case the bucket lives in another region.
    assert len(real_s3.seen("HEAD", "/secret.bin")) <= 2
    assert failed >= 1
    buckets.assert_nothing_written()


def test_an_archived_object_says_restore_first_and_copies_once_restored(
    service: Any, buckets: Buckets
) -> None:
    buckets.s3.put_object(
        Bucket=buckets.source, Key="cold.txt", Body=b"cold", StorageClass="DEEP_ARCHIVE"
    )
    with service() as client:
        response = replicate(client, buckets.source, "cold.txt")
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "archived"
        assert "DEEP_ARCHIVE" in response.json()["detail"]
        assert "restore it first" in response.json()["detail"]
        batch = client.post(
            "/v1/replicate/batch", json={"s3_bucket": buckets.source, "s3_keys": ["cold.txt"]}
        )
        assert batch.json()["results"][0]["status"] == "archived"
        assert batch.json()["summary"]["archived"] == 1
        assert metric(client, 'replicator_objects_failed_total{reason="archived"}') >= 2
        buckets.assert_nothing_written()
        buckets.s3.restore_object(
            Bucket=buckets.source,
            Key="cold.txt",
            RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Bulk"}},
        )
        restore = buckets.s3.head_object(Bucket=buckets.source, Key="cold.txt")["Restore"]
        assert 'ongoing-request="false"' in restore
        buckets.assert_replicated(
            replicate(client, buckets.source, "cold.txt"), "cold.txt", b"cold"
        )


def test_a_kms_refusal_names_the_missing_permission(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    put_kms(real_s3, buckets.source, "locked.bin", b"x")
    real_s3.kms_denied.add((buckets.source, "locked.bin"))
    with service() as client:
        response = replicate(client, buckets.source, "locked.bin")
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "access_denied"
    assert f"kms:Decrypt on key {KMS_KEY}" in response.json()["detail"]


def test_a_requester_pays_source_needs_the_setting_and_says_so(
    real_s3: RealS3Proxy, service: Any, buckets: Buckets
) -> None:
    buckets.put("paid.txt", b"paid for")
    real_s3.requester_pays.add(buckets.source)
    with service() as client:
        refused = replicate(client, buckets.source, "paid.txt")
    assert refused.status_code == 502, refused.text
    assert "S3_REQUESTER_PAYS=true" in refused.json()["detail"]
    with service(s3_requester_pays=True) as client:
        buckets.assert_replicated(
            replicate(client, buckets.source, "paid.txt"), "paid.txt", b"paid for"
        )
    paid = real_s3.seen(path=f"/{buckets.source}/paid.txt")
    assert {r.headers.get("x-amz-request-payer") for r in paid[-2:]} == {"requester"}
