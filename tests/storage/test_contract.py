"""One contract for every destination: the same tests against GCS (fake-gcs-server) and the
local filesystem (LOCAL_GCS_PATH), so both behave the same for the replication flow."""

from __future__ import annotations

import base64
import errno
import gzip
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import pytest
from google.cloud import storage

from app import errors
from app.dev import emulators
from app.replication.batch import survey
from app.retry import RetryPolicy
from app.storage import gcs, local
from app.storage.base import Body, Checksums, ContentHeaders, Destination, ObjectInfo
from app.storage.gcs import transport
from tests.conftest import destination_bytes, digests

CHUNK = 256 * 1024  # GCS writes above this go through the resumable, chunked upload
NO_HEADERS = ContentHeaders()


class BytesStream:
    """A VerifiedStream over bytes in memory. With `fail_before_end` it raises IntegrityError
    instead of returning the final bytes, as a source that did not verify does."""

    def __init__(self, data: bytes, *, fail_before_end: bool = False) -> None:
        self._data = data
        self._offset = 0
        self._fail_before_end = fail_before_end
        self._md5 = hashlib.md5()
        self._crc32c = google_crc32c.Checksum()

    def read(self, size: int, /) -> bytes:
        chunk = self._data[self._offset : self._offset + size]
        if self._fail_before_end and chunk and self._offset + len(chunk) == len(self._data):
            raise errors.IntegrityError("the test source did not verify")
        self._offset += len(chunk)
        self._md5.update(chunk)
        self._crc32c.update(chunk)
        return chunk

    def checksums(self) -> Checksums:
        return Checksums(
            md5=base64.b64encode(self._md5.digest()).decode(),
            crc32c=base64.b64encode(self._crc32c.digest()).decode(),
        )


