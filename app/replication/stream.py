"""Read one source object exactly once, ahead of the writer, verifying every byte.

`SourceStream` is what a destination writes from. A reader thread fills blocks from S3 (two
blocks in memory at most, so memory does not grow with the object); each block but the last
is handed to the destination as soon as its first bytes arrive, so the destination sends a
block while it is being read, instead of reading and writing taking turns. It hashes every
byte as it arrives, resumes a broken read from the last byte it got (pinned to the same ETag
and version, so the bytes cannot change underneath), and verifies the whole object against
S3's checksums *before* it releases the final block: a destination never receives the end of
an object that did not verify. A block keeps its bytes until the next one is taken, so a
destination that must send a block again (GCS kept only part of it) sends it from memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence

from app import errors
from app.logging_config import in_context
from app.replication.digest import Digest
from app.retry import RetryPolicy
from app.storage.base import Body, Checksums, ObjectInfo, Source

READ_PIECE = 1024 * 1024  # one socket read; hashed, then copied into the block
BLOCKS_IN_MEMORY = 2  # one being written, one being read ahead


class _Closed(Exception):
    """The consumer went away; the reader stops."""


class ArrivingBlock:
    """One block of the stream, handed out while the reader may still be filling it."""

    def __init__(self, buffer: bytearray, length: int, *, complete: bool) -> None:
        self.buffer = buffer
        self._view = memoryview(buffer)[:length]
        self._filled = length if complete else 0
        self._failure: BaseException | None = None
        # Only a block handed out while filling needs one: many small objects build none.
        self._arrived = None if complete else threading.Condition()

    def __len__(self) -> int:
        return len(self._view)

    def pieces(self, start: int) -> Iterator[memoryview]:
        at = start
        while at < len(self._view):
            end = self._wait_beyond(at)
            yield self._view[at:end]
            at = end

    def take(self, start: int, size: int) -> memoryview:
        """Up to `size` bytes from `start`, at least one (waiting for it)."""
        return self._view[start : min(self._wait_beyond(start), start + size)]

    # --- the reader's side

    def arrived(self, filled: int) -> None:
        assert self._arrived is not None
        with self._arrived:
            self._filled = filled
            self._arrived.notify_all()

    def failed(self, exc: BaseException) -> None:
        if self._arrived is not None:
            with self._arrived:
                self._failure = exc
                self._arrived.notify_all()

    def _wait_beyond(self, at: int) -> int:
        """How many bytes have arrived, once more than `at` have."""
        if self._filled > at:  # an int read: safe without the lock
            return self._filled
        assert self._arrived is not None
        with self._arrived:
            while self._filled <= at and self._failure is None:
                self._arrived.wait()
            if self._filled <= at:
                assert self._failure is not None
                raise self._failure
            return self._filled


class SourceStream:
    def __init__(
        self,
        source: Source,
        obj: ObjectInfo,
        retry: RetryPolicy,
        *,
        block_size: int,
        part_sizes: Sequence[int] | None = None,
        body: Body | None = None,
    ) -> None:
        """`body`, when given, is the object already opened at its first byte."""
        self._source = source
        self._obj = obj
        self._retry = retry
        self.block_size = max(1, min(block_size, obj.size))
        self._digest = Digest(obj, part_sizes)
        # SimpleQueue: no locks or conditions to build for each of many small objects.
        self._ready: queue.SimpleQueue[ArrivingBlock | BaseException] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._allocated = 0
        self._closed = False  # set by the consumer, read by the reader
        self._started = False
        self._opened = body
        self._current: ArrivingBlock | None = None
        self._position = 0  # within _current
        self._delivered = 0  # by read(); blocks are counted whole

    def read(self, size: int, /) -> memoryview:
        """Up to `size` bytes, valid until the next call; empty once everything was read.

        Raises what reading failed with: IntegrityError when the object did not verify
        (before its final bytes are released), TransientError when the retries ran out.
        """
        if self._current is None or self._position == len(self._current):
            block = self.read_block()
            if block is None:
                return memoryview(b"")
            self._position = 0
        assert self._current is not None
        view = self._current.take(self._position, size)
        self._position += len(view)
        return view

    def read_block(self) -> ArrivingBlock | None:
        """The next block, perhaps still arriving, valid until the next call (or `read`); None
        once every block was taken. Raises as `read` does."""
        self._release_current()
        if self._delivered == self._obj.size:
            if not self._started:  # an empty object: nothing read, still checked
                self._started = True
                self._digest.verify()
            return None
        self._start_reader()
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        self._current = item
        self._delivered += len(item)
        return item

    def checksums(self) -> Checksums:
        """Digests of the bytes read; final (and verified) once the last byte was returned."""
        return self._digest.checksums()

    def checked(self) -> tuple[str, ...]:
        """What S3 stated that the bytes read were checked against, once the last byte was
        returned; empty when S3 stated nothing checkable (the copy is unverified)."""
        return self._digest.checked

    def close(self) -> None:
        self._closed = True
        if self._opened is not None:  # opened but never read
            self._opened.close()
            self._opened = None
        self._release_current()
        self._free.put(None)  # wakes a reader waiting for a buffer

    def _release_current(self) -> None:
        if self._current is not None:
            buffer = self._current.buffer
            self._current = None
            self._free.put(buffer)

    def _start_reader(self) -> None:
        if self._started:
            return
        self._started = True
        if self._obj.size <= self.block_size:
            self._read_ahead()  # one block: nothing to overlap, so no thread to start
            return
        reader = threading.Thread(target=in_context(self._read_ahead), name="s3-read", daemon=True)
        reader.start()

    # --- the reader thread ---------------------------------------------------------------

    def _read_ahead(self) -> None:
        reading = ResumableRead(self._source, self._obj, self._feed, self._opened)
        self._opened = None
        block: ArrivingBlock | None = None
        try:
            offset = 0
            while offset < self._obj.size:
                length = min(self.block_size, self._obj.size - offset)
                buffer = self._take_buffer()
                final = offset + length == self._obj.size
                block = ArrivingBlock(buffer, length, complete=final)
                if not final:  # handed out now, written while it fills
                    self._ready.put(block)
                    self._retry.call(reading.fill, buffer, offset, length, block.arrived)
                else:  # handed out once the whole object verified
                    self._retry.call(reading.fill, buffer, offset, length)
                    self._digest.verify()
                    self._ready.put(block)
                offset += length
        except _Closed:
            pass
        except BaseException as exc:  # handed to the consumer, raised from read()
            if block is not None:
                block.failed(exc)
            self._ready.put(exc)
        finally:
            reading.close()

    def _take_buffer(self) -> bytearray:
        if self._allocated < BLOCKS_IN_MEMORY:
            self._allocated += 1
            return bytearray(self.block_size)
        buffer = self._free.get()
        if buffer is None or self._closed:
            raise _Closed
        return buffer

    def _feed(self, piece: bytes) -> None:
        if self._closed:
            raise _Closed
        self._digest.update(piece)


class ResumableRead:
    """The bytes of one source object, read in order, each handed to `feed` first. A broken
    read is closed, and the next attempt reopens the object after the last byte received
    (pinned to the same ETag and version by `Source.open`), so nothing is read twice."""

    def __init__(
        self, source: Source, obj: ObjectInfo, feed: Callable[[bytes], None], body: Body | None
    ) -> None:
        """`body`, when given, is the object already opened at its first byte."""
        self._source = source
        self._obj = obj
        self._feed = feed
        self._body = body
        self.position = 0  # the next byte to read

    def fill(
        self,
        buffer: bytearray,
        start: int,
        length: int,
        arrived: Callable[[int], None] | None = None,
    ) -> None:
        """One attempt at filling buffer[:length] with the bytes from `start`, where an
        earlier attempt left off; `arrived`, when given, is told how many bytes of the buffer
        are filled after each piece. Retry it with the policy: it raises TransientError."""
        end = start + length
        try:
            while self.position < end:
                if self._body is None:
                    self._body = self._source.open(self._obj, start=self.position)
                piece = self._body.read(min(READ_PIECE, end - self.position))
                if not piece:
                    raise errors.TransientError(
                        f"s3://{self._obj.bucket}/{self._obj.key} ended at byte "
                        f"{self.position} of {self._obj.size}",
                        cause="stream_broken",
                    )
                self._feed(piece)
                at = self.position - start
                buffer[at : at + len(piece)] = piece
                self.position += len(piece)
                if arrived is not None:
                    arrived(self.position - start)
        except errors.TransientError:
            self.close()
            raise

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
