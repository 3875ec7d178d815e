"""The replication flow: look up the source, decide whether to copy, stream, verify, record.

It does not care who asked (HTTP route, batch, a future queue worker): callers hand it a
`ReplicationRequest` and get a `ReplicationResult` or an app.errors exception.
"""

from __future__ import annotations

import datetime
import enum
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app import errors
from app.logging_config import in_context
from app.services import metrics
from app.services.digest import is_multipart_etag
from app.services.locks import KeyedLocks
from app.services.retry import RetryPolicy
from app.services.stream import SourceStream
from app.storage.base import Destination, ObjectInfo, Source

log = logging.getLogger(__name__)

# Where the destination records which source it holds. S3 stores user metadata keys in lower
# case, so these capitalised keys can never collide with metadata copied from S3.
SOURCE_BUCKET = "Replicator-Source-Bucket"
SOURCE_KEY = "Replicator-Source-Key"
SOURCE_ETAG = "Replicator-Source-Etag"
SOURCE_VERSION = "Replicator-Source-Version-Id"
REPLICATED_AT = "Replicator-Replicated-At"
RESERVED_KEYS = (SOURCE_BUCKET, SOURCE_KEY, SOURCE_ETAG, SOURCE_VERSION, REPLICATED_AT)


class Overwrite(enum.StrEnum):
    """When an existing destination object is replaced (Storage Transfer's `overwriteWhen`)."""

    DIFFERENT = "different"  # replace when it records another source version, or none
    NEVER = "never"  # keep whatever is there
    ALWAYS = "always"  # copy again every time


@dataclass(frozen=True)
class ReplicationRequest:
    s3_bucket: str
    s3_key: str
    gcs_bucket: str
    gcs_key: str
    overwrite: Overwrite = Overwrite.DIFFERENT


@dataclass(frozen=True)
class ReplicationResult:
    action: str  # "replicated" or "skipped"
    source: ObjectInfo
    destination: ObjectInfo
    reason: str