@dataclass
class Target:
    """A destination under test, the bucket it writes to, and a way to read back what it stored
    without going through the adapter (None when nothing is stored under the key)."""

    destination: Destination
    bucket: str
    stored: Callable[[str], bytes | None]

    def write(
        self,
        key: str,
        data: bytes,
        *,
        generation: int = 0,
        headers: ContentHeaders = NO_HEADERS,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        return self.destination.write(
            self.bucket,
            key,
            BytesStream(data),
            len(data),
            headers,
            metadata or {},
            if_generation_match=generation,
        )


def gcs_target(gcs_client: storage.Client, server: emulators.Emulator) -> Target:
    """Built as app.main.build_replicator builds it, with 256 KiB chunks."""
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(bucket)
    destination = gcs.build_destination(
        emulator_host=server.url,
        retry=RetryPolicy(2, 0.01, 0.1),
        chunk_size=CHUNK,
        timeout=(2, 10),
        max_pool_connections=4,
        target=server.url,
    )

    def stored(key: str) -> bytes | None:
        if gcs_client.bucket(bucket).get_blob(key) is None:
            return None
        return destination_bytes(gcs_client, bucket, key)

    return Target(destination, bucket, stored)


def local_target(root: Path) -> Target:
    bucket = "contract-bucket"
    (root / bucket).mkdir(parents=True)

    def stored(key: str) -> bytes | None:
        path = local.object_paths(root, bucket, key).data  # the documented layout
        return path.read_bytes() if path.is_file() else None

    return Target(local.LocalDestination(root), bucket, stored)


@pytest.fixture(params=["gcs", "local"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "gcs":
        client = request.getfixturevalue("gcs")
        server = request.getfixturevalue("gcs_server")
        return gcs_target(client, server)
    return local_target(tmp_path / "root")


def test_write_then_head_returns_size_checksums_headers_and_metadata(target: Target) -> None:
    data = gzip.compress(os.urandom(5000))
    headers = ContentHeaders(
        content_type="text/csv",
        content_encoding="gzip",
        cache_control="public, max-age=60",
        content_disposition='attachment; filename="report.csv"',
        content_language="fr",
    )
    metadata = {"owner": "finance", "Replicator-Source-Key": "reports/q3.csv"}

    written = target.write("report.csv", data, headers=headers, metadata=metadata)
    info = target.destination.head(target.bucket, "report.csv")

    assert info is not None
    assert (info.bucket, info.key, info.size) == (target.bucket, "report.csv", len(data))
    expected = digests(data)
    assert (info.checksums.md5, info.checksums.crc32c) == (expected["md5"], expected["crc32c"])
    assert info.headers == headers
    assert dict(info.metadata) == metadata
    assert info.generation is not None
    assert written.generation == info.generation
    assert written.checksums == info.checksums
    assert target.stored("report.csv") == data


def test_head_of_missing_object_is_none(target: Target) -> None:
    assert target.destination.head(target.bucket, "never-written") is None


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_sizes_around_the_chunk_boundary(target: Target, size: int) -> None:
    data = os.urandom(size)
    written = target.write("blob.bin", data)

    assert written.size == size
    info = target.destination.head(target.bucket, "blob.bin")
    assert info is not None
    assert info.size == size
    expected = digests(data)
    assert (info.checksums.md5, info.checksums.crc32c) == (expected["md5"], expected["crc32c"])
    assert target.stored("blob.bin") == data


def test_open_reads_the_generation_listed_as_stored(target: Target) -> None:
    stored = gzip.compress(os.urandom(3 * CHUNK))  # not decompressed on the way back
    target.write("a.gz", stored, headers=ContentHeaders(content_encoding="gzip"))
    [first] = target.destination.iter_objects(target.bucket)
    assert read_all(target.destination.open(first)) == stored

    second = target.write("a.gz", b"replaced", generation=first.generation or 0)

    assert read_all(target.destination.open(second)) == b"replaced"
    with pytest.raises(errors.ObjectNotFound):
        target.destination.open(first)


def read_all(body: Body) -> bytes:
    try:
        return b"".join(iter(lambda: body.read(100_000), b""))
    finally:
        body.close()


def test_only_if_absent_refuses_an_existing_object(target: Target) -> None:
    target.write("a.txt", b"first")

    with pytest.raises(errors.PreconditionFailed):
        target.write("a.txt", b"second", generation=0)

    assert target.stored("a.txt") == b"first"


def test_replacing_at_the_current_generation_changes_it(target: Target) -> None:
    first = target.write("a.txt", b"first")
    assert first.generation is not None

    second = target.write("a.txt", b"second, longer", generation=first.generation)

    assert second.generation is not None
    assert second.generation != first.generation
    info = target.destination.head(target.bucket, "a.txt")
    assert info is not None
    assert (info.generation, info.size) == (second.generation, len(b"second, longer"))
    assert target.stored("a.txt") == b"second, longer"


def test_stale_generation_is_refused(target: Target) -> None:
    first = target.write("a.txt", b"first")
    assert first.generation is not None
    second = target.write("a.txt", b"second", generation=first.generation)

    with pytest.raises(errors.PreconditionFailed):
        target.write("a.txt", b"third", generation=first.generation)

    info = target.destination.head(target.bucket, "a.txt")
    assert info is not None
    assert info.generation == second.generation
    assert target.stored("a.txt") == b"second"


def test_delete_without_generation(target: Target) -> None:
    target.write("a.txt", b"bye")

    target.destination.delete(target.bucket, "a.txt")

    assert target.destination.head(target.bucket, "a.txt") is None
    assert target.stored("a.txt") is None


def fake_gcs_differs(target: Target, request: pytest.FixtureRequest, reason: str) -> None:
    """Real GCS does what the test expects and fake-gcs-server does not: a strict xfail on
    the emulator, so the day it is fixed the marker has to go."""
    if isinstance(target.destination, gcs.GCSDestination):
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"emulator limitation: {reason}"))


def test_delete_at_the_current_generation(target: Target) -> None:
    written = target.write("a.txt", b"bye")

    target.destination.delete(target.bucket, "a.txt", if_generation_match=written.generation)

    assert target.destination.head(target.bucket, "a.txt") is None


def test_delete_at_a_stale_generation_is_refused(
    target: Target, request: pytest.FixtureRequest
) -> None:
    fake_gcs_differs(
        target,
        request,
        "fake-gcs-server v1.54 ignores ifGenerationMatch on DELETE "
        "(the client sends it; real GCS answers 412)",
    )
    first = target.write("a.txt", b"first")
    assert first.generation is not None
    target.write("a.txt", b"second", generation=first.generation)

    with pytest.raises(errors.PreconditionFailed):
        target.destination.delete(target.bucket, "a.txt", if_generation_match=first.generation)

    assert target.stored("a.txt") == b"second"


def test_delete_of_missing_object_is_not_found(target: Target) -> None:
    with pytest.raises(errors.ObjectNotFound):
        target.destination.delete(target.bucket, "never-written")


def test_write_to_missing_bucket_is_not_found(target: Target) -> None:
    with pytest.raises(errors.ObjectNotFound):
        target.destination.write(
            "no-such-bucket-x", "a.txt", BytesStream(b"x"), 1, NO_HEADERS, {}, 0
        )


def test_head_in_missing_bucket_is_bucket_not_found(target: Target) -> None:
    """The protocol: None for a missing object, BucketNotFound for a missing bucket."""
    with pytest.raises(errors.BucketNotFound):
        target.destination.head("no-such-bucket-x", "a.txt")


def unverified(size: int) -> BytesStream:
    """Raises IntegrityError instead of returning its final bytes."""
    return BytesStream(os.urandom(size), fail_before_end=True)


def ends_early(size: int) -> BytesStream:
    """Gives 50 bytes fewer than announced."""
    return BytesStream(os.urandom(size - 50))


@pytest.mark.parametrize("size", [100, 2 * CHUNK + 100])
@pytest.mark.parametrize("bad_stream", [unverified, ends_early])
def test_a_stream_that_does_not_verify_leaves_no_object(
    target: Target, size: int, bad_stream: Callable[[int], BytesStream]
) -> None:
    with pytest.raises(errors.IntegrityError):
        target.destination.write(
            target.bucket, "damaged.bin", bad_stream(size), size, NO_HEADERS, {}, 0
        )

    assert target.destination.head(target.bucket, "damaged.bin") is None
    assert target.stored("damaged.bin") is None


@pytest.mark.parametrize("size", [100, 2 * CHUNK + 100])
def test_unverified_stream_leaves_the_previous_object(target: Target, size: int) -> None:
    previous = target.write("a.bin", b"good bytes", metadata={"version": "1"})
    assert previous.generation is not None

    with pytest.raises(errors.IntegrityError):
        target.destination.write(
            target.bucket,
            "a.bin",
            BytesStream(os.urandom(size), fail_before_end=True),
            size,
            NO_HEADERS,
            {"version": "2"},
            if_generation_match=previous.generation,
        )

    info = target.destination.head(target.bucket, "a.bin")
    assert info is not None
    assert (info.generation, info.size) == (previous.generation, len(b"good bytes"))
    assert dict(info.metadata) == {"version": "1"}
    assert target.stored("a.bin") == b"good bytes"


@pytest.mark.parametrize(
    "key",
    [
        "with spaces/and more spaces.txt",
        "unicodé/日本語/ファイル.txt",
        "plus+sign",
        "percent%20not-a-space",
        "question?mark",
        "hash#fragment",
        "deep/" * 30 + "leaf.txt",
        "mixed/a+b %c?d#e/ü.txt",
        "tilde~and%percent/100%~",
        "double//slash",
        "trailing/slash/",
    ],
)
def test_keys_keep_their_exact_name(target: Target, key: str) -> None:
    data = key.encode()
    target.write(key, data)

    info = target.destination.head(target.bucket, key)
    assert info is not None
    assert (info.key, info.size) == (key, len(data))
    assert target.stored(key) == data
    target.destination.delete(target.bucket, key)
    assert target.destination.head(target.bucket, key) is None


def test_a_key_may_be_an_object_and_a_prefix(target: Target) -> None:
    """S3 and GCS allow `a` and `a/b` side by side, and deleting one leaves the other."""
    target.write("a", b"object")
    target.write("a/b", b"under the prefix")
    target.write("p/q", b"under the prefix")
    target.write("p", b"object")

    assert [target.stored(k) for k in ("a", "a/b", "p/q", "p")] == [
        b"object",
        b"under the prefix",
        b"under the prefix",
        b"object",
    ]
    for key, size in (("a", 6), ("a/b", 16), ("p/q", 16), ("p", 6)):
        info = target.destination.head(target.bucket, key)
        assert info is not None
        assert (info.key, info.size) == (key, size)

    target.destination.delete(target.bucket, "a/b")
    target.destination.delete(target.bucket, "p")

    assert (target.stored("a"), target.stored("a/b")) == (b"object", None)
    assert (target.stored("p"), target.stored("p/q")) == (None, b"under the prefix")


def test_a_1024_byte_key(target: Target) -> None:
    """The longest key S3 allows, in one segment."""
    key = "k" * 1024
    target.write(key, b"long name")

    info = target.destination.head(target.bucket, key)
    assert info is not None
    assert info.key == key
    assert target.stored(key) == b"long name"


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(["k" * 1023 + "a", "k" * 1023 + "b"], id="differ-in-the-last-byte"),
        pytest.param(["é" * 512, "é" * 511 + "e"], id="two-byte-characters"),
        pytest.param(["/".join(["%~" * 33] * 15)], id="escapes-in-every-segment"),
        pytest.param(["x" * 300 + "/" + "y" * 300 + "/z", "x" * 300 + "/z"], id="long-prefixes"),
    ],
)
def test_long_keys_keep_their_own_bytes(target: Target, keys: list[str]) -> None:
    for key in keys:
        target.write(key, key.encode()[-40:])

    for key in keys:
        info = target.destination.head(target.bucket, key)
        assert info is not None
        assert info.key == key
        assert target.stored(key) == key.encode()[-40:]


