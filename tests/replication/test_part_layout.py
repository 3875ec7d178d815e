"""The part layout of a multipart source, which its ETag is checked against: derived from
part 1 on one request when the parts are equal, looked up part by part only when that
derived layout does not reproduce the ETag. The requests are counted on the wire."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.config import Settings
from app.dev import emulators
from tests.conftest import Buckets, digests, make_settings, upload_in_parts
from tests.faults import Fault, FaultProxy

MiB = 1024 * 1024


def part_lookups(proxy: FaultProxy, buckets: Buckets, key: str) -> list[str]:
    """The part numbers of the `HeadObject(PartNumber=n)` requests the service sent."""
    heads = proxy.seen("HEAD", f"/{buckets.source}/{key}?")
    return [
        head.target.rsplit("partNumber=", 1)[1] for head in heads if "partNumber=" in head.target
    ]


def settings(proxy: FaultProxy, gcs_server: emulators.Emulator, buckets: Buckets) -> Settings:
    """S3 through the proxy, GCS directly; blocks smaller than a part, so the layout matters
    mid-stream."""
    return make_settings(proxy.url, gcs_server.url, buckets.dest, upload_chunk_size=4 * MiB)


def assert_copied(buckets: Buckets, response: Any, key: str, data: bytes) -> None:
    """200 "replicated", and GCS holds exactly `data` with its CRC32C (a multipart ETag is
    no MD5, so the service reports none)."""
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "replicated"
    assert response.json()["crc32c"] == digests(data)["crc32c"]
    assert buckets.destination_bytes(key) == data


def test_equal_parts_are_derived_from_part_one_on_one_request(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_server: emulators.Emulator
) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)]
    data = upload_in_parts(buckets.s3, buckets.source, "equal.bin", parts)

    response = buckets.replicate(settings(s3_proxy, gcs_server, buckets), "equal.bin")

    assert_copied(buckets, response, "equal.bin", data)
    assert part_lookups(s3_proxy, buckets, "equal.bin") == ["1"]


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([5 * MiB, 6 * MiB], id="last-part-larger"),
        pytest.param([6 * MiB, 5 * MiB, 5 * MiB], id="one-short-part-inside"),
    ],
)
def test_unequal_parts_are_looked_up_and_the_object_copied_again(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_server: emulators.Emulator, sizes: list[int]
) -> None:
    """A layout whose last part would be larger than its first cannot be equal parts: looked
    up at once. One that can, but is not, fails the ETag check first, then is looked up."""
    data = upload_in_parts(
        buckets.s3, buckets.source, "unequal.bin", [os.urandom(n) for n in sizes]
    )

    response = buckets.replicate(settings(s3_proxy, gcs_server, buckets), "unequal.bin")

    assert_copied(buckets, response, "unequal.bin", data)
    expected = [str(n) for n in range(1, len(sizes) + 1)]
    assert sorted(part_lookups(s3_proxy, buckets, "unequal.bin")) == expected


def test_a_flipped_byte_with_unequal_parts_is_still_an_integrity_error(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_server: emulators.Emulator
) -> None:
    """The fallback copies again with the real layout; a corrupt read fails that check too."""
    parts = [os.urandom(6 * MiB), os.urandom(5 * MiB), os.urandom(5 * MiB)]
    upload_in_parts(buckets.s3, buckets.source, "bad.bin", parts)
    s3_proxy.add(Fault("GET", f"/{buckets.source}/bad.bin", "flip", at=1234))

    response = buckets.replicate(settings(s3_proxy, gcs_server, buckets), "bad.bin")

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "integrity_error"
    assert "multipart ETag" in response.text
    buckets.assert_nothing_written()
    assert len(s3_proxy.seen("GET", "/bad.bin")) == 2  # the derived layout, then the real one
