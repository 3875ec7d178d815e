"""Where a bulk job reads and writes, and the two listings of it merged in key order.

`Location` is `s3://bucket/prefix` or `gs://bucket/prefix`; `compare` lists both sides page by
page and pairs each key below the prefixes, so memory does not grow with the number of keys;
`key_ranges` splits the key space so that `compare` lists it as several concurrent streams
(app.bulk.ranges); `unwritable` says why the destination cannot hold a key. Sync, check,
enqueue and the jobs all start here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app import errors, names
from app.bulk import ranges
from app.bulk.checkpoint import Checkpoint
from app.bulk.inventory import Inventory
from app.bulk.patterns import KeyFilter
from app.bulk.ranges import KeyRange
from app.replication.listing import Lister, Pair, ahead, interleaved, merge, resumed
from app.retry import RetryPolicy
from app.storage.base import Destination, KeyProbe, ObjectInfo, Source

Compared = Pair[ObjectInfo, ObjectInfo]
LISTED_AHEAD = 1000  # objects each side's listing may run ahead of the comparison: a page


@dataclass(frozen=True)
class Location:
    """`scheme://bucket[/prefix]`; a prefix names a folder, so it always ends in "/"."""

    scheme: str
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str, scheme: str) -> Location:
        """ValueError, saying what is wrong, unless `text` is `scheme://bucket[/prefix]`."""
        head = f"{scheme}://"
        if not text.startswith(head):
            raise ValueError(f"{text!r} is not a {head}bucket[/prefix] location")
        bucket, _, prefix = text[len(head) :].partition("/")
        check = names.check_s3_bucket if scheme == "s3" else names.check_gcs_bucket
        try:
            check(bucket)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(scheme, bucket, prefix)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class ListedRange(KeyRange):
    """The whole key space, whose source side `key_ranges` has already listed in full (no
    more than LIST_SPLIT_MIN_KEYS objects) to decide not to split it: `compare` takes the
    source's objects from here rather than list them a second time. A checkpoint keeps it as
    the plain range it is."""

    objects: tuple[ObjectInfo, ...] = field(default=(), compare=False, repr=False)


class Listed(Protocol):
    """What lists objects in key order: a source, a destination, or an inventory."""

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]: ...


def compare(
    source: Listed,
    destination: Destination,
    src: Location,
    dst: Location,
    keys: KeyFilter,
    retry: RetryPolicy,
    ranges: Sequence[KeyRange] = (KeyRange(),),
    range_ended: Callable[[int], None] = lambda _: None,
) -> Iterator[Compared]:
    """Each key below the prefixes, on either side, that `keys` matches: each of `ranges`
    listed on both sides at once, the ranges concurrently, so keys come in key order within a
    range and interleaved between ranges. `range_ended(i)` is called, from the reader's
    thread, once range `i` has given its last key. A failed listing page is retried by
    `retry`, resuming after the last key received."""

    def compared(key_range: KeyRange) -> Iterator[Compared]:
        def listed(objects_under: Lister, where: Location) -> Iterator[ObjectInfo]:
            start = None if key_range.after is None else where.prefix + key_range.after
            objects = resumed(objects_under, where.bucket, where.prefix, retry, start)
            if key_range.through is not None:
                last = where.prefix + key_range.through
                objects = itertools.takewhile(lambda obj: obj.key <= last, objects)
            return ahead(objects, LISTED_AHEAD)

        read = key_range.objects if isinstance(key_range, ListedRange) else None
        pairs = merge(
            iter(read) if read is not None else listed(source.iter_objects, src),
            (o for o in listed(destination.iter_objects, dst) if not _temporary(o.key)),
            lambda obj: obj.key[len(src.prefix) :],
            lambda obj: obj.key[len(dst.prefix) :],
        )
        return (pair for pair in pairs if pair.key and keys.matches(pair.key))

    return interleaved([compared(r) for r in ranges], LISTED_AHEAD, range_ended)


class Scope(Protocol):
    """What a run's options say about what it lists (SyncOptions, CheckOptions, ...)."""

    @property
    def keys(self) -> KeyFilter: ...

    @property
    def list_concurrency(self) -> int: ...

    @property
    def list_split_min_keys(self) -> int: ...

    @property
    def inventory(self) -> Inventory | None: ...


