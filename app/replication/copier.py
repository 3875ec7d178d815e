"""One copy, once the replicator has decided to make it: stream the object (or compose it
from parts), then check what the destination holds against what was read.

The replicator looks up, decides, and settles races; this module moves the bytes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

from app import errors, metrics
from app.logging_config import in_context
from app.replication.composite import CompositeCopy
from app.replication.digest import needs_parts
from app.replication.identity import destination_metadata
from app.replication.stream import SourceStream
from app.retry import RetryPolicy
from app.storage.base import (
    KMS_ENCRYPTIONS,
    Body,
    Checksums,
    Composer,
    Destination,
    ObjectInfo,
    Source,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Copied:
    """What the destination holds now, and what S3 stated that the bytes read were checked
    against (an ETag, S3's checksums); empty when S3 stated nothing checkable: the copy is
    then `unverified` (GCS still checked its upload against the checksums computed while
    streaming)."""

    written: ObjectInfo
    checked: tuple[str, ...]

    @property
    def verified(self) -> bool:
        return bool(self.checked)


@dataclass(frozen=True)
class _Layout:
    """A multipart upload's part sizes, derived from part 1 or looked up part by part."""

    sizes: list[int]
    first: int
    count: int
    looked_up: bool = False


class Copier:
    def __init__(
        self,
        source: Source,
        destination: Destination,
        retry: RetryPolicy,
        lookups: Executor,
        *,
        block_size: int,
        composite: CompositeCopy | None = None,
    ) -> None:
        """`lookups` runs the part-layout lookups of multipart sources; `composite`, when
        given, copies the objects it applies to in parallel parts."""
        self._source = source
        self._destination = destination
        self._retry = retry
        self._lookups = lookups
        self._block_size = block_size
        self._composite = composite

    def copy(
        self,
        source: ObjectInfo,
        bucket: str,
        key: str,
        generation: int,
        body: Body | None,
    ) -> Copied:
        """Write `source` to gs://bucket/key if it is at `generation` (0: absent). `body`, when
        given, is the object already open at its first byte; it is always closed."""
        with metrics.IN_FLIGHT.track_inprogress(), metrics.COPY_SECONDS.time():
            try:
                metadata = destination_metadata(source)
                composer = self._composer(source, bucket)
                layout = self._equal_parts(source)
            except BaseException:
                if body is not None:
                    body.close()
                raise
            move = functools.partial(
                self._move, source, composer, bucket, key, metadata, generation
            )
            try:
                written, read, checked = move(layout.sizes if layout else None, body)
            except errors.IntegrityError:
                looked_up = self._looked_up_parts(source, layout)
                if looked_up is None:
                    raise
                written, read, checked = move(looked_up, None)
            self._verify(source, written, read)
        if not checked:
            metrics.OBJECTS_UNVERIFIED.labels(_unverified_because(source)).inc()
        log.info(
            "replicated s3://%s/%s -> gs://%s/%s (%d bytes, crc32c %s%s; %s)",
            source.bucket,
            source.key,
            written.bucket,
            written.key,
            written.size,
            written.checksums.crc32c,
            ", composed in parallel" if composer is not None else "",
            f"verified against {', '.join(checked)}" if checked else "UNVERIFIED at the source",
        )
        return Copied(written, checked)

    def _composer(self, source: ObjectInfo, bucket: str) -> Composer | None:
        """The destination, when this object goes up as a parallel composite upload."""
        if self._composite is None or not self._composite.applies(source.size):
            return None
        if not isinstance(self._destination, Composer):
            return None
        composable = self._retry.call(self._destination.composable, bucket)
        return self._destination if composable else None

    def _verify(self, source: ObjectInfo, written: ObjectInfo, expected: Checksums) -> None:
        """The destination's own checksums against ours; a mismatch is removed, not kept."""
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

    def _equal_parts(self, source: ObjectInfo) -> _Layout | None:
        """The part layout of a multipart upload, needed to check its ETag, on one request: S3
        answers `HeadObject(PartNumber=1)` with part 1's size and the parts count, and nearly
        every uploader cuts equal parts but the last. The copy then checks the ETag against
        that layout as it streams; `_looked_up_parts` is the fallback when it does not hold."""
        if not needs_parts(source):
            return None
        first, count = self._retry.call(self._source.part_size, source, 1)
        last = source.size - first * (count - 1)
        if count == 1 or 0 < last <= first:
            return _Layout([first] * (count - 1) + [last], first, count)
        return _Layout(self._sizes_from(source, first, count), first, count, looked_up=True)

    def _looked_up_parts(self, source: ObjectInfo, layout: _Layout | None) -> list[int] | None:
        """After a copy with a derived layout failed its checks: every part's size, asked of
        S3 one part at a time (count - 1 HEADs, concurrently), when it differs from the
        derived one, for a second copy. None when there is nothing better to try (not
        multipart, already looked up, or the same layout: the bytes really do not match)."""
        if layout is None or layout.looked_up:
            return None
        sizes = self._sizes_from(source, layout.first, layout.count)
        if sizes == layout.sizes:
            return None
        metrics.PART_LAYOUT_LOOKUPS.inc()
        log.info(
            "s3://%s/%s was not uploaded in equal parts: copying it again with its %d parts "
            "looked up one by one",
            source.bucket,
            source.key,
            layout.count,
        )
        return sizes

    def _sizes_from(self, source: ObjectInfo, first: int, count: int) -> list[int]:
        """Parts 2..count's sizes, asked of S3 concurrently, after part 1's `first`."""

        def size_of(part: int) -> int:
            return self._retry.call(self._source.part_size, source, part)[0]

        return [first, *self._lookups.map(in_context(size_of), range(2, count + 1))]

    def _move(
        self,
        source: ObjectInfo,
        composer: Composer | None,
        bucket: str,
        key: str,
        metadata: Mapping[str, str],
        generation: int,
        part_sizes: list[int] | None,
        body: Body | None,
    ) -> tuple[ObjectInfo, Checksums, tuple[str, ...]]:
        """Stream `source` (or compose it from parts) to gs://bucket/key, checking it against
        S3 with `part_sizes` as it goes. Returns what was written, the checksums read and what
        S3 stated that they were checked against (none: the copy is unverified)."""
        if composer is not None and self._composite is not None:
            return self._composite.copy(
                source, part_sizes, body, composer, bucket, key, metadata, generation
            )
        stream = SourceStream(
            self._source,
            source,
            self._retry,
            block_size=self._block_size,
            part_sizes=part_sizes,
            body=body,
        )
        try:
            written = self._destination.write(
                bucket,
                key,
                stream,
                source.size,
                source.headers,
                metadata,
                if_generation_match=generation,
                custom_time=source.modified,
            )
        finally:
            stream.close()
        return written, stream.checksums(), stream.checked()

    def _discard(self, written: ObjectInfo) -> None:
        try:
            self._retry.call(
                self._destination.delete, written.bucket, written.key, written.generation
            )
        except errors.ReplicatorError as exc:
            log.error(
                "could not remove unverified gs://%s/%s: %s", written.bucket, written.key, exc
            )


def _unverified_because(source: ObjectInfo) -> str:
    """The metrics label of a copy S3 stated nothing checkable about."""
    reason = "sse_kms" if source.encryption in KMS_ENCRYPTIONS else "no_checksum"
    assert reason in metrics.UNVERIFIED_REASONS
    return reason
