"""What the replication flow needs from storage: plain dataclasses and two small protocols.

Adapters (s3.py, gcs/, local.py) speak their provider's SDK inside and this vocabulary
outside; provider errors are translated to app.errors at the adapter's edge.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from app import errors


@dataclass(frozen=True)
class ContentHeaders:
    """The HTTP content headers an object carries from source to destination, as stored."""

    content_type: str | None = None
    content_encoding: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None


@dataclass(frozen=True)
class Checksums:
    """Base64 digests, as GCS reports them (`md5Hash`, `crc32c`)."""

    md5: str | None = None
    crc32c: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    headers: ContentHeaders = field(default_factory=ContentHeaders)
    metadata: Mapping[str, str] = field(default_factory=dict)
    checksums: Checksums = field(default_factory=Checksums)
    etag: str | None = None  # S3: the ETag without quotes
    version_id: str | None = None  # S3: set on versioned buckets
    generation: int | None = None  # destination: GCS generation or the local equivalent
    # S3's additional checksums ("CRC32C", "SHA256", ...: base64, "-N" when composite).
    s3_checksums: Mapping[str, str] = field(default_factory=dict)
    s3_checksum_type: str | None = None  # "FULL_OBJECT" or "COMPOSITE" when S3 says
    updated: datetime.datetime | None = None  # destination: last written (GCS `updated`)
    # S3: when the object was last written (LastModified); kept as the copy's `customTime`.
    modified: datetime.datetime | None = None
    # S3: "AES256" (SSE-S3), "aws:kms" (SSE-KMS), "aws:kms:dsse" (DSSE-KMS), or None for an
    # unencrypted object or one whose encryption S3 did not say. SSE-C objects never get this
    # far: S3 refuses to describe them without their key (errors.CustomerKeyEncrypted).
    encryption: str | None = None
    kms_key: str | None = None  # S3: the KMS key of an SSE-KMS object, when S3 says
    storage_class: str | None = None  # S3: "STANDARD" when S3 does not say
    archive_status: str | None = None  # S3 Intelligent-Tiering: "ARCHIVE_ACCESS", ...
    restore: str | None = None  # S3: the x-amz-restore header of an archived object


# S3 storage classes whose objects must be restored before they can be read, and the
# Intelligent-Tiering tiers (x-amz-archive-status) with the same rule.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
ARCHIVE_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
# S3 encryptions whose ETag is not the MD5 of the object's bytes, even for a single PUT.
KMS_ENCRYPTIONS = frozenset({"aws:kms", "aws:kms:dsse"})


def archived_as(obj: ObjectInfo) -> str | None:
    """The storage class (or Intelligent-Tiering tier) that keeps `obj` from being read until
    it is restored, or None when it can be read (not archived, or restored: a restore that
    finished shows `ongoing-request="false"`)."""
    if obj.restore and 'ongoing-request="false"' in obj.restore:
        return None
    if obj.storage_class in ARCHIVE_CLASSES:
        return obj.storage_class
    if obj.archive_status in ARCHIVE_TIERS:
        return f"INTELLIGENT_TIERING {obj.archive_status}"
    return None


def etag_is_md5(obj: ObjectInfo) -> bool:
    """Whether S3's ETag of `obj` can be checked as an MD5 of its bytes (single part) or of
    its parts' MD5s (multipart): not under SSE-KMS or DSSE-KMS, whose ETags are opaque."""
    return obj.encryption not in KMS_ENCRYPTIONS


@contextlib.contextmanager
def bucket_request(cloud: str, bucket: str) -> Iterator[None]:
    """For requests that name only a bucket (a listing): any "not found" means the bucket is
    missing, and is said plainly."""
    try:
        yield
    except errors.ObjectNotFound as exc:
        raise errors.BucketNotFound(f"{cloud} bucket '{bucket}' does not exist") from exc


class Body(Protocol):
    """An open source object: `read` returns up to `size` bytes, b"" at the end."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class VerifiedStream(Protocol):
    """The bytes to write. `read` raises IntegrityError instead of returning the final bytes
    of an object that did not verify, so a destination never completes a damaged write.
    What `read` returns stays valid until the next call."""

    def read(self, size: int, /) -> bytes | memoryview: ...

    def checksums(self) -> Checksums:
        """Digests of everything read; complete once `read` has returned the last byte."""
        ...


class Block(Protocol):
    """`len(block)` bytes of a stream, some perhaps still arriving. Every byte stays in memory
    until the next block is taken, so a failed send of the block can be made again."""

    def __len__(self) -> int: ...

    def pieces(self, start: int) -> Iterator[memoryview]:
        """The block's bytes from `start` as they arrive (waiting for them); raises what
        reading the source failed with."""
        ...


class SourceFailed(Exception):
    """Raised by a destination when a Block it was sending failed to arrive: `error` is what
    reading the source failed with, to be raised as it is, not retried as a failed send (the
    reads were retried already)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@runtime_checkable
