"""Where a bulk job reads and writes, and the two listings of it merged in key order.

`Location` is `s3://bucket/prefix` or `gs://bucket/prefix`; `compare` lists both sides page by
page and pairs each key below the prefixes, so memory does not grow with the number of keys;
`unwritable` says why the destination cannot hold a key. Sync, check, enqueue and the jobs all
start here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app import errors, names
from app.bulk.patterns import KeyFilter
from app.replication.listing import Pair, ahead, merge, resumed
from app.retry import RetryPolicy
from app.storage.base import Destination, ObjectInfo, Source

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


def compare(
    source: Source,
    destination: Destination,
    src: Location,
    dst: Location,
    keys: KeyFilter,
    retry: RetryPolicy,
) -> Iterator[Compared]:
    """Each key below the prefixes, on either side, that `keys` matches, in key order. A
    failed listing page is retried by `retry`, resuming after the last key received."""
    listed = merge(
        ahead(resumed(source.iter_objects, src.bucket, src.prefix, retry), LISTED_AHEAD),
        ahead(resumed(destination.iter_objects, dst.bucket, dst.prefix, retry), LISTED_AHEAD),
        lambda obj: obj.key[len(src.prefix) :],
        lambda obj: obj.key[len(dst.prefix) :],
    )
    return (pair for pair in listed if pair.key and keys.matches(pair.key))


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


def unwritable(dst: Location, key: str) -> str:
    """Why the destination cannot hold `key` below its prefix, or ""."""
    try:
        names.check_gcs_key(dst.prefix + key)
    except ValueError as exc:
        return str(exc)
    return ""