LAYOUT_LOOKALIKES = [
    "m",
    "m~",
    "m~.json",
    "m~/n",
    "m/n~.json",
    "m%",
    "m%25",
    "m%7E",
    "~m",
    "%",
    "%/m",
    "m/%",
    "m//",
    "k" * 300,
    "~" + hashlib.sha256(b"k" * 300).hexdigest(),
]


def test_keys_spelled_like_the_local_layout_stay_apart(target: Target) -> None:
    """Keys that look like the local layout's own names (its `~` and `~.json` suffixes, its
    escapes, a hashed name) are objects like any other, each with its own bytes."""
    for key in LAYOUT_LOOKALIKES:
        target.write(key, f"bytes of {key}".encode())

    for key in LAYOUT_LOOKALIKES:
        info = target.destination.head(target.bucket, key)
        assert info is not None
        assert (info.key, info.size) == (key, len(f"bytes of {key}"))
        assert target.stored(key) == f"bytes of {key}".encode()


def test_a_survey_describes_the_keys_that_exist(target: Target) -> None:
    target.write("a", b"first", metadata={"owner": "finance"})
    target.write("c/d", b"second")

    listing = survey(target.destination.iter_objects, target.bucket, ["a", "b", "c/d"], 5000)

    assert sorted(listing.objects) == ["a", "c/d"]
    assert all(listing.knows(key) for key in ("a", "b", "c/d"))
    assert (listing.objects["a"].size, dict(listing.objects["a"].metadata)) == (
        5,
        {"owner": "finance"},
    )
    with pytest.raises(errors.BucketNotFound):
        survey(target.destination.iter_objects, "no-such-bucket-x", ["a"], 5000)


