"""Read one source object exactly once, surviving broken connections, verifying every byte.

`SourceStream` is what a destination writes from. It hashes what it hands out (MD5 and
CRC32C), resumes a broken read from the last byte it got (pinned to the same ETag and version,
so the bytes cannot change underneath), and checks the digests against the source before it
returns the final bytes: a destination never receives the end of an object that did not verify.
"""

from __future__ import annotations

import base64
import hashlib

import google_crc32c

from app import errors
from app.services.retry import RetryPolicy
from app.storage.base import Body, Checksums, ObjectInfo, Source


class SourceStream:
    def __init__(self, source: Source, obj: ObjectInfo, retry: RetryPolicy) -> None:
        self._source = source
        self._obj = obj
        self._retry = retry
        self._body: Body | None = None
        self._offset = 0  # bytes handed out
        self._md5 = hashlib.md5()
        self._crc32c = google_crc32c.Checksum()

    def read(self, size: int, /) -> bytes:
        """Up to `size` bytes; b"" once the whole object has been read and verified."""
        want = min(size, self._obj.size - self._offset)
        if want <= 0:
            return b""
        pieces: list[bytes] = []
        self._retry.call(self._fill, pieces, want)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._md5.update(data)
        self._crc32c.update(data)
        self._offset += len(data)
        if self._offset == self._obj.size:
            self.close()
            self._verify()
        return data

    def _fill(self, pieces: list[bytes], want: int) -> None:
        """One attempt: append to `pieces` until they hold `want` bytes. What an attempt got
        before failing is kept; the next attempt reopens the object after it."""
        have = sum(len(p) for p in pieces)
        try:
            if self._body is None:
                self._body = self._source.open(self._obj, start=self._offset + have)
            while have < want:
                piece = self._body.read(want - have)
                if not piece:
                    raise errors.TransientError(
                        f"s3://{self._obj.bucket}/{self._obj.key} ended at byte "
                        f"{self._offset + have} of {self._obj.size}"
                    )
                pieces.append(piece)
                have += len(piece)
        except errors.TransientError:
            self.close()
            raise

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def checksums(self) -> Checksums:
        return Checksums(
            md5=base64.b64encode(self._md5.digest()).decode(),
            crc32c=base64.b64encode(self._crc32c.digest()).decode(),
        )

    def _verify(self) -> None:
        """Single-part S3 ETags are the MD5 of the bytes; multipart ones (`<hex>-N`) are not."""
        etag = self._obj.etag or ""
        if len(etag) == 32 and "-" not in etag and etag != self._md5.hexdigest():
            raise errors.IntegrityError(
                f"the bytes read from s3://{self._obj.bucket}/{self._obj.key} do not match its "
                f"ETag (expected MD5 {etag}, read {self._md5.hexdigest()}); nothing was written"
            )
