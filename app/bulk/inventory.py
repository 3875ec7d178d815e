"""An S3 Inventory report as the source's listing: the backfill of a bucket too big to list.

S3 Inventory writes, daily or weekly, every object of a bucket to gzip CSV files and
describes them in `manifest.json` (with `manifest.checksum`, the hex MD5 of the manifest):
`sourceBucket`, `fileFormat`, `fileSchema` (the columns, in order) and `files` (each with its
`key`, `size` and `MD5checksum`, the hex MD5 of the gzip file). AWS documents no order of the
rows within or between the files, so nothing here relies on one: the rows are sorted on local
disk (runs of RUN rows sorted in memory, then merged), into one file of JSON lines with a
sparse index of every INDEXED-th key. That file then lists like a bucket, from any key on
(`iter_objects`), and splits at its exact quantiles (`ranges`). Memory stays bounded by a run;
disk takes about 100 bytes a key.

What is read: the `Key` (URL-encoded in CSV inventories, as S3 encodes keys in a form:
decoded with `unquote_plus`), `Size` and `ETag` (the configuration must include both optional
fields), and `LastModifiedDate` when `modified_since` asks for it. In an inventory of all
versions only rows with `IsLatest` true that are not delete markers are kept: the current
version is what a sync copies. ORC and Parquet inventories are refused (reading them would
need pyarrow, a heavy dependency); configure the inventory as CSV.

An inventory is up to a day old: a key deleted since is "gone" when its copy finds it missing,
and a key changed since is copied as it is now (the GET pinned to the inventory's ETag fails,
and the copy starts over from a fresh look).
"""

from __future__ import annotations

import bisect
import csv
import datetime
import gzip
import hashlib
import heapq
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus

from app import errors
from app.bulk.ranges import KeyRange, between
from app.retry import RetryPolicy
from app.storage.base import Body, ObjectInfo, Source

RUN = 200_000  # rows sorted in memory at once
INDEXED = 1_000  # every this many sorted keys, one in the index
REQUIRED = ("Key", "Size", "ETag")
READ_PIECE = 1 << 20


class InventoryError(errors.InvalidRequest):
    """The inventory cannot be used: the message says which file and why."""


