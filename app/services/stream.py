"""Read one source object exactly once, ahead of the writer, verifying every byte.

`SourceStream` is what a destination writes from. A reader thread fills blocks from S3 while
the destination uploads the previous one (two blocks in memory at most, so memory does not
grow with the object). It hashes every byte as it arrives, resumes a broken read from the
last byte it got (pinned to the same ETag and version, so the bytes cannot change
underneath), and verifies the whole object against S3's checksums *before* it releases the
final block: a destination never receives the end of an object that did not verify.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from app import errors
from app.logging_config import in_context
from app.retry import RetryPolicy
from app.services.digest import Digest
from app.storage.base import Body, Checksums, ObjectInfo, Source

READ_PIECE = 1024 * 1024  # one socket read; hashed, then copied into the block
BLOCKS_IN_MEMORY = 2  # one being written, one being read ahead


class _Closed(Exception):
    """The consumer went away; the reader stops."""


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
        self._block_size = max(1, min(block_size, obj.size))
        self._digest = Digest(obj, part_sizes)
        # SimpleQueue: no locks or conditions to build for each of many small objects.
        self._ready: queue.SimpleQueue[memoryview | BaseException] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._allocated = 0
        self._closed = False  # set by the consumer, read by the reader
        self._started = False
        self._opened = body
        self._current: memoryview | None = None
        self._position = 0  # within _current
        self._delivered = 0

    def read(self, size: int, /) -> memoryview:
        """Up to `size` bytes, valid until the next call; empty once everything was read.

        Raises what reading failed with: IntegrityError when the object did not verify
        (before its final bytes are released), TransientError when the retries ran out.
        """
        if self._current is None or self._position == len(self._current):
            self._release_current()
            if self._delivered == self._obj.size:
                return memoryview(b"")
            self._start_reader()
            item = self._ready.get()
            if isinstance(item, BaseException):
                raise item
            self._current, self._position = item, 0
        take = min(size, len(self._current) - self._position)
        view = self._current[self._position : self._position + take]
        self._position += take
        self._delivered += take
        return view

    def checksums(self) -> Checksums:
        """Digests of the bytes read; final (and verified) once the last byte was returned."""
        return self._digest.checksums()

    def close(self) -> None:
        self._closed = True
        if self._opened is not None:  # opened but never read
            self._opened.close()
            self._opened = None
        self._release_current()
        self._free.put(None)  # wakes a reader waiting for a buffer

    def _release_current(self) -> None:
        if self._current is not None:
            buffer = self._current.obj
            self._current = None
            assert isinstance(buffer, bytearray)
            self._free.put(buffer)

    def _start_reader(self) -> None:
        if self._started:
            return
        self._started = True
        if self._obj.size <= self._block_size:
            self._read_ahead()  # one block: nothing to overlap, so no thread to start
            return
        reader = threading.Thread(target=in_context(self._read_ahead), name="s3-read", daemon=True)
        reader.start()

    # --- the reader thread ---------------------------------------------------------------

    def _read_ahead(self) -> None:
        body: list[Body | None] = [self._opened]
        self._opened = None
        try:
            offset = 0
            while offset < self._obj.size:
                length = min(self._block_size, self._obj.size - offset)
                buffer = self._take_buffer()
                filled = [0]
                self._retry.call(self._fill, body, buffer, offset, length, filled)
                offset += length
                if offset == self._obj.size:
                    self._digest.verify()
                self._ready.put(memoryview(buffer)[:length])
        except _Closed:
            pass
        except BaseException as exc:  # handed to the consumer, raised from read()
            self._ready.put(exc)
        finally:
            if body[0] is not None:
                body[0].close()

    def _take_buffer(self) -> bytearray:
        if self._allocated < BLOCKS_IN_MEMORY:
            self._allocated += 1
            return bytearray(self._block_size)
        buffer = self._free.get()
        if buffer is None or self._closed:
            raise _Closed
        return buffer

    def _fill(
        self,
        body: list[Body | None],
        buffer: bytearray,
        offset: int,
        length: int,
        filled: list[int],
    ) -> None:
        fill(self._source, self._obj, body, buffer, offset, length, filled, self._feed)

    def _feed(self, piece: bytes) -> None:
        if self._closed:
            raise _Closed
        self._digest.update(piece)


def fill(
    source: Source,
    obj: ObjectInfo,
    body: list[Body | None],
    buffer: bytearray,
    offset: int,
    length: int,
    filled: list[int],
    feed: Callable[[bytes], None],
) -> None:
    """One attempt at filling buffer[:length] with the bytes of `obj` from `offset`, each
    piece handed to `feed` first. What earlier attempts got is kept (`filled`); a broken body
    is closed and the next attempt reopens it after the last byte received. `body[0]` is the
    open body (None: open one)."""
    try:
        while filled[0] < length:
            current = body[0]
            if current is None:
                current = body[0] = source.open(obj, start=offset + filled[0])
            piece = current.read(min(READ_PIECE, length - filled[0]))
            if not piece:
                raise errors.TransientError(
                    f"s3://{obj.bucket}/{obj.key} ended at byte {offset + filled[0]} of {obj.size}",
                    cause="stream_broken",
                )
            feed(piece)
            buffer[filled[0] : filled[0] + len(piece)] = piece
            filled[0] += len(piece)
    except errors.TransientError:
        if body[0] is not None:
            body[0].close()
            body[0] = None
        raise