# --- iter_objects: the listing for sync and check --------------------------------------

AWKWARD_KEYS = [
    "a",
    "a-b",  # '-' sorts before '.' and '/' (0x2D < 0x2E < 0x2F)
    "a.b",
    "a/b",
    "a/b/c",
    "a0",
    "B",  # upper case sorts before lower case
    "z",
    "é",  # UTF-8 byte order is code point order: after every ASCII key
    "日本/語",
    "~tilde",
    "with space",
    "plus+sign",
]


@pytest.fixture
def lister(target: Target, request: pytest.FixtureRequest) -> Target:
    """The target, with listing pages of 10 objects where the destination has pages (so a
    few dozen objects span several)."""
    if isinstance(target.destination, gcs.GCSDestination):
        server = request.getfixturevalue("gcs_server")
        http = transport.connect(server.url, max_pool_connections=4)
        paged = gcs.GCSDestination(
            http, RetryPolicy(2, 0.01, 0.1), chunk_size=CHUNK, timeout=(2, 10), page_size=10
        )
        return Target(paged, target.bucket, target.stored)
    return target


def keys_of(objects: Iterable[ObjectInfo]) -> list[str]:
    return [info.key for info in objects]


def test_iter_objects_lists_every_object_in_key_order_fully_described(lister: Target) -> None:
    headers = ContentHeaders(content_type="text/plain", cache_control="no-cache")
    for number, key in enumerate(reversed(AWKWARD_KEYS)):
        lister.write(key, key.encode() * number, headers=headers, metadata={"n": str(number)})

    listed = list(lister.destination.iter_objects(lister.bucket))

    assert keys_of(listed) == sorted(AWKWARD_KEYS)
    assert sorted(AWKWARD_KEYS, key=lambda key: key.encode()) == sorted(AWKWARD_KEYS)
    for info in listed:
        assert info == lister.destination.head(lister.bucket, info.key)
        assert info.updated is not None
        assert info.generation is not None
        assert info.size == len(info.key.encode()) * int(info.metadata["n"])
        assert info.headers.cache_control == "no-cache"
        expected = digests(lister.stored(info.key) or b"")
        assert (info.checksums.md5, info.checksums.crc32c) == (expected["md5"], expected["crc32c"])


