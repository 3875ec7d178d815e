"""LocalDestination.iter_objects: the objects of a bucket in key order (UTF-8 byte order),
from a layout that stores keys as directories, whose own order is not the keys' order."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import errors
from app.storage import local
from app.storage.base import ContentHeaders
from tests.storage.test_contract import BytesStream

BUCKET = "listing"
DEEP = "deep" + "/x" * 500  # 501 levels of directories
# Keys whose order a directory walk gets wrong: `a-b` < `a.b` < `a/` < `a/b` < `a0`, an object
# beside a directory of the same name, empty segments, escaped and hashed names, non-ASCII
# text (U+FFFF sorts before U+1F600 in UTF-8 as in Python, not in UTF-16).
KEYS = [
    "a",
    "a-b",
    "a.b",
    "a/",
    "a//b",
    "a/b",
    "a/b/c",
    "a/b-c",
    "a0",
    "A",
    "b",
    "100%",
    "z~",
    "z~.json",
    "ctrl\x01",
    "é",
    "é/x",
    "e\u0301",
    "日本/語",
    "\uffff",
    "\U0001f600",
    "long-" + "n" * 300,  # a hashed file name
    "long-" + "d" * 300 + "/inner",  # a hashed directory name
    "long-" + "d" * 300 + "/inner-2",
    DEEP,
]


@pytest.fixture(scope="module")
def destination(tmp_path_factory: pytest.TempPathFactory) -> local.LocalDestination:
    """A bucket holding KEYS, each with its key as its bytes; the tests only read it."""
    destination = local.LocalDestination(tmp_path_factory.mktemp("listing"))
    destination.probe(BUCKET)
    for key in KEYS:
        data = key.encode()
        headers = ContentHeaders(content_type="text/plain", cache_control="no-cache")
        metadata = {"source": key[:50]}
        destination.write(BUCKET, key, BytesStream(data), len(data), headers, metadata, 0)
    return destination


def keys(
    destination: local.LocalDestination, prefix: str = "", after: str | None = None
) -> list[str]:
    return [info.key for info in destination.iter_objects(BUCKET, prefix, after)]


def test_every_object_in_key_order_as_head_describes_it(
    destination: local.LocalDestination,
) -> None:
    listed = list(destination.iter_objects(BUCKET))

    assert [info.key for info in listed] == sorted(KEYS)
    assert [info.key.encode() for info in listed] == sorted(key.encode() for key in KEYS)
    assert listed == [destination.head(BUCKET, info.key) for info in listed]
    assert all(info.size == len(info.key.encode()) for info in listed)


@pytest.mark.parametrize(
    "prefix", ["", "a", "a/", "a/b", "a-", "é", "long-d", "deep/x/x", "日本/", "z~.", "nothing"]
)
def test_prefix(destination: local.LocalDestination, prefix: str) -> None:
    assert keys(destination, prefix) == sorted(k for k in KEYS if k.startswith(prefix))


@pytest.mark.parametrize(
    "after", ["", "a", "a-", "a-b", "a/", "a/b", "a/b/c", "a0", "b", "é", "long-d", "\U0010ffff"]
)
def test_start_after(destination: local.LocalDestination, after: str) -> None:
    assert keys(destination, after=after) == sorted(k for k in KEYS if k > after)


@pytest.mark.parametrize(
    ("prefix", "after"), [("a", "a-b"), ("a/", "a/"), ("a/", "a//b"), ("a", "a/b/c"), ("a", "b")]
)
def test_prefix_and_start_after(
    destination: local.LocalDestination, prefix: str, after: str
) -> None:
    expected = sorted(k for k in KEYS if k.startswith(prefix) and k > after)
    assert keys(destination, prefix, after) == expected


def test_objects_beside_prefixes_of_the_same_name(destination: local.LocalDestination) -> None:
    assert keys(destination, "a/b") == ["a/b", "a/b-c", "a/b/c"]
    assert keys(destination, "a/b/") == ["a/b/c"]


def test_a_write_that_never_finished_is_not_listed(tmp_path: Path) -> None:
    destination = local.LocalDestination(tmp_path)
    destination.probe(BUCKET)
    for key in ("x/1", "x/2"):
        destination.write(BUCKET, key, BytesStream(b"x"), 1, ContentHeaders(), {}, 0)
    local.object_paths(tmp_path, BUCKET, "x/1").data.unlink()  # metadata without data

    assert keys(destination) == ["x/2"]


def test_an_empty_bucket_lists_nothing(tmp_path: Path) -> None:
    destination = local.LocalDestination(tmp_path)
    destination.probe(BUCKET)

    assert keys(destination) == []


def test_a_missing_bucket_is_bucket_not_found(tmp_path: Path) -> None:
    destination = local.LocalDestination(tmp_path)
    destination.probe(BUCKET)

    with pytest.raises(errors.BucketNotFound):
        destination.iter_objects("no-such-bucket")  # at once, before the first object
