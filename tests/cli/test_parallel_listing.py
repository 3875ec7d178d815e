"""`--list-concurrency`: sync and check list key ranges concurrently, against the emulators.

The source holds more than LIST_SPLIT_MIN_KEYS keys (set to a page here; below that, one
range lists everything), awkward ones among them; what is asserted is what a user sees:
every key at the destination with its bytes, and check's lines in key order, the same
whatever the number of ranges.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Buckets
from tests.faults import FaultProxy

AWKWARD = ["a b", "a+b", "a%2Fb", "ünï/cödé", "日本/語", "x/" * 20 + "deep", "~tilde", "Z"]
KEYS = sorted([f"k/{n % 7}/{n:05d}" for n in range(1_050)] + AWKWARD)


@pytest.fixture
def many(buckets: Buckets) -> dict[str, bytes]:
    """KEYS at the source, each holding its own name."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: buckets.put(key, key.encode()), KEYS))
    return {key: key.encode() for key in KEYS}


def listing_starts(proxy: FaultProxy, bucket: str) -> set[str]:
    """The StartAfter of every ListObjectsV2 request the proxy saw for `bucket`."""
    from urllib.parse import parse_qs, urlsplit

    starts = set()
    for request in proxy.requests:
        split = urlsplit(request.target)
        query = parse_qs(split.query)
        if (
            split.path.rstrip("/") == f"/{bucket}"
            and "list-type" in query
            and "start-after" in query
        ):
            starts.add(query["start-after"][0])
    return starts


def test_sync_and_check_over_ranges_match_one_stream(
    run: Any, buckets: Buckets, many: dict[str, bytes], s3_proxy: FaultProxy
) -> None:
    src, dst = f"s3://{buckets.source}", f"gs://{buckets.dest}"

    def sync_over_ranges() -> Any:
        return run(
            "sync",
            src,
            dst,
            "--list-concurrency",
            "8",
            "--json",
            s3_url=s3_proxy.url,
            timeout=300,
            LIST_SPLIT_MIN_KEYS="1000",
        )

    synced = sync_over_ranges()
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["copied"] == len(KEYS)
    assert {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)} == set(KEYS)
    for key in ["a b", "a+b", "a%2Fb", "日本/語", KEYS[700]]:
        assert buckets.destination_bytes(key) == many[key]
    assert len(listing_starts(s3_proxy, buckets.source)) > 8  # probes and ranges, not one stream

    buckets.gcs.bucket(buckets.dest).blob(KEYS[3]).delete()
    buckets.put(KEYS[900], b"changed at the source")
    buckets.gcs.bucket(buckets.dest).blob("k/only-here").upload_from_string(b"extra")
    expected = dict.fromkeys(KEYS, "=") | {KEYS[3]: "-", KEYS[900]: "*", "k/only-here": "+"}
    lines = [f"{mark} {key}" for key, mark in sorted(expected.items())]
    for ranges in ("1", "8"):
        checked = run(
            "check", src, dst, "--list-concurrency", ranges, timeout=300, LIST_SPLIT_MIN_KEYS="1000"
        )
        assert checked.returncode == 1, checked.stderr
        assert checked.stdout.splitlines() == lines  # in key order across the ranges

    again = sync_over_ranges()
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"duration_seconds": 0} == {
        "copied": 2,
        "skipped": len(KEYS) - 2,
        "gone": 0,
        "deleted": 0,
        "failed": 0,
        "bytes": len(KEYS[3]) + len(b"changed at the source"),
        "duration_seconds": 0,
        "dry_run": False,
        "interrupted": False,
    }
    assert buckets.destination_bytes(KEYS[900]) == b"changed at the source"


def test_a_source_too_small_to_split_is_listed_once(
    run: Any, buckets: Buckets, s3_proxy: FaultProxy
) -> None:
    """Below LIST_SPLIT_MIN_KEYS the keys read to decide not to split are the listing: one
    ListObjectsV2 request for a source of one page, not the same page twice."""
    for key in ["a", "b/c", "d e"]:
        buckets.put(key, key.encode())
    checked = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}", s3_url=s3_proxy.url)
    assert checked.returncode == 1, checked.stderr
    assert checked.stdout.splitlines() == ["- a", "- b/c", "- d e"]
    listings = [r for r in s3_proxy.seen("GET", f"/{buckets.source}") if "list-type" in r.target]
    assert len(listings) == 1
