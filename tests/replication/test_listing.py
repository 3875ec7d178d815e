"""The merge of two key-sorted listings: what sync, check and the batch plan are built on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from app import errors
from app.replication.listing import Pair, ahead, merge, resumed
from app.retry import RetryPolicy
from app.storage import s3
from app.storage.base import ObjectInfo
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy


def pairs(left: list[str], right: list[str]) -> list[tuple[str, bool, bool]]:
    return [(p.key, p.left is not None, p.right is not None) for p in merge(left, right, str, str)]


def test_every_key_of_either_side_once_in_order() -> None:
    assert pairs(["a", "c", "d"], ["b", "c", "e"]) == [
        ("a", True, False),
        ("b", False, True),
        ("c", True, True),
        ("d", True, False),
        ("e", False, True),
    ]


@pytest.mark.parametrize(("left", "right"), [([], []), (["a"], []), ([], ["a"])])
def test_empty_sides(left: list[str], right: list[str]) -> None:
    assert [p.key for p in merge(left, right, str, str)] == sorted(left + right)


def test_byte_order_as_the_clouds_list_it() -> None:
    # "a-b" sorts before "a/b" ('-' < '/'), and non-ASCII after every ASCII key.
    keys = sorted(["a/b", "a-b", "a", "é", "z", "a b"])
    assert keys == ["a", "a b", "a-b", "a/b", "z", "é"]
    assert [p.key for p in merge(keys, keys[::2], str, str)] == keys


def test_items_are_matched_by_their_key_function() -> None:
    left = [("x/1", 10), ("x/2", 20)]
    right = [("y/2", "b"), ("y/3", "c")]
    merged = list(merge(left, right, lambda i: i[0][2:], lambda i: i[0][2:]))
    assert merged == [
        Pair("1", ("x/1", 10), None),
        Pair("2", ("x/2", 20), ("y/2", "b")),
        Pair("3", None, ("y/3", "c")),
    ]


@pytest.mark.parametrize("bad", [["b", "a"], ["a", "a"]])
def test_an_unsorted_side_is_an_error_not_a_missing_key(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="out of order"):
        list(merge(bad, ["a"], str, str))


def test_reads_each_side_lazily() -> None:
    """A page at a time: the merge never reads further ahead than one item per side."""
    pulled: list[str] = []

    def side(keys: list[str]) -> Iterator[str]:
        for key in keys:
            pulled.append(key)
            yield key

    merged = merge(side([f"{n:06}" for n in range(10**6)]), side(["000001"]), str, str)
    assert next(merged).key == "000000"
    assert next(merged).key == "000001"
    assert len(pulled) <= 4


def test_a_failed_page_is_retried_after_the_last_key_received(
    s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    """A real S3 listing, two keys a page, whose second page S3 answers with 503 once."""
    keys = [f"k{n}" for n in range(5)]
    for key in keys:
        buckets.put(key, b"x")
    source = s3.build_source(
        endpoint_url=s3_proxy.url,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        connect_timeout=2,
        read_timeout=10,
        max_pool_connections=2,
        direct_gets=False,
        list_page_size=2,
    )
    fault = s3_proxy.add(Fault("GET", "list-type=2", "status", status=503, nth=2))
    listed = resumed(source.iter_objects, buckets.source, "", RetryPolicy(2, 0.01))
    assert [obj.key for obj in listed] == keys
    assert fault.fired == 1
    resumed_from = s3_proxy.seen("GET", "list-type=2")[2].target
    assert "start-after=k1" in resumed_from


def test_a_listing_that_keeps_failing_raises() -> None:
    def broken(bucket: str, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        if start_after is None:
            yield ObjectInfo(bucket, "a", 1)
        raise errors.TransientError("down")

    with pytest.raises(errors.TransientError):
        list(resumed(broken, "bucket", "", RetryPolicy(1, 0)))


def test_ahead_hands_every_item_in_order_and_draws_at_most_its_limit_ahead() -> None:
    drawn: list[int] = []

    def items() -> Iterator[int]:
        for n in range(10):
            drawn.append(n)
            yield n

    reader = ahead(items(), limit=3)
    assert next(reader) == 0
    deadline = time.monotonic() + 5
    while len(drawn) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    # One handed over, three waiting, one drawn and waiting for room: no more.
    assert len(drawn) == 5
    assert [0, *reader] == list(range(10))


def test_ahead_raises_the_listing_s_error_in_the_reader() -> None:
    def items() -> Iterator[str]:
        yield "a"
        raise errors.BucketNotFound("S3 went away")

    reader = ahead(items(), limit=10)
    assert next(reader) == "a"
    with pytest.raises(errors.BucketNotFound, match="S3 went away"):
        next(reader)


def test_a_reader_that_stops_early_stops_the_drawing_thread() -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    before = threading.active_count()
    reader = ahead(endless(), limit=2)
    assert next(reader) == 0
    reader.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
