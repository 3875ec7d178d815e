"""ListObjectsV2 pages whose `Contents` app.storage.s3_listing reads instead of botocore's
parser (every source built by `s3.build_source` has it), against what botocore alone makes of
the same pages on moto."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.dev import emulators
from app.storage.s3_listing import read_contents_quickly
from tests.conftest import s3_client_for

KEYS = [
    "a/plain.bin",
    "a/with spaces and  two",
    "a/plus+sign",
    "a/percent%20not-a-space",
    "a/amp&lt;not-an-entity>",
    "a/quote\"and'apostrophe",
    "a/unicodé/日本語 🙂",
    "a/tab\tand\x7f",
    "a/" + "k" * 1000,
]


@pytest.fixture
def quick(moto_server: emulators.Emulator) -> Any:
    client = s3_client_for(moto_server.url)
    read_contents_quickly(client)
    return client


def listed_by(client: Any, bucket: str) -> list[tuple[str, int, str]]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="a/", PaginationConfig={"PageSize": 4}
    )
    return [(o["Key"], o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", [])]


def test_pages_read_here_match_botocore_s_own_reading(
    quick: Any, s3: Any, source_bucket: str
) -> None:
    for i, key in enumerate(KEYS):
        s3.put_object(Bucket=source_bucket, Key=key, Body=os.urandom(i * 7))

    read_here = listed_by(quick, source_bucket)

    assert read_here == listed_by(s3, source_bucket)
    assert sorted(key for key, _, _ in read_here) == sorted(KEYS)
    page = quick.list_objects_v2(Bucket=source_bucket, Prefix="a/", MaxKeys=4)
    # Only the fields read here: botocore's parser, which adds LastModified, did not run.
    fields = {"Key", "Size", "ETag", "StorageClass"}
    assert [set(entry) for entry in page["Contents"]] == [fields] * 4
    assert page["IsTruncated"] is True
    assert page["NextContinuationToken"]


def test_an_empty_page_and_an_error_are_left_to_botocore(quick: Any, source_bucket: str) -> None:
    assert "Contents" not in quick.list_objects_v2(Bucket=source_bucket, Prefix="none/")
    with pytest.raises(quick.exceptions.NoSuchBucket):
        quick.list_objects_v2(Bucket="no-such-bucket-anywhere")