def test_iter_objects_under_a_prefix(lister: Target) -> None:
    for key in ("p", "p-", "p/", "p/a", "p/b/c", "p/é", "p0", "q/p/a", "o"):
        lister.write(key, b"x")

    assert keys_of(lister.destination.iter_objects(lister.bucket, "p/")) == [
        "p/",
        "p/a",
        "p/b/c",
        "p/é",
    ]
    assert keys_of(lister.destination.iter_objects(lister.bucket, "p")) == [
        "p",
        "p-",
        "p/",
        "p/a",
        "p/b/c",
        "p/é",
        "p0",
    ]
    assert keys_of(lister.destination.iter_objects(lister.bucket, "nothing/")) == []


@pytest.mark.parametrize(
    ("prefix", "start_after", "expected"),
    [
        pytest.param(
            "", "a/b", ["a/b/c", "a0", "z", "é", "日本/語"], id="an-existing-key-is-left-out"
        ),
        pytest.param("", "a.c", ["a/b", "a/b/c", "a0", "z", "é", "日本/語"], id="between-keys"),
        pytest.param(
            "", "", ["a", "a-b", "a.b", "a/b", "a/b/c", "a0", "z", "é", "日本/語"], id="empty"
        ),
        pytest.param("a/", "a", ["a/b", "a/b/c"], id="before-the-prefix"),
        pytest.param("a/", "a/b", ["a/b/c"], id="inside-the-prefix"),
        pytest.param("a", "a/b/c", ["a0"], id="the-prefix-goes-on"),
        pytest.param("", "日本/語", [], id="after-the-last-key"),
        pytest.param("", "~", ["é", "日本/語"], id="ascii-sorts-first"),
    ],
)
def test_iter_objects_starts_strictly_after_a_key(
    lister: Target, prefix: str, start_after: str, expected: list[str]
) -> None:
    for key in ("a", "a-b", "a.b", "a/b", "a/b/c", "a0", "z", "é", "日本/語"):
        lister.write(key, b"x")

    listed = lister.destination.iter_objects(lister.bucket, prefix, start_after)

    assert keys_of(listed) == expected


def test_iter_objects_across_listing_pages(lister: Target) -> None:
    keys = [f"k/{n:03}" for n in range(35)]  # several pages of 10 at GCS
    for key in keys:
        lister.write(key, key.encode())

    assert keys_of(lister.destination.iter_objects(lister.bucket)) == keys
    assert keys_of(lister.destination.iter_objects(lister.bucket, "k/", "k/009")) == keys[10:]
    assert keys_of(lister.destination.iter_objects(lister.bucket, "k/01")) == keys[10:20]


def test_iter_objects_of_a_missing_bucket_is_bucket_not_found(lister: Target) -> None:
    with pytest.raises(errors.BucketNotFound):
        list(lister.destination.iter_objects("no-such-bucket-x"))


def test_iter_objects_of_an_empty_bucket_is_empty(lister: Target) -> None:
    assert list(lister.destination.iter_objects(lister.bucket)) == []


