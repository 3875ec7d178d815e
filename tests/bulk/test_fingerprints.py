"""Which checksums of an S3 object and its GCS copy `check --checksum` compares.

The end-to-end cases are in tests/cli/test_check_deep.py; this table holds the cases the
emulator cannot produce: moto computes S3's CRC32C with CRC32 unless an optional package is
installed, so a matching full-object CRC32C is only seen here.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from app.bulk.fingerprints import Agreement, compare_checksums
from app.storage.base import Checksums, ObjectInfo
from tests.conftest import digests

DATA = os.urandom(1000)
OTHER = os.urandom(1000)
MD5_HEX = hashlib.md5(DATA).hexdigest()
CRC32C = digests(DATA)["crc32c"]


def source(etag: str, **checksums: str) -> ObjectInfo:
    kind = checksums.pop("type", None)
    return ObjectInfo("src", "k", 1000, etag=etag, s3_checksums=checksums, s3_checksum_type=kind)


def copy_of(data: bytes, *, md5: bool = True) -> ObjectInfo:
    sums = digests(data)
    return ObjectInfo(
        "dst",
        "k",
        1000,
        checksums=Checksums(md5=sums["md5"] if md5 else None, crc32c=sums["crc32c"]),
    )


@pytest.mark.parametrize(
    ("listed", "copy", "expected"),
    [
        pytest.param(source(MD5_HEX), copy_of(DATA), Agreement(("MD5",)), id="single-part"),
        pytest.param(
            source(MD5_HEX),
            copy_of(OTHER),
            Agreement(
                ("MD5",),
                f"MD5 differs: source {MD5_HEX}, destination {hashlib.md5(OTHER).hexdigest()}",
            ),
            id="single-part-replaced",
        ),
        pytest.param(
            source(f"{MD5_HEX}-2", CRC32C=CRC32C, type="FULL_OBJECT"),
            copy_of(DATA),
            Agreement(("CRC32C",)),
            id="multipart-full-object-crc32c",
        ),
        pytest.param(
            source(f"{MD5_HEX}-2", CRC32C=CRC32C, type="FULL_OBJECT"),
            copy_of(OTHER),
            Agreement(
                ("CRC32C",),
                f"CRC32C differs: source {CRC32C}, destination {digests(OTHER)['crc32c']}",
            ),
            id="multipart-full-object-crc32c-replaced",
        ),
        pytest.param(
            source(f"{MD5_HEX}-2", CRC32C=f"{CRC32C}-2", type="COMPOSITE"),
            copy_of(DATA),
            Agreement(),
            id="multipart-composite-crc32c",
        ),
        pytest.param(
            source(f"{MD5_HEX}-2", CRC64NVME="AAAAAAAAAAA=", type="FULL_OBJECT"),
            copy_of(DATA),
            Agreement(),
            id="multipart-crc64nvme",
        ),
        pytest.param(
            source(MD5_HEX, CRC32C=CRC32C),
            copy_of(DATA, md5=False),
            Agreement(("CRC32C",)),
            id="composed-copy-without-md5",
        ),
    ],
)
def test_what_is_compared(listed: ObjectInfo, copy: ObjectInfo, expected: Agreement) -> None:
    assert compare_checksums(listed, copy) == expected