class Replicator:
    def __init__(
        self,
        source: Source,
        destination: Destination,
        retry: RetryPolicy,
        *,
        block_size: int = 64 * 1024 * 1024,
        lookup_threads: int = 64,
    ) -> None:
        self._source = source
        self._destination = destination
        self._retry = retry
        self._block_size = block_size
        self._locks = KeyedLocks()
        self._lookups = ThreadPoolExecutor(lookup_threads, thread_name_prefix="lookup")

    def replicate(self, request: ReplicationRequest) -> ReplicationResult:
        """Copy, or skip, one object. Raises app.errors exceptions; counts every outcome."""
        try:
            result = self._replicate(request)
        except errors.ReplicatorError as exc:
            metrics.OBJECTS_FAILED.labels(exc.kind).inc()
            raise
        if result.action == "skipped":
            metrics.OBJECTS_SKIPPED.inc()
        else:
            metrics.OBJECTS_REPLICATED.inc()
            metrics.BYTES_REPLICATED.inc(result.destination.size)
        return result

    def _replicate(self, request: ReplicationRequest) -> ReplicationResult:
        # Both sides are looked up at once, without a lock: a duplicate notification costs one
        # round trip, however many arrive for the same object.
        pending = self._lookups.submit(in_context(self._head_destination), request)
        try:
            source = self._retry.call(self._source.head, request.s3_bucket, request.s3_key)
        except BaseException:
            pending.cancel()
            raise
        current = pending.result()
        reason = _reason_to_skip(current, source, request.overwrite)
        if current is not None and reason:
            return ReplicationResult("skipped", source, current, reason)
        # Copies of one object queue behind each other in this process. A lookup that went
        # stale meanwhile (another process, or a holder that finished before we asked for the
        # lock) is caught by the generation precondition of the write: see below.
        with self._locks.hold((request.gcs_bucket, request.gcs_key)) as waited:
            if waited:  # the request we waited for may have just written it: look again
                current = self._head_destination(request)
                reason = _reason_to_skip(current, source, request.overwrite)
                if current is not None and reason:
                    return ReplicationResult("skipped", source, current, reason)
            try:
                generation = (current.generation or 0) if current else 0
                written = self._copy(source, request, generation)
            except errors.PreconditionFailed:
                # Another writer got there first. If it wrote this very source, we are done.
                current = self._head_destination(request)
                if current is not None and _same_source(current, source):
                    return ReplicationResult("skipped", source, current, "written concurrently")
                raise
        return ReplicationResult("replicated", source, written, "copied")

    def close(self) -> None:
        self._lookups.shutdown(wait=False, cancel_futures=True)

    def _head_destination(self, request: ReplicationRequest) -> ObjectInfo | None:
        return self._retry.call(self._destination.head, request.gcs_bucket, request.gcs_key)

    def _copy(self, source: ObjectInfo, request: ReplicationRequest, generation: int) -> ObjectInfo:
        with metrics.IN_FLIGHT.track_inprogress(), metrics.COPY_SECONDS.time():
            return self._copy_verified(source, request, generation)

    def _copy_verified(
        self, source: ObjectInfo, request: ReplicationRequest, generation: int
    ) -> ObjectInfo:
        stream = SourceStream(
            self._source,
            source,
            self._retry,
            block_size=self._block_size,
            part_sizes=self._part_sizes(source),
        )
        try:
            written = self._destination.write(
                request.gcs_bucket,
                request.gcs_key,
                stream,
                source.size,
                source.headers,
                _destination_metadata(source),
                if_generation_match=generation,
            )
        finally:
            stream.close()
        expected = stream.checksums()
        mismatch = [
            name
            for name, ours, theirs in (
                ("size", source.size, written.size),
                ("crc32c", expected.crc32c, written.checksums.crc32c),
                ("md5", expected.md5, written.checksums.md5),
            )
            if ours is not None and theirs is not None and ours != theirs
        ]
        if mismatch:
            self._discard(written)
            raise errors.IntegrityError(
                f"gs://{written.bucket}/{written.key} does not match what was read from "
                f"s3://{source.bucket}/{source.key} ({', '.join(mismatch)} differ); it was removed"
            )
        log.info(
            "replicated s3://%s/%s -> gs://%s/%s (%d bytes, crc32c %s)",
            source.bucket,
            source.key,
            written.bucket,
            written.key,
            written.size,
            written.checksums.crc32c,
        )
        return written

    def _part_sizes(self, source: ObjectInfo) -> list[int] | None:
        """The part layout of a multipart upload, needed to check its ETag. S3 reports it one
        part at a time, so the parts after the first are asked for concurrently."""
        if not is_multipart_etag(source.etag):
            return None
        first, count = self._retry.call(self._source.part_size, source, 1)
        if count == 1:
            return [first]

        def size_of(part: int) -> int:
            return self._retry.call(self._source.part_size, source, part)[0]

        with ThreadPoolExecutor(min(8, count - 1), thread_name_prefix="s3-parts") as pool:
            return [first, *pool.map(size_of, range(2, count + 1))]

    def _discard(self, written: ObjectInfo) -> None:
        try:
            self._destination.delete(written.bucket, written.key, written.generation)
        except errors.ReplicatorError as exc:
            log.error(
                "could not remove unverified gs://%s/%s: %s", written.bucket, written.key, exc
            )


def _same_source(current: ObjectInfo, source: ObjectInfo) -> bool:
    recorded = current.metadata
    return (
        recorded.get(SOURCE_BUCKET) == source.bucket
        and recorded.get(SOURCE_KEY) == source.key
        and recorded.get(SOURCE_ETAG) == (source.etag or "")
        and recorded.get(SOURCE_VERSION, "") == (source.version_id or "")
    )


def _reason_to_skip(current: ObjectInfo | None, source: ObjectInfo, overwrite: Overwrite) -> str:
    if current is None or overwrite is Overwrite.ALWAYS:
        return ""
    if overwrite is Overwrite.NEVER:
        return "the destination exists and overwrite is 'never'"
    if _same_source(current, source):
        return "the destination already holds this version of the source"
    return ""


def _destination_metadata(source: ObjectInfo) -> Mapping[str, str]:
    metadata = {k: v for k, v in source.metadata.items() if k not in RESERVED_KEYS}
    metadata.update(
        {
            SOURCE_BUCKET: source.bucket,
            SOURCE_KEY: source.key,
            SOURCE_ETAG: source.etag or "",
            SOURCE_VERSION: source.version_id or "",
            REPLICATED_AT: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    )
    return metadata
