"""A directory as a destination (LOCAL_GCS_PATH): the same contract as GCS, on a filesystem.

Layout: `<root>/<bucket>/<key>` holds the bytes, `<root>/.meta/<bucket>/<key>.json` the
headers, metadata, checksums and generation. A write goes to a temporary file under
`<root>/.tmp` and is renamed into place, so readers never see half an object.
Bucket names cannot start with a dot, so `.meta` and `.tmp` never collide with a bucket.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from app import errors
from app.storage.base import Checksums, ContentHeaders, ObjectInfo, VerifiedStream

_COPY_BLOCK = 8 * 1024 * 1024


class LocalDestination:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()  # serialises the check-and-rename of a precondition
        self.target = f"local:{root}"

    def probe(self, bucket: str) -> None:
        if not self._root.is_dir():
            raise errors.StartupError(f"LOCAL_GCS_PATH {self._root} is not a directory")
        if not os.access(self._root, os.W_OK):
            raise errors.StartupError(f"LOCAL_GCS_PATH {self._root} is not writable")
        (self._root / bucket).mkdir(exist_ok=True)

    def _paths(self, bucket: str, key: str) -> tuple[Path, Path]:
        parts = key.split("/")
        if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts[:-1]):
            raise errors.InvalidRequest(f"key {key!r} cannot be stored under LOCAL_GCS_PATH")
        if parts[-1] in ("", ".", ".."):
            raise errors.InvalidRequest(f"key {key!r} cannot be stored under LOCAL_GCS_PATH")
        bucket_dir = self._root / bucket
        if not bucket_dir.is_dir():
            raise errors.BucketNotFound(f"bucket '{bucket}' does not exist under {self._root}")
        return bucket_dir / key, self._root / ".meta" / bucket / f"{key}.json"

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        data_path, meta_path = self._paths(bucket, key)
        try:
            record = json.loads(meta_path.read_text())
            data = data_path.stat()
        except OSError as exc:
            if exc.errno in _CANNOT_EXIST:
                return None
            raise
        if not stat.S_ISREG(data.st_mode):
            return None  # a directory: the key is only a prefix of other keys here
        size = data.st_size
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            generation=record["generation"],
            headers=ContentHeaders(**record["headers"]),
            metadata=record["metadata"],
            checksums=Checksums(**record["checksums"]),
        )

    def write(
        self,
        bucket: str,
        key: str,
        stream: VerifiedStream,
        size: int,
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        data_path, meta_path = self._paths(bucket, key)
        staging = self._root / ".tmp"
        staging.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=staging)
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = size
                while remaining:
                    block = stream.read(min(_COPY_BLOCK, remaining))
                    if not block:
                        raise errors.IntegrityError(f"source ended {remaining} bytes early")
                    out.write(block)
                    remaining -= len(block)
                out.flush()
                os.fsync(out.fileno())
            record = {
                "generation": time.time_ns(),
                "headers": asdict(headers),
                "metadata": dict(metadata),
                "checksums": asdict(stream.checksums()),
            }
            with self._lock:
                current = self.head(bucket, key)
                if if_generation_match != (current.generation if current else 0):
                    raise errors.PreconditionFailed(f"{bucket}/{key} was changed by another writer")
                _make_room(key, data_path, meta_path)
                _write_atomically(meta_path, json.dumps(record).encode(), staging)
                os.replace(tmp_name, data_path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        written = self.head(bucket, key)
        assert written is not None
        return written

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None:
        data_path, meta_path = self._paths(bucket, key)
        with self._lock:
            current = self.head(bucket, key)
            if current is None:
                raise errors.ObjectNotFound(f"{bucket}/{key} does not exist")
            if if_generation_match is not None and current.generation != if_generation_match:
                raise errors.PreconditionFailed(f"{bucket}/{key} was changed by another writer")
            data_path.unlink()
            meta_path.unlink()


# head(): these mean "no such object"; any of them, on write, means the key cannot be stored.
_CANNOT_EXIST = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG}


def _make_room(key: str, data_path: Path, meta_path: Path) -> None:
    """Create the parent directories of both paths, or refuse the key before anything is
    written: a filesystem cannot hold `a` as an object and as a prefix of `a/b`, nor a name
    over its length limit."""
    try:
        for path in (data_path, meta_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            reason = "is too long for the filesystem under LOCAL_GCS_PATH"
        elif exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            reason = "collides with another object's path under LOCAL_GCS_PATH"
        else:
            raise
        raise errors.InvalidRequest(f"key {key!r} {reason}") from exc


def _write_atomically(path: Path, content: bytes, staging: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=staging)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.replace(tmp_name, path)