class BlockStream(Protocol):
    """An optional ability of a VerifiedStream: its bytes as blocks of `block_size` (the last
    shorter), each handed out as soon as its first bytes are read, so a writer sends a block
    while it is being read. The final block is handed out only once the whole object
    verified. Take blocks or `read`, not both."""

    block_size: int

    def read_block(self) -> Block | None:
        """The next block, valid until the next call; None after the last."""
        ...


class Source(Protocol):
    def probe(self) -> None:
        """Raise StartupError if the source cannot be reached with the configured credentials."""

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Raise ObjectNotFound / BucketNotFound, TransientError, AccessDenied."""
        ...

    def part_size(self, obj: ObjectInfo, part_number: int) -> tuple[int, int]:
        """For a multipart object: the size of one part, and the number of parts.
        Raise ObjectNotFound / BucketNotFound as `head` does."""
        ...

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object under `prefix` whose key sorts strictly after `start_after`, in key
        order (UTF-8 byte order, which is Python's order for str), each with bucket, key,
        size and ETag. Lists page by page as the iteration goes, so memory does not grow with
        the number of objects. Raises, when iterated, BucketNotFound, AccessDenied,
        TransientError; not retried (a caller resumes with `start_after`)."""
        ...

    def get(self, bucket: str, key: str, etag: str | None) -> tuple[ObjectInfo, Body]:
        """Look up and open in one request: the object's full description and its bytes,
        pinned to `etag` when given (PreconditionFailed if it no longer matches)."""
        ...

    def open(self, obj: ObjectInfo, start: int = 0) -> Body:
        """The bytes of exactly the version `obj` describes, from `start`; a changed object
        raises PreconditionFailed rather than returning other bytes."""
        ...


class Destination(Protocol):
    target: str  # where it writes, for /health

    def probe(self, bucket: str) -> None:
        """Raise StartupError if the destination or its bucket cannot be reached."""

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """None when the object does not exist; BucketNotFound when the bucket does not."""
        ...

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object under `prefix` whose key sorts strictly after `start_after`, in key
        order (UTF-8 byte order, which is Python's str order), each fully described (size,
        generation, checksums, content headers, custom metadata, `updated`). Fetched a page at
        a time, so memory does not grow with the number of objects. BucketNotFound when the
        bucket does not exist."""
        ...

    def write(
        self,
        bucket: str,
        key: str,
        stream: VerifiedStream,
        size: int,
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
        custom_time: datetime.datetime | None = None,
    ) -> ObjectInfo:
        """Write `size` bytes atomically: readers see the old object or the whole new one.

        `if_generation_match=0` means "only if absent"; raises PreconditionFailed otherwise.
        `custom_time`, where the destination keeps one (GCS `customTime`), is the source's
        last-modified time, so lifecycle rules by age see the source's age.
        """
        ...

    def open(self, obj: ObjectInfo) -> Body:
        """The bytes of generation `obj.generation` of the object, as stored (a gzip object is
        not decompressed), to read in order. ObjectNotFound when that generation is gone
        (replaced or deleted), BucketNotFound; a broken read raises TransientError. Nothing
        is retried here: a caller retries the whole read."""
        ...

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None:
        """Raise ObjectNotFound when there is nothing to delete."""


def read_exactly(stream: VerifiedStream, size: int) -> bytes | memoryview:
    """`size` bytes from `stream` (fewer only at its end), without a copy when one read does."""
    first = stream.read(size)
    if len(first) == size or not first:
        return first
    pieces = [bytes(first)]
    have = len(first)
    while have < size:
        piece = stream.read(size - have)
        if not piece:
            break
        pieces.append(bytes(piece))
        have += len(piece)
    return b"".join(pieces)


@runtime_checkable
class KeyProbe(Protocol):
    """An optional ability of a source: the first key after a point, in one small request
    (S3: a ListObjectsV2 of one key), to find where to split a listing."""

    def first_key_after(self, bucket: str, prefix: str, start_after: str | None) -> str | None: ...


@runtime_checkable
class Composer(Protocol):
    """An optional ability of a destination: store parts and compose them into one object (GCS).
    Parallel composite uploads use it where the destination has it."""

    def composable(self, bucket: str) -> bool: ...

    def write_part(
        self, bucket: str, name: str, data: bytes | memoryview | Block, crc32c: str | None
    ) -> str | None:
        """One part; returns the CRC32C the destination stored. With `crc32c`, the destination
        refuses bytes that do not match it; without (a Block sent as it arrives, whose
        checksum is known only after its last byte), the caller compares what is returned.
        SourceFailed when a Block failed to arrive."""
        ...

    def compose(
        self,
        bucket: str,
        key: str,
        parts: Sequence[str],
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
        custom_time: datetime.datetime | None = None,
    ) -> ObjectInfo: ...

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None: ...

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]: ...