def compare_scope(
    source: Source,
    destination: Destination,
    src: Location,
    dst: Location,
    scope: Scope,
    retry: RetryPolicy,
    key_ranges_: Sequence[KeyRange] | None = None,
    range_ended: Callable[[int], None] = lambda _: None,
) -> tuple[Sequence[KeyRange], Iterator[Compared]]:
    """`compare` of what `scope` names: the source's keys from its inventory or listed, over
    `key_ranges_` (by default `key_ranges` for the scope's list concurrency). Returns the
    ranges and the pairs."""
    if key_ranges_ is None:
        key_ranges_ = key_ranges(source, src, scope, retry)
    listed = scope.inventory or source
    pairs = compare(listed, destination, src, dst, scope.keys, retry, key_ranges_, range_ended)
    return key_ranges_, pairs


def key_ranges(
    source: Source, src: Location, scope: Scope, retry: RetryPolicy
) -> tuple[KeyRange, ...]:
    """`count` ranges that split the source's keys below the prefix about evenly: at the
    inventory's quantiles when there is one, else found by app.bulk.ranges.probe; one range
    when the source holds no more than `list_split_min_keys` keys (read first, in order:
    there, a few requests list everything and probing would only cost; that range is a
    `ListedRange` holding what was read, so it is not listed again)."""
    count = scope.list_concurrency
    if scope.inventory is not None:
        return scope.inventory.ranges(count, src.prefix)
    if count <= 1:
        return (KeyRange(),)
    first = resumed(source.iter_objects, src.bucket, src.prefix, retry)
    small = scope.list_split_min_keys
    read = tuple(itertools.islice(first, small + 1))
    if len(read) <= small:
        return (ListedRange(objects=read),)

    def first_after(point: str) -> str | None:
        start = src.prefix + point if point else None
        if isinstance(source, KeyProbe):
            key = retry.call(source.first_key_after, src.bucket, src.prefix, start)
        else:
            listing = resumed(source.iter_objects, src.bucket, src.prefix, retry, start)
            key = next((obj.key for obj in listing), None)
        return None if key is None else key[len(src.prefix) :]

    return ranges.probe(first_after, count)


def checkpointed_ranges(
    source: Source, src: Location, scope: Scope, retry: RetryPolicy, checkpoint: Checkpoint | None
) -> tuple[KeyRange, ...]:
    """The key ranges to list: what is left of a resumed checkpoint's, else `key_ranges`
    (then kept in the checkpoint, when there is one, which starts writing)."""
    if checkpoint is not None and checkpoint.resumed:
        return checkpoint.begin(())
    found = key_ranges(source, src, scope, retry)
    return checkpoint.begin(found) if checkpoint is not None else found


DIRECTORY_BUCKET_SUFFIX = "--x-s3"  # S3 Express One Zone directory buckets end so


def require_key_order(src: Location) -> None:
    """InvalidRequest when `src` cannot be listed in key order, which merging two listings
    needs: an S3 directory bucket (S3 Express One Zone) lists in no particular order."""
    if src.scheme == "s3" and src.bucket.endswith(DIRECTORY_BUCKET_SUFFIX):
        raise errors.InvalidRequest(
            f"{src} is an S3 directory bucket (S3 Express One Zone), which does not list in "
            "key order: sync and check cannot compare it with the destination; copy its "
            "objects one by one (POST /v1/replicate, or replicator enqueue)"
        )


def _temporary(key: str) -> bool:
    """The service's own temporary object (a part of a parallel composite copy in flight, or
    one a killed copy left for the sweep): never compared, never deleted by `sync --delete`."""
    return key.startswith(names.TEMPORARY_PREFIX)


def unwritable(dst: Location, key: str) -> str:
    """Why the destination cannot hold `key` below its prefix, or ""."""
    try:
        names.check_gcs_key(dst.prefix + key)
    except ValueError as exc:
        return str(exc)
    return ""
