"""A directory as a destination (LOCAL_GCS_PATH): the same contract as GCS, on a filesystem.

Layout. Every key GCS accepts can be stored, and plain keys stay browsable: the object
`reports/2026/q3.csv` of bucket `b` is

    <root>/b/reports/2026/q3.csv~         its bytes, exactly as written
    <root>/b/reports/2026/q3.csv~.json    key, generation, content headers, metadata, checksums

- Each segment of the key but the last is a directory. The last one names the data file, with
  `~` appended, and the metadata file beside it, with `~.json` appended.
- A segment is kept as it is, except that `%`, `~`, `"*:<>?\\|` and control characters become
  `%XX` (the bytes of their UTF-8, uppercase hex); other non-ASCII text stays readable. An empty
  segment (`a//b`, `a/`) is `%`, which percent-encoding never produces alone.
- An encoded segment over 200 bytes becomes `~` and the SHA-256 hex of the raw segment, so a
  1024-byte key fits the filesystem's 255-byte limit on a name. The metadata file keeps the key.

So nothing collides: the encoding is one-to-one, directory names never end in `~` or `~.json`
(plain ones contain no `~`, hashed ones end in a hex digit), and the object `a` (file `a~`)
lives beside the prefix of `a/b` (directory `a`), as GCS allows.

Keys that could leave the root are refused with InvalidRequest before anything is touched:
a `.` or `..` segment, a leading `/`, NUL, text that is not UTF-8. Bucket names must start
with a letter or digit, so the staging directory `<root>/.tmp` is never a bucket.

Writes. The bytes go to a temporary file under `<root>/.tmp` (the same filesystem, so a rename
is atomic) and are fsynced before anything is published; a stream that does not verify leaves
nothing. Then, under a lock that head and delete take too, the generation precondition is
checked, the old data file (if any) is removed, the metadata file is renamed into place, then
the data file. Data therefore never sits beside metadata that is not its own: every step
between (and whatever a crash leaves) is "no object" (metadata without data), never a record
describing other bytes. Readers in this process see the old object or the whole new one.
Delete removes data, then metadata, then the directories it leaves empty (not the bucket's).

The root must keep names that differ only in case or Unicode normalisation apart (probe checks).
Filesystem errors are translated into app.errors: no OSError leaves this module.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from app import errors
from app.storage.base import Checksums, ContentHeaders, ObjectInfo, VerifiedStream

_COPY_BLOCK = 8 * 1024 * 1024
_MAX_NAME_BYTES = 200  # longer encoded segments are hashed; `~.json` is added to the longest
_ESCAPED_ASCII = frozenset('%~"*:<>?\\|')
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,221}")
# head(): the object cannot be there.
_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG}


@dataclass(frozen=True)
class ObjectPaths:
    """Where one object lives: the layout, in one place (the tests read the tree through it)."""

    bucket_dir: Path
    data: Path  # <dirs>/<name>~
    meta: Path  # <dirs>/<name>~.json


def object_paths(root: Path, bucket: str, key: str) -> ObjectPaths:
    """Where `key` of `bucket` lives under `root`; InvalidRequest for a key or bucket name
    that cannot be stored (see the module docstring)."""
    bucket_dir = _bucket_dir(root, bucket)
    *dirs, name = (_encode_segment(segment) for segment in _segments(key))
    parent = bucket_dir.joinpath(*dirs)
    return ObjectPaths(bucket_dir, parent / f"{name}~", parent / f"{name}~.json")


def _bucket_dir(root: Path, bucket: str) -> Path:
    if not _BUCKET.fullmatch(bucket):
        raise errors.InvalidRequest(f"bucket name {bucket!r} cannot be stored under LOCAL_GCS_PATH")
    return root / bucket


def _segments(key: str) -> list[str]:
    reason = None
    if not key:
        reason = "is empty"
    elif key.startswith("/"):
        reason = "starts with '/'"
    elif "\0" in key:
        reason = "contains NUL"
    elif any(segment in (".", "..") for segment in key.split("/")):
        reason = "has a '.' or '..' segment"
    else:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            reason = "is not valid UTF-8"
    if reason:
        raise errors.InvalidRequest(f"key {key!r} {reason}: LOCAL_GCS_PATH cannot store it")
    return key.split("/")


def _encode_segment(segment: str) -> str:
    if not segment:
        return "%"
    name = "".join(
        "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        if char in _ESCAPED_ASCII or ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0
        else char
        for char in segment
    )
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        return "~" + hashlib.sha256(segment.encode("utf-8")).hexdigest()
    return name


def _translate(exc: OSError, what: str) -> errors.ReplicatorError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        return errors.InvalidRequest(f"{what}: the key is too long for the filesystem ({reason})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return errors.AccessDenied(f"LOCAL_GCS_PATH refused access to {what}: {reason}")
    return errors.ReplicatorError(f"filesystem failure under LOCAL_GCS_PATH for {what}: {reason}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _translate(exc, what) from exc


class LocalDestination:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._staging = root / ".tmp"
        self._lock = threading.Lock()  # serialises precondition checks, renames and reads
        self.target = f"local:{root}"

    def create_bucket(self, bucket: str) -> None:
        """Make the root, the staging area and `bucket`'s directory if they are missing, as
        a local destination's default bucket is made for the user whether or not the start-up
        probe runs. A name that cannot be a directory, or a directory that cannot be made, is
        left for the probe or the first write to report, in one line naming LOCAL_GCS_PATH."""
        if not _BUCKET.fullmatch(bucket):
            return
        with contextlib.suppress(OSError):
            (self._root / bucket).mkdir(parents=True, exist_ok=True)
            self._staging.mkdir(exist_ok=True)

    def probe(self, bucket: str) -> None:
        """Create the root and the bucket's directory when they are missing, then check that
        files can be created and removed where writes go (the bucket and the staging area)
        and that the filesystem keeps names apart. StartupError, one line naming
        LOCAL_GCS_PATH, when any of that fails. Runs at start-up and on /ready."""
        if not _BUCKET.fullmatch(bucket):
            raise errors.StartupError(
                f"bucket name {bucket!r} cannot be a directory name under LOCAL_GCS_PATH"
            )
        if self._root.exists() and not self._root.is_dir():
            raise errors.StartupError(f"LOCAL_GCS_PATH {self._root} is a file, not a directory")
        where = self._root
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            for where in (self._root / bucket, self._staging):
                where.mkdir(exist_ok=True)
                fd, name = tempfile.mkstemp(dir=where, prefix=".probe-")  # not an object's name
                os.close(fd)
                os.unlink(name)
            folded = _folded_names(self._staging)
        except OSError as exc:
            raise errors.StartupError(
                f"LOCAL_GCS_PATH {self._root}: cannot create or write in {where} ({exc.strerror})"
            ) from exc
        if folded:
            raise errors.StartupError(
                f"LOCAL_GCS_PATH {self._root} is on a filesystem that treats names differing "
                f"only in {folded} as one; keys like that would overwrite each other"
            )

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """None when the object does not exist; BucketNotFound when the bucket does not."""
        paths = self._locate(bucket, key)
        with self._lock, _translated(f"{bucket}/{key}"):
            return self._head(bucket, key, paths)

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` and sorts strictly after `start_after`,
        in key order (UTF-8 byte order, which is Python's str order), each as `head` describes
        it. BucketNotFound, at once, when the bucket does not exist.

        The walk visits directories in key order rather than name order (`a-b` comes before
        `a/b`, though a plain walk yields the directory `a` first) and skips those that cannot
        hold a key in range. It keeps one sorted directory listing per level it is in, never
        the list of all keys. An object written or deleted during the walk may or may not be
        seen."""
        self._existing_bucket(bucket)
        return self._walk(bucket, _bucket_dir(self._root, bucket), prefix, start_after)

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
        """`custom_time` is not kept: a file has no such field."""
        paths = self._locate(bucket, key)
        what = f"{bucket}/{key}"
        staged: list[str] = []  # temporary files not renamed into place (yet)
        try:
            with _translated(what):
                self._staging.mkdir(exist_ok=True)
                data_tmp = _stage_bytes(self._staging, stream, size, staged)
            checksums = stream.checksums()
            with self._lock, _translated(what):
                current = self._head(bucket, key, paths)
                current_generation = (current.generation or 0) if current else 0
                if if_generation_match != current_generation:
                    raise errors.PreconditionFailed(f"{what} was changed by another writer")
                record = {
                    "key": key,
                    "generation": max(time.time_ns(), current_generation + 1),
                    "headers": asdict(headers),
                    "metadata": dict(metadata),
                    "checksums": asdict(checksums),
                }
                meta_tmp = _stage_record(self._staging, record, staged)
                _make_directories(paths.data.parent, paths.bucket_dir)
                if current is not None:
                    paths.data.unlink()  # from here to the last rename: no object, see above
                os.replace(meta_tmp, paths.meta)
                staged.remove(meta_tmp)
                os.replace(data_tmp, paths.data)
                staged.remove(data_tmp)
                return _object_info(bucket, key, record, size)
        finally:
            for name in staged:
                with contextlib.suppress(OSError):
                    os.unlink(name)

    def open(self, obj: ObjectInfo) -> LocalBody:
        """The data file of generation `obj.generation` (the current one when None), opened
        under the lock: a later replacement renames another file into place, so what is read
        stays this generation's bytes. ObjectNotFound when that generation is gone."""
        paths = self._locate(obj.bucket, obj.key)
        what = f"{obj.bucket}/{obj.key}"
        with self._lock, _translated(what):
            current = self._head(obj.bucket, obj.key, paths)
            if current is None or obj.generation not in (None, current.generation):
                raise errors.ObjectNotFound(
                    f"generation {obj.generation} of {what} is gone (replaced or deleted)"
                )
            return LocalBody(paths.data.open("rb"), what)

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None:
        """Raise ObjectNotFound when there is nothing to delete."""
        paths = self._locate(bucket, key)
        what = f"{bucket}/{key}"
        with self._lock, _translated(what):
            current = self._head(bucket, key, paths)
            if current is None:
                raise errors.ObjectNotFound(f"{what} does not exist")
            if if_generation_match is not None and current.generation != if_generation_match:
                raise errors.PreconditionFailed(f"{what} was changed by another writer")
            paths.data.unlink()
            paths.meta.unlink()
            _remove_empty_parents(paths.data.parent, paths.bucket_dir)

    def _locate(self, bucket: str, key: str) -> ObjectPaths:
        paths = object_paths(self._root, bucket, key)
        self._existing_bucket(bucket)
        return paths

    def _existing_bucket(self, bucket: str) -> None:
        with _translated(bucket):
            if not _bucket_dir(self._root, bucket).is_dir():
                raise errors.BucketNotFound(f"bucket '{bucket}' does not exist under {self._root}")

    def _walk(
        self, bucket: str, bucket_dir: Path, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        # A stack of sorted directory listings, not recursion: a key may be 1024 levels deep.
        with _translated(bucket):
            stack = [iter(_entries(bucket_dir, ""))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            if not (entry.key.startswith(prefix) or entry.is_dir and prefix.startswith(entry.key)):
                if entry.key > prefix:
                    return  # past every key with `prefix`, here and in what is left to visit
                continue
            if entry.is_dir:
                # It holds exactly the keys that start with entry.key; they all sort before
                # start_after when start_after is greater without extending entry.key.
                if start_after is None or not (
                    start_after > entry.key and not start_after.startswith(entry.key)
                ):
                    with _translated(f"{bucket}/{entry.key}"):
                        stack.append(iter(_entries(entry.path, entry.key)))
            elif start_after is None or entry.key > start_after:
                paths = ObjectPaths(
                    bucket_dir, entry.path.with_name(entry.path.name[:-5]), entry.path
                )
                with self._lock, _translated(f"{bucket}/{entry.key}"):
                    info = self._head(bucket, entry.key, paths)
                if info is not None:  # metadata without data: a write that never finished
                    yield info

    def _head(self, bucket: str, key: str, paths: ObjectPaths) -> ObjectInfo | None:
        try:
            record = json.loads(paths.meta.read_bytes())
            data = paths.data.stat()
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None  # metadata without data is a write that never finished
            raise
        except ValueError as exc:
            raise errors.ReplicatorError(f"the metadata file {paths.meta} is damaged") from exc
        if not stat.S_ISREG(data.st_mode):
            raise errors.ReplicatorError(f"{paths.data} is not a regular file")
        return _object_info(bucket, key, record, data.st_size)


class LocalBody:
    """An open data file; filesystem errors are raised in app.errors terms."""

    def __init__(self, file: BinaryIO, what: str) -> None:
        self._file = file
        self._what = what

    def read(self, size: int, /) -> bytes:
        with _translated(self._what):
            return self._file.read(size)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, order=True)
class _Entry:
    """One directory entry of the walk, ordered by `key`: an object's key, or for a directory
    the key prefix it holds (ending in `/`), so a directory sorts among its siblings exactly
    where its keys do."""

    key: str
    is_dir: bool
    path: Path  # the directory, or the object's metadata file


def _entries(directory: Path, parent_key: str) -> list[_Entry]:
    """The objects and directories in `directory` (which holds the keys starting with
    `parent_key`), sorted by key. Names this layout does not produce are left out."""
    entries = []
    try:
        with os.scandir(directory) as scan:
            found = list(scan)
    except FileNotFoundError:
        return []  # removed by a delete since its parent was listed
    for item in found:
        if item.is_dir(follow_symlinks=False):
            segment = _decode_segment(item.name)
            if segment is None:  # hashed: any object below knows the segment
                segment = _segment_below(Path(item.path), parent_key.count("/"))
            if segment is not None:
                entries.append(_Entry(f"{parent_key}{segment}/", True, Path(item.path)))
        elif item.name.endswith("~.json"):
            segment = _decode_segment(item.name.removesuffix("~.json"))
            key = parent_key + segment if segment is not None else _recorded_key(Path(item.path))
            if key is not None:
                entries.append(_Entry(key, False, Path(item.path)))
    return sorted(entries)


def _decode_segment(name: str) -> str | None:
    """The key segment a name encodes (see the layout); None when the name is hashed, or is
    not one this layout produces."""
    if name == "%":
        return ""
    if name.startswith("~"):
        return None
    try:
        return urllib.parse.unquote(name, errors="strict")
    except UnicodeDecodeError:
        return None


def _recorded_key(meta: Path) -> str | None:
    """The key a metadata file records; None if it cannot be read."""
    try:
        key = json.loads(meta.read_bytes())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


def _segment_below(directory: Path, depth: int) -> str | None:
    """Segment `depth` of the keys stored below `directory` (a hashed name), from the first
    metadata file found there; None when there is none (the directory holds no object)."""
    for folder, _, files in os.walk(directory):
        for name in files:
            if name.endswith("~.json"):
                key = _recorded_key(Path(folder) / name)
                if key is not None:
                    return key.split("/")[depth]
    return None


def _stage_bytes(staging: Path, stream: VerifiedStream, size: int, staged: list[str]) -> str:
    fd, name = tempfile.mkstemp(dir=staging, prefix="data-")
    staged.append(name)
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
    return name


def _stage_record(staging: Path, record: Mapping[str, Any], staged: list[str]) -> str:
    fd, name = tempfile.mkstemp(dir=staging, prefix="meta-", suffix=".json")
    staged.append(name)
    with os.fdopen(fd, "wb") as out:
        out.write(json.dumps(record, indent=2).encode())
        out.flush()
        os.fsync(out.fileno())
    return name


def _object_info(bucket: str, key: str, record: Mapping[str, Any], size: int) -> ObjectInfo:
    try:
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            generation=record["generation"],
            headers=ContentHeaders(**record["headers"]),
            metadata=record["metadata"],
            checksums=Checksums(**record["checksums"]),
            # The generation is the write's time in nanoseconds (or just after the last one).
            updated=datetime.datetime.fromtimestamp(record["generation"] / 1e9, datetime.UTC),
        )
    except (KeyError, TypeError) as exc:
        raise errors.ReplicatorError(f"the metadata record of {bucket}/{key} is damaged") from exc


def _make_directories(directory: Path, bucket_dir: Path) -> None:
    """Create `directory` and its missing parents below `bucket_dir`, never `bucket_dir`
    itself: a write does not bring back a bucket that was removed."""
    missing = []
    while directory != bucket_dir and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)


def _remove_empty_parents(directory: Path, bucket_dir: Path) -> None:
    """Remove `directory` and its parents up to (not including) `bucket_dir` while empty."""
    while directory != bucket_dir:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or not ours to remove): the delete itself is done
        directory = directory.parent


def _folded_names(staging: Path) -> str | None:
    """What the filesystem under `staging` ignores in names ("case", "Unicode normalisation"),
    or None when it keeps every name apart."""
    with tempfile.TemporaryDirectory(dir=staging, prefix="probe-") as scratch:
        (Path(scratch) / "A\u00e9").touch()  # "Aé", with é as one code point (NFC)
        if (Path(scratch) / "a\u00e9").exists():
            return "case"
        if (Path(scratch) / "Ae\u0301").exists():  # é as e + combining acute (NFD)
            return "Unicode normalisation"
    return None
