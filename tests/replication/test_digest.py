"""What the source is checked against: ETags (single and multipart) and S3 checksums."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import google_crc32c
import pytest

from app import errors
from app.replication.digest import Digest
from app.storage.base import ObjectInfo


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def feed(digest: Digest, data: bytes, piece: int = 7000) -> None:
    for start in range(0, len(data), piece):
        digest.update(data[start : start + piece])


def info(data: bytes, etag: str, **extra: object) -> ObjectInfo:
    return ObjectInfo(bucket="b", key="k", size=len(data), etag=etag, **extra)  # type: ignore[arg-type]


def multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def test_single_part_etag_is_the_md5() -> None:
    data = os.urandom(100_000)
    digest = Digest(info(data, hashlib.md5(data).hexdigest()))
    feed(digest, data)
    digest.verify()
    assert digest.checksums().md5 == b64(hashlib.md5(data).digest())
    assert digest.checksums().crc32c == b64(google_crc32c.Checksum(data).digest())


def test_one_flipped_byte_fails_the_etag_check() -> None:
    data = bytearray(os.urandom(100_000))
    etag = hashlib.md5(data).hexdigest()
    data[5000] ^= 0x01
    digest = Digest(info(bytes(data), etag))
    feed(digest, bytes(data))
    with pytest.raises(errors.IntegrityError, match="ETag"):
        digest.verify()


@pytest.mark.parametrize("piece", [1000, 65536, 10**7])  # pieces smaller, around, larger than parts
def test_multipart_etag_is_rederived_from_the_part_layout(piece: int) -> None:
    parts = [os.urandom(50_000), os.urandom(50_000), os.urandom(1234)]
    data = b"".join(parts)
    digest = Digest(info(data, multipart_etag(parts)), [len(p) for p in parts])
    feed(digest, data, piece)
    digest.verify()
    assert digest.checksums().md5 is None  # a multipart object has no whole-object MD5 to give


def test_a_wrong_part_layout_fails_the_multipart_check() -> None:
    parts = [os.urandom(50_000), os.urandom(50_000)]
    data = b"".join(parts)
    digest = Digest(info(data, multipart_etag(parts)), [40_000, 60_000])
    feed(digest, data)
    with pytest.raises(errors.IntegrityError, match="multipart ETag"):
        digest.verify()


def test_full_object_and_composite_s3_checksums() -> None:
    parts = [os.urandom(30_000), os.urandom(20_000)]
    data = b"".join(parts)
    crc32_full = b64(zlib.crc32(data).to_bytes(4, "big"))
    part_sha = b"".join(hashlib.sha256(p).digest() for p in parts)
    sha_composite = f"{b64(hashlib.sha256(part_sha).digest())}-2"
    checks = {"CRC32": crc32_full, "SHA256": sha_composite}
    digest = Digest(info(data, multipart_etag(parts), s3_checksums=checks), [30_000, 20_000])
    feed(digest, data)
    digest.verify()

    wrong = {"CRC32": b64((zlib.crc32(data) ^ 1).to_bytes(4, "big"))}
    bad = Digest(info(data, multipart_etag(parts), s3_checksums=wrong), [30_000, 20_000])
    feed(bad, data)
    with pytest.raises(errors.IntegrityError, match="CRC32"):
        bad.verify()


def test_empty_object() -> None:
    digest = Digest(info(b"", hashlib.md5(b"").hexdigest()))
    digest.verify()
    assert digest.checksums().crc32c == b64(google_crc32c.Checksum(b"").digest())


def crc64nvme(data: bytes) -> str:
    """CRC64NVME as S3 reports it, computed independently (reflected polynomial, bit by bit
    per byte through a table), to check awscrt's against."""
    poly = 0x9A6C9329AC4BC9B5
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return b64((crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"))


def test_crc64nvme_is_checked_and_catches_a_flipped_byte() -> None:
    data = os.urandom(20_000)
    assert crc64nvme(b"hello") == "M3eFcAZSQlc="  # what S3 (and moto) report for b"hello"
    good = Digest(
        info(data, hashlib.md5(data).hexdigest(), s3_checksums={"CRC64NVME": crc64nvme(data)})
    )
    feed(good, data)
    good.verify()
    assert good.checked == ("ETag (MD5)", "S3 CRC64NVME checksum")
    damaged = bytearray(data)
    damaged[19_999] ^= 0x80
    bad = Digest(info(data, "", s3_checksums={"CRC64NVME": crc64nvme(data)}))
    feed(bad, bytes(damaged))
    with pytest.raises(errors.IntegrityError, match="S3 CRC64NVME checksum"):
        bad.verify()


def test_a_full_object_checksum_of_a_multipart_object_is_checked_over_the_whole_stream() -> None:
    parts = [os.urandom(50_000), os.urandom(777)]
    data = b"".join(parts)
    obj = info(
        data,
        multipart_etag(parts),
        s3_checksums={"CRC64NVME": crc64nvme(data)},
        s3_checksum_type="FULL_OBJECT",
        encryption="aws:kms",
    )
    digest = Digest(obj)  # no part layout: none is needed
    feed(digest, data)
    digest.verify()
    assert digest.checked == ("S3 CRC64NVME checksum",)


@pytest.mark.parametrize("encryption", ["aws:kms", "aws:kms:dsse"])
def test_an_sse_kms_etag_is_never_taken_for_an_md5(encryption: str) -> None:
    """Its ETag is not the MD5 of the bytes (AWS documents it): with nothing else to check,
    the digest checks nothing, and says so, rather than calling good bytes corrupt."""
    data = os.urandom(5000)
    digest = Digest(info(data, "0" * 32, encryption=encryption))
    feed(digest, data)
    digest.verify()
    assert digest.checked == ()
    assert digest.checksums().md5 == b64(hashlib.md5(data).digest())  # still sent to GCS
    crc = b64(zlib.crc32(data).to_bytes(4, "big"))
    checked = Digest(info(data, "0" * 32, encryption=encryption, s3_checksums={"CRC32": crc}))
    feed(checked, data)
    checked.verify()
    assert checked.checked == ("S3 CRC32 checksum",)
