"""Parallel composite copies: a large object goes up in parts at once, then is composed.

What `gcloud storage cp` does above its threshold. The object is read once, in order, on one
GET (a broken read resumes where it stopped, pinned to the ETag and version): one stream from
S3 outruns one upload to GCS, and parallel ranged GETs measured slower here. Each part is
uploaded by a worker as a temporary object while it is being read (the request streams its
bytes as they arrive; a failed send is made again from the part's buffer), then the CRC32C
GCS stored for it is checked against the one read. Every byte goes through one Digest; only
once the whole object verifies against S3 are the parts composed into the destination, with
its metadata and the generation precondition. The parts are deleted whatever happens.

A composite object has a CRC32C but no MD5 at GCS: the copy is checked by CRC32C.
Memory: `workers x part_size` buffers for each copy in flight.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import queue
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass

import google_crc32c

from app import errors
from app.logging_config import in_context
from app.names import TEMPORARY_PREFIX
from app.replication.digest import Digest
from app.replication.stream import ArrivingBlock, ResumableRead
from app.retry import RetryPolicy
from app.storage.base import Body, Checksums, Composer, ObjectInfo, Source

log = logging.getLogger(__name__)
PARTS_PREFIX = f"{TEMPORARY_PREFIX}parallel-composite/"  # deleted after each copy
MAX_COMPONENTS = 1024  # GCS's limit on the components of one composite object


@dataclass(frozen=True)
class CompositePlan:
    threshold: int  # objects of at least this size are copied in parts; 0: never
    part_size: int
    workers: int

    def applies(self, size: int) -> bool:
        """At or over the threshold, in more than one part and at most GCS's 1024 components
        of a composite object (32 GiB with 32 MiB parts; larger objects go up whole)."""
        parts = -(-size // self.part_size)
        return 0 < self.threshold <= size and 1 < parts <= MAX_COMPONENTS


class CompositeCopy:
    def __init__(
        self, source: Source, retry: RetryPolicy, plan: CompositePlan, parts: Executor
    ) -> None:
        """`parts` runs the part uploads and deletes of every composite copy (the wiring
        sizes it); each copy has at most `plan.workers` parts in flight, one per buffer."""
        self._source = source
        self._retry = retry
        self._plan = plan
        self._parts = parts

    def applies(self, size: int) -> bool:
        return self._plan.applies(size)

    def copy(
        self,
        obj: ObjectInfo,
        part_sizes: Sequence[int] | None,
        body: Body | None,
        destination: Composer,
        bucket: str,
        key: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> tuple[ObjectInfo, Checksums, tuple[str, ...]]:
        """Copy `obj` (S3 multipart layout `part_sizes`, for its ETag; `body`: already open at
        its first byte, or None) to gs://bucket/key. Returns what GCS holds, the checksums
        of the bytes read, and what S3 stated that they were checked against (none: the
        copy is unverified)."""
        digest = Digest(obj, part_sizes)
        run = uuid.uuid4().hex
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(self._plan.workers):
            free.put(bytearray(self._plan.part_size))
        names: list[str] = []  # the parts, in order; each may exist at GCS
        uploads: list[Future[None]] = []
        crc = google_crc32c.Checksum()  # the current part's, replaced for each part

        def feed(piece: bytes) -> None:
            digest.update(piece)
            crc.update(piece)

        reading = ResumableRead(self._source, obj, feed, body)
        try:
            for n, start in enumerate(range(0, obj.size, self._plan.part_size)):
                buffer = free.get()  # waits for an upload to finish with its buffer
                _raise_first_failure(uploads, wait=False)
                length = min(self._plan.part_size, obj.size - start)
                crc = google_crc32c.Checksum()
                name = f"{PARTS_PREFIX}{run}/{n:05}"
                names.append(name)
                part = ArrivingBlock(buffer, length, complete=False)
                read: Future[str] = Future()  # the part's CRC32C, once its last byte was read
                uploads.append(
                    self._parts.submit(
                        in_context(self._upload), destination, bucket, name, part, read, free
                    )
                )
                try:  # the upload sends the part's bytes as they arrive
                    self._retry.call(reading.fill, buffer, start, length, part.arrived)
                except BaseException as exc:
                    part.failed(exc)
                    read.set_exception(exc)
                    raise
                read.set_result(base64.b64encode(crc.digest()).decode())
            digest.verify()  # before anything is published: the parts are not the object
            _raise_first_failure(uploads, wait=True)
            written = destination.compose(
                bucket, key, names, obj.headers, metadata, if_generation_match, obj.modified
            )
        finally:
            reading.close()
            for upload in uploads:
                upload.cancel()
            wait(uploads)
            wait(
                [
                    self._parts.submit(in_context(self._discard), destination, bucket, name)
                    for name in names
                ]
            )
        return written, digest.checksums(), digest.checked

    def _discard(self, destination: Composer, bucket: str, name: str) -> None:
        try:
            self._retry.call(destination.delete, bucket, name)
        except errors.ObjectNotFound:
            pass
        except errors.ReplicatorError as exc:
            log.warning("could not delete the temporary part gs://%s/%s: %s", bucket, name, exc)

    def _upload(
        self,
        destination: Composer,
        bucket: str,
        name: str,
        part: ArrivingBlock,
        read: Future[str],
        free: queue.SimpleQueue[bytearray],
    ) -> None:
        """Send `part` as its bytes arrive (again from memory if a send fails), then check
        that GCS stored the CRC32C that was read: the part's checksum is known only after its
        last byte, too late for the request to carry it."""
        try:
            stored = self._retry.call(destination.write_part, bucket, name, part, None)
            if stored != read.result():
                raise errors.IntegrityError(
                    f"GCS stored the part gs://{bucket}/{name} with CRC32C {stored}, not the "
                    f"{read.result()} of the bytes sent; nothing was published"
                )
        finally:
            free.put(part.buffer)


def _raise_first_failure(uploads: list[Future[None]], *, wait: bool) -> None:
    for upload in uploads:
        if wait or upload.done():
            upload.result()


def sweep_stale_parts(
    destination: Composer,
    retry: RetryPolicy,
    bucket: str,
    older_than: datetime.timedelta,
) -> int:
    """Delete the parts that copies which died mid-way (a killed process) left under
    PARTS_PREFIX more than `older_than` ago; returns how many. A copy deletes its own parts
    whatever happens, so only a process that did not live to do so leaves any; as gcloud
    cleans its own temporary components, the service cleans its own at start-up, instead of
    leaving them (billed) for a lifecycle rule. Best effort: a failure is logged, not raised."""
    cutoff = datetime.datetime.now(datetime.UTC) - older_than
    swept = 0
    try:
        for part in destination.iter_objects(bucket, PARTS_PREFIX):
            if part.updated is not None and part.updated < cutoff:
                with contextlib.suppress(errors.ObjectNotFound):
                    retry.call(destination.delete, bucket, part.key, part.generation)
                swept += 1
    except errors.ReplicatorError as exc:
        log.warning("sweeping stale parts in gs://%s stopped: %s", bucket, exc)
    if swept:
        log.info(
            "removed %d parts older than %s left in gs://%s/%s",
            swept,
            older_than,
            bucket,
            PARTS_PREFIX,
        )
    return swept