# --- the local layout -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("reports/2026/q3.csv", "reports/2026/q3.csv~"),
        ("unicodé/日本語.txt", "unicodé/日本語.txt~"),
        ("with spaces+plus#hash", "with spaces+plus#hash~"),
        ("100%~/a~b", "100%25%7E/a%7Eb~"),
        ("what?/x:y*", "what%3F/x%3Ay%2A~"),
        ("tab\there", "tab%09here~"),
        ("a//b/", "a/%/b/%~"),
        ("k" * 1024, "~" + hashlib.sha256(b"k" * 1024).hexdigest() + "~"),
    ],
)
def test_local_layout_is_browsable(tmp_path: Path, key: str, path: str) -> None:
    """The documented layout: a plain key lands where a person would look for it, with its
    metadata beside it; nothing else is written in the bucket."""
    root = tmp_path / "root"
    target = local_target(root)
    target.write(key, b"the bytes", metadata={"owner": "finance"})

    bucket_dir = root / target.bucket
    data, meta = bucket_dir / path, bucket_dir / f"{path}.json"
    assert data.read_bytes() == b"the bytes"
    record = json.loads(meta.read_text())
    assert (record["key"], record["metadata"]) == (key, {"owner": "finance"})
    assert sorted(p for p in bucket_dir.rglob("*") if p.is_file()) == sorted([data, meta])
    assert list((root / ".tmp").iterdir()) == []


def test_local_writes_nothing_outside_its_bucket(nested_local: Target, tmp_path: Path) -> None:
    """Keys full of dots, escapes and separators that are not `/` still land inside the bucket,
    under their own names."""
    target = nested_local
    keys = [
        "..a",
        "a..",
        "...",
        ".hidden/.x",
        "%2e%2e/%2e%2e/x",
        "..%2F..%2Fx",
        "a\\..\\..\\x",
        "~/x",
        "~root/x",
        "\u2025/\uff0e\uff0e/x",  # dot leaders and fullwidth dots, not dots
    ]
    for key in keys:
        target.write(key, key.encode())

    bucket_dir = tmp_path / "inner" / "root" / target.bucket
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(keys)  # a data file and a metadata file each
    assert all(p.is_relative_to(bucket_dir) for p in files)
    assert [target.stored(key) for key in keys] == [key.encode() for key in keys]


def test_local_delete_removes_the_folders_it_empties(tmp_path: Path) -> None:
    root = tmp_path / "root"
    target = local_target(root)
    bucket_dir = root / target.bucket
    target.write("x/y/z.txt", b"deep")
    target.write("x/keep.txt", b"kept")

    target.destination.delete(target.bucket, "x/y/z.txt")

    assert not (bucket_dir / "x" / "y").exists()
    assert target.stored("x/keep.txt") == b"kept"

    target.destination.delete(target.bucket, "x/keep.txt")

    assert bucket_dir.is_dir()
    assert list(bucket_dir.iterdir()) == []


def test_local_readers_see_the_old_object_or_the_whole_new_one(tmp_path: Path) -> None:
    """While one thread replaces an object over and over, another never sees it missing or
    a record beside bytes that are not its own."""
    target = local_target(tmp_path / "root")
    current = target.write("a", b"0", metadata={"size": "1"})
    seen: list[ObjectInfo | None] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(target.destination.head(target.bucket, "a"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 100):
            data = b"x" * (n % 7 + 1)
            assert current.generation is not None
            current = target.write(
                "a", data, generation=current.generation, metadata={"size": str(len(data))}
            )
    finally:
        done.set()
        reader.join()

    assert seen
    assert all(info is not None and info.size == int(info.metadata["size"]) for info in seen)


def test_local_record_without_bytes_is_no_object(tmp_path: Path) -> None:
    """What a crash in the middle of a write leaves behind is no object, and the next write
    replaces it."""
    root = tmp_path / "root"
    target = local_target(root)
    target.write("a.txt", b"old")
    local.object_paths(root, target.bucket, "a.txt").data.unlink()

    assert target.destination.head(target.bucket, "a.txt") is None
    target.write("a.txt", b"new", generation=0)
    assert target.stored("a.txt") == b"new"


@pytest.mark.parametrize("failing_rename", [1, 2])
def test_local_write_cut_off_between_its_renames_leaves_no_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_rename: int
) -> None:
    """A write that stops between publishing its metadata and its bytes (a crash, a failing
    disk) never leaves a record beside bytes that are not its own: the object is the old one
    or none, and the next write replaces it."""
    root = tmp_path / "root"
    target = local_target(root)
    old = target.write("a.txt", b"old", metadata={"version": "1"})
    bucket_dir = root / target.bucket
    real_replace = os.replace
    renames = 0

    def replace(src: str, dst: Path) -> None:
        nonlocal renames
        if Path(dst).is_relative_to(bucket_dir):
            renames += 1
            if renames == failing_rename:
                raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(local.os, "replace", replace)
    with pytest.raises(errors.ReplicatorError):
        target.write("a.txt", b"new", generation=old.generation or 0, metadata={"version": "2"})
    monkeypatch.undo()

    info = target.destination.head(target.bucket, "a.txt")
    if info is not None:
        assert (dict(info.metadata), target.stored("a.txt")) == ({"version": "1"}, b"old")
    assert list((root / ".tmp").iterdir()) == []
    target.write("a.txt", b"new", generation=(info.generation or 0) if info else 0)
    assert target.stored("a.txt") == b"new"