@dataclass(frozen=True)
class InventoryFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class Manifest:
    bucket: str  # where the manifest and its files are
    key: str
    source_bucket: str
    columns: tuple[str, ...]
    files: tuple[InventoryFile, ...]


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/.../manifest.json`; ValueError saying what is wrong."""
    if not url.startswith("s3://") or not url.endswith("/manifest.json"):
        raise ValueError(f"{url!r} is not an s3://bucket/.../manifest.json inventory manifest")
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def read_manifest(source: Source, url: str, retry: RetryPolicy) -> Manifest:
    """The manifest at `url`, checked against its `manifest.checksum`. InventoryError when
    it does not match, is not a CSV inventory or lacks a column the sync needs."""
    bucket, key = parse_url(url)
    text = retry.call(_read_whole, source, bucket, key)
    checksum_key = key.removesuffix("manifest.json") + "manifest.checksum"
    expected = retry.call(_read_whole, source, bucket, checksum_key).decode().strip().lower()
    if hashlib.md5(text).hexdigest() != expected:
        raise InventoryError(f"s3://{bucket}/{key} does not match its manifest.checksum")
    try:
        described = json.loads(text)
        file_format = str(described["fileFormat"])
        columns = tuple(name.strip() for name in str(described["fileSchema"]).split(","))
        files = tuple(
            InventoryFile(str(f["key"]), int(f["size"]), str(f["MD5checksum"]).lower())
            for f in described["files"]
        )
        source_bucket = str(described["sourceBucket"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InventoryError(f"s3://{bucket}/{key} is not an inventory manifest: {exc!r}") from None
    if file_format.upper() != "CSV":
        raise InventoryError(
            f"s3://{bucket}/{key} describes a {file_format} inventory: only CSV inventories "
            "are read (ORC and Parquet would need pyarrow); configure the inventory as CSV"
        )
    if missing := [name for name in REQUIRED if name not in columns]:
        raise InventoryError(
            f"s3://{bucket}/{key}: the inventory lacks {', '.join(missing)}: include the "
            "Size and ETag fields in its configuration"
        )
    return Manifest(bucket, key, source_bucket, columns, files)


def _read_whole(source: Source, bucket: str, key: str) -> bytes:
    try:
        _, body = source.get(bucket, key, None)
    except errors.ObjectNotFound as exc:
        raise InventoryError(f"s3://{bucket}/{key} does not exist") from exc
    try:
        pieces = []
        while piece := body.read(READ_PIECE):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        body.close()


class _Hashed:
    """A body read through, MD5 and all, for gzip to read from."""

    def __init__(self, body: Body) -> None:
        self._body = body
        self.md5 = hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        piece = self._body.read(READ_PIECE if size < 0 else size)
        self.md5.update(piece)
        return piece


class Inventory:
    """The inventory's objects under a prefix, sorted on disk; a context manager that removes
    its files at the end."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.count = 0
        self._dir = tempfile.TemporaryDirectory(prefix="replicator-inventory-")
        self._sorted = Path(self._dir.name) / "sorted.jsonl"
        self._index: list[tuple[str, int]] = []  # (key, offset of its line)

    @classmethod
    def load(
        cls,
        source: Source,
        manifest: Manifest,
        prefix: str,
        retry: RetryPolicy,
        modified_since: datetime.datetime | None = None,
    ) -> Inventory:
        """Read every file of `manifest` (each checked against its MD5, and read again whole
        when a read fails), keep the current objects under `prefix` (modified at or after
        `modified_since`), and sort them. InventoryError for a file that does not match."""
        if modified_since is not None and "LastModifiedDate" not in manifest.columns:
            raise InventoryError("--modified-since needs the inventory's LastModifiedDate field")
        inventory = cls(manifest.source_bucket)
        try:
            runs: list[Path] = []
            for file in manifest.files:
                runs += retry.call(
                    inventory._read_file, source, manifest, file, prefix, modified_since, len(runs)
                )
            inventory._merge(runs)
        except BaseException:
            inventory.close()
            raise
        return inventory

    def _read_file(
        self,
        source: Source,
        manifest: Manifest,
        file: InventoryFile,
        prefix: str,
        modified_since: datetime.datetime | None,
        numbered: int,
    ) -> list[Path]:
        """One inventory file as sorted runs on disk."""
        where = f"s3://{manifest.bucket}/{file.key}"
        try:
            _, body = source.get(manifest.bucket, file.key, None)
        except errors.ObjectNotFound as exc:
            raise InventoryError(f"{where}, in the manifest, does not exist") from exc
        hashed = _Hashed(body)
        runs: list[Path] = []
        rows: list[tuple[str, int, str]] = []
        try:
            unzipped = gzip.GzipFile(fileobj=hashed, mode="rb")  # type: ignore[call-overload]
            text = io.TextIOWrapper(unzipped, encoding="utf-8", newline="")
            for row in _current(csv.reader(text), manifest.columns, prefix, modified_since):
                rows.append(row)
                if len(rows) == RUN:
                    runs.append(self._write_run(rows, numbered + len(runs)))
            while hashed.read(READ_PIECE):  # the MD5 covers the whole file
                pass
        except (OSError, EOFError, csv.Error, UnicodeDecodeError, ValueError) as exc:
            raise InventoryError(f"{where} is not a gzip CSV inventory file: {exc}") from None
        finally:
            body.close()
        if hashed.md5.hexdigest() != file.md5:
            raise InventoryError(
                f"{where} does not match the MD5checksum the manifest gives it "
                f"({hashed.md5.hexdigest()}, not {file.md5}): refused, nothing was copied"
            )
        if rows:
            runs.append(self._write_run(rows, numbered + len(runs)))
        return runs

    def _write_run(self, rows: list[tuple[str, int, str]], number: int) -> Path:
        rows.sort()
        path = Path(self._dir.name) / f"run-{number}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        rows.clear()
        return path

    def _merge(self, runs: list[Path]) -> None:
        files = [open(path, encoding="utf-8") for path in runs]  # noqa: SIM115
        try:
            merged = heapq.merge(*(map(json.loads, f) for f in files), key=lambda row: row[0])
            previous = None
            with open(self._sorted, "w", encoding="utf-8") as out:
                offset = 0
                for row in merged:
                    if row[0] == previous:
                        continue  # listed in two files: once is enough
                    previous = row[0]
                    if self.count % INDEXED == 0:
                        self._index.append((row[0], offset))
                    line = json.dumps(row, ensure_ascii=False) + "\n"
                    out.write(line)
                    offset += len(line.encode())
                    self.count += 1
        finally:
            for f in files:
                f.close()
            for path in runs:
                path.unlink()

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """The inventory's objects under `prefix` after `start_after`, in key order, as a
        listing of the source bucket would give them (key, size, ETag)."""
        position = 0
        if start_after is not None:
            at = bisect.bisect_right(self._index, (start_after, 1 << 62)) - 1
            position = self._index[at][1] if at >= 0 else 0
        with open(self._sorted, encoding="utf-8") as lines:
            lines.seek(position)
            for line in lines:
                key, size, etag = json.loads(line)
                if start_after is not None and key <= start_after:
                    continue
                if key.startswith(prefix):
                    yield ObjectInfo(bucket=bucket, key=key, size=size, etag=etag or None)

    def ranges(self, count: int, prefix: str) -> tuple[KeyRange, ...]:
        """`count` ranges of about equal numbers of keys (below `prefix`), cut at the
        inventory's own keys."""
        if count <= 1 or len(self._index) < 2:
            return (KeyRange(),)
        step = len(self._index) / count
        # Rounded down: step * i < len for i < count. Rounding to nearest went past the end
        # whenever fewer than 2 x count keys were indexed (a sync of 5,000 keys over 16
        # ranges died with an IndexError).
        cuts = sorted({self._index[int(step * i)][0] for i in range(1, count)})
        return between([cut[len(prefix) :] for cut in cuts if cut.startswith(prefix)])

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _current(
    rows: Iterator[list[str]],
    columns: tuple[str, ...],
    prefix: str,
    modified_since: datetime.datetime | None,
) -> Iterator[tuple[str, int, str]]:
    """(key, size, ETag) of each row that is a current object under `prefix`."""
    at = {name: n for n, name in enumerate(columns)}
    key_at, size_at, etag_at = at["Key"], at["Size"], at["ETag"]
    latest_at, marker_at = at.get("IsLatest"), at.get("IsDeleteMarker")
    modified_at = at.get("LastModifiedDate")
    for row in rows:
        if not row:
            continue
        if latest_at is not None and row[latest_at].lower() != "true":
            continue
        if marker_at is not None and row[marker_at].lower() == "true":
            continue
        key = unquote_plus(row[key_at])
        if not key.startswith(prefix) or not row[size_at]:
            continue
        if modified_since is not None and modified_at is not None:
            if _timestamp(row[modified_at]) < modified_since:
                continue
        yield key, int(row[size_at]), row[etag_at].strip('"')


def _timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