def test_local_reports_a_damaged_tree_in_its_own_terms(tmp_path: Path) -> None:
    """A file a person put where a folder belongs, or a damaged metadata file, is an error of
    the service's vocabulary, never a raw OSError or ValueError."""
    root = tmp_path / "root"
    target = local_target(root)
    (root / target.bucket / "x").write_bytes(b"not a folder")
    target.write("b.txt", b"bytes")
    local.object_paths(root, target.bucket, "b.txt").meta.write_text("{not json")

    assert target.destination.head(target.bucket, "x/y") is None
    with pytest.raises(errors.ReplicatorError):
        target.write("x/y", b"bytes")
    with pytest.raises(errors.ReplicatorError):
        target.destination.head(target.bucket, "b.txt")


def test_local_probe_creates_the_bucket(tmp_path: Path) -> None:
    destination = local.LocalDestination(tmp_path)

    destination.probe("new-bucket")

    assert (tmp_path / "new-bucket").is_dir()
    assert list((tmp_path / ".tmp").iterdir()) == []


@pytest.fixture
def nested_local(tmp_path: Path) -> Target:
    """A local target whose root sits two levels below tmp_path, so any escape lands there."""
    return local_target(tmp_path / "inner" / "root")


@pytest.mark.parametrize(
    "key",
    [
        "../escaped.txt",
        "../../escaped.txt",
        "../../../escaped.txt",
        "a/../../escaped.txt",
        "a/./escaped.txt",
        "./escaped.txt",
        ".",
        "..",
        "a/..",
        "a/.",
        "/ABSOLUTE/escaped.txt",
        "nul\0escaped.txt",
        "dir\0/escaped.txt",
        "",
        "lone surrogate \udc80",
    ],
)
def test_local_refuses_keys_that_leave_the_root(
    nested_local: Target, tmp_path: Path, key: str
) -> None:
    target = nested_local
    absolute = tmp_path / "absolute-escape"
    key = key.replace("/ABSOLUTE", str(absolute))

    with pytest.raises(errors.InvalidRequest):
        target.write(key, b"must not land anywhere")
    with pytest.raises(errors.InvalidRequest):
        target.destination.head(target.bucket, key)
    with pytest.raises(errors.InvalidRequest):
        target.destination.delete(target.bucket, key)

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert not absolute.exists()


@pytest.mark.parametrize("bucket", ["..", "../escaped", ".tmp", "a/b", "", "nul\0"])
def test_local_refuses_bucket_names_that_leave_the_root(
    nested_local: Target, tmp_path: Path, bucket: str
) -> None:
    destination = nested_local.destination

    with pytest.raises(errors.InvalidRequest):
        destination.write(bucket, "a.txt", BytesStream(b"x"), 1, NO_HEADERS, {}, 0)
    with pytest.raises(errors.InvalidRequest):
        destination.head(bucket, "a.txt")
    with pytest.raises(errors.InvalidRequest):
        destination.delete(bucket, "a.txt")

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
